// A frozen student behind OpenAI-compatible servers (vLLM, SGLang, llama-server, Ollama, a hosted
// API): the endpoint pool of src/serving/pool.ts (spread, retries, rests, a clear last error) with
// the official `openai` client for the wire format (its own retries off: they stay on one endpoint
// and accept bodies we must refuse, such as empty choices), and a response cache on disk keyed by
// (model, API, messages or prompt, sampling parameters, seed). The API key comes from an
// environment variable named by the caller; it is never printed.
import type OpenAI from 'openai';
import { mapLimit } from '../rl/environment.js';
import { defineLiveCounts, diskCache, endpointPool, RetryableError } from '../serving/pool.js';
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

export function httpStudent(o: HttpStudentOptions): Student & { readonly stats: HttpStudentStats } {
  if (!o.model) throw new RangeError('httpStudent: model is required');
  const api = o.api ?? 'chat';
  const pool = endpointPool({ ...o, label: 'student' });
  const cache = diskCache<StudentAnswer>(o.cacheDir);
  // Live counts: the pool's retries and failures and the cache's hits and misses as they happen.
  const stats = defineLiveCounts({ requests: 0, deduplicated: 0, promptTokens: 0, completionTokens: 0, seconds: 0 } as HttpStudentStats, pool, cache);

  const call = (body: Record<string, unknown>): Promise<StudentAnswer> => pool.call(async (ep) => {
    const res = api === 'chat'
      ? await ep.client.chat.completions.create(body as never) as unknown as OpenAI.Chat.ChatCompletion
      : await ep.client.completions.create(body as never) as unknown as OpenAI.Completion;
    const choice = res?.choices?.[0] as { message?: { content?: unknown }; text?: unknown } | undefined;
    const text = api === 'chat' ? choice?.message?.content : choice?.text;
    if (typeof text !== 'string') throw new RetryableError(choice ? 'a choice without text' : 'no choices in the response');
    return { text, promptTokens: res.usage?.prompt_tokens ?? 0, completionTokens: res.usage?.completion_tokens ?? 0 };
  });

  return {
    name: `http:${o.model}`,
    stats,
    async answer(requests: readonly StudentRequest[], a: AnswerOptions = {}) {
      const samples = a.samples ?? 1, temperature = a.temperature ?? 0;
      if (!Number.isInteger(samples) || samples < 1) throw new RangeError(`samples must be a positive integer, got ${samples}`);
      const t0 = performance.now();
      const jobs = requests.flatMap((r, i) => Array.from({ length: samples }, (_, k) => ({ r, i, k })));
      const answers = await mapLimit(jobs, pool.capacity, async ({ r, i, k }) => {
        const sampling = {
          model: o.model, temperature, max_tokens: a.maxTokens ?? o.maxTokens ?? 256,
          ...(o.topP !== undefined ? { top_p: o.topP } : {}), ...(o.stop?.length ? { stop: [...o.stop] } : {}),
          // Sampled answers carry a seed per (call, request, sample); greedy ones need none.
          ...(temperature > 0 ? { seed: mixSeed(a.seed ?? 0, i, k) } : {}),
        };
        const body: Record<string, unknown> = api === 'chat'
          ? { ...sampling, messages: chatMessages(r, o.instructionAs ?? 'system') }
          : { ...sampling, prompt: studentPrompt(o.templates, r.instruction, r.query) };
        return cache.getOrCompute({ api, ...body }, () => call(body));
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
