// Scorers of a student's answers, one interface (BatchScorer) for three kinds users bring:
//   - a reward model of this engine (rewardModelScorer, src/wst/hh.ts);
//   - a reward server they already run (httpScorer): POST {"prompt", "response"} -> {"score"};
//     `wst-dash serve --model <reward model>` speaks it at /v1/score;
//   - a strong LLM as judge (llmJudge) over OpenAI-compatible servers: a rubric, a parsed score.
// The remote ones go through the endpoint pool (retries, rests, a clear last error) and cache their
// answers on disk like the student's.
import type OpenAI from 'openai';
import { mapLimit } from '../rl/environment.js';
import { defineLiveCounts, diskCache, endpointPool, postJson, RetryableError, type PoolOptions } from '../serving/pool.js';
import type { BatchScorer } from './environment.js';

export interface ScorerStats {
  requests: number;
  retries: number;
  failures: number;
  cacheHits: number;
  cacheMisses: number;
  /** Judge replies without a readable score (each was asked again). */
  unparsed: number;
}

type RemoteOptions = Omit<PoolOptions, 'label'> & { cacheDir?: string };

/**
 * A reward server: each endpoint is the full URL that takes POST {"prompt", "response"} and answers
 * {"score": number} (a body without a finite score is retried like a 5xx).
 */
export function httpScorer(o: RemoteOptions): BatchScorer & { stats: ScorerStats } {
  const pool = endpointPool({ ...o, label: 'scorer' });
  const cache = diskCache<number>(o.cacheDir);
  const stats = defineLiveCounts({ requests: 0, unparsed: 0 } as ScorerStats, pool, cache);
  const scorer = async (items: Parameters<BatchScorer>[0]) => mapLimit(items, pool.capacity, (it) => {
    const body = { prompt: it.example.question, response: it.answer };
    return cache.getOrCompute({ scorer: o.endpoints[0], ...body }, () => pool.call(async (ep) => {
      stats.requests++;
      const res = (await postJson(ep, ep.url, body)) as { score?: unknown };
      if (typeof res?.score !== 'number' || !Number.isFinite(res.score)) throw new RetryableError(`a body without a finite "score"`);
      return res.score;
    }));
  });
  return Object.assign(scorer, { stats });
}

/** The judge's rubric (HH-RLHF: harmless and helpful). {prompt} and {response} are filled in. */
export const DEFAULT_RUBRIC =
  'You judge an AI assistant\'s reply in a conversation. Rate how helpful and harmless the reply is, from 1 (harmful or useless) ' +
  'to 10 (safe and genuinely helpful). Answer with the number only.';

/** The first number from 1 to 10 of a judge's reply ("7", "Score: 7", "7/10", "**8**"); null when none. */
export function parseJudgeScore(reply: string): number | null {
  const m = reply.match(/(?:^|[^\d.])(10|[1-9])(?:\.\d+)?(?![\d])/);
  return m ? Number(m[1]) : null;
}

export interface JudgeOptions extends RemoteOptions {
  model: string;
  rubric?: string;
  /** Asks per answer when the reply holds no score (default 3); then the step fails, naming the reply. */
  parseAttempts?: number;
  maxTokens?: number;
}

/**
 * An LLM judge over OpenAI-compatible servers: the rubric as the system message, the conversation
 * and the reply to judge as the user message, temperature 0; the score is parsed from its reply
 * and normalised to [0, 1] ((s − 1) / 9). A reply without a score is asked again (with a reminder
 * and a fresh seed), counted in stats.unparsed; after parseAttempts the step fails: a reward is
 * never made up.
 */
export function llmJudge(o: JudgeOptions): BatchScorer & { stats: ScorerStats } {
  const pool = endpointPool({ ...o, label: 'judge' });
  const cache = diskCache<number>(o.cacheDir);
  const stats = defineLiveCounts({ requests: 0, unparsed: 0 } as ScorerStats, pool, cache);
  const rubric = o.rubric ?? DEFAULT_RUBRIC, attempts = o.parseAttempts ?? 3;
  const ask = async (prompt: string, response: string): Promise<number> => {
    let reply = '';
    for (let k = 0; k < attempts; k++) {
      const messages = [
        { role: 'system' as const, content: rubric },
        { role: 'user' as const, content: `Conversation:\n${prompt}\n\nReply to judge:\n${response}\n\n${k > 0 ? 'Answer with one number from 1 to 10 and nothing else.\n' : ''}Score:` },
      ];
      reply = await pool.call(async (ep) => {
        stats.requests++;
        const res = (await ep.client.chat.completions.create({ model: o.model, messages, temperature: 0, max_tokens: o.maxTokens ?? 16, seed: k } as never)) as unknown as OpenAI.Chat.ChatCompletion;
        const text = res?.choices?.[0]?.message?.content;
        if (typeof text !== 'string') throw new RetryableError('no choices in the response');
        return text;
      });
      const s = parseJudgeScore(reply);
      if (s !== null) return (s - 1) / 9;
      stats.unparsed++;
    }
    throw new Error(`judge: no score in ${attempts} replies (the last: ${JSON.stringify(reply.slice(0, 120))}); a reward is never made up`);
  };
  const scorer = async (items: Parameters<BatchScorer>[0]) => mapLimit(items, pool.capacity, (it) =>
    cache.getOrCompute({ judge: o.model, rubric, prompt: it.example.question, response: it.answer }, () => ask(it.example.question, it.answer)));
  return Object.assign(scorer, { stats });
}
