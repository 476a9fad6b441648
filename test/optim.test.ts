import { describe, expect, it } from 'vitest';
import { kernels } from '../src/index.js';
import { native } from '../src/native.js';
import { bitsEqual, expectClose, randomF32, withThreads } from './helpers.js';

const ops = kernels.ops;

interface AdamState { param: Float64Array; m: Float64Array; v: Float64Array }

/**
 * torch.optim.AdamW's single-tensor algorithm (torch/optim/adam.py, decoupled weight decay),
 * transcribed in float64:
 *   param.mul_(1 - lr * weight_decay)
 *   exp_avg.lerp_(grad, 1 - beta1)
 *   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
 *   bias_correction1 = 1 - beta1 ** step; bias_correction2 = 1 - beta2 ** step
 *   step_size = lr / bias_correction1
 *   denom = (exp_avg_sq.sqrt() / sqrt(bias_correction2)).add_(eps)
 *   param.addcdiv_(exp_avg, denom, value=-step_size)
 */
function torchAdamwStep(s: AdamState, grad: ArrayLike<number>, lr: number, beta1: number, beta2: number, eps: number, wd: number, step: number) {
  const bc1 = 1 - beta1 ** step, bc2 = 1 - beta2 ** step, stepSize = lr / bc1, bc2Sqrt = Math.sqrt(bc2);
  for (let i = 0; i < s.param.length; i++) {
    s.param[i] *= 1 - lr * wd;
    s.m[i] += (1 - beta1) * (grad[i] - s.m[i]);
    s.v[i] = s.v[i] * beta2 + (1 - beta2) * grad[i] * grad[i];
    const denom = Math.sqrt(s.v[i]) / bc2Sqrt + eps;
    s.param[i] += -stepSize * (s.m[i] / denom);
  }
}



function refSumSquares(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return s;
}

describe('adamw', () => {
  const configs = [
    { n: 1, lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 },
    { n: 1037, lr: 3e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.01 },
    { n: 70001, lr: 1e-2, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.5 },
    { n: 333, lr: 5e-3, beta1: 0.3, beta2: 0.9, eps: 1e-3, weightDecay: 0.2 },
  ];
  for (const c of configs)
    it(`matches torch.optim.AdamW over 6 steps (n=${c.n}, lr=${c.lr}, betas=${c.beta1}/${c.beta2}, wd=${c.weightDecay})`, () => {
      const param = randomF32(c.n, c.n + 1), m = new Float32Array(c.n), v = new Float32Array(c.n);
      const ref: AdamState = { param: Float64Array.from(param), m: new Float64Array(c.n), v: new Float64Array(c.n) };
      for (let step = 1; step <= 6; step++) {
        const grad = randomF32(c.n, 1000 * step + c.n, -2, 2);
        const r = ops.adamw({ param, grad, m, v, lr: c.lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weightDecay: c.weightDecay, step });
        expect(r.param).toBe(param);
        expect(r.m).toBe(m);
        expect(r.v).toBe(v);
        torchAdamwStep(ref, grad, c.lr, c.beta1, c.beta2, c.eps, c.weightDecay, step);
        expectClose(m, ref.m, 2e-6, 1e-7, `m (step ${step})`);
        expectClose(v, ref.v, 2e-6, 1e-10, `v (step ${step})`);
        expectClose(param, ref.param, 1e-6, 1e-6, `param (step ${step})`);
      }
    });

  it('first step moves each parameter by about lr * sign(grad) after decay', () => {
    const n = 101, lr = 0.01, wd = 0.1;
    const param = randomF32(n, 3), grad = randomF32(n, 4, 0.1, 1), start = param.slice();
    for (let i = 0; i < n; i += 2) grad[i] = -grad[i];
    ops.adamw({ param, grad, m: new Float32Array(n), v: new Float32Array(n), lr, weightDecay: wd, step: 1 });
    const expected = Array.from(start, (p, i) => p * (1 - lr * wd) - lr * Math.sign(grad[i]));
    expectClose(param, expected, 0, 1e-6, 'param');
  });

  it('uses torch defaults (betas 0.9/0.999, eps 1e-8, weight decay 0.01)', () => {
    const n = 50, param = randomF32(n, 5), grad = randomF32(n, 6);
    const ref: AdamState = { param: Float64Array.from(param), m: new Float64Array(n), v: new Float64Array(n) };
    const m = new Float32Array(n), v = new Float32Array(n);
    for (let step = 1; step <= 3; step++) {
      ops.adamw({ param, grad, m, v, lr: 1e-3, step });
      torchAdamwStep(ref, grad, 1e-3, 0.9, 0.999, 1e-8, 0.01, step);
    }
    expectClose(param, ref.param, 1e-6, 1e-7, 'param');
  });

  it('is bit-identical across thread counts and in the async form', async () => {
    const n = 200003, grad = randomF32(n, 7);
    const run = (fn: (a: Parameters<typeof ops.adamw>[0]) => unknown) => {
      const state = { param: randomF32(n, 8), grad, m: randomF32(n, 9, -0.1, 0.1), v: randomF32(n, 10, 0.01, 0.1) };
      const r = fn({ ...state, lr: 1e-3, weightDecay: 0.1, step: 7 });
      return { state, r };
    };
    const one = withThreads(1, () => run(ops.adamw).state), three = withThreads(3, () => run(ops.adamw).state);
    expect(bitsEqual(one.param, three.param) && bitsEqual(one.m, three.m) && bitsEqual(one.v, three.v)).toBe(true);
    const a = run(kernels.async.adamw);
    await a.r;
    expect(bitsEqual(a.state.param, one.param) && bitsEqual(a.state.v, one.v)).toBe(true);
  });

  it('rejects bad arguments', () => {
    const x = randomF32(4, 1), base = { param: x, grad: x.slice(), m: new Float32Array(4), v: new Float32Array(4), lr: 1e-3, step: 1 };
    expect(() => ops.adamw({ ...base, grad: new Float32Array(3) })).toThrow(/grad must have length 4, got 3/);
    expect(() => ops.adamw({ ...base, v: new Float32Array(5) })).toThrow(/v must have length 4/);
    expect(() => ops.adamw({ ...base, lr: -1 })).toThrow(/lr must be/);
    expect(() => ops.adamw({ ...base, beta1: 1 })).toThrow(/beta1 must be in \[0, 1\)/);
    expect(() => ops.adamw({ ...base, beta2: -0.1 })).toThrow(/beta2 must be/);
    expect(() => ops.adamw({ ...base, eps: 0 })).toThrow(/eps must be > 0/);
    expect(() => ops.adamw({ ...base, weightDecay: NaN })).toThrow(/weightDecay must be/);
    expect(() => ops.adamw({ ...base, step: 0 })).toThrow(/step must be an integer/);
    expect(() => ops.adamw({ ...base, step: 1.5 })).toThrow(/step must be an integer/);
    expect(() => ops.adamw({ ...base, m: new Float64Array(4) as never })).toThrow(/m must be a Float32Array/);
    expect(() => native.adamwUpdate({ param: x, grad: x, m: x, v: new Float32Array(2), lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1 }, false)).toThrow(/v must have length 4/);
    expect(() => native.adamwUpdate({ param: x, grad: x, m: x, v: x, lr: 1e-3, beta1: 0.9, beta2: 1.5, eps: 1e-8, weightDecay: 0, step: 1 }, false)).toThrow(/beta2/);
    // The old positional form is refused with a clear message, not misread.
    expect(() => (native.adamwUpdate as (...a: unknown[]) => void)(x, x, x, x, 1e-3, 0.9, 1.5, 1e-8, 0, 1, false)).toThrow(/options must be an object/);
  });
});

describe('sumSquares', () => {
  it('matches a float64 sum for small and large inputs', () => {
    for (const n of [1, 7, 1001, 1_000_003]) {
      const x = randomF32(n, n, -3, 3);
      const got = ops.sumSquares(x), want = refSumSquares(x);
      expect(Math.abs(got - want) / want).toBeLessThan(1e-12);
    }
    expect(ops.sumSquares(new Float32Array(0))).toBe(0);
  });

  it('keeps float64 precision where a float32 sum would not', () => {
    const x = new Float32Array(300_001).fill(1);
    x[0] = 4096; // 4096^2 + 300000 ones: exact in float64, not in float32 accumulation
    expect(ops.sumSquares(x)).toBe(4096 * 4096 + 300_000);
  });

  it('is bit-identical across thread counts and in the async form', async () => {
    const x = randomF32(1_234_567, 21, -5, 5);
    const one = withThreads(1, () => ops.sumSquares(x)), three = withThreads(3, () => ops.sumSquares(x));
    expect(Object.is(one, three)).toBe(true);
    expect(await kernels.async.sumSquares(x)).toBe(one);
  });

  it('rejects bad arguments', () => {
    expect(() => ops.sumSquares([1, 2] as never)).toThrow(/x must be a Float32Array/);
    expect(() => ops.scaleInPlace(new Float32Array(2), Infinity)).toThrow(/s must be/);
  });
});

describe('scaleInPlace', () => {
  it('scales in float32, in place', async () => {
    const x = randomF32(100_003, 31), start = x.slice();
    expect(ops.scaleInPlace(x, 0.37)).toBe(x);
    const s = Math.fround(0.37);
    for (let i = 0; i < x.length; i++) if (x[i] !== Math.fround(start[i] * s)) expect.fail(`x[${i}]`);
    await kernels.async.scaleInPlace(x, 2);
    for (let i = 0; i < 100; i++) expect(x[i]).toBe(Math.fround(Math.fround(start[i] * s) * 2));
  });
});

describe('clipGradNorm', () => {
  const make = () => [randomF32(1001, 41, -2, 2), randomF32(37, 42, -2, 2), randomF32(70_003, 43, -0.5, 0.5)];
  const totalNorm = (gs: Float32Array[]) => Math.sqrt(gs.reduce((s, g) => s + refSumSquares(g), 0));

  it('scales every gradient by maxNorm / (norm + 1e-6) when the norm exceeds maxNorm', () => {
    const grads = make(), before = grads.map((g) => g.slice());
    const norm = totalNorm(before), maxNorm = norm / 3;
    const r = ops.clipGradNorm(grads, maxNorm);
    expect(Math.abs(r.norm - norm) / norm).toBeLessThan(1e-12);
    expect(r.scale).toBeCloseTo(maxNorm / (norm + 1e-6), 12);
    const s = Math.fround(r.scale);
    grads.forEach((g, t) => {
      for (let i = 0; i < g.length; i++) if (g[i] !== Math.fround(before[t][i] * s)) expect.fail(`grads[${t}][${i}]`);
    });
    expect(Math.abs(totalNorm(grads) - maxNorm) / maxNorm).toBeLessThan(1e-6);
  });

  it('leaves gradients untouched when the norm is below maxNorm', () => {
    const grads = make(), before = grads.map((g) => g.slice());
    const norm = totalNorm(before);
    const r = ops.clipGradNorm(grads, norm * 2);
    expect(r.scale).toBe(1);
    expect(Math.abs(r.norm - norm) / norm).toBeLessThan(1e-12);
    grads.forEach((g, t) => expect(bitsEqual(g, before[t])).toBe(true));
    expect(ops.clipGradNorm([], 1)).toEqual({ norm: 0, scale: 1 });
  });

  it('handles a non-finite norm without touching the gradients, or throws on request', () => {
    const grads = make();
    grads[1][5] = NaN;
    const before = grads.map((g) => g.slice());
    const r = ops.clipGradNorm(grads, 1);
    expect(Number.isNaN(r.norm)).toBe(true);
    expect(r.scale).toBe(1);
    grads.forEach((g, t) => expect(bitsEqual(g, before[t])).toBe(true));
    grads[1][5] = Infinity;
    expect(() => ops.clipGradNorm(grads, 1, { errorIfNonfinite: true })).toThrow(/total gradient norm is Infinity/);
  });

  it('async form gives the same result', async () => {
    const a = make(), b = make();
    const ra = ops.clipGradNorm(a, 5), rb = await kernels.async.clipGradNorm(b, 5);
    expect(rb).toEqual(ra);
    a.forEach((g, t) => expect(bitsEqual(g, b[t])).toBe(true));
  });

  it('rejects bad arguments', () => {
    const g = randomF32(3, 1);
    expect(() => ops.clipGradNorm(g as never, 1)).toThrow(/grads must be an array/);
    expect(() => ops.clipGradNorm([g, new Float64Array(2) as never], 1)).toThrow(/grads\[1\] must be a Float32Array/);
    expect(() => ops.clipGradNorm([g], 0)).toThrow(/maxNorm must be > 0/);
    expect(() => ops.clipGradNorm([g], NaN)).toThrow(/maxNorm must be/);
    expect(() => ops.clipGradNorm([g], 1, { errorIfNonfinite: 'yes' as never })).toThrow(/errorIfNonfinite must be a boolean/);
  });
});
