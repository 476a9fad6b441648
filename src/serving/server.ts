// `wst-dash serve`: an OpenAI-compatible server over this engine, so a model of this engine can
// be the student (or any model) of another process. Plain node:http, not a framework: four routes,
// SSE and back-pressure written out are shorter than a framework's plugin setup, and nothing is
// hidden between a request and the engine.
//
// Requests that are waiting when a generation starts are decoded together in one batched
// `generate` (at most `maxBatch` rows); requests that arrive meanwhile wait for the next batch.
// The queue is bounded (`maxQueue` rows): when full, 429 with Retry-After. Bad requests get 400
// with an OpenAI-shaped error naming the field; bodies over 1 MiB get 413; a client that leaves
// before its batch starts frees its rows; close() drains what is in flight.
import { rewardScores } from '../rm/train.js';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Generation, Model } from '../models/model.js';

export interface ServeOptions {
  /** The name /v1/models reports and requests may name (default "wst-dash"). */
  modelName?: string;
  host?: string;
  port?: number;
  /** Rows decoded together at most (default 64). */
  maxBatch?: number;
  /** Rows waiting at most before 429 (default 1024). */
  maxQueue?: number;
  /** Require `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Most new tokens a request may ask for (default 512). */
  maxTokensLimit?: number;
  /** Reward models: the last N characters of each text are scored, as train rm did (default 256). */
  rewardMaxChars?: number;
  log?: (line: string) => void;
}

interface Job {
  prompt: string;
  n: number;
  maxTokens: number;
  temperature: number;
  topP: number;
  seed: number;
  stop: string[];
  gone: boolean;
  resolve: (g: Generation[]) => void;
  reject: (e: Error) => void;
}

class BadRequest extends Error {
  constructor(message: string, readonly param: string | null, readonly status = 400, readonly type = 'invalid_request_error') {
    super(message);
  }
}

const MAX_BODY = 1 << 20;

function sendError(res: ServerResponse, status: number, message: string, type: string, param: string | null, headers: Record<string, string> = {}) {
  if (res.headersSent) return res.end();
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify({ error: { message, type, param, code: null } }));
}

function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new BadRequest(`request body over ${MAX_BODY} bytes`, null, 413));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => {
      try {
        const v = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
        if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
        resolve(v as Record<string, unknown>);
      } catch (e) {
        reject(new BadRequest(`the body must be a JSON object (${(e as Error).message})`, null));
      }
    });
    req.on('error', reject);
  });
}

const num = (b: Record<string, unknown>, k: string, dflt: number, lo: number, hi: number, int = false): number => {
  const v = b[k];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi || (int && !Number.isInteger(v)))
    throw new BadRequest(`${k} must be ${int ? 'an integer' : 'a number'} in [${lo}, ${hi}], got ${JSON.stringify(v)}`, k);
  return v;
};

export interface Serving {
  url: string;
  server: Server;
  /** Stops accepting, answers what is queued or running, then resolves. */
  close: () => Promise<void>;
  /** Holds new batches back until the returned function is called (tests fill the queue with it). */
  hold: () => () => void;
}

export async function serve(model: Model, o: ServeOptions = {}): Promise<Serving> {
  if (!model.tokenizer) throw new Error('serve: the model folder has no tokenizer (text in, text out)');
  const name = o.modelName ?? 'wst-dash';
  const maxBatch = o.maxBatch ?? 64, maxQueue = o.maxQueue ?? 1024, maxTokensLimit = o.maxTokensLimit ?? 512;
  const log = o.log ?? (() => undefined);
  const queue: Job[] = [];
  let queuedRows = 0, running = false, closing = false, inFlight = 0;
  let gate: Promise<void> | null = null;

  const pump = async () => {
    if (running) return;
    running = true;
    try {
      while (queue.length) {
        while (gate) await gate;
        const batch: Job[] = [];
        let rows = 0;
        while (queue.length && (batch.length === 0 || rows + queue[0].n <= maxBatch)) {
          const j = queue.shift()!;
          queuedRows -= j.n;
          if (j.gone) continue;
          batch.push(j);
          rows += j.n;
        }
        if (!batch.length) continue;
        // One batched generate; each row keeps its own sampling settings through its seed only,
        // so requests with different temperature / top_p / stop run as separate groups.
        const groups = new Map<string, Job[]>();
        for (const j of batch) {
          const key = JSON.stringify([j.temperature, j.topP, j.stop, j.maxTokens]);
          groups.set(key, [...(groups.get(key) ?? []), j]);
        }
        for (const jobs of groups.values()) {
          const prompts = jobs.flatMap((j) => Array.from({ length: j.n }, () => j.prompt));
          const seeds = jobs.flatMap((j) => Array.from({ length: j.n }, (_, k) => (j.seed + k) >>> 0));
          const j0 = jobs[0];
          try {
            const gens = await model.generate(prompts, { temperature: j0.temperature, topP: j0.topP, stop: j0.stop, maxNewTokens: j0.maxTokens, seed: seeds, batchSize: maxBatch, stepsPerCall: 32 });
            let at = 0;
            for (const j of jobs) {
              j.resolve(gens.slice(at, at + j.n));
              at += j.n;
            }
          } catch (e) {
            for (const j of jobs) j.reject(e as Error);
          }
        }
      }
    } finally {
      running = false;
    }
  };

  const enqueue = (j: Omit<Job, 'resolve' | 'reject' | 'gone'>, res: ServerResponse): Promise<Generation[]> => {
    if (queuedRows + j.n > maxQueue) throw new BadRequest(`the queue is full (${maxQueue} rows); retry later`, null, 429, 'rate_limit_error');
    return new Promise((resolve, reject) => {
      const job: Job = { ...j, gone: false, resolve, reject };
      // A client that disconnects before its answer frees its rows (a listener on the response, not
      // on the keep-alive socket, where one per request would pile up).
      res.once('close', () => { if (!res.writableFinished) job.gone = true; });
      queue.push(job);
      queuedRows += j.n;
      void pump();
    });
  };

  // A reward model (config.scoreHead) serves POST /v1/score: {"prompt", "response"} -> {"score"},
  // or {"items": [{"prompt", "response"}, ...]} -> {"scores": [...]}; the protocol of httpScorer.
  const reward = model.config.scoreHead === true;
  const scoreRequest = async (b: Record<string, unknown>, res: ServerResponse) => {
    const one = (x: unknown, at: string): { prompt: string; response: string } => {
      const item = x as { prompt?: unknown; response?: unknown } | null;
      if (!item || typeof item !== 'object') throw new BadRequest(`${at || 'the body'} must be an object with prompt and response`, at || null);
      for (const k of ['prompt', 'response'] as const) if (typeof item[k] !== 'string') throw new BadRequest(`${at ? `${at}.` : ''}${k} must be a string`, `${at ? `${at}.` : ''}${k}`);
      return item as { prompt: string; response: string };
    };
    const batch = b.items !== undefined;
    if (batch && (!Array.isArray(b.items) || b.items.length === 0 || b.items.length > 256)) throw new BadRequest('items must be an array of 1 to 256 {prompt, response}', 'items');
    const items = batch ? (b.items as unknown[]).map((x, i) => one(x, `items[${i}]`)) : [one(b, '')];
    if (queuedRows + items.length > maxQueue) throw new BadRequest(`the queue is full (${maxQueue} rows); retry later`, null, 429, 'rate_limit_error');
    queuedRows += items.length;
    try {
      const scores = await rewardScores(model, items, { maxChars: o.rewardMaxChars });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(batch ? { object: 'list', model: name, scores } : { object: 'score', model: name, score: scores[0] }));
    } finally {
      queuedRows -= items.length;
    }
  };

  const server = createServer(async (req, res) => {
    const t0 = Date.now();
    inFlight++;
    res.on('close', () => {
      inFlight--;
      log(`${req.method} ${req.url} ${res.statusCode} ${Date.now() - t0} ms`);
    });
    try {
      if (closing) throw new BadRequest('the server is shutting down', null, 503, 'server_error');
      if (o.apiKey && req.headers.authorization !== `Bearer ${o.apiKey}`) throw new BadRequest('invalid or missing API key', null, 401, 'authentication_error');
      const url = (req.url ?? '').split('?')[0];
      if (req.method === 'GET' && url === '/v1/models') {
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ object: 'list', data: [{ id: name, object: 'model', created: 0, owned_by: 'wst-dash' }] }));
      }
      const chat = url === '/v1/chat/completions';
      const scoring = url === '/v1/score';
      if (req.method !== 'POST' || (!chat && !scoring && url !== '/v1/completions')) throw new BadRequest(`no route ${req.method} ${url}`, null, 404, 'not_found_error');
      if (scoring !== reward) throw new BadRequest(reward ? 'this server holds a reward model: POST /v1/score' : 'this server holds a language model, not a reward model: /v1/score is not served', null, 404, 'not_found_error');
      const b = await readBody(req);
      if (b.model !== undefined && b.model !== name) throw new BadRequest(`model must be "${name}", got ${JSON.stringify(b.model)}`, 'model', 404, 'not_found_error');
      if (scoring) return await scoreRequest(b, res);
      let prompt: string;
      if (chat) {
        const msgs = b.messages;
        if (!Array.isArray(msgs) || msgs.length === 0) throw new BadRequest('messages must be a non-empty array', 'messages');
        for (const [i, m] of msgs.entries())
          if (!m || typeof m !== 'object' || typeof (m as { content?: unknown }).content !== 'string' || !['system', 'user', 'assistant'].includes((m as { role?: string }).role ?? ''))
            throw new BadRequest(`messages[${i}] must be { role: system|user|assistant, content: string }`, `messages[${i}]`);
        prompt = model.tokenizer!.applyChatTemplate(msgs as { role: 'system' | 'user' | 'assistant'; content: string }[], { addGenerationPrompt: true });
      } else {
        if (typeof b.prompt !== 'string' || b.prompt.length === 0) throw new BadRequest('prompt must be a non-empty string', 'prompt');
        prompt = b.prompt;
      }
      const stopRaw = b.stop ?? [];
      const stop = typeof stopRaw === 'string' ? [stopRaw] : stopRaw;
      if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string' || s === '') || stop.length > 4) throw new BadRequest('stop must be a non-empty string or up to 4 of them', 'stop');
      const n = num(b, 'n', 1, 1, 16, true);
      const job = {
        prompt, n, stop: stop as string[],
        maxTokens: num(b, 'max_tokens', Math.min(256, maxTokensLimit), 1, maxTokensLimit, true),
        temperature: num(b, 'temperature', 1, 0, 2), topP: num(b, 'top_p', 1, Number.MIN_VALUE, 1),
        seed: num(b, 'seed', Math.floor(Math.random() * 2 ** 31), 0, 2 ** 32 - 1, true),
      };
      const stream = b.stream === true;
      const gens = await enqueue(job, res);
      const id = `${chat ? 'chatcmpl' : 'cmpl'}-${t0.toString(36)}${Math.random().toString(36).slice(2, 8)}`;
      const created = Math.floor(t0 / 1000);
      const finish = (g: Generation) => (g.finishReason === 'length' ? 'length' : 'stop');
      const usage = { prompt_tokens: gens[0]?.promptIds.length ?? 0, completion_tokens: gens.reduce((a, g) => a + g.ids.length, 0), total_tokens: 0 };
      usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
      if (!stream) {
        const choices = gens.map((g, index) => chat
          ? { index, message: { role: 'assistant', content: g.text ?? '' }, finish_reason: finish(g), logprobs: null }
          : { index, text: g.text ?? '', finish_reason: finish(g), logprobs: null });
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ id, object: chat ? 'chat.completion' : 'text_completion', created, model: name, choices, usage }));
      }
      // SSE: the batch is decoded as a whole, so each choice arrives as one content chunk, then its end.
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      const send = (obj: unknown) => res.write(`data: ${JSON.stringify(obj)}\n\n`);
      const object = chat ? 'chat.completion.chunk' : 'text_completion';
      gens.forEach((g, index) => {
        send({ id, object, created, model: name, choices: [chat ? { index, delta: { role: 'assistant', content: g.text ?? '' }, finish_reason: null } : { index, text: g.text ?? '', finish_reason: null }] });
        send({ id, object, created, model: name, choices: [chat ? { index, delta: {}, finish_reason: finish(g) } : { index, text: '', finish_reason: finish(g) }] });
      });
      res.end('data: [DONE]\n\n');
    } catch (e) {
      if (e instanceof BadRequest) return sendError(res, e.status, e.message, e.type, e.param, e.status === 429 ? { 'retry-after': '1' } : {});
      sendError(res, 500, (e as Error).message, 'server_error', null);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 8080, o.host ?? '127.0.0.1', resolve);
  });
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.address}:${addr.port}/v1`;
  const close = async () => {
    closing = true;
    const closed = new Promise<void>((r) => server.close(() => r())); // stops accepting; waits for open requests
    server.closeIdleConnections();
    await closed;
    while (inFlight > 0 || running) await new Promise((r) => setTimeout(r, 10));
  };
  const hold = () => {
    let open!: () => void;
    const g = new Promise<void>((r) => (open = r));
    gate = g;
    return () => {
      if (gate === g) gate = null;
      open();
    };
  };
  return { url, server, close, hold };
}
