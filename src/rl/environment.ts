// The environment a policy acts in. One RL step is: rollout (the policy writes a completion per
// prompt) → the environment scores the whole step's completions at once (async, batched; it may
// answer them concurrently, within its own limit) → update. Answer checking on a task is one
// environment; WST's student (src/wst/) is another: there the completion is an instruction, and
// the reward is the frozen student's outcome under it.
import type { Example, Task } from './tasks/common.js';

/** One completion of the policy, as the environment sees it. */
export interface Rollout<E extends Example = Example> {
  example: E;
  /** The text the policy continued (environment.prompt(example)). */
  prompt: string;
  /** The policy's completion (decoded, cut before a stop string). */
  completion: string;
  /** The index of the rollout's group (its query) within the step; G rollouts share one. */
  group: number;
}

export interface EnvironmentResult {
  /** One reward per rollout, finite. */
  rewards: number[];
  /** Whether each rollout's outcome was right (for accuracy metrics), when the environment knows. */
  correct?: boolean[];
  /**
   * Step metrics, additive (counts, tokens, seconds): the trainer sums them over a step's calls
   * (per-micro-batch generation calls the environment once per micro-batch). Report a rate as its
   * numerator and denominator.
   */
  metrics?: Record<string, number>;
}

export interface ScoreContext {
  /** The optimizer step (or -1 for evaluation). */
  step: number;
  /** A seed the environment may use for its own sampling (a student's, say). */
  seed: number;
}

export interface Environment<E extends Example = Example> {
  readonly name: string;
  /** Stop strings for the policy's generation. */
  readonly stop: readonly string[];
  /** The text the policy continues for this query. */
  prompt(example: E): string;
  /** Scores a whole step's rollouts at once. Must return exactly one finite reward per rollout. */
  score(rollouts: readonly Rollout<E>[], context: ScoreContext): Promise<EnvironmentResult>;
}

export type RewardFn = (prompt: string, completion: string, example: Example) => number | Promise<number>;

/**
 * `fn` over `items` with at most `limit` calls in flight, results in input order. A rejection
 * rejects the whole map (after the calls in flight settle), so a step never goes on with a
 * missing reward.
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R> | R): Promise<R[]> {
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`concurrency must be a positive integer, got ${limit}`);
  const out = new Array<R>(items.length);
  let next = 0, failed: { error: unknown } | undefined;
  const worker = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i], i);
      } catch (error) {
        failed ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failed) throw failed.error;
  return out;
}

export interface TaskEnvironmentOptions {
  /** The reward of one completion (default: 1 when the task's checker accepts its answer, else 0). */
  reward?: RewardFn;
  /** Most reward calls in flight at once (default 16). */
  concurrency?: number;
}

/** A task as an environment: the policy answers the query itself; its answer is checked. */
export function taskEnvironment<E extends Example>(task: Task<E>, options: TaskEnvironmentOptions = {}): Environment<E> {
  const reward = options.reward;
  const concurrency = options.concurrency ?? 16;
  return {
    name: task.name,
    stop: task.stop,
    prompt: (example) => task.prompt(example),
    async score(rollouts) {
      const correct = rollouts.map((r) => task.isCorrect(r.completion, r.example));
      const rewards = reward
        ? await mapLimit(rollouts, concurrency, async (r) => {
          const v = await reward(r.prompt, r.completion, r.example);
          if (typeof v !== 'number' || !Number.isFinite(v)) throw new TypeError(`reward for example ${r.example.id} must be a finite number, got ${String(v)}`);
          return v;
        })
        : correct.map((c) => (c ? 1 : 0));
      return { rewards, correct };
    },
  };
}

/** Whether `x` is an Environment (rather than a Task). */
export function isEnvironment(x: Task | Environment): x is Environment {
  return typeof (x as Environment).score === 'function';
}
