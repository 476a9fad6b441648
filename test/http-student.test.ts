// The HTTP student pool against a local fake OpenAI-compatible server that misbehaves on cue:
// 429 with Retry-After, 5xx, truncated and non-JSON bodies, empty choices, time-outs, reset
// connections; a failing endpoint rested while another serves; a clear error after the last
// attempt; 401 not retried; the API key sent but never printed; the on-disk response cache.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { httpStudent } from '../src/wst/http-student.js';
import { runCli, sharedDir } from './run-cli.js';
import { tinyTextModelFolder } from './tiny-models.js';
import { BUILTIN_TEMPLATES } from '../src/wst/templates.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'wst-http-'));
const servers: Server[] = [];
afterAll(() => {
  for (const s of servers) s.close();
  rmSync(tmp, { recursive: true, force: true });
});

type Fault = '429' | '500' | '503' | '401' | 'truncated' | 'html' | 'empty' | 'slow' | 'reset' | 'ok';

/** A fake server: each request takes the next fault of `script` (then 'ok'); records bodies and headers. */
async function fakeServer(script: Fault[] | ((n: number) => Fault)) {
  const seen: { body: Record<string, unknown>; auth?: string; path?: string }[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      const n = seen.length;
      const body = JSON.parse(raw) as Record<string, unknown>;
      seen.push({ body, auth: req.headers.authorization, path: req.url });
      const fault = typeof script === 'function' ? script(n) : script[n] ?? 'ok';
      const json = (status: number, obj: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'content-type': 'application/json', ...headers });
        res.end(JSON.stringify(obj));
      };
      switch (fault) {
        case '429': return json(429, { error: { message: 'slow down', type: 'rate_limit' } }, { 'retry-after': '0' });
        case '500': return json(500, { error: { message: 'boom' } });
        case '503': return json(503, { error: { message: 'overloaded' } });
        case '401': return json(401, { error: { message: 'bad key' } });
        case 'truncated': res.writeHead(200, { 'content-type': 'application/json' }); return res.end('{"choices":[{"mess');
        case 'html': res.writeHead(200, { 'content-type': 'application/json' }); return res.end('<html>gateway</html>');
        case 'empty': return json(200, { id: 'x', object: 'chat.completion', choices: [], usage: { prompt_tokens: 1, completion_tokens: 0 } });
        case 'slow': setTimeout(() => json(200, {}), 1500); return;
        case 'reset': req.socket.destroy(); return;
        default: {
          const msgs = body.messages as { role: string; content: string }[] | undefined;
          const text = msgs ? `answer to ${msgs[msgs.length - 1].content}` : `completion of ${String(body.prompt)}`;
          const choice = msgs ? { index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' } : { index: 0, text, finish_reason: 'stop' };
          return json(200, { id: 'x', object: msgs ? 'chat.completion' : 'text_completion', created: 0, model: body.model, choices: [choice], usage: { prompt_tokens: 7, completion_tokens: 3 } });
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  servers.push(server);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, seen };
}

const requests = [{ instruction: 'Add.', query: 'q1' }, { instruction: null, query: 'q2' }, { instruction: 'Multiply.', query: 'q3' }];

describe('httpStudent', () => {
  it('answers in order over /v1/chat/completions, instruction as a system message, the key sent from the named variable', async () => {
    const s = await fakeServer([]);
    process.env.WST_TEST_KEY = 'sk-secret-123';
    const student = httpStudent({ endpoints: [s.url], model: 'm', templates: BUILTIN_TEMPLATES, apiKeyEnv: 'WST_TEST_KEY', maxTokens: 9 });
    const out = await student.answer(requests);
    expect(out.map((a) => a[0].text)).toEqual(['answer to q1', 'answer to q2', 'answer to q3']);
    const first = s.seen.find((x) => (x.body.messages as { content: string }[]).some((m) => m.content === 'q1'))!;
    expect(first.body.messages).toEqual([{ role: 'system', content: 'Add.' }, { role: 'user', content: 'q1' }]);
    expect(first.body.max_tokens).toBe(9);
    expect(first.auth).toBe('Bearer sk-secret-123');
    expect(student.stats.promptTokens).toBe(21);
    expect(student.stats.completionTokens).toBe(9);
    expect(JSON.stringify(student.stats)).not.toMatch(/sk-secret/);
  });

  it('retries 429 (Retry-After), 5xx, truncated or non-JSON bodies, empty choices, time-outs and resets, and loses nothing', async () => {
    const s = await fakeServer(['429', '500', 'truncated', 'html', 'empty', 'slow', 'reset']);
    const student = httpStudent({ endpoints: [s.url], model: 'm', templates: BUILTIN_TEMPLATES, concurrency: 1, timeoutMs: 500, maxAttempts: 10, backoffMs: 1 });
    const out = await student.answer(requests);
    expect(out.map((a) => a[0].text)).toEqual(['answer to q1', 'answer to q2', 'answer to q3']);
    expect(student.stats.retries).toBe(7);
    expect(student.stats.failures).toBe(0);
  }, 60_000);

  it('rests an endpoint that keeps failing and serves from the others', async () => {
    const bad = await fakeServer(() => '500'), good = await fakeServer([]);
    const student = httpStudent({ endpoints: [bad.url, good.url], model: 'm', templates: BUILTIN_TEMPLATES, concurrency: 2, backoffMs: 1 });
    const many = Array.from({ length: 30 }, (_, i) => ({ instruction: null, query: `q${i}` }));
    const out = await student.answer(many);
    expect(out.map((a) => a[0].text)).toEqual(many.map((r) => `answer to ${r.query}`));
    expect(good.seen.length).toBe(30);
    expect(bad.seen.length).toBeLessThanOrEqual(12); // rested after 3 failures in a row (1 s, then 2 s, ...), not a share of 30
  });

  it('after the last attempt: an error naming the endpoint and the cause; 401 is not retried; the key is never printed', async () => {
    const down = await fakeServer(() => '503');
    const student = httpStudent({ endpoints: [down.url], model: 'm', templates: BUILTIN_TEMPLATES, maxAttempts: 3, backoffMs: 1 });
    await expect(student.answer(requests.slice(0, 1))).rejects.toThrow(new RegExp(`student ${down.url.replace(/[/.]/g, '\\$&')}: HTTP 503.*3 attempts`));
    expect(down.seen.length).toBe(3);
    process.env.WST_TEST_KEY = 'sk-secret-456';
    const auth = await fakeServer(() => '401');
    const s2 = httpStudent({ endpoints: [auth.url], model: 'm', templates: BUILTIN_TEMPLATES, apiKeyEnv: 'WST_TEST_KEY', backoffMs: 1 });
    const err = await s2.answer(requests.slice(0, 1)).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/HTTP 401/);
    expect(err?.message).not.toMatch(/sk-secret/);
    expect(auth.seen.length).toBe(1);
    expect(() => httpStudent({ endpoints: [auth.url], model: 'm', templates: BUILTIN_TEMPLATES, apiKeyEnv: 'WST_NO_SUCH_VARIABLE' })).toThrow(/\$WST_NO_SUCH_VARIABLE is not set/);
    expect(() => httpStudent({ endpoints: ['localhost:8000'], model: 'm', templates: BUILTIN_TEMPLATES })).toThrow(/must be an http\(s\) URL/);
  });

  it('/v1/completions with the student template, K samples with seeds, and the response cache on disk', async () => {
    const s = await fakeServer([]);
    const cacheDir = path.join(tmp, 'cache');
    const student = httpStudent({ endpoints: [s.url], model: 'm', api: 'completions', templates: BUILTIN_TEMPLATES, cacheDir });
    const out = await student.answer(requests.slice(0, 2), { samples: 2, temperature: 0.7, seed: 5 });
    expect(out.map((a) => a.length)).toEqual([2, 2]);
    expect(out[0][0].text).toBe(`completion of ${'I: Add.\nQ: q1\nA: '}`);
    const seeds = s.seen.map((x) => x.body.seed);
    expect(new Set(seeds).size).toBe(4);
    expect(student.stats.cacheMisses).toBe(4);
    const again = await student.answer(requests.slice(0, 2), { samples: 2, temperature: 0.7, seed: 5 });
    expect(again).toEqual(out);
    expect(student.stats.cacheHits).toBe(4);
    expect(s.seen.length).toBe(4); // nothing paid twice
    // the WST environment reports the step's retries and cache hits / misses in its metrics
    const { wstEnvironment } = await import('../src/wst/environment.js');
    const { createGsm8kTask } = await import('../src/rl/tasks/gsm8k.js');
    const env = wstEnvironment({ task: createGsm8kTask(), student, templates: BUILTIN_TEMPLATES, samples: 2, temperature: 0.7 });
    const ex = { id: 'e', question: 'q1', answer: '3', solution: '#### 3', line: 1 };
    const m = (await env.score([{ example: ex, prompt: '', completion: 'Add.', group: 0 }], { step: 0, seed: 5 })).metrics!;
    expect(m.student_cache_hits + m.student_cache_misses).toBe(2);
    expect(m.student_retries).toBe(0);
  });
});


describe('train wst / eval wst with a student behind a server (--student-url)', () => {
  it.skipIf(!existsSync(path.join(sharedDir, 'data/gsm8k.train.jsonl')))('runs end to end against the fake server (skips without ../shared/data)', async () => {
    const s = await fakeServer((n) => (n % 5 === 2 ? '500' : 'ok')); // every fifth request fails once
    const teacher = await tinyTextModelFolder(tmp, 'teacher', 16, 1);
    const cli = async (...args: string[]) => {
      const r = await runCli(args, { WST_DASH_DATA: path.join(sharedDir, 'data') });
      expect(r.code, r.stderr).toBe(0);
      return r;
    };
    const out = path.join(tmp, 'run');
    const t = await cli('train', 'wst', '--task', 'gsm8k', '--teacher', teacher, '--student-url', s.url, '--student-model', 'm', '--out', out,
      '--steps', '2', '--prompts', '2', '--group', '2', '--micro-batch', '2', '--max-instruction-tokens', '4', '--eval-queries', '2', '--train-queries', '20');
    const res = JSON.parse(t.stdout.trim().split('\n').pop()!);
    expect(existsSync(path.join(res.teacher, 'model.safetensors'))).toBe(true);
    const e = await cli('eval', 'wst', '--task', 'gsm8k', '--student-url', s.url, '--student-model', 'm', '--untrained', teacher, '--teacher', res.teacher,
      '--limit', '3', '--max-instruction-tokens', '4', '--json');
    const table = JSON.parse(e.stdout);
    expect(Object.keys(table.teachers)).toEqual(['none', 'untrained', 'trained']);
    expect(table.teachers.none.accuracy).toBe(0); // the fake server never gives the right number
    expect(s.seen.every((x) => x.path === '/v1/chat/completions')).toBe(true);
  }, 60_000);
});
