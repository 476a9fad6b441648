// The algorithms' settings, in one place: the CLI (`train grpo|dash`), the race (`bench dash`,
// `demo`) and WST's teacher training all read them here, so that `train dash` runs what
// `bench dash` measured.
import type { RlOptions } from './trainer.js';

export type Algorithm = 'grpo' | 'grpo_decoupled' | 'dash';

export type AlgorithmPreset = Required<Pick<RlOptions, 'generation' | 'beta' | 'sharePrefix' | 'lr' | 'temperature' | 'groupSize' | 'promptsPerStep' | 'microBatch' | 'lossType' | 'iterations'>> & {
  /** |A| <= τ dropped before the training forward; null keeps every sequence. */
  filterThreshold: number | null;
  description: string;
};

/**
 * DASH's default filter threshold τ (completions with |A| <= τ never reach the training forward).
 * With binary rewards and G = 8, |A| is 0.35 / 2.47 for one correct of eight (or one wrong), 0.54 /
 * 1.62 for two, 0.72 / 1.21 for three, 0.94 for four. τ = 0.4 drops, besides every uniform group,
 * the seven majority completions of groups with a single outlier (their |A| is the smallest a mixed
 * group has) and trains on the rest. τ = 0 drops only uniform groups: the exact GRPO gradient
 * without KL.
 */
export const DASH_TAU = 0.4;

/** Shared by every algorithm (the race's settings: bench/RESULTS.md). */
const COMMON = { lr: 3e-4, temperature: 0.7, groupSize: 8, promptsPerStep: 16, microBatch: 8, lossType: 'grpo', iterations: 1 } as const;

export const PRESETS: Readonly<Record<Algorithm, AlgorithmPreset>> = {
  grpo: {
    ...COMMON, generation: 'per-microbatch', beta: 0.04, filterThreshold: null, sharePrefix: false,
    description: 'GRPO, per-micro-batch generation (TRL 0.16): each micro-batch generates for its own prompts, beta 0.04 (reference forward), no filtering',
  },
  grpo_decoupled: {
    ...COMMON, generation: 'decoupled', beta: 0.04, filterThreshold: null, sharePrefix: false,
    description: 'GRPO, decoupled generation (TRL >= 0.18 / verl): one generation per optimizer step, beta 0.04, no filtering',
  },
  dash: {
    ...COMMON, generation: 'preemptive', beta: 0, filterThreshold: DASH_TAU, sharePrefix: true,
    description: `DASH: preemptive sampling (one inference batch of every completion of the step) + gradient filtering (|A| <= ${DASH_TAU} dropped before the forward) + no KL + each prompt computed once per group in the training forward`,
  },
};

/** Most new tokens per completion, by task (arith's difficulty-1 solutions are at most 16 characters + EOS). */
export const TASK_MAX_NEW_TOKENS: Readonly<Record<string, number>> = { arith: 24, gsm8k: 256, math500: 384 };
