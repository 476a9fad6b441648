// `serve` answers the official openai client: models, chat and completions, n > 1, seed
// reproducibility, SSE streaming, OpenAI-shaped errors naming the field, the API key, a bounded
// queue (429 + Retry-After), 64 concurrent clients each getting its own answer, and a WST student
// pointed at it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model } from '../src/models/model.js';
import { serve } from '../src/serving/server.js';
import { httpStudent } from '../src/wst/http-student.js';
import { TEXT_TEMPLATES } from '../src/wst/templates.js';
import { tinyTextModelFolder } from './tiny-models.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'wst-serve-'));
let model: Model;
let server: Awaited<ReturnType<typeof serve>>;
let client: OpenAI;

beforeAll(async () => {
  model = await Model.load(await tinyTextModelFolder(tmp, 'm', 32, 5));
  server = await serve(model, { port: 0, modelName: 'tiny', apiKey: 'k-123', maxBatch: 32 });
  client = new OpenAI({ baseURL: server.url, apiKey: 'k-123', maxRetries: 0 });
});
afterAll(async () => {
  await server?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('serve', () => {
  it('lists its model and answers chat and completions; n > 1; the same seed gives the same text', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['tiny']);
    const chat = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'hello' }], max_tokens: 8, n: 3, seed: 7, temperature: 1 });
    expect(chat.choices.length).toBe(3);
    for (const c of chat.choices) expect(typeof c.message.content).toBe('string');
    expect(chat.usage?.prompt_tokens).toBe(model.encode('hello').length);
    const again = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'hello' }], max_tokens: 8, n: 3, seed: 7, temperature: 1 });
    expect(again.choices.map((c) => c.message.content)).toEqual(chat.choices.map((c) => c.message.content));
    const done = await client.completions.create({ model: 'tiny', prompt: 'abc', max_tokens: 5, temperature: 0 });
    const [direct] = await model.generate(['abc'], { temperature: 0, maxNewTokens: 5 });
    expect(done.choices[0].text).toBe(direct.text);
    expect(['stop', 'length']).toContain(done.choices[0].finish_reason);
  });

  it('streams SSE chunks that add up to the non-streamed answer', async () => {
    const body = { model: 'tiny', messages: [{ role: 'user' as const, content: 'stream me' }], max_tokens: 10, seed: 3, temperature: 1 };
    const whole = await client.chat.completions.create(body);
    let text = '', finish: string | null = null;
    for await (const chunk of await client.chat.completions.create({ ...body, stream: true })) {
      text += chunk.choices[0]?.delta?.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(text).toBe(whole.choices[0].message.content);
    expect(finish).toBe(whole.choices[0].finish_reason);
  });

  it('bad requests get 400 naming the field; a wrong key 401; an unknown model 404', async () => {
    const err = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'x' }], temperature: 5 }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as { error?: { param?: string } }).error?.param).toBe('temperature');
    const empty = await client.chat.completions.create({ model: 'tiny', messages: [] }).catch((e) => e);
    expect((empty as { status?: number }).status).toBe(400);
    const wrong = await new OpenAI({ baseURL: server.url, apiKey: 'nope', maxRetries: 0 }).models.list().catch((e) => e);
    expect(wrong).toBeInstanceOf(OpenAI.AuthenticationError);
    const unknown = await client.completions.create({ model: 'other', prompt: 'x' }).catch((e) => e);
    expect((unknown as { status?: number }).status).toBe(404);
  });

  it('64 concurrent clients × 3 requests each: every answer arrives and is the one that request gets alone', async () => {
    const ask = (c: number, r: number) => ({ model: 'tiny', prompt: `client ${c} asks ${'p'.repeat(1 + ((c * 3 + r) % 40))}`, max_tokens: 6, temperature: 1, seed: 1000 * c + r });
    const outs = await Promise.all(Array.from({ length: 64 }, async (_, c) => {
      const mine = [];
      for (let r = 0; r < 3; r++) mine.push(await client.completions.create(ask(c, r)));
      return mine;
    }));
    for (let c = 0; c < 64; c++)
      for (let r = 0; r < 3; r++) {
        const alone = await client.completions.create(ask(c, r));
        expect(outs[c][r].choices[0].text).toBe(alone.choices[0].text);
        expect(outs[c][r].usage?.prompt_tokens).toBe(model.encode(ask(c, r).prompt).length);
      }
    expect(outs.flat().length).toBe(192);
  });

  it('a full queue answers 429 with Retry-After, and the WST student pool retries it until all are answered', async () => {
    const small = await serve(model, { port: 0, modelName: 'tiny', maxQueue: 2, maxBatch: 2 });
    try {
      const raw = new OpenAI({ baseURL: small.url, apiKey: 'x', maxRetries: 0 });
      // Batches held back: the first two requests fill the queue, the rest must get 429.
      let release = small.hold();
      let refused = 0;
      const pending = Array.from({ length: 12 }, () => raw.completions.create({ model: 'tiny', prompt: 'q', max_tokens: 16, temperature: 0 })
        .catch((e: unknown) => {
          if (++refused === 10) release(); // the queue holds two; the other ten were refused while held
          throw e;
        }));
      const results = await Promise.allSettled(pending);
      expect(results.filter((r) => r.status === 'fulfilled').length).toBe(2);
      const limited = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason);
      expect(limited.length).toBeGreaterThan(0);
      for (const e of limited) {
        expect(e).toBeInstanceOf(OpenAI.RateLimitError);
        expect((e as { headers?: Headers }).headers?.get('retry-after')).toBe('1');
      }
      const student = httpStudent({ endpoints: [small.url], model: 'tiny', api: 'completions', templates: TEXT_TEMPLATES, concurrency: 8, backoffMs: 5, maxAttempts: 50, maxTokens: 4 });
      const requests = Array.from({ length: 16 }, (_, i) => ({ instruction: 'Add.', query: `q${i}` }));
      release = small.hold();
      const poll = setInterval(() => { if (student.stats.retries > 0) release(); }, 10);
      const answers = await student.answer(requests).finally(() => clearInterval(poll));
      expect(answers.length).toBe(16);
      expect(student.stats.failures).toBe(0);
      expect(student.stats.retries).toBeGreaterThan(0);
    } finally {
      await small.close();
    }
  }, 60_000);
});
