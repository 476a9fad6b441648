// Softmax family, the fused per-token log-prob gather (with entropy), cross-entropy and the
// GRPO loss. Shapes follow native/kernels.h. Rows of logits are (rows, vocab), fp32 row-major.
// Backwards recompute the softmax from the logits and the saved lse; with `inPlace` they write
// the gradient over the logits (no second rows x vocab buffer: 600 KB per row at vocab 151,936).
import { native } from '../native.js';
import type { GrpoLossResult, GrpoLossType, GrpoParams } from '../native-api.js';
import { defineOp } from './define.js';
import * as v from './validate.js';

export interface RowsOptions {
  rows: number;
  vocab: number;
}

function rowsOf(opts: unknown): { rows: number; vocab: number } {
  const o = v.options(opts);
  return { rows: v.size(o.rows, 'rows'), vocab: v.size(o.vocab, 'vocab') };
}

/** Targets: an Int32Array of values in [0, vocab), or negative (ignored). */
function targetsOf(value: unknown, rows: number, vocab: number): Int32Array {
  const t = v.i32(value, 'targets', rows);
  for (let i = 0; i < t.length; i++)
    if (t[i] >= vocab) throw new RangeError(`targets[${i}] = ${t[i]} is outside [0, ${vocab}) (negative = ignored)`);
  return t;
}

/** softmax(logits) row-wise: (rows, vocab) -> (rows, vocab). */
export const softmax = defineOp((logits: Float32Array, opts: RowsOptions) => {
  const { rows, vocab } = rowsOf(opts);
  const n = v.elements('logits', rows, vocab);
  v.f32(logits, 'logits', n);
  const probs = new Float32Array(n);
  return {
    run: (async: boolean) => native.softmaxForward({ probs, logits, rows, vocab }, async),
    result: () => probs,
  };
});

/** log softmax(logits) row-wise: logits - logsumexp(logits). */
export const logSoftmax = defineOp((logits: Float32Array, opts: RowsOptions) => {
  const { rows, vocab } = rowsOf(opts);
  const n = v.elements('logits', rows, vocab);
  v.f32(logits, 'logits', n);
  const out = new Float32Array(n);
  return {
    run: (async: boolean) => native.logSoftmaxForward({ out, logits, rows, vocab }, async),
    result: () => out,
  };
});

/**
 * Log-probability of one token per row: log softmax(logits[r])[ids[r]] -> Float32Array(rows).
 * Fused (max, sum-exp, gather): the softmax is never stored. Public as `kernels.logprobs`.
 */
export const logprobs = defineOp((logits: Float32Array, ids: Int32Array, opts: RowsOptions) => {
  const { rows, vocab } = rowsOf(opts);
  v.f32(logits, 'logits', v.elements('logits', rows, vocab));
  v.ids(ids, 'ids', rows, vocab);
  const out = new Float32Array(rows), lse = new Float32Array(rows);
  return {
    run: (async: boolean) => native.tokenLogprobsForward({ logprob: out, lse, entropy: null, logits, ids, rows, vocab }, async),
    result: () => out,
  };
});

export interface TokenLogprobsOptions extends RowsOptions {
  /** Also return the entropy -sum p log p of each row's full distribution. */
  entropy?: boolean;
}

export interface TokenLogprobsResult {
  logprobs: Float32Array;
  /** logsumexp per row, saved for the backward. */
  lse: Float32Array;
  entropy?: Float32Array;
}

/** The training form of `logprobs`: also lse (for the backward) and, optionally, the entropy. */
export const tokenLogprobs = defineOp((logits: Float32Array, ids: Int32Array, opts: TokenLogprobsOptions) => {
  const { rows, vocab } = rowsOf(opts);
  const wantEntropy = v.bool((opts as TokenLogprobsOptions).entropy, 'entropy');
  v.f32(logits, 'logits', v.elements('logits', rows, vocab));
  v.ids(ids, 'ids', rows, vocab);
  const out = new Float32Array(rows), lse = new Float32Array(rows);
  const entropy = wantEntropy ? new Float32Array(rows) : null;
  return {
    run: (async: boolean) => native.tokenLogprobsForward({ logprob: out, lse, entropy, logits, ids, rows, vocab }, async),
    result: (): TokenLogprobsResult => (entropy ? { logprobs: out, lse, entropy } : { logprobs: out, lse }),
  };
});

export interface TokenLogprobsBackwardArgs extends RowsOptions {
  logits: Float32Array;
  ids: Int32Array;
  /** From the forward. */
  lse: Float32Array;
  /** d loss / d logprobs (rows). */
  dlogprobs: Float32Array;
  /** d loss / d entropy (rows); needs `entropy` from the forward. */
  dentropy?: Float32Array;
  entropy?: Float32Array;
  /** Write the gradient over `logits` and return it (saves a rows x vocab buffer). */
  inPlace?: boolean;
}

/**
 * d logits (rows, vocab) = dlogprobs * (onehot(id) - p) + dentropy * (-p * (log p + H)),
 * with p recomputed from logits and lse.
 */
export const tokenLogprobsBackward = defineOp((args: TokenLogprobsBackwardArgs) => {
  const o = v.options(args, 'args');
  const { rows, vocab } = rowsOf(o);
  const n = v.elements('logits', rows, vocab);
  const logits = v.f32(o.logits, 'logits', n);
  const ids = v.ids(o.ids, 'ids', rows, vocab);
  const lse = v.f32(o.lse, 'lse', rows), dlogprobs = v.f32(o.dlogprobs, 'dlogprobs', rows);
  const dentropy = o.dentropy === undefined ? null : v.f32(o.dentropy, 'dentropy', rows);
  const entropy = o.entropy === undefined ? null : v.f32(o.entropy, 'entropy', rows);
  if (dentropy && !entropy) throw new TypeError('entropy (from the forward) is required with dentropy');
  const dlogits = v.bool(o.inPlace, 'inPlace') ? logits : new Float32Array(n);
  return {
    run: (async: boolean) =>
      native.tokenLogprobsBackward({ dlogits, dlogprob: dlogprobs, dentropy, logits, ids, lse, entropy, rows, vocab }, async),
    result: () => dlogits,
  };
});

export interface CrossEntropyResult {
  /** -log softmax(logits[r])[targets[r]], 0 where the target is negative (ignored). */
  losses: Float32Array;
  lse: Float32Array;
}

/** Per-row cross-entropy; targets in [0, vocab), or negative to ignore the row. */
export const crossEntropy = defineOp((logits: Float32Array, targets: Int32Array, opts: RowsOptions) => {
  const { rows, vocab } = rowsOf(opts);
  v.f32(logits, 'logits', v.elements('logits', rows, vocab));
  targetsOf(targets, rows, vocab);
  const losses = new Float32Array(rows), lse = new Float32Array(rows);
  return {
    run: (async: boolean) => native.crossentropyForward({ losses, lse, logits, targets, rows, vocab }, async),
    result: (): CrossEntropyResult => ({ losses, lse }),
  };
});

export interface CrossEntropyBackwardArgs extends RowsOptions {
  logits: Float32Array;
  targets: Int32Array;
  /** From the forward. */
  lse: Float32Array;
  dlosses: Float32Array;
  /** Write the gradient over `logits` and return it. */
  inPlace?: boolean;
}

/** d logits (rows, vocab) = dlosses * (p - onehot(target)); 0 for ignored rows. */
export const crossEntropyBackward = defineOp((args: CrossEntropyBackwardArgs) => {
  const o = v.options(args, 'args');
  const { rows, vocab } = rowsOf(o);
  const n = v.elements('logits', rows, vocab);
  const logits = v.f32(o.logits, 'logits', n);
  const targets = targetsOf(o.targets, rows, vocab);
  const lse = v.f32(o.lse, 'lse', rows), dlosses = v.f32(o.dlosses, 'dlosses', rows);
  const dlogits = v.bool(o.inPlace, 'inPlace') ? logits : new Float32Array(n);
  return {
    run: (async: boolean) => native.crossentropyBackward({ dlogits, dlosses, logits, targets, lse, rows, vocab }, async),
    result: () => dlogits,
  };
});

export type { GrpoLossType };
/** The GRPO loss types, as the binding names them. */
export const GRPO_LOSS_TYPES: readonly GrpoLossType[] = ['grpo', 'bnpo', 'dr_grpo', 'dapo'];

export interface GrpoArgs extends GrpoParams {
  /** Current policy log-probs of the sampled tokens (seqs, tokens). */
  logprobs: Float32Array;
  /** Log-probs under the policy that generated the samples (seqs, tokens). */
  oldLogprobs: Float32Array;
  /** Reference-model log-probs (seqs, tokens), for the KL penalty. */
  refLogprobs?: Float32Array;
  /** One advantage per sequence (seqs). */
  advantages: Float32Array;
  /** 1 for completion tokens that count, 0 for padding (seqs, tokens); only 0 and 1 allowed. */
  mask: Float32Array;
  seqs: number;
  tokens: number;
}

export interface GrpoResult {
  loss: number;
  /** d loss / d logprobs (seqs, tokens): 0 where masked or dropped. */
  grad: Float32Array;
  /** Sequences kept by the filter (|A| > filterThreshold). */
  kept: number;
  /** Unmasked tokens of the kept sequences. */
  keptTokens: number;
  /** Fraction of kept, unmasked tokens where the clipped branch is active. */
  clipFraction: number;
  /** Mean KL over kept, unmasked tokens (0 when beta is 0 or there is no ref). */
  kl: number;
}

/**
 * The GRPO loss (TRL's GRPOTrainer loss) with advantage filtering, and its gradient.
 *
 * For token t of sequence s with mask 1, r = exp(logprobs - oldLogprobs) and
 *   obj = min(r A_s, clip(r, 1 - clipLow, 1 + clipHigh) A_s) - beta KL,
 *   KL  = exp(ref - logprobs) - (ref - logprobs) - 1   (0 when beta = 0 or without refLogprobs).
 * With filterThreshold τ (a number >= 0), sequences with |A_s| <= τ are dropped: they add nothing, get zero gradient and
 * count in no normaliser (null or omitted: none is dropped); `kept` counts the rest. loss = -sum obj / N, where by lossType:
 * - `grpo`: per kept sequence, the sum over its unmasked tokens / max(1, its unmasked count);
 *   then the mean over kept sequences (a kept sequence with no unmasked token adds 0 but counts).
 * - `bnpo`: N = unmasked tokens of the kept sequences in this call (at least 1).
 * - `dr_grpo`: N = kept sequences x tokens (the padded length).
 * - `dapo`: N = `normalizer`, a global token count from the caller, so micro-batch losses and
 *   gradients add up to the full batch's.
 * With no sequence kept: loss 0, grad all 0, kept 0.
 *
 * The gradient is the subgradient PyTorch autograd gives for
 * torch.min(r*A, torch.clamp(r, 1-clipLow, 1+clipHigh)*A): r*A where the unclipped term is the
 * smaller, 0 where the clipped term is strictly smaller (r outside the clip range), and on an
 * exact tie half of each side's gradient (r*A inside the clip range, bounds included).
 * The KL term adds beta * (exp(ref - logprobs) - 1). Sums are in float64.
 */
export const grpo = defineOp((args: GrpoArgs) => {
  const o = v.options(args, 'args');
  const seqs = v.size(o.seqs, 'seqs'), tokens = v.size(o.tokens, 'tokens');
  const n = v.elements('logprobs', seqs, tokens);
  const logprobs = v.f32(o.logprobs, 'logprobs', n);
  const oldLogprobs = v.f32(o.oldLogprobs, 'oldLogprobs', n);
  const refLogprobs = o.refLogprobs === undefined ? null : v.f32(o.refLogprobs, 'refLogprobs', n);
  const advantages = v.f32(o.advantages, 'advantages', seqs);
  for (let i = 0; i < seqs; i++)
    if (!Number.isFinite(advantages[i])) throw new RangeError(`advantages[${i}] = ${advantages[i]} is not finite`);
  const mask = v.f32(o.mask, 'mask', n);
  for (let i = 0; i < n; i++)
    if (mask[i] !== 0 && mask[i] !== 1) throw new RangeError(`mask[${i}] = ${mask[i]} must be 0 or 1`);
  const clipLow = v.optionalFinite(o.clipLow, 'clipLow', 0.2, 0);
  if (clipLow >= 1) throw new RangeError(`clipLow must be a finite number in [0, 1), got ${clipLow}`);
  const clipHigh = v.optionalFinite(o.clipHigh, 'clipHigh', clipLow, 0);
  const beta = v.optionalFinite(o.beta, 'beta', 0, 0);
  // null / omitted: no filtering.
  const filterThreshold = o.filterThreshold === null || o.filterThreshold === undefined ? null : v.finite(o.filterThreshold, 'filterThreshold', 0);
  const lossType = v.oneOf(o.lossType, 'lossType', GRPO_LOSS_TYPES, 'grpo');
  let normalizer = 1;
  if (lossType === 'dapo') {
    if (o.normalizer === undefined) throw new RangeError('normalizer is required for lossType "dapo"');
    normalizer = v.finite(o.normalizer, 'normalizer', Number.MIN_VALUE);
  } else if (o.normalizer !== undefined) {
    v.finite(o.normalizer, 'normalizer', Number.MIN_VALUE);
  }
  const grad = new Float32Array(n);
  return {
    run: (async: boolean) =>
      native.grpoLoss({ grad, logprobs, oldLogprobs, refLogprobs, advantages, mask, seqs, tokens, clipLow, clipHigh,
        beta, filterThreshold, lossType, normalizer }, async),
    result: (res: GrpoLossResult): GrpoResult =>
      ({ loss: res.loss, grad, kept: res.kept, keptTokens: res.keptTokens, clipFraction: res.clipFraction, kl: res.kl }),
  };
});
