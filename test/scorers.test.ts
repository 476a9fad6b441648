// The scorers WST and evaluations plug in besides a local reward model: a reward server (the
// generic HTTP protocol, which `serve` speaks at /v1/score for a reward model) and an LLM judge over
// OpenAI-compatible servers, both through the endpoint pool: same scores through faults, retries
// counted, a clear error when the server is gone, junk judge replies asked again and counted.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/models/config.js';
import { Model } from '../src/models/model.js';
import { CharTokenizer } from '../src/models/tokenizer.js';
import { serve, type Serving } from '../src/serving/server.js';
import { rewardModelScorer } from '../src/wst/hh.js';
import { httpScorer, llmJudge, parseJudgeScore } from '../src/wst/scorers.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'wst-scorers-'));
let rm: Model, server: Serving;

function tinyRewardModel(): Model {
  const tok = new CharTokenizer(Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).concat(['\n']));
  const m = Model.create(parseConfig({
    architectures: ['LlamaForSequenceClassification'], model_type: 'llama', vocab_size: tok.vocabSize, hidden_size: 16, intermediate_size: 32,
    num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 512, rms_norm_eps: 1e-5, rope_theta: 10000,
    tie_word_embeddings: true, id2label: { 0: 'LABEL_0' }, bos_token_id: CharTokenizer.BOS, eos_token_id: CharTokenizer.EOS,
  }), { seed: 4, std: 0.3, tokenizer: tok });
  m.setTensor('score.weight', Float32Array.from({ length: 16 }, (_, i) => Math.sin(i + 1)));
  return m;
}

const items = Array.from({ length: 10 }, (_, i) => ({
  example: { id: `q${i}`, question: `\n\nHuman: question ${i}?\n\nAssistant:`, answer: '', solution: '' }, answer: ` answer number ${i * 7}`, instruction: '',
}));

/** A server answering with `reply(n, body)` for the n-th request (a status and a body, or 'reset'). */
async function scripted(reply: (n: number, body: Record<string, unknown>) => [number, unknown, Record<string, string>?] | 'reset') {
  let n = 0;
  const srv: Server = createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      const r = reply(n++, raw ? JSON.parse(raw) : {});
      if (r === 'reset') return res.socket?.destroy();
      res.writeHead(r[0], { 'content-type': 'application/json', ...(r[2] ?? {}) });
      res.end(typeof r[1] === 'string' ? r[1] : JSON.stringify(r[1]));
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, get requests() { return n; }, close: () => new Promise<void>((r) => { srv.closeAllConnections(); srv.close(() => r()); }) };
}

beforeAll(async () => {
  rm = tinyRewardModel();
  server = await serve(rm, { port: 0, modelName: 'rm' });
});
afterAll(async () => {
  await server.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('a reward model served at /v1/score, scored over HTTP', () => {
  it('httpScorer gives the local reward model\'s scores, bit for bit; the batch form too; the routes that do not apply are refused', async () => {
    const local = await rewardModelScorer(rm)(items);
    const remote = httpScorer({ endpoints: [`${server.url}/score`] });
    expect(await remote(items)).toEqual(local);
    const batch = await fetch(`${server.url}/score`, { method: 'POST', body: JSON.stringify({ items: items.map((it) => ({ prompt: it.example.question, response: it.answer })) }) });
    expect(((await batch.json()) as { scores: number[] }).scores).toEqual(local);
    const bad = await fetch(`${server.url}/score`, { method: 'POST', body: JSON.stringify({ prompt: 'x' }) });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { param: string } }).error.param).toBe('response');
    const completions = await fetch(`${server.url}/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'x' }) });
    expect(completions.status).toBe(404);
  });

  it('through faults (429 + Retry-After, 500, a body without a score, a reset) the same scores, the retries counted; a dead server is one clear error', async () => {
    const local = await rewardModelScorer(rm)(items);
    const upstream = `${server.url}/score`;
    // Every third request gets the next fault; the others are forwarded to serve.
    let n = 0, k = 0;
    const proxy = createServer((req, res) => {
      let raw = '';
      req.on('data', (c) => (raw += c));
      req.on('end', async () => {
        if (n++ % 3 === 0) {
          const fault = k++ % 4;
          if (fault === 3) return res.socket?.destroy();
          res.writeHead(fault === 0 ? 429 : fault === 1 ? 500 : 200, { 'content-type': 'application/json', ...(fault === 0 ? { 'retry-after': '0' } : {}) });
          return res.end(JSON.stringify(fault === 2 ? { nope: 1 } : { error: { message: 'boom' } }));
        }
        const up = await fetch(upstream, { method: 'POST', body: raw });
        res.writeHead(up.status, { 'content-type': 'application/json' });
        res.end(await up.text());
      });
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}/score`;
    const scorer = httpScorer({ endpoints: [proxyUrl], backoffMs: 5, maxAttempts: 6 });
    expect(await scorer(items)).toEqual(local);
    expect(scorer.stats.retries).toBeGreaterThanOrEqual(3);
    expect(k).toBeGreaterThanOrEqual(4); // every kind of fault was served
    proxy.closeAllConnections();
    proxy.close();
    const dead = httpScorer({ endpoints: ['http://127.0.0.1:9/score'], backoffMs: 1, maxAttempts: 2 });
    await expect(dead(items.slice(0, 1))).rejects.toThrow(/^scorer http:\/\/127\.0\.0\.1:9\/score: connection failed .*\(2 attempts at most/);
  });
});

describe('an LLM judge', () => {
  it('parses scores from what judges write', () => {
    expect(parseJudgeScore('7')).toBe(7);
    expect(parseJudgeScore('Score: 8/10')).toBe(8);
    expect(parseJudgeScore('**10**')).toBe(10);
    expect(parseJudgeScore('I would say 3.')).toBe(3);
    expect(parseJudgeScore('no idea')).toBeNull();
    expect(parseJudgeScore('0')).toBeNull();
    expect(parseJudgeScore('11')).toBeNull();
  });

  it('asks again when a reply holds no score (counted), normalises to [0, 1], caches; a judge that never scores fails the step', async () => {
    const chat = (content: string) => [200, { id: 'c', object: 'chat.completion', created: 0, model: 'j', choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant', content } }] }] as [number, unknown];
    const judge = await scripted((n, body) => {
      const user = ((body.messages as { content: string }[])[1]).content;
      const i = Number(/question (\d+)/.exec(user)![1]);
      // The first reply for even questions is junk; asked again (with the reminder), the score is 1 + i % 10.
      if (i % 2 === 0 && !user.includes('nothing else')) return chat('Well, it depends.');
      return chat(`Score: ${1 + (i % 10)}`);
    });
    const cacheDir = path.join(tmp, 'judge-cache');
    const j = llmJudge({ endpoints: [`${judge.url}/v1`], model: 'j', cacheDir });
    const scores = await j(items);
    expect(scores).toEqual(items.map((_, i) => (i % 10) / 9));
    expect(j.stats.unparsed).toBe(5);
    const before = judge.requests;
    expect(await llmJudge({ endpoints: [`${judge.url}/v1`], model: 'j', cacheDir })(items)).toEqual(scores);
    expect(judge.requests).toBe(before); // all from the cache
    await judge.close();
    const junk = await scripted(() => chat('I refuse to grade this.'));
    const never = llmJudge({ endpoints: [`${junk.url}/v1`], model: 'j', parseAttempts: 2 });
    await expect(never(items.slice(0, 1))).rejects.toThrow(/judge: no score in 2 replies \(the last: "I refuse to grade this\."\); a reward is never made up/);
    expect(never.stats.unparsed).toBe(2);
    await junk.close();
  });
});
