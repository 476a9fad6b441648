// One RL/SFT trainer loop. SFT, GRPO (two faithful baselines) and DASH are options of the same
// loop, not copies:
//   generation 'per-microbatch'  GRPO as TRL 0.16 ran it: each backprop micro-batch generates for
//                                its own few prompts, then backprops (β = 0.04 by default).
//   generation 'decoupled'       GRPO as TRL >= 0.18 / verl: one generation per optimizer step.
//   DASH                         preemptive sampling (one large inference batch per optimizer step,
//                                sized for inference, independent of the backprop micro-batch) +
//                                gradient filtering (|A| <= τ never reaches the training forward) +
//                                no KL (no reference forward), and the prompt shared in the
//                                training forward (computed once per group; sharePrefix).
// One step: rollout (the policy generates) → the environment scores the step's completions at once
// (src/rl/environment.ts: a task's answer checker, or WST's frozen student) → update. The policy
// being trained and whatever produces the rewards are different objects.
// The algorithms' settings live in one place: src/rl/presets.ts.
import { existsSync } from 'node:fs';
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { writeFileAtomic } from '../models/atomic.js';
import path from 'node:path';
import { checkFilterThreshold, type GrpoStepOptions, type Model, type StepResult, type TrainBatch } from '../models/model.js';
import { isEnvironment, taskEnvironment, type Environment, type RewardFn, type Rollout } from './environment.js';
import type { Example, Task } from './tasks/common.js';

export type { RewardFn } from './environment.js';

/** 1 when the task's checker accepts the completion's final answer, else 0. */
export function correctnessReward(task: Task): RewardFn {
  return (_prompt, completion, example) => (task.isCorrect(completion, example) ? 1 : 0);
}

export { DASH_TAU } from './presets.js';

export type GenerationMode = 'per-microbatch' | 'decoupled' | 'preemptive';
export type LossType = 'grpo' | 'bnpo' | 'dr_grpo' | 'dapo';

export interface RlOptions {
  /** What the policy acts in and is scored by (default: taskEnvironment(task, { reward })). */
  environment?: Environment;
  /** A task whose answer checker scores the policy's own answers (when no environment is given). */
  task?: Task;
  policy: Model;
  /** Frozen reference for the KL term (needed when beta > 0). */
  reference?: Model;
  /** With `task`: the reward of one completion (default: correctness). Evaluation never calls it. */
  reward?: RewardFn;
  /**
   * What evaluations score with (default: the environment, or with a task its answer checker
   * without `reward`): evaluation must not consume a stateful or costly training reward.
   */
  evalEnvironment?: Environment;
  steps: number;
  promptsPerStep: number;
  /** Completions per prompt (G). */
  groupSize: number;
  generation: GenerationMode;
  /** Sequences per backprop micro-batch. */
  microBatch: number;
  /** Rows decoded together (preemptive/decoupled); default all rows of the step. */
  generationBatch?: number;
  /**
   * Compute each prompt once per micro-batch in the training (and reference) forward/backward, the
   * group's completions reading its keys (Model.trainGrpo sharePrefix): same gradients up to
   * rounding. Default: on for DASH ('preemptive'), off for the GRPO baselines (TRL computes every
   * sequence in full).
   */
  sharePrefix?: boolean;
  /** Drop sequences with |A| <= τ before the training forward (DASH); null or omitted keeps all. */
  filterThreshold?: number | null;
  /**
   * Updates per generated batch (PPO-style reuse, TRL's num_iterations, μ): each is an optimizer
   * step with the clipped ratio against the log-probs the policy gave the batch before the first
   * update. Default 1 (ratio 1, no extra scoring pass). Not with per-micro-batch generation.
   */
  iterations?: number;
  beta: number;
  clipLow?: number;
  clipHigh?: number;
  lossType?: LossType;
  /** Divide advantages by the group's std (Dr. GRPO turns this off). */
  scaleRewards?: boolean;
  lr: number;
  warmupSteps?: number;
  schedule?: 'constant' | 'linear' | 'cosine';
  weightDecay?: number;
  maxGradNorm?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  maxNewTokens: number;
  seed: number;
  /** Examples to draw prompts from (default: task.examples('train', { seed })). */
  trainExamples?: Example[];
  /** Held-out examples for periodic evaluation. */
  evalExamples?: Example[];
  evalEvery?: number;
  /** JSONL file: one line of metrics per optimizer step (and per evaluation). */
  metricsFile?: string;
  onStep?: (m: StepMetrics) => void;
  onEval?: (e: EvalResult & { step: number; trainSeconds: number }) => void;
  /** Save policy + AdamW state + trainer position here every `checkpointEvery` steps (atomic). */
  checkpointDir?: string;
  checkpointEvery?: number;
  /**
   * Resume from a policy loaded with Model.load(checkpointDir): its trainingState.rl says which
   * step comes next, so the continuation takes exactly the steps an uninterrupted run would.
   */
  resume?: boolean;
  /** Resume even when the run's settings differ from the checkpoint's (default false: refused, naming them). */
  resumeForce?: boolean;
}

interface RlCheckpointState {
  step: number;
  cursor: number;
  trainSeconds: number;
  /** The settings that decide the run's bits (checked on resume). */
  settings?: Record<string, unknown>;
}

/** What a resumed run must share with the run that wrote the checkpoint. */
function runSettings(o: RlOptions, env: Environment): Record<string, unknown> {
  return {
    environment: env.name, seed: o.seed, generation: o.generation, promptsPerStep: o.promptsPerStep, groupSize: o.groupSize,
    microBatch: o.microBatch, filterThreshold: o.filterThreshold ?? null, beta: o.beta, lr: o.lr, temperature: o.temperature ?? 1,
    maxNewTokens: o.maxNewTokens, iterations: o.iterations ?? 1, lossType: o.lossType ?? 'grpo', sharePrefix: o.sharePrefix ?? o.generation === 'preemptive',
  };
}

/** Keeps the metrics lines of steps (and evaluations) up to `step`: a resumed run rewrites what followed. */
async function truncateMetrics(file: string, step: number): Promise<void> {
  if (!existsSync(file)) return;
  const lines = (await readFile(file, 'utf8')).split('\n').filter((l) => l.trim() !== '');
  const keep = lines.filter((l) => {
    try {
      const r = JSON.parse(l) as { step?: number };
      return typeof r.step !== 'number' || r.step <= step;
    } catch {
      return false; // a line cut by a kill mid-write
    }
  });
  await writeFileAtomic(file, keep.map((l) => l + '\n').join(''));
}

export interface StepMetrics {
  step: number;
  reward: number;
  accuracy: number;
  keptFraction: number;
  clipFraction: number;
  kl: number;
  entropy: number;
  completionLength: number;
  tokensGenerated: number;
  loss: number;
  gradNorm: number;
  lr: number;
  seconds: { generate: number; score: number; train: number; total: number };
  /** The environment's own metrics for the step (e.g. the student's tokens and accuracy). */
  env?: Record<string, number>;
  /** Wall time of training so far (evaluation excluded). */
  elapsed: number;
}

export interface EvalResult {
  accuracy: number;
  /** Mean reward (equals accuracy for 0/1 rewards). */
  reward: number;
  n: number;
  seconds: number;
}

export interface RlResult {
  steps: StepMetrics[];
  evals: (EvalResult & { step: number; trainSeconds: number })[];
  seconds: number;
}

const now = () => performance.now() / 1000;

export function learningRate(opts: Pick<RlOptions, 'lr' | 'warmupSteps' | 'schedule' | 'steps'>, step: number): number {
  const warm = opts.warmupSteps ?? 0;
  if (step < warm) return (opts.lr * (step + 1)) / warm;
  const t = opts.steps > warm ? (step - warm) / (opts.steps - warm) : 0;
  switch (opts.schedule ?? 'constant') {
    case 'linear':
      return opts.lr * (1 - t);
    case 'cosine':
      return opts.lr * 0.5 * (1 + Math.cos(Math.PI * t));
    default:
      return opts.lr;
  }
}

/** Group-normalised advantages: (r - mean_group) / (std_group + 1e-4) (std off: r - mean). */
export function groupAdvantages(rewards: readonly number[], groupSize: number, scale = true): number[] {
  const out = new Array<number>(rewards.length);
  for (let g = 0; g < rewards.length; g += groupSize) {
    const grp = rewards.slice(g, g + groupSize);
    const mean = grp.reduce((a, b) => a + b, 0) / grp.length;
    // unbiased std, as torch.std (TRL)
    const std = grp.length > 1 ? Math.sqrt(grp.reduce((a, b) => a + (b - mean) ** 2, 0) / (grp.length - 1)) : 0;
    for (let i = 0; i < grp.length; i++) out[g + i] = scale ? (grp[i] - mean) / (std + 1e-4) : grp[i] - mean;
  }
  return out;
}

interface Sample {
  /** Index of the sample's group (its prompt) within the optimizer step. */
  group: number;
  example: Example;
  prompt: string;
  promptIds: number[];
  ids: number[];
  completion: string;
  reward: number;
  correct: boolean;
  advantage: number;
}

function sliceMicroBatches<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * Micro-batches of at most `size` items made of whole groups where possible: groups of more than
 * `size` items are cut into full micro-batches and a rest; the pieces then go first-fit, largest
 * first, into as few micro-batches as that finds. A group split over two micro-batches would
 * compute its shared prompt twice. Deterministic: ties keep the groups' first appearance order, and
 * items keep their order within a group.
 */
export function packGroups<T>(items: readonly T[], size: number, groupOf: (item: T) => number): T[][] {
  if (!Number.isInteger(size) || size < 1) throw new Error(`packGroups: size must be a positive integer, got ${size}`);
  const groups = new Map<number, T[]>();
  for (const it of items) {
    const g = groupOf(it);
    const list = groups.get(g);
    if (list) list.push(it);
    else groups.set(g, [it]);
  }
  const pieces: T[][] = [];
  for (const list of groups.values()) for (let i = 0; i < list.length; i += size) pieces.push(list.slice(i, i + size));
  const order = pieces.map((_, i) => i).sort((a, b) => pieces[b].length - pieces[a].length || a - b);
  const bins: T[][] = [];
  for (const i of order) {
    const bin = bins.find((b) => b.length + pieces[i].length <= size);
    if (bin) bin.push(...pieces[i]);
    else bins.push([...pieces[i]]);
  }
  return bins;
}

/**
 * Greedy accuracy of `model` on `examples` (batched): the policy writes one completion per example
 * and the environment (or the task's checker) scores them all at once.
 */
export async function evaluate(model: Model, on: Task | Environment, examples: readonly Example[], options: { maxNewTokens: number; batchSize?: number; seed?: number }): Promise<EvalResult> {
  const env = isEnvironment(on) ? on : taskEnvironment(on);
  const t0 = now();
  const prompts = examples.map((e) => env.prompt(e));
  const gens = await model.generate(prompts, {
    maxNewTokens: options.maxNewTokens, temperature: 0, batchSize: options.batchSize ?? 128, stop: env.stop as string[], stepsPerCall: 64,
  });
  const rollouts = gens.map((g, i) => ({ example: examples[i], prompt: prompts[i], completion: g.text ?? '', group: i }));
  const r: { rewards: number[]; correct?: boolean[] } = examples.length ? await env.score(rollouts, { step: -1, seed: options.seed ?? 0 }) : { rewards: [] };
  if (r.rewards.length !== examples.length || (r.correct && r.correct.length !== examples.length))
    throw new Error(`environment ${env.name} returned ${r.rewards.length} rewards${r.correct ? ` and ${r.correct.length} outcomes` : ''} for ${examples.length} completions`);
  const n = examples.length || 1;
  const reward = r.rewards.reduce((a, b) => a + b, 0) / n;
  const accuracy = r.correct ? r.correct.filter(Boolean).length / n : reward;
  return { accuracy: examples.length ? accuracy : 0, reward: examples.length ? reward : 0, n: examples.length, seconds: now() - t0 };
}

export async function trainRl(opts: RlOptions): Promise<RlResult> {
  const { policy } = opts;
  if (!opts.environment && !opts.task) throw new Error('trainRl needs an environment or a task');
  const env: Environment = opts.environment ?? taskEnvironment(opts.task!, { reward: opts.reward });
  const evalEnv: Environment = opts.evalEnvironment ?? opts.environment ?? taskEnvironment(opts.task!);
  if (opts.beta > 0 && !opts.reference) throw new Error('beta > 0 needs a reference model');
  if (!Number.isInteger(opts.groupSize) || opts.groupSize < 2) throw new RangeError(`groupSize must be an integer >= 2 (group advantages compare a prompt's completions), got ${opts.groupSize}`);
  if (opts.generation === 'per-microbatch' && opts.microBatch % opts.groupSize !== 0)
    throw new RangeError(`microBatch (${opts.microBatch}) must be a multiple of groupSize (${opts.groupSize}) for per-micro-batch generation`);
  const tau = checkFilterThreshold(opts.filterThreshold);
  const iterations = opts.iterations ?? 1;
  if (!Number.isInteger(iterations) || iterations < 1) throw new RangeError(`iterations must be a positive integer, got ${iterations}`);
  if (iterations > 1 && opts.generation === 'per-microbatch') throw new RangeError('iterations > 1 needs decoupled or preemptive generation');
  const sharePrefix = opts.sharePrefix ?? opts.generation === 'preemptive';
  const train = opts.trainExamples ?? opts.task?.examples('train', { seed: opts.seed });
  if (!train) throw new Error('trainExamples are required with an environment');
  if (train.length === 0) throw new Error('no training examples');
  const result: RlResult = { steps: [], evals: [], seconds: 0 };
  let trainSeconds = 0;
  let firstStep = 0;
  const saved = opts.resume ? (policy.trainingState?.rl as RlCheckpointState | undefined) : undefined;
  if (opts.resume && !saved) throw new Error('resume: the policy was not loaded from an RL checkpoint (no trainingState.rl)');
  const settings = runSettings(opts, env);
  if (saved?.settings && !opts.resumeForce) {
    const differ = Object.keys(settings).filter((k) => JSON.stringify(settings[k]) !== JSON.stringify(saved.settings![k]));
    if (differ.length) throw new Error(`resume: the settings differ from the checkpoint's (${differ.map((k) => `${k} ${JSON.stringify(saved.settings![k])} → ${JSON.stringify(settings[k])}`).join(', ')}); resume with the same settings, or force it`);
  }
  if (saved && opts.metricsFile) await truncateMetrics(opts.metricsFile, saved.step);
  if (opts.metricsFile) {
    await mkdir(path.dirname(opts.metricsFile), { recursive: true });
    if (!existsSync(opts.metricsFile)) await writeFile(opts.metricsFile, '');
  }
  const log = async (record: object) => {
    if (opts.metricsFile) await appendFile(opts.metricsFile, JSON.stringify(record) + '\n');
  };
  const runEval = async (step: number) => {
    if (!opts.evalExamples?.length) return;
    const e = await evaluate(policy, evalEnv, opts.evalExamples, { maxNewTokens: opts.maxNewTokens, seed: opts.seed });
    const rec = { ...e, step, trainSeconds };
    result.evals.push(rec);
    opts.onEval?.(rec);
    await log({ type: 'eval', ...rec });
  };
  if (saved) {
    firstStep = saved.step;
    trainSeconds = saved.trainSeconds;
  } else await runEval(0);

  const sampling = { temperature: opts.temperature ?? 1, topK: opts.topK ?? 0, topP: opts.topP ?? 1 };
  let cursor = saved ? saved.cursor : (opts.seed * 7919) % train.length;
  const nextPrompts = (n: number) => {
    const out: Example[] = [];
    for (let i = 0; i < n; i++) out.push(train[(cursor++) % train.length]);
    return out;
  };

  // Generates G completions for each example and has the environment score them all at once
  // (rewards, advantages).
  let envMetrics: Record<string, number> = {};
  const rollout = async (examples: Example[], step: number, batch: number, t: { generate: number; score: number }) => {
    const t0 = now();
    const prompts: string[] = [], exs: Example[] = [];
    for (const ex of examples) {
      const prompt = env.prompt(ex);
      for (let g = 0; g < opts.groupSize; g++) { prompts.push(prompt); exs.push(ex); }
    }
    const seeds = prompts.map((_, i) => opts.seed * 1_000_003 + step * 10_007 + i + cursor * 131);
    // With shared prefixes, the training step that follows (same weights) takes the prompts'
    // activations from this generation's prefill instead of recomputing them (CPU).
    const gens = await policy.generate(prompts, { ...sampling, maxNewTokens: opts.maxNewTokens, seed: seeds, batchSize: batch, stop: env.stop as string[], keepPromptActivations: sharePrefix });
    const t1 = now();
    t.generate += t1 - t0;
    const rollouts: Rollout[] = gens.map((g, i) => ({ example: exs[i], prompt: prompts[i], completion: g.text ?? '', group: Math.floor(i / opts.groupSize) }));
    const scored = await env.score(rollouts, { step, seed: opts.seed * 1_000_003 + step * 10_007 + cursor * 131 });
    const rewards = scored.rewards;
    if (!Array.isArray(rewards) || rewards.length !== gens.length) throw new Error(`environment ${env.name} returned ${rewards?.length} rewards for ${gens.length} completions`);
    rewards.forEach((r, i) => { if (typeof r !== 'number' || !Number.isFinite(r)) throw new Error(`environment ${env.name}: reward ${i} is ${String(r)}, not a finite number`); });
    for (const [k, v] of Object.entries(scored.metrics ?? {})) envMetrics[k] = (envMetrics[k] ?? 0) + v;
    const adv = groupAdvantages(rewards, opts.groupSize, opts.scaleRewards ?? true);
    t.score += now() - t1;
    return gens.map<Sample>((g, i) => ({
      group: rollouts[i].group, example: exs[i], prompt: prompts[i], promptIds: g.promptIds, ids: g.ids, completion: rollouts[i].completion,
      reward: rewards[i], correct: scored.correct ? scored.correct[i] : rewards[i] > 0, advantage: adv[i],
    }));
  };

  // Backprop on micro-batches of samples (already filtered); gradients accumulate. The micro-batches
  // given together go to the engine in one call (Model.trainGrpoMany: on the CPU they run
  // concurrently in lanes); per-micro-batch generation hands them over one at a time.
  const backprop = async (microBatches: Sample[][], lossScale: (mb: Sample[]) => number, t: { score: number; train: number }, old?: Map<Sample, Float32Array>) => {
    const calls: { batch: TrainBatch; options: GrpoStepOptions }[] = [];
    for (const mb of microBatches) {
      const sequences = mb.map((s) => [...s.promptIds, ...s.ids]);
      const from = mb.map((s) => s.promptIds.length);
      let ref: Float32Array[] | undefined;
      if (opts.beta > 0) {
        const t0 = now();
        ref = (await opts.reference!.score(sequences, { from, batchSize: opts.microBatch, sharePrefix })).logprobs;
        t.score += now() - t0;
      }
      calls.push({
        batch: { sequences, from },
        options: {
          advantages: mb.map((s) => s.advantage), refLogprobs: ref, beta: opts.beta,
          oldLogprobs: old ? mb.map((s) => old.get(s)!) : undefined,
          clipLow: opts.clipLow ?? 0.2, clipHigh: opts.clipHigh ?? 0.2, lossType: opts.lossType ?? 'grpo',
          filterThreshold: tau, lossScale: lossScale(mb), sharePrefix,
        },
      });
    }
    if (calls.length === 0) return [];
    const t0 = now();
    const stats = calls.length === 1 ? [await policy.trainGrpo(calls[0].batch, calls[0].options)] : await policy.trainGrpoMany(calls);
    t.train += now() - t0;
    return stats;
  };

  const optimize = async (step: number, t: { train: number }) => {
    const t0 = now();
    const g = await policy.optimizerStep({ lr: learningRate(opts, step), weightDecay: opts.weightDecay ?? 0, maxGradNorm: opts.maxGradNorm ?? 1 });
    t.train += now() - t0;
    return g;
  };

  const keptOf = (samples: Sample[]) => (tau === null ? samples : samples.filter((s) => Math.abs(s.advantage) > tau));

  for (let step = firstStep; step < opts.steps; step++) {
    const tStart = now();
    const t = { generate: 0, score: 0, train: 0 };
    envMetrics = {};
    const examples = nextPrompts(opts.promptsPerStep);
    let all: Sample[] = [];
    let stats: StepResult[] = [];
    if (opts.generation === 'per-microbatch') {
      // TRL 0.16: each micro-batch generates for its own prompts; the Trainer averages micro-batch
      // losses over the gradient-accumulation steps.
      const perMb = opts.microBatch / opts.groupSize;
      const accum = Math.ceil(examples.length / perMb);
      for (let i = 0; i < examples.length; i += perMb) {
        const samples = await rollout(examples.slice(i, i + perMb), step * 1000 + i, opts.microBatch, t);
        all = all.concat(samples);
        stats = stats.concat(await backprop(sliceMicroBatches(samples, opts.microBatch), () => 1 / accum, t));
      }
    } else {
      all = await rollout(examples, step, opts.generationBatch ?? examples.length * opts.groupSize, t);
      // Filtering happens here, before any training forward: dropped samples cost nothing.
      // Micro-batches of similar lengths (less padding); with shared prefixes, of whole groups,
      // so that each micro-batch computes each of its prompts once and no prompt twice.
      const kept = keptOf(all);
      const total = kept.length;
      // Largest first: the engine deals a step's micro-batches round-robin to lanes that run
      // concurrently, and a largest-first deal keeps the lanes equally busy.
      const tokensOf = (mb: Sample[]) => {
        const prompts = new Set(mb.map((s) => s.group));
        return mb.reduce((a, s) => a + s.ids.length + (prompts.delete(s.group) ? s.promptIds.length : 0), 0);
      };
      const microBatches = sharePrefix
        ? packGroups(kept, opts.microBatch, (s) => s.group).map((mb) => ({ mb, n: tokensOf(mb) })).sort((a, b) => b.n - a.n).map((x) => x.mb)
        : sliceMicroBatches(kept.sort((a, b) => a.promptIds.length + a.ids.length - (b.promptIds.length + b.ids.length)), opts.microBatch);
      // μ > 1 (PPO-style reuse): the ratio of every update is taken against the log-probs the
      // policy gave the batch before the first update (TRL's old_per_token_logps).
      let old: Map<Sample, Float32Array> | undefined;
      if (iterations > 1 && total > 0) {
        const t0 = now();
        const scoredOld = await policy.score(kept.map((s) => [...s.promptIds, ...s.ids]), { from: kept.map((s) => s.promptIds.length), batchSize: opts.microBatch, sharePrefix });
        old = new Map(kept.map((s, i) => [s, scoredOld.logprobs[i]]));
        t.train += now() - t0;
      }
      for (let it = 0; it < iterations; it++) {
        if (total > 0) stats = await backprop(microBatches, (mb) => keptOf(mb).length / total, t, old);
        if (it + 1 < iterations) await optimize(step, t);
      }
    }
    const lr = learningRate(opts, step);
    const gradNorm = await optimize(step, t);
    const total = now() - tStart;
    trainSeconds += total;
    const tokensScored = stats.reduce((a, s) => a + s.tokens, 0) || 1;
    const m: StepMetrics = {
      step: step + 1,
      reward: all.reduce((a, s) => a + s.reward, 0) / all.length,
      accuracy: all.reduce((a, s) => a + (s.correct ? 1 : 0), 0) / all.length,
      keptFraction: keptOf(all).length / all.length,
      clipFraction: stats.reduce((a, s) => a + s.clipFraction * s.tokens, 0) / tokensScored,
      kl: stats.reduce((a, s) => a + s.kl * s.tokens, 0) / tokensScored,
      entropy: stats.reduce((a, s) => a + s.entropy * s.tokens, 0) / tokensScored,
      completionLength: all.reduce((a, s) => a + s.ids.length, 0) / all.length,
      tokensGenerated: all.reduce((a, s) => a + s.ids.length, 0),
      loss: stats.reduce((a, s) => a + s.loss, 0),
      gradNorm,
      lr,
      seconds: { ...t, total },
      elapsed: trainSeconds,
      ...(Object.keys(envMetrics).length ? { env: { ...envMetrics } } : {}),
    };
    result.steps.push(m);
    opts.onStep?.(m);
    await log({ type: 'step', ...m });
    if (opts.evalEvery && (step + 1) % opts.evalEvery === 0 && step + 1 < opts.steps) await runEval(step + 1);
    if (opts.checkpointDir && opts.checkpointEvery && ((step + 1) % opts.checkpointEvery === 0 || step + 1 === opts.steps)) {
      const rl: RlCheckpointState = { step: step + 1, cursor, trainSeconds, settings };
      await policy.save(opts.checkpointDir, { training: { rl } });
    }
  }
  await runEval(opts.steps);
  result.seconds = trainSeconds;
  return result;
}

/** A run's training seconds per phase (evaluation excluded). */
export function phasesOf(run: RlResult): { generate: number; score: number; train: number } {
  const p = { generate: 0, score: 0, train: 0 };
  for (const s of run.steps) {
    p.generate += s.seconds.generate;
    p.score += s.seconds.score;
    p.train += s.seconds.train;
  }
  return p;
}

export interface SftOptions {
  task: Task;
  model: Model;
  steps: number;
  batchSize: number;
  lr: number;
  warmupSteps?: number;
  schedule?: 'constant' | 'linear' | 'cosine';
  weightDecay?: number;
  maxGradNorm?: number;
  seed: number;
  trainExamples?: Example[];
  onStep?: (step: number, loss: number) => void;
}

/** Supervised warm-up on the task's reference solutions (prompt + solution + EOS). */
export async function trainSft(opts: SftOptions): Promise<{ losses: number[]; seconds: number }> {
  const { task, model } = opts;
  const train = opts.trainExamples ?? task.examples('train', { seed: opts.seed });
  const eos = model.eosIds[0];
  const losses: number[] = [];
  const t0 = now();
  let cursor = 0;
  for (let step = 0; step < opts.steps; step++) {
    const sequences: number[][] = [], from: number[] = [];
    for (let i = 0; i < opts.batchSize; i++) {
      const ex = train[(cursor++) % train.length];
      const p = model.encode(task.prompt(ex));
      const c = model.encode(task.reference(ex), false);
      sequences.push(eos === undefined ? [...p, ...c] : [...p, ...c, eos]);
      from.push(p.length);
    }
    const r = await model.trainSft({ sequences, from });
    await model.optimizerStep({ lr: learningRate({ ...opts }, step), weightDecay: opts.weightDecay ?? 0, maxGradNorm: opts.maxGradNorm ?? 1 });
    losses.push(r.loss);
    opts.onStep?.(step + 1, r.loss);
  }
  return { losses, seconds: now() - t0 };
}
