// A frozen student behind OpenAI-compatible servers (vLLM, SGLang, llama-server, Ollama, a hosted
// API): a pool over one or more base URLs that loses nothing. The wire format is the official
// `openai` client's; its own retries are off (maxRetries 0) because they stay on one endpoint and
// accept bodies we must refuse (empty choices): the retry policy below is ours, in one place.
//   - requests spread over the endpoints (fewest in flight first), at most `concurrency` each;
//   - 408/409/429/5xx, time-outs, refused or reset connections, bodies that are not JSON or hold no
//     choice: retried with exponential backoff and jitter (429/503: Retry-After honoured), on another
//     endpoint when there is one; an endpoint failing 3 times in a row is rested (1 s, doubling to 30 s);
//   - 400/401/403/404: not retried (the request or the key is wrong);
//   - after the last attempt: an error naming the endpoint and the cause; the step fails, no
//     reward is ever silently missing or zero;
//   - a response cache on disk keyed by (model, API, messages or prompt, sampling parameters, seed).
// The API key comes from an environment variable named by the caller; it is never printed.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import OpenAI from 'openai';
import { writeFileAtomic } from '../models/atomic.js';
import { mapLimit } from '../rl/environment.js';
import { mixSeed, type AnswerOptions, type Student, type StudentAnswer, type StudentRequest, type StudentStats } from './student.js';
import { studentPrompt, type WstTemplates } from './templates.js';

export interface HttpStudentOptions {
  /** Base URLs, e.g. http://127.0.0.1:8000/v1. */
  endpoints: readonly string[];
  model: string;
  /** /v1/chat/completions (default) or /v1/completions. */
  api?: 'chat' | 'completions';
  /** completions: the prompt templates; chat: the instruction goes as `instructionAs`. */
  templates: WstTemplates;
  /** chat: the instruction as a system message (default) or prepended to the user message. */
  instructionAs?: 'system' | 'user';
  /** The name of the environment variable that holds the API key (never printed). */
  apiKeyEnv?: string;
  /** Requests in flight per endpoint (default 8). */
  concurrency?: number;
  /** Per-request time-out (default 60 s). */
  timeoutMs?: number;
  /** Attempts per request across the pool (default 6). */
  maxAttempts?: number;
  /** First backoff (default 500 ms; doubles per attempt, ±50 % jitter, at most 20 s). */
  backoffMs?: number;
  maxTokens?: number;
  stop?: readonly string[];
  topP?: number;
  /** Response cache folder (none by default). */
  cacheDir?: string;
}

export interface HttpStudentStats extends StudentStats {
  retries: number;
  cacheHits: number;
  cacheMisses: number;
  /** Requests that failed after every attempt. */
  failures: number;
}

interface Endpoint {
  url: string;
  client: OpenAI;
  inFlight: number;
  failuresInRow: number;
  restUntil: number;
  restMs: number;
}

class RetryableError extends Error {}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Milliseconds a 429/503 asks to wait (Retry-After: seconds or an HTTP date), if any. */
function retryAfterMs(e: unknown): number | undefined {
  const h = (e as { headers?: Headers | Record<string, string> }).headers;
  const v = h instanceof Headers ? h.get('retry-after') : h?.['retry-after'];
  if (!v) return undefined;
  const s = Number(v);
  if (Number.isFinite(s)) return Math.max(0, s * 1000);
  const t = Date.parse(v);
  return Number.isFinite(t) ? Math.max(0, t - Date.now()) : undefined;
}

/** Whether a failure is worth another attempt, and a one-line cause. */
function classify(e: unknown): { retry: boolean; cause: string } {
  if (e instanceof RetryableError) return { retry: true, cause: e.message };
  if (e instanceof OpenAI.APIConnectionTimeoutError) return { retry: true, cause: 'time-out' };
  if (e instanceof OpenAI.APIConnectionError) return { retry: true, cause: `connection failed (${(e.cause as Error | undefined)?.message ?? e.message})` };
  if (e instanceof OpenAI.APIError) {
    const s = e.status ?? 0;
    const msg = `HTTP ${s}${e.message ? `: ${e.message.slice(0, 200)}` : ''}`;
    return { retry: s === 408 || s === 409 || s === 429 || s >= 500 || s === 0, cause: msg };
  }
  if (e instanceof SyntaxError) return { retry: true, cause: `a body that is not JSON (${e.message.slice(0, 120)})` };
  return { retry: false, cause: (e as Error)?.message ?? String(e) };
}

export function httpStudent(o: HttpStudentOptions): Student & { readonly stats: HttpStudentStats } {
  if (!o.endpoints.length) throw new RangeError('httpStudent: at least one endpoint is required');
  for (const u of o.endpoints) if (!/^https?:\/\//.test(u)) throw new RangeError(`httpStudent: endpoint "${u}" must be an http(s) URL`);
  if (!o.model) throw new RangeError('httpStudent: model is required');
  const api = o.api ?? 'chat';
  const concurrency = o.concurrency ?? 8, maxAttempts = o.maxAttempts ?? 6, backoff = o.backoffMs ?? 500;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be a positive integer, got ${concurrency}`);
  if (o.apiKeyEnv && process.env[o.apiKeyEnv] === undefined) throw new Error(`httpStudent: the API key variable $${o.apiKeyEnv} is not set`);
  const apiKey = o.apiKeyEnv ? process.env[o.apiKeyEnv]! : 'not-needed';
  const endpoints: Endpoint[] = o.endpoints.map((url) => ({
    url, inFlight: 0, failuresInRow: 0, restUntil: 0, restMs: 1000,
    client: new OpenAI({ apiKey, baseURL: url, timeout: o.timeoutMs ?? 60_000, maxRetries: 0 }),
  }));
  const stats: HttpStudentStats = { requests: 0, deduplicated: 0, promptTokens: 0, completionTokens: 0, seconds: 0, retries: 0, cacheHits: 0, cacheMisses: 0, failures: 0 };
  const waiters: (() => void)[] = [];
  const wake = () => { while (waiters.length) waiters.shift()!(); };

  /** An endpoint with a free slot (fewest in flight, not resting); waits when none has one. */
  const acquire = async (avoid?: Endpoint): Promise<Endpoint> => {
    for (;;) {
      const now = Date.now();
      const open = endpoints.filter((e) => e.restUntil <= now && e.inFlight < concurrency);
      const pick = open.filter((e) => e !== avoid).sort((a, b) => a.inFlight - b.inFlight)[0] ?? open[0];
      if (pick) {
        pick.inFlight++;
        return pick;
      }
      const nextRest = Math.min(...endpoints.map((e) => (e.restUntil > now ? e.restUntil : Infinity)));
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        if (Number.isFinite(nextRest)) setTimeout(wake, nextRest - now + 1);
      });
    }
  };
  const release = (e: Endpoint) => {
    e.inFlight--;
    wake();
  };

  const call = async (body: Record<string, unknown>): Promise<StudentAnswer> => {
    let last: { url: string; cause: string } | undefined, prev: Endpoint | undefined;
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const ep = await acquire(prev);
      prev = ep;
      let wait: number | undefined;
      try {
        const res = api === 'chat'
          ? await ep.client.chat.completions.create(body as never) as unknown as OpenAI.Chat.ChatCompletion
          : await ep.client.completions.create(body as never) as unknown as OpenAI.Completion;
        const choice = res?.choices?.[0] as { message?: { content?: unknown }; text?: unknown } | undefined;
        const text = api === 'chat' ? choice?.message?.content : choice?.text;
        if (typeof text !== 'string') throw new RetryableError(choice ? 'a choice without text' : 'no choices in the response');
        ep.failuresInRow = 0;
        ep.restMs = 1000;
        return { text, promptTokens: res.usage?.prompt_tokens ?? 0, completionTokens: res.usage?.completion_tokens ?? 0 };
      } catch (e) {
        const { retry, cause } = classify(e);
        last = { url: ep.url, cause };
        if (!retry) break;
        stats.retries++;
        wait = retryAfterMs(e);
        if (++ep.failuresInRow >= 3) {
          // Rested: no request goes there for restMs (doubling while it keeps failing after rests).
          ep.failuresInRow = 0;
          ep.restUntil = Date.now() + ep.restMs;
          ep.restMs = Math.min(30_000, ep.restMs * 2);
        }
      } finally {
        release(ep);
      }
      if (attempt + 1 < maxAttempts) await sleep(Math.min(20_000, wait ?? backoff * 2 ** attempt * (0.5 + Math.random())));
    }
    stats.failures++;
    throw new Error(`student ${last?.url}: ${last?.cause} (${maxAttempts} attempts at most; the step cannot go on without this answer)`);
  };

  const cacheFile = (body: Record<string, unknown>) =>
    path.join(o.cacheDir!, createHash('sha256').update(JSON.stringify({ api, ...body })).digest('hex') + '.json');

  return {
    name: `http:${o.model}`,
    stats,
    async answer(requests: readonly StudentRequest[], a: AnswerOptions = {}) {
      const samples = a.samples ?? 1, temperature = a.temperature ?? 0;
      if (!Number.isInteger(samples) || samples < 1) throw new RangeError(`samples must be a positive integer, got ${samples}`);
      const t0 = performance.now();
      if (o.cacheDir) await mkdir(o.cacheDir, { recursive: true });
      const jobs = requests.flatMap((r, i) => Array.from({ length: samples }, (_, k) => ({ r, i, k })));
      const answers = await mapLimit(jobs, concurrency * endpoints.length, async ({ r, i, k }) => {
        const sampling = {
          model: o.model, temperature, max_tokens: a.maxTokens ?? o.maxTokens ?? 256,
          ...(o.topP !== undefined ? { top_p: o.topP } : {}), ...(o.stop?.length ? { stop: [...o.stop] } : {}),
          // Sampled answers carry a seed per (call, request, sample); greedy ones need none.
          ...(temperature > 0 ? { seed: mixSeed(a.seed ?? 0, i, k) } : {}),
        };
        const body: Record<string, unknown> = api === 'chat'
          ? { ...sampling, messages: chatMessages(r, o.instructionAs ?? 'system') }
          : { ...sampling, prompt: studentPrompt(o.templates, r.instruction, r.query) };
        if (o.cacheDir) {
          const file = cacheFile(body);
          if (existsSync(file)) {
            stats.cacheHits++;
            return JSON.parse(await readFile(file, 'utf8')) as StudentAnswer;
          }
          stats.cacheMisses++;
          const ans = await call(body);
          await writeFileAtomic(file, JSON.stringify(ans));
          return ans;
        }
        return call(body);
      });
      stats.requests += requests.length;
      for (const x of answers) {
        stats.promptTokens += x.promptTokens;
        stats.completionTokens += x.completionTokens;
      }
      stats.seconds += (performance.now() - t0) / 1000;
      return requests.map((_, i) => answers.slice(i * samples, (i + 1) * samples));
    },
  };
}

function chatMessages(r: StudentRequest, as: 'system' | 'user'): { role: 'system' | 'user'; content: string }[] {
  if (!r.instruction) return [{ role: 'user', content: r.query }];
  return as === 'system' ? [{ role: 'system', content: r.instruction }, { role: 'user', content: r.query }] : [{ role: 'user', content: `${r.instruction}\n\n${r.query}` }];
}
