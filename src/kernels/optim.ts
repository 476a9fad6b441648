// Optimiser ops: AdamW (torch.optim.AdamW's algorithm), sum of squares, scaling and global-norm
// gradient clipping (torch.nn.utils.clip_grad_norm_).
import { native } from '../native.js';
import type { AdamwArgs } from '../native-api.js';
import { defineOp } from './define.js';
import * as v from './validate.js';

export type { AdamwArgs };

/**
 * One AdamW step, in place: param, m and v are updated and returned (the same arrays).
 * As torch.optim.AdamW: param *= 1 - lr*wd; m, v updated; param -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
 * with bc1 = 1 - beta1^step, bc2 = 1 - beta2^step.
 */
export const adamw = defineOp((args: AdamwArgs) => {
  const o = v.options(args, 'args');
  const param = v.f32(o.param, 'param');
  const n = param.length;
  const grad = v.f32(o.grad, 'grad', n), m = v.f32(o.m, 'm', n), s = v.f32(o.v, 'v', n);
  const lr = v.finite(o.lr, 'lr', 0);
  const beta1 = v.optionalFinite(o.beta1, 'beta1', 0.9, 0), beta2 = v.optionalFinite(o.beta2, 'beta2', 0.999, 0);
  if (beta1 >= 1) throw new RangeError(`beta1 must be in [0, 1), got ${beta1}`);
  if (beta2 >= 1) throw new RangeError(`beta2 must be in [0, 1), got ${beta2}`);
  const eps = v.optionalFinite(o.eps, 'eps', 1e-8, 0);
  if (eps <= 0) throw new RangeError(`eps must be > 0, got ${eps}`);
  const weightDecay = v.optionalFinite(o.weightDecay, 'weightDecay', 0.01, 0);
  const step = v.size(o.step, 'step', 1);
  return {
    run: (async: boolean) => native.adamwUpdate({ param, grad, m, v: s, lr, beta1, beta2, eps, weightDecay, step }, async),
    result: () => ({ param, m, v: s }),
  };
});

/** Σ x^2, accumulated in float64 (deterministic for any thread count). */
export const sumSquares = defineOp((x: Float32Array) => {
  v.f32(x, 'x');
  return {
    run: (async: boolean) => native.sumSquares({ x }, async),
    result: (r: number) => r,
  };
});

/** x *= s, in place; returns x. */
export const scaleInPlace = defineOp((x: Float32Array, s: number) => {
  v.f32(x, 'x');
  const factor = v.finite(s, 's');
  return {
    run: (async: boolean) => native.scaleInplace({ x, s: factor }, async),
    result: () => x,
  };
});

export interface ClipOptions {
  /** Throw a RangeError when the total norm is NaN or infinite (torch's error_if_nonfinite). */
  errorIfNonfinite?: boolean;
}

export interface ClipResult {
  /** Global L2 norm of all the gradients before clipping (float64). */
  norm: number;
  /** The factor every gradient was multiplied by (1 when no clipping happened). */
  scale: number;
}

/**
 * Global-norm gradient clipping, as torch.nn.utils.clip_grad_norm_(grads, maxNorm):
 * norm = sqrt(Σ_t Σ g_t^2); scale = min(1, maxNorm / (norm + 1e-6)); every grad *= scale (in
 * place) when scale < 1. Unlike torch, a NaN/infinite norm leaves the gradients untouched (scale 1)
 * so that the caller can skip the step; with errorIfNonfinite it throws instead.
 */
export const clipGradNorm = defineOp((grads: Float32Array[], maxNorm: number, opts?: ClipOptions) => {
  if (!Array.isArray(grads)) throw new TypeError(`grads must be an array of Float32Array, got ${v.describe(grads)}`);
  grads.forEach((g, i) => v.f32(g, `grads[${i}]`));
  const max = v.finite(maxNorm, 'maxNorm', 0);
  if (max <= 0) throw new RangeError(`maxNorm must be > 0, got ${max}`);
  const errorIfNonfinite = v.bool(opts === undefined ? undefined : v.options(opts).errorIfNonfinite, 'errorIfNonfinite');

  const decide = (sumSq: number): ClipResult => {
    const norm = Math.sqrt(sumSq);
    if (!Number.isFinite(norm)) {
      if (errorIfNonfinite) throw new RangeError(`the total gradient norm is ${norm}`);
      return { norm, scale: 1 };
    }
    return { norm, scale: Math.min(1, max / (norm + 1e-6)) };
  };
  return {
    run: (async: boolean): ClipResult | Promise<ClipResult> => {
      if (!async) {
        let sumSq = 0;
        for (const g of grads) sumSq += native.sumSquares({ x: g }, false);
        const r = decide(sumSq);
        if (r.scale < 1) for (const g of grads) native.scaleInplace({ x: g, s: r.scale }, false);
        return r;
      }
      return (async () => {
        let sumSq = 0;
        for (const g of grads) sumSq += await native.sumSquares({ x: g }, true);
        const r = decide(sumSq);
        if (r.scale < 1) for (const g of grads) await native.scaleInplace({ x: g, s: r.scale }, true);
        return r;
      })();
    },
    result: (r: ClipResult) => r,
  };
});
