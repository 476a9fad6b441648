// `bench dash --shape NAME`: the DASH vs GRPO race at a real model shape (issue 18), for wall time
// only. A randomly initialised model (seeded) of the shape, completions of a fixed length (the
// config has no EOS id and no stop string is given), the arms' own settings from presets.ts (G 8,
// 16 prompts a step, micro-batches of 8, GRPO β 0.04 with its reference forward, DASH τ 0.4), the
// same steps for every arm. What generation, scoring and training cost at that shape is what is
// measured; accuracy means nothing at random init and none is reported.
//
// Text: a synthetic character tokenizer gives each of the vocabulary's ids (past the four
// specials) its own character, so that the trainer's text path (prompts, decoded completions) runs
// as with a real tokenizer. The reward is a learnable rule on the completion's tokens (1 when more
// than half of them lie in the lower half of the vocabulary, else 0): about half of the completions
// of a random model earn it, so groups are mixed and DASH's filter drops about what it drops on a
// task with ~50 % accuracy (see keptFraction).
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../models/atomic.js';
import { checkDtype, type Device, type Dtype, type Model } from '../models/model.js';
import { CharTokenizer } from '../models/tokenizer.js';
import { benchPrompts, median } from '../bench/model.js';
import { createScaleModel, scaleConfig, type ScaleShape } from '../bench/scale.js';
import { parameterCount } from '../models/config.js';
import type { Environment } from './environment.js';
import { PRESETS, DASH_TAU } from './presets.js';
import { armOptions, type ArmName } from './race.js';
import type { Example } from './tasks/common.js';
import { phasesOf, trainRl, type RlResult } from './trainer.js';

export type ScaleArm = Extract<ArmName, 'grpo' | 'grpo_decoupled' | 'dash'>;

export interface ScaleRaceOptions {
  shape: ScaleShape;
  device?: Device;
  /**
   * Run in this order (default dash, grpo: when a timeout cuts the run, DASH's time is in and
   * GRPO's progress lines give its seconds per step).
   */
  arms?: ScaleArm[];
  /** Optimizer steps per arm (default 2). */
  steps?: number;
  /** Default the presets' (16 prompts, G 8, micro-batches of 8). */
  promptsPerStep?: number;
  groupSize?: number;
  microBatch?: number;
  /** Prompt tokens (default 64) and new tokens per completion, exactly (default 256). */
  promptLen?: number;
  maxNewTokens?: number;
  tau?: number;
  seed?: number;
  /** Interleaved runs of every arm, median seconds (default 1). */
  repeat?: number;
  /** An untimed one-prompt step of every arm first (kernels loaded, first allocations made). Default true. */
  warmup?: boolean;
  outDir?: string;
  log: (line: string) => void;
  progress?: (text: string) => void;
}

export interface ScaleArmResult {
  name: ScaleArm;
  description: string;
  seconds: number;
  secondsRuns: number[];
  phases: { generate: number; score: number; train: number };
  /** Sequences that reached the training forward, of all generated. */
  keptFraction: number;
  meanReward: number;
  tokensGenerated: number;
  /** Every completion had exactly maxNewTokens tokens (every step of the first run). */
  fixedLength: boolean;
  generateCalls: number;
}

export interface ScaleRaceResult {
  shape: ScaleShape;
  device: Device;
  /** The models' linear-layer precision (--dtype / $WST_DASH_DTYPE; default bf16 on CUDA). */
  dtype: Dtype;
  params: number;
  note: string;
  settings: Required<Pick<ScaleRaceOptions, 'steps' | 'promptsPerStep' | 'groupSize' | 'microBatch' | 'promptLen' | 'maxNewTokens' | 'tau' | 'seed' | 'repeat' | 'warmup'>> & { lr: number; temperature: number; reward: string };
  arms: Partial<Record<ScaleArm, ScaleArmResult>>;
  time_reduction_vs_grpo?: number;
  time_reduction_vs_decoupled?: number;
  file?: string;
}

export const SCALE_RACE_NOTE = 'random-init model: wall time only; accuracy and reward at random init mean nothing';

/** A character tokenizer with one distinct character for every id of a vocabulary (ids 0-3 its specials). */
export function syntheticTokenizer(vocabSize: number): CharTokenizer {
  const chars: string[] = [];
  // From U+4E00 up, skipping the surrogates: every entry one code point.
  for (let cp = 0x4e00; chars.length < vocabSize - 4; cp++) if (cp < 0xd800 || cp > 0xdfff) chars.push(String.fromCodePoint(cp));
  return new CharTokenizer(chars);
}

/** Prompts of random tokens, rewarded when most of the completion's tokens lie in the vocabulary's lower half. */
export function lowerHalfEnvironment(tokenizer: CharTokenizer): Environment {
  const half = tokenizer.vocabSize / 2;
  return {
    name: 'synthetic (reward: most completion tokens in the lower half of the vocabulary)',
    stop: [],
    prompt: (example) => example.question,
    async score(rollouts) {
      const rewards = rollouts.map((r) => {
        const ids = tokenizer.encode(r.completion);
        return 2 * ids.filter((id) => id < half).length > ids.length ? 1 : 0;
      });
      return { rewards, correct: rewards.map((x) => x === 1) };
    },
  };
}

function syntheticExamples(tokenizer: CharTokenizer, n: number, len: number, seed: number): Example[] {
  return benchPrompts(n, len, tokenizer.vocabSize, seed).map((ids, i) => ({
    id: `synthetic-${i}`, question: tokenizer.decode(ids.map((id) => Math.max(4, id))), answer: '', solution: '',
  }));
}

export async function runScaleRace(o: ScaleRaceOptions): Promise<ScaleRaceResult> {
  const arms = o.arms ?? ['dash', 'grpo'];
  const int = (v: number | undefined, fallback: number, name: string, min = 1) => {
    const x = v ?? fallback;
    if (!Number.isInteger(x) || x < min) throw new RangeError(`${name} must be an integer >= ${min}, got ${x}`);
    return x;
  };
  const settings: ScaleRaceResult['settings'] = {
    steps: int(o.steps, 2, '--steps'), promptsPerStep: int(o.promptsPerStep, PRESETS.dash.promptsPerStep, '--prompts-per-step'),
    groupSize: int(o.groupSize, PRESETS.dash.groupSize, 'groupSize', 2), microBatch: int(o.microBatch, PRESETS.dash.microBatch, 'microBatch'),
    promptLen: int(o.promptLen, 64, '--prompt-len'), maxNewTokens: int(o.maxNewTokens, 256, '--new-tokens'),
    tau: o.tau ?? DASH_TAU, seed: int(o.seed, 1, 'seed', 0), repeat: int(o.repeat, 1, '--repeat'), warmup: o.warmup ?? true,
    lr: PRESETS.dash.lr, temperature: PRESETS.dash.temperature, reward: '1 when most completion tokens lie in the lower half of the vocabulary, else 0',
  };
  const s = settings;
  const config = scaleConfig(o.shape);
  if (s.promptLen + s.maxNewTokens > config.maxPositionEmbeddings) throw new RangeError(`--prompt-len + --new-tokens must fit the context of ${config.maxPositionEmbeddings}`);
  const tokenizer = syntheticTokenizer(config.vocabSize);
  const environment = lowerHalfEnvironment(tokenizer);
  const trainExamples = syntheticExamples(tokenizer, s.promptsPerStep * s.steps, s.promptLen, 4242 + s.seed);
  const model = () => createScaleModel(o.shape, { seed: 1234, device: o.device, tokenizer });
  const armOpts = { tau: s.tau, microBatch: s.microBatch, promptsPerStep: s.promptsPerStep, groupSize: s.groupSize, seed: s.seed };
  // One frozen reference for every β > 0 run (it only scores): the GPU holds fewer copies of the model.
  let frozen: Model | undefined;
  const run = async (name: ScaleArm, over: { steps?: number; promptsPerStep?: number; maxNewTokens?: number } = {}, policy?: Model): Promise<RlResult> => {
    const arm = armOptions(name, armOpts);
    const p = policy ?? model();
    const reference = arm.beta > 0 ? (frozen ??= model()) : undefined;
    return trainRl({
      environment, policy: p, reference, steps: over.steps ?? s.steps, promptsPerStep: over.promptsPerStep ?? s.promptsPerStep, groupSize: s.groupSize,
      microBatch: s.microBatch, generation: arm.generation, filterThreshold: arm.filterThreshold, beta: arm.beta, sharePrefix: arm.sharePrefix,
      lr: s.lr, warmupSteps: 0, maxNewTokens: over.maxNewTokens ?? s.maxNewTokens, seed: s.seed, temperature: s.temperature, trainExamples,
      onStep: (m) => o.progress?.(`[${name}] step ${m.step}/${over.steps ?? s.steps}  kept ${(100 * m.keptFraction).toFixed(0)}%  ${m.elapsed.toFixed(1)} s`),
    });
  };
  const result: ScaleRaceResult = { shape: o.shape, device: o.device ?? 'cpu', dtype: checkDtype(undefined, o.device ?? 'cpu', 'WST_DASH_DTYPE'), params: parameterCount(config), note: SCALE_RACE_NOTE, settings, arms: {} };
  o.log(`bench dash --shape ${o.shape}: ${(result.params / 1e6).toFixed(1)}M parameters, random init, on ${result.device} (${result.dtype}); ${s.steps} steps x ${s.promptsPerStep} prompts x G ${s.groupSize}, ${s.maxNewTokens} new tokens per completion (no EOS), micro-batches of ${s.microBatch}`);
  o.log(SCALE_RACE_NOTE);
  if (s.warmup) {
    const t0 = performance.now();
    const w = model();
    // One prompt (one micro-batch) per arm, short completions: every code path once, untimed.
    for (const name of arms) await run(name, { steps: 1, promptsPerStep: Math.max(1, Math.floor(s.microBatch / s.groupSize)), maxNewTokens: Math.min(8, s.maxNewTokens) }, w);
    o.log(`warm-up (one short step of every arm, untimed): ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  const expected = s.promptsPerStep * s.groupSize * s.maxNewTokens;
  for (let rep = 0; rep < s.repeat; rep++) {
    for (const name of arms) {
      const r = await run(name);
      const phases = phasesOf(r);
      const prev = result.arms[name];
      if (prev) {
        prev.secondsRuns.push(r.seconds);
        o.log(`[${name}] run ${rep + 1}/${s.repeat}: ${r.seconds.toFixed(1)} s`);
        continue;
      }
      const arm = armOptions(name, armOpts);
      result.arms[name] = {
        name, description: arm.description, seconds: r.seconds, secondsRuns: [r.seconds], phases,
        keptFraction: r.steps.reduce((a, m) => a + m.keptFraction, 0) / r.steps.length,
        meanReward: r.steps.reduce((a, m) => a + m.reward, 0) / r.steps.length,
        tokensGenerated: r.steps.reduce((a, m) => a + m.tokensGenerated, 0),
        fixedLength: r.steps.every((m) => m.tokensGenerated === expected),
        generateCalls: s.steps * (arm.generation === 'per-microbatch' ? Math.ceil(s.promptsPerStep / (s.microBatch / s.groupSize)) : 1),
      };
      o.log(`[${name}] ${r.seconds.toFixed(1)} s (generate ${phases.generate.toFixed(1)}, score ${phases.score.toFixed(1)}, train ${phases.train.toFixed(1)}), kept ${(100 * result.arms[name]!.keptFraction).toFixed(0)}%`);
    }
  }
  for (const a of Object.values(result.arms)) a!.seconds = median(a!.secondsRuns);
  const { grpo, grpo_decoupled: dec, dash } = result.arms;
  if (dash && grpo) result.time_reduction_vs_grpo = 1 - dash.seconds / grpo.seconds;
  if (dash && dec) result.time_reduction_vs_decoupled = 1 - dash.seconds / dec.seconds;
  if (o.outDir) {
    await mkdir(o.outDir, { recursive: true });
    result.file = path.join(o.outDir, `bench-dash-${o.shape}.json`);
    await writeFileAtomic(result.file, JSON.stringify(result, null, 2) + '\n');
  }
  return result;
}

export function scaleRaceTable(r: ScaleRaceResult): string {
  const s = r.settings;
  const lines = [
    `DASH race at the ${r.shape} shape (${(r.params / 1e6).toFixed(1)}M parameters) on ${r.device} (${r.dtype}): ${s.steps} steps, ${s.promptsPerStep} prompts x G ${s.groupSize}, ${s.promptLen}-token prompts, ${s.maxNewTokens} new tokens per completion (fixed length), micro-batches of ${s.microBatch}`,
    `(${r.note})`,
    '',
    '| arm | wall s | generate | score | train | generate calls | kept | fixed length |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const a of Object.values(r.arms))
    lines.push(`| ${a!.name} | ${a!.seconds.toFixed(2)}${a!.secondsRuns.length > 1 ? ` (runs ${a!.secondsRuns.map((x) => x.toFixed(2)).join(', ')})` : ''} | ${a!.phases.generate.toFixed(2)} | ${a!.phases.score.toFixed(2)} | ${a!.phases.train.toFixed(2)} | ${a!.generateCalls} | ${(100 * a!.keptFraction).toFixed(0)}% | ${a!.fixedLength ? 'yes' : 'NO'} |`);
  lines.push('');
  if (r.time_reduction_vs_grpo !== undefined) lines.push(`DASH wall-time reduction vs per-micro-batch GRPO (β 0.04): ${(100 * r.time_reduction_vs_grpo).toFixed(1)}% (issue 18's target: >= 83%)`);
  if (r.time_reduction_vs_decoupled !== undefined) lines.push(`DASH wall-time reduction vs decoupled GRPO: ${(100 * r.time_reduction_vs_decoupled).toFixed(1)}%`);
  return lines.join('\n');
}
