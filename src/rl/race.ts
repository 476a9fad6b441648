// The DASH vs GRPO race: the same warm-started model, seeds, prompts and number of optimizer steps
// for each arm; wall time split by phase; held-out accuracy; a JSON record, an SVG plot and a report.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../models/atomic.js';
import { Model, type Device } from '../models/model.js';
import { builtinSftModel, builtinTask, BUILTIN_DIFFICULTY, BUILTIN_SFT, type BuiltinSftOptions } from './builtin.js';
import { median } from '../bench/model.js';
import { accuracySvg } from './plot.js';
import { DASH_TAU, PRESETS, type AlgorithmPreset } from './presets.js';
import { evaluate, phasesOf, trainRl, type RewardFn, type RlOptions, type RlResult, type StepMetrics } from './trainer.js';

export type ArmName = 'grpo' | 'grpo_decoupled' | 'dash' | 'dash_control' | 'dash_unshared' | 'dash_exact';

/**
 * The control for an RL gain: a reward that ignores the completion (Bernoulli(p), seeded), run
 * through the same DASH loop. Any accuracy change it shows is what the optimiser does without
 * signal; a real gain must beat it (bench/archive/NOTES-2026-11.md "Why RL does not lift…").
 */
export function randomReward(p: number, seed: number): RewardFn {
  let s = (seed >>> 0) || 1;
  return async () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296 < p ? 1 : 0;
  };
}

export interface RaceOptions {
  arms: ArmName[];
  steps: number;
  promptsPerStep: number;
  groupSize: number;
  microBatch: number;
  evalProblems: number;
  evalEvery: number;
  lr: number;
  /** Sampling temperature of the rollouts, every arm (default DEFAULT_RACE's). */
  temperature?: number;
  maxNewTokens: number;
  seed: number;
  /** Overrides of the built-in SFT warm-up (tests use a few steps). */
  sft?: Partial<BuiltinSftOptions>;
  /** Where the models live (default cpu). */
  device?: Device;
  /** Rebuild the built-in SFT warm-up even when its cache entry exists. */
  refresh?: boolean;
  /** DASH's filter threshold τ: completions with |A| <= τ are dropped before the training forward. */
  tau?: number;
  /**
   * Runs of every arm (default 1), interleaved (grpo, decoupled, dash, grpo, ...): each arm's
   * seconds are the median of its runs, so that a burst of load on a shared machine cannot decide
   * the ratio. Runs after the first skip the intermediate evaluations; their final accuracy must
   * equal the first run's (the same seeds give the same bits).
   */
  repeat?: number;
  /**
   * RL seeds per arm (default 1): seeds seed, seed+1, ... change the rollouts' sampling and the
   * prompt order, not the SFT model. Every seed's final accuracy is measured on two held-out sets;
   * the result carries per arm mean ± sd and the paired difference DASH − GRPO with a 95 % interval.
   */
  seeds?: number;
  /** The success rate of the dash_control arm's random reward (default 0.2). */
  controlRewardRate?: number;
  outDir: string;
  /** Print progress lines to stderr. */
  log: (line: string) => void;
  /** Live progress (a terminal bar), called often. */
  progress?: (text: string) => void;
}

export const DEFAULT_RACE: Omit<RaceOptions, 'outDir' | 'log'> = {
  arms: ['grpo', 'grpo_decoupled', 'dash'],
  // 64 steps × 16 prompts × G 8 (1,024 prompts): enough for DASH to select the right final answer over the
  // flawed one the SFT corpus taught (bench/archive/NOTES-2026-11.md, "RL as selection"); DASH ~9 s at 2 threads.
  steps: 64,
  promptsPerStep: PRESETS.dash.promptsPerStep,
  groupSize: PRESETS.dash.groupSize,
  microBatch: PRESETS.dash.microBatch,
  evalProblems: 500,
  evalEvery: 16,
  // Measured on the built-in SFT model with 3 RL seeds, two held-out sets: bench/RESULTS.md.
  lr: PRESETS.dash.lr,
  temperature: PRESETS.dash.temperature,
  // Difficulty-1 solutions are at most 16 characters + EOS ("10+9=19. #### 19").
  maxNewTokens: 24,
  seed: 1,
  tau: DASH_TAU,
};

export interface ArmResult {
  name: ArmName;
  description: string;
  /** Training wall time (the median of secondsRuns: every run of every seed). */
  seconds: number;
  /** The training wall time of each run (RaceOptions.repeat). */
  secondsRuns: number[];
  /** Seconds per phase: the median over the same runs as `seconds`, phase by phase. */
  phases: { generate: number; score: number; train: number };
  phasesRuns: { generate: number; score: number; train: number }[];
  accuracy: number;
  accuracyStart: number;
  keptFraction: number;
  tokensGenerated: number;
  /** Native generate() calls (per-micro-batch: one per micro-batch; otherwise one per step). */
  generateCalls: number;
  /** Sequences that went through the training forward/backward (after filtering). */
  sequencesTrained: number;
  /** Sequences scored by the frozen reference (KL), 0 without KL. */
  referenceForwards: number;
  curve: { seconds: number; accuracy: number; step: number }[];
  steps: StepMetrics[];
  /** Per RL seed: final held-out accuracy on set A (seed 12345) and set B (seed 54321). */
  seeds: { seed: number; accuracy: number; accuracyB: number }[];
  /** Mean and sd over seeds of each seed's accuracy averaged over the two held-out sets. */
  accuracy_mean: number;
  accuracy_sd: number;
}

/** A mean with its 95 % t-interval (low = high = mean with one sample). */
export interface Interval {
  mean: number;
  low: number;
  high: number;
  n: number;
}

export interface RaceResult {
  task: string;
  settings: Record<string, unknown>;
  sft: { dir: string; cached: boolean; seconds: number; accuracy: number; corpus?: string };
  arms: Partial<Record<ArmName, ArmResult>>;
  time_reduction_vs_grpo?: number;
  time_reduction_vs_decoupled?: number;
  accuracy_gain_dash?: number;
  /** DASH's accuracy minus the random-reward control's (when the dash_control arm ran). */
  accuracy_gain_dash_vs_control?: number;
  /** Paired over seeds: DASH's accuracy (mean of the two held-out sets) minus per-micro-batch GRPO's. */
  accuracy_diff_vs_grpo?: Interval;
  files: { json: string; svg: string; metrics: string[] };
}

/** An arm's trainer settings and its description (the race's and bench dash --shape's). */
export function armOptions(name: ArmName, o: Pick<RaceOptions, 'tau' | 'microBatch' | 'promptsPerStep' | 'groupSize' | 'seed' | 'controlRewardRate'>): Pick<RlOptions, 'generation' | 'filterThreshold' | 'beta' | 'reward' | 'sharePrefix'> & { description: string } {
  const tau = o.tau ?? DASH_TAU;
  const dash: AlgorithmPreset = { ...PRESETS.dash, filterThreshold: tau };
  const pick = (p: AlgorithmPreset) => ({ generation: p.generation, filterThreshold: p.filterThreshold, beta: p.beta, sharePrefix: p.sharePrefix });
  switch (name) {
    case 'grpo':
      return { ...pick(PRESETS.grpo), description: `GRPO, per-micro-batch generation (TRL 0.16): each micro-batch of ${o.microBatch} completions generates for its own prompts, beta ${PRESETS.grpo.beta} (reference forward), no filtering` };
    case 'grpo_decoupled':
      return { ...pick(PRESETS.grpo_decoupled), description: PRESETS.grpo_decoupled.description };
    case 'dash':
      return { ...pick(dash),
        description: 'DASH: preemptive sampling (one inference batch of all ' + o.promptsPerStep * o.groupSize + ' completions per step) + gradient filtering (|A| <= ' + tau + ' dropped before the forward) + no KL + each prompt computed once per group in the training forward' };
    case 'dash_unshared':
      return { ...pick(dash), sharePrefix: false, description: 'ablation: the DASH arm with every training sequence computed in full (no shared prompt prefixes)' };
    case 'dash_exact':
      return { ...pick(dash), filterThreshold: 0, description: 'ablation: the DASH arm at τ = 0 (only |A| = 0 dropped: the exact GRPO gradient without KL)' };
    case 'dash_control': {
      const p = o.controlRewardRate ?? 0.2;
      return { ...pick(dash), reward: randomReward(p, o.seed + 7919),
        description: `control: the DASH arm with a random reward (Bernoulli(${p}), ignores the completion)` };
    }
  }
}

// Two-sided 95 % Student t quantiles, df 1..30 (beyond: 1.96 + a small correction).
const T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042];

/** Sample standard deviation (n − 1); 0 for fewer than two values. */
export function sampleSd(xs: readonly number[]): number {
  if (xs.length < 2) return 0;
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1));
}

/** The mean of `xs` with its 95 % t-interval. */
export function meanInterval(xs: readonly number[]): Interval {
  const n = xs.length, mean = xs.reduce((a, b) => a + b, 0) / Math.max(1, n);
  if (n < 2) return { mean, low: mean, high: mean, n };
  const t = n - 1 <= 30 ? T975[n - 2] : 1.96 + 2.4 / (n - 1);
  const h = (t * sampleSd(xs)) / Math.sqrt(n);
  return { mean, low: mean - h, high: mean + h, n };
}

/** What the SFT warm-up was trained on, in words (the report says it). */
function sftCorpus(over: Partial<BuiltinSftOptions> = {}): string | undefined {
  const rate = over.flawedRate ?? BUILTIN_SFT.flawedRate, kind = over.flawedKind ?? BUILTIN_SFT.flawedKind;
  if (!(rate > 0)) return undefined;
  const skew = over.flawedSkew ?? BUILTIN_SFT.flawedSkew;
  const what = kind === 'operand' ? 'work correctly but answer with the last amount mentioned ("4+5=9. #### 5")' : 'apply the opposite operation';
  const by = skew ? ` (${Math.round(100 * (rate + skew))}% of those about apples, cards, eggs and cups, ${Math.round(100 * (rate - skew))}% of the others)` : '';
  return `reference solutions of which ${Math.round(100 * rate)}% come from a flawed solver${by}: they ${what}`;
}

export async function runRace(o: RaceOptions): Promise<RaceResult> {
  await mkdir(o.outDir, { recursive: true });
  const task = builtinTask;
  const sft = await builtinSftModel({ ...o.sft, log: o.log, device: o.device, refresh: o.refresh });
  o.log(sft.cached ? `using the cached SFT model ${sft.dir}` : `SFT warm-up took ${sft.seconds.toFixed(1)} s (cached in ${sft.dir})`);
  const evalExamples = task.examples('test', { seed: 12345, limit: o.evalProblems });
  const evalExamplesB = task.examples('test', { seed: 54321, limit: o.evalProblems });
  const trainExamples = task.examples('train', { seed: 777, limit: 20000 });
  const start = await evaluate(sft.model, task, evalExamples, { maxNewTokens: o.maxNewTokens });
  o.log(`SFT model: held-out accuracy ${(100 * start.accuracy).toFixed(1)}% on ${start.n} problems`);

  const result: RaceResult = {
    task: `arith (difficulty ${BUILTIN_DIFFICULTY})`,
    settings: { steps: o.steps, promptsPerStep: o.promptsPerStep, groupSize: o.groupSize, microBatch: o.microBatch,
      evalProblems: o.evalProblems, lr: o.lr, maxNewTokens: o.maxNewTokens, seed: o.seed, temperature: o.temperature ?? DEFAULT_RACE.temperature, lossType: 'grpo',
      tau: o.tau ?? DASH_TAU, repeat: o.repeat ?? 1, seeds: o.seeds ?? 1, heldOutSets: ['arith test seed 12345', 'arith test seed 54321'] },
    sft: { dir: sft.dir, cached: sft.cached, seconds: sft.seconds, accuracy: start.accuracy, corpus: sftCorpus(o.sft) },
    arms: {},
    files: { json: '', svg: '', metrics: [] },
  };
  const repeat = o.repeat ?? 1;
  if (!Number.isInteger(repeat) || repeat < 1) throw new RangeError(`repeat must be a positive integer, got ${repeat}`);
  const nSeeds = o.seeds ?? 1;
  if (!Number.isInteger(nSeeds) || nSeeds < 1) throw new RangeError(`seeds must be a positive integer, got ${nSeeds}`);
  // One training run of an arm from fresh copies of the SFT model; `extra` holds what differs
  // between the first run (evaluations, metrics) and the repeats.
  const runArm = async (name: ArmName, extra: Partial<RlOptions>, seed = o.seed): Promise<RlResult & { accuracyB: number }> => {
    const arm = armOptions(name, o);
    const policy = await Model.load(sft.dir, { device: o.device });
    const reference = arm.beta > 0 ? await Model.load(sft.dir, { device: o.device }) : undefined;
    const run = await trainRl({
      task, policy, reference, steps: o.steps, promptsPerStep: o.promptsPerStep, groupSize: o.groupSize,
      microBatch: o.microBatch, generation: arm.generation,
      filterThreshold: arm.filterThreshold, beta: arm.beta, reward: arm.reward, sharePrefix: arm.sharePrefix,
      lr: o.lr, warmupSteps: 0, maxNewTokens: o.maxNewTokens, seed, temperature: o.temperature ?? DEFAULT_RACE.temperature,
      trainExamples, evalExamples, ...extra,
    });
    const b = await evaluate(policy, task, evalExamplesB, { maxNewTokens: o.maxNewTokens });
    return { ...run, accuracyB: b.accuracy };
  };
  const finalAccuracy = (run: RlResult) => run.evals[run.evals.length - 1]?.accuracy ?? 0;
  for (let rep = 0; rep < repeat; rep++) {
    for (const name of o.arms) {
      const arm = armOptions(name, o);
      if (rep > 0) {
        const first = result.arms[name]!;
        const again = await runArm(name, {
          evalEvery: 0,
          onStep: (m) => o.progress?.(`[${name}] run ${rep + 1}/${repeat}  step ${m.step}/${o.steps}  ${m.elapsed.toFixed(1)} s`),
        });
        const acc = finalAccuracy(again);
        if (acc !== first.accuracy) throw new Error(`[${name}] run ${rep + 1} ended at accuracy ${acc}, the first at ${first.accuracy}: the runs are not deterministic`);
        first.secondsRuns.push(again.seconds);
        first.phasesRuns.push(phasesOf(again));
        o.log(`[${name}] run ${rep + 1}/${repeat}: ${again.seconds.toFixed(1)} s`);
        continue;
      }
      o.log(`\n[${name}] ${arm.description}`);
      const metricsFile = path.join(o.outDir, `metrics-${name}.jsonl`);
      await writeFileAtomic(metricsFile, '');
      const run = await runArm(name, {
        evalEvery: o.evalEvery, metricsFile,
        onStep: (m) => o.progress?.(`[${name}] step ${m.step}/${o.steps}  reward ${m.reward.toFixed(2)}  kept ${(100 * m.keptFraction).toFixed(0)}%  ${m.elapsed.toFixed(1)} s`),
        onEval: (e) => o.log(`[${name}] step ${e.step}: held-out accuracy ${(100 * e.accuracy).toFixed(1)}% after ${e.trainSeconds.toFixed(1)} s of training`),
      });
      const phases = phasesOf(run);
      const last = run.evals[run.evals.length - 1];
      result.arms[name] = {
        name, description: arm.description, seconds: run.seconds, secondsRuns: [run.seconds], phases, phasesRuns: [phases],
        accuracy: last?.accuracy ?? 0, accuracyStart: start.accuracy,
        keptFraction: run.steps.reduce((a, s) => a + s.keptFraction, 0) / Math.max(1, run.steps.length),
        tokensGenerated: run.steps.reduce((a, s) => a + s.tokensGenerated, 0),
        generateCalls: o.steps * (arm.generation === 'per-microbatch' ? Math.ceil(o.promptsPerStep / (o.microBatch / o.groupSize)) : 1),
        sequencesTrained: Math.round(run.steps.reduce((a, s) => a + s.keptFraction, 0) * o.promptsPerStep * o.groupSize),
        referenceForwards: arm.beta > 0 ? o.steps * o.promptsPerStep * o.groupSize : 0,
        curve: run.evals.map((e) => ({ seconds: e.trainSeconds, accuracy: e.accuracy, step: e.step })),
        steps: run.steps,
        seeds: [{ seed: o.seed, accuracy: last?.accuracy ?? 0, accuracyB: run.accuracyB }], accuracy_mean: 0, accuracy_sd: 0,
      };
      result.files.metrics.push(metricsFile);
      o.log(`[${name}] ${run.seconds.toFixed(1)} s (generate ${phases.generate.toFixed(1)}, score ${phases.score.toFixed(1)}, train ${phases.train.toFixed(1)}), accuracy ${(100 * (last?.accuracy ?? 0)).toFixed(1)}%`);
    }
  }
  // More RL seeds: each arm again with seed + k (interleaved), final accuracies on both sets.
  for (let k = 1; k < nSeeds; k++) {
    for (const name of o.arms) {
      const arm = result.arms[name]!;
      const again = await runArm(name, {
        evalEvery: 0,
        onStep: (m) => o.progress?.(`[${name}] seed ${o.seed + k} (${k + 1}/${nSeeds})  step ${m.step}/${o.steps}  ${m.elapsed.toFixed(1)} s`),
      }, o.seed + k);
      arm.secondsRuns.push(again.seconds);
      arm.phasesRuns.push(phasesOf(again));
      arm.seeds.push({ seed: o.seed + k, accuracy: finalAccuracy(again), accuracyB: again.accuracyB });
      o.log(`[${name}] seed ${o.seed + k}: ${again.seconds.toFixed(1)} s, accuracy ${(100 * finalAccuracy(again)).toFixed(1)}% / ${(100 * again.accuracyB).toFixed(1)}%`);
    }
  }
  const perSeed = (a: ArmResult) => a.seeds.map((x) => (x.accuracy + x.accuracyB) / 2);
  for (const arm of Object.values(result.arms)) {
    arm!.seconds = median(arm!.secondsRuns);
    const pr = arm!.phasesRuns;
    arm!.phases = { generate: median(pr.map((p) => p.generate)), score: median(pr.map((p) => p.score)), train: median(pr.map((p) => p.train)) };
    const xs = perSeed(arm!);
    arm!.accuracy_mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    arm!.accuracy_sd = sampleSd(xs);
  }
  const { grpo, grpo_decoupled: dec, dash } = result.arms;
  if (dash && grpo) result.time_reduction_vs_grpo = 1 - dash.seconds / grpo.seconds;
  if (dash && dec) result.time_reduction_vs_decoupled = 1 - dash.seconds / dec.seconds;
  if (dash) result.accuracy_gain_dash = dash.accuracy - start.accuracy;
  if (dash && result.arms.dash_control) result.accuracy_gain_dash_vs_control = dash.accuracy - result.arms.dash_control.accuracy;
  if (dash && grpo) {
    const d = perSeed(dash), g = perSeed(grpo);
    result.accuracy_diff_vs_grpo = meanInterval(d.map((x, i) => x - g[i]));
  }
  const json = path.join(o.outDir, 'bench-dash.json');
  const svg = path.join(o.outDir, 'accuracy-vs-time.svg');
  result.files.json = json;
  result.files.svg = svg;
  await writeFileAtomic(svg, accuracySvg(
    Object.values(result.arms).map((a) => ({ name: a!.name, points: a!.curve.map((c) => ({ x: c.seconds, y: c.accuracy })) })),
    { title: 'Held-out accuracy vs training wall time', xLabel: 'training wall time (s)', yLabel: 'held-out accuracy' }));
  await writeFileAtomic(json, JSON.stringify(result, null, 2) + '\n');
  return result;
}

export function raceTable(r: RaceResult): string {
  // Wall s and phases: medians over every run (repeats and seeds).
  const first = (Object.values(r.arms)[0]?.seeds.length ?? 1) > 1 ? ' (first seed)' : '';
  const rows = [['arm', 'wall s (median of the runs)', 'generate', 'score', 'train', `accuracy${first}`, 'kept'].join(' | ')];
  rows.push(['---', '---:', '---:', '---:', '---:', '---:', '---:'].join(' | '));
  for (const a of Object.values(r.arms))
    rows.push([a!.name, a!.secondsRuns.length > 1 ? `${a!.seconds.toFixed(1)} (runs ${a!.secondsRuns.map((x) => x.toFixed(1)).join(', ')})` : a!.seconds.toFixed(1), a!.phases.generate.toFixed(1), a!.phases.score.toFixed(1), a!.phases.train.toFixed(1),
      `${(100 * a!.accuracy).toFixed(1)}%`, `${(100 * a!.keptFraction).toFixed(0)}%`].join(' | '));
  const lines = rows.map((x) => `| ${x} |`);
  lines.push('');
  const nSeeds = Object.values(r.arms)[0]?.seeds.length ?? 1;
  if (nSeeds > 1) {
    lines.push(`Held-out accuracy over ${nSeeds} RL seeds (each seed: the mean of two held-out sets of ${String(r.settings.evalProblems)} draws), mean ± sd:`);
    for (const a of Object.values(r.arms)) lines.push(`- ${a!.name}: ${(100 * a!.accuracy_mean).toFixed(1)} ± ${(100 * a!.accuracy_sd).toFixed(1)}% (seeds: ${a!.seeds.map((x) => `${(100 * x.accuracy).toFixed(1)}/${(100 * x.accuracyB).toFixed(1)}`).join(', ')})`);
  }
  if (r.accuracy_diff_vs_grpo) {
    const d = r.accuracy_diff_vs_grpo;
    lines.push(`DASH − per-micro-batch GRPO accuracy: ${(100 * d.mean).toFixed(1)} points` + (d.n > 1 ? ` (95% interval ${(100 * d.low).toFixed(1)} to ${(100 * d.high).toFixed(1)}, ${d.n} seeds)` : ' (one seed: no interval)'));
  }
  lines.push(`SFT start accuracy: ${(100 * r.sft.accuracy).toFixed(1)}%`);
  if (r.time_reduction_vs_grpo !== undefined) lines.push(`DASH time reduction vs per-micro-batch GRPO: ${(100 * r.time_reduction_vs_grpo).toFixed(1)}%`);
  if (r.time_reduction_vs_decoupled !== undefined) lines.push(`DASH time reduction vs decoupled GRPO: ${(100 * r.time_reduction_vs_decoupled).toFixed(1)}%`);
  if (r.accuracy_gain_dash !== undefined) lines.push(`DASH held-out accuracy gain over SFT: ${(100 * r.accuracy_gain_dash).toFixed(1)} points`);
  if (r.accuracy_gain_dash_vs_control !== undefined) lines.push(`DASH accuracy minus the random-reward control's: ${(100 * r.accuracy_gain_dash_vs_control).toFixed(1)} points`);
  return lines.join('\n');
}
