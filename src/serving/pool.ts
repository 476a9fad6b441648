// A pool of HTTP endpoints that loses nothing: what the WST student, the LLM judge and the HTTP
// scorer share (one retry policy, in one place).
//   - requests spread over the endpoints (fewest in flight first), at most `concurrency` each;
//   - 408/409/429/5xx, time-outs, refused or reset connections, bodies that are not JSON or lack
//     what the caller needs (RetryableError): retried with exponential backoff and jitter (429/503:
//     Retry-After honoured), on another endpoint when there is one; an endpoint failing 3 times in a
//     row is rested (1 s, doubling to 30 s);
//   - 400/401/403/404: not retried (the request or the key is wrong);
//   - after the last attempt: an error naming the endpoint and the cause; the caller's step fails,
//     so no reward is ever silently missing or zero.
// Plus a response cache on disk (atomic writes; keys hash everything that determines a response).
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import OpenAI from 'openai';
import { writeFileAtomic } from '../models/atomic.js';

export interface PoolOptions {
  /** Base URLs. */
  endpoints: readonly string[];
  /** What the pool serves, for errors ("student", "judge", "scorer"). */
  label: string;
  /** Requests in flight per endpoint (default 8). */
  concurrency?: number;
  /** Per-request time-out (default 60 s). */
  timeoutMs?: number;
  /** Attempts per request across the pool (default 6). */
  maxAttempts?: number;
  /** First backoff (default 500 ms; doubles per attempt, ±50 % jitter, at most 20 s). */
  backoffMs?: number;
  /** The name of the environment variable that holds the API key (never printed). */
  apiKeyEnv?: string;
}

export interface PoolStats {
  retries: number;
  /** Requests that failed after every attempt. */
  failures: number;
}

export interface PoolEndpoint {
  url: string;
  /** The official client for this endpoint (its own retries off: the pool retries). */
  client: OpenAI;
  /** The API key, for callers that speak plain HTTP (empty when none). */
  apiKey: string;
  timeoutMs: number;
}

interface EndpointState extends PoolEndpoint {
  inFlight: number;
  failuresInRow: number;
  restUntil: number;
  restMs: number;
}

/** A response the caller cannot use (no choice, no score): worth another attempt. */
export class RetryableError extends Error {}

/** A non-2xx answer of a plain-HTTP caller (retried like the client's API errors). */
export class HttpStatusError extends Error {
  constructor(readonly status: number, message: string, readonly headers: Headers) {
    super(message);
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Milliseconds a 429/503 asks to wait (Retry-After: seconds or an HTTP date), if any. */
export function retryAfterMs(e: unknown): number | undefined {
  const h = (e as { headers?: Headers | Record<string, string> }).headers;
  const v = h instanceof Headers ? h.get('retry-after') : h?.['retry-after'];
  if (!v) return undefined;
  const s = Number(v);
  if (Number.isFinite(s)) return Math.max(0, s * 1000);
  const t = Date.parse(v);
  return Number.isFinite(t) ? Math.max(0, t - Date.now()) : undefined;
}

const retryStatus = (s: number) => s === 408 || s === 409 || s === 429 || s >= 500 || s === 0;

/** Whether a failure is worth another attempt, and a one-line cause. */
export function classify(e: unknown): { retry: boolean; cause: string } {
  if (e instanceof RetryableError) return { retry: true, cause: e.message };
  if (e instanceof OpenAI.APIConnectionTimeoutError) return { retry: true, cause: 'time-out' };
  if (e instanceof OpenAI.APIConnectionError) return { retry: true, cause: `connection failed (${(e.cause as Error | undefined)?.message ?? e.message})` };
  if (e instanceof OpenAI.APIError || e instanceof HttpStatusError) {
    const s = e.status ?? 0;
    return { retry: retryStatus(s), cause: `HTTP ${s}${e.message ? `: ${e.message.slice(0, 200)}` : ''}` };
  }
  if (e instanceof SyntaxError) return { retry: true, cause: `a body that is not JSON (${e.message.slice(0, 120)})` };
  const name = (e as Error)?.name;
  if (name === 'TimeoutError' || name === 'AbortError') return { retry: true, cause: 'time-out' };
  // fetch: refused or reset connections ("fetch failed", the cause names the socket error)
  if (e instanceof TypeError && /fetch failed|terminated/.test(e.message))
    return { retry: true, cause: `connection failed (${((e as Error & { cause?: Error }).cause?.message) ?? e.message})` };
  return { retry: false, cause: (e as Error)?.message ?? String(e) };
}

export interface EndpointPool {
  readonly stats: PoolStats;
  /** Requests in flight at most, over every endpoint. */
  readonly capacity: number;
  /** Runs `fn` on an endpoint, retrying per the policy above; throws after the last attempt. */
  call<T>(fn: (ep: PoolEndpoint) => Promise<T>): Promise<T>;
}

export function endpointPool(o: PoolOptions): EndpointPool {
  if (!o.endpoints.length) throw new RangeError(`${o.label}: at least one endpoint is required`);
  for (const u of o.endpoints) if (!/^https?:\/\//.test(u)) throw new RangeError(`${o.label}: endpoint "${u}" must be an http(s) URL`);
  const concurrency = o.concurrency ?? 8, maxAttempts = o.maxAttempts ?? 6, backoff = o.backoffMs ?? 500, timeoutMs = o.timeoutMs ?? 60_000;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be a positive integer, got ${concurrency}`);
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) throw new RangeError(`maxAttempts must be a positive integer, got ${maxAttempts}`);
  if (o.apiKeyEnv && process.env[o.apiKeyEnv] === undefined) throw new Error(`${o.label}: the API key variable $${o.apiKeyEnv} is not set`);
  const apiKey = o.apiKeyEnv ? process.env[o.apiKeyEnv]! : '';
  const endpoints: EndpointState[] = o.endpoints.map((url) => ({
    url, apiKey, timeoutMs, inFlight: 0, failuresInRow: 0, restUntil: 0, restMs: 1000,
    client: new OpenAI({ apiKey: apiKey || 'not-needed', baseURL: url, timeout: timeoutMs, maxRetries: 0 }),
  }));
  const stats: PoolStats = { retries: 0, failures: 0 };
  const waiters: (() => void)[] = [];
  const wake = () => { while (waiters.length) waiters.shift()!(); };

  /** An endpoint with a free slot (fewest in flight, not resting); waits when none has one. */
  const acquire = async (avoid?: EndpointState): Promise<EndpointState> => {
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

  return {
    stats,
    capacity: concurrency * endpoints.length,
    async call<T>(fn: (ep: PoolEndpoint) => Promise<T>): Promise<T> {
      let last: { url: string; cause: string } | undefined, prev: EndpointState | undefined;
      for (let attempt = 0; attempt < maxAttempts; attempt++) {
        const ep = await acquire(prev);
        prev = ep;
        let wait: number | undefined;
        try {
          const out = await fn(ep);
          ep.failuresInRow = 0;
          ep.restMs = 1000;
          return out;
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
          ep.inFlight--;
          wake();
        }
        if (attempt + 1 < maxAttempts) await sleep(Math.min(20_000, wait ?? backoff * 2 ** attempt * (0.5 + Math.random())));
      }
      stats.failures++;
      throw new Error(`${o.label} ${last?.url}: ${last?.cause} (${maxAttempts} attempts at most; the step cannot go on without this answer)`);
    },
  };
}

export interface DiskCache<T> {
  hits: number;
  misses: number;
  /** The cached value for `key`, or `compute()` stored under it (atomically). */
  getOrCompute(key: unknown, compute: () => Promise<T>): Promise<T>;
}

/** A response cache in `dir` (none when dir is undefined): one JSON file per sha256 of the key. */
export function diskCache<T>(dir: string | undefined): DiskCache<T> {
  const cache: DiskCache<T> = {
    hits: 0, misses: 0,
    async getOrCompute(key, compute) {
      if (!dir) return compute();
      await mkdir(dir, { recursive: true });
      const file = path.join(dir, createHash('sha256').update(JSON.stringify(key)).digest('hex') + '.json');
      if (existsSync(file)) {
        cache.hits++;
        return JSON.parse(await readFile(file, 'utf8')) as T;
      }
      cache.misses++;
      const value = await compute();
      await writeFileAtomic(file, JSON.stringify(value));
      return value;
    },
  };
  return cache;
}

/** POST a JSON body to `url` within the endpoint's time-out; a non-2xx answer throws HttpStatusError. */
export async function postJson(ep: PoolEndpoint, url: string, body: unknown): Promise<unknown> {
  const res = await fetch(url, {
    method: 'POST', signal: AbortSignal.timeout(ep.timeoutMs),
    headers: { 'content-type': 'application/json', ...(ep.apiKey ? { authorization: `Bearer ${ep.apiKey}` } : {}) },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new HttpStatusError(res.status, text.slice(0, 200), res.headers);
  return JSON.parse(text) as unknown;
}

/** Running counts of a pool and its cache, read live (getters), for a caller's stats object. */
export function defineLiveCounts<T extends object>(stats: T, pool: EndpointPool, cache: DiskCache<unknown>): T {
  return Object.defineProperties(stats, {
    retries: { get: () => pool.stats.retries, enumerable: true },
    failures: { get: () => pool.stats.failures, enumerable: true },
    cacheHits: { get: () => cache.hits, enumerable: true },
    cacheMisses: { get: () => cache.misses, enumerable: true },
  });
}
