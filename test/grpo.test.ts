import { describe, expect, it } from 'vitest';
import { kernels } from '../src/index.js';
import type { GrpoArgs, GrpoLossType } from '../src/kernels/losses.js';
import { expectClose, randomF32, rng } from './helpers.js';

// ---- float64 reference of the GRPO loss (the formula in src/kernels/losses.ts) -------------

interface Ref {
  loss: number;
  grad: Float64Array;
  kept: number;
  keptTokens: number;
  clipFraction: number;
  kl: number;
}

/** Loss and autograd-style gradient in float64; lp overrides args.logprobs (for finite differences). */
function refGrpo(a: GrpoArgs, lp: ArrayLike<number> = a.logprobs): Ref {
  const S = a.seqs, T = a.tokens;
  // the kernel takes the clip epsilons as float32
  const lo = 1 - Math.fround(a.clipLow ?? 0.2), hi = 1 + Math.fround(a.clipHigh ?? a.clipLow ?? 0.2);
  const beta = Math.fround(a.beta ?? 0), useKl = !!a.refLogprobs && beta !== 0;
  const thr = a.filterThreshold == null ? -1 : Math.fround(a.filterThreshold), type = a.lossType ?? 'grpo';
  const keep: boolean[] = [], ntok: number[] = [];
  let kept = 0, keptTokens = 0;
  for (let s = 0; s < S; s++) {
    keep.push(Math.abs(a.advantages[s]) > thr);
    let n = 0;
    for (let t = 0; t < T; t++) n += a.mask[s * T + t];
    ntok.push(n);
    if (keep[s]) { kept++; keptTokens += n; }
  }
  const grad = new Float64Array(S * T);
  let loss = 0, clipped = 0, kl = 0;
  if (kept === 0) return { loss: 0, grad, kept: 0, keptTokens: 0, clipFraction: 0, kl: 0 };
  for (let s = 0; s < S; s++) {
    if (!keep[s]) continue;
    const A = a.advantages[s];
    const N = type === 'grpo' ? kept * Math.max(ntok[s], 1) : type === 'bnpo' ? Math.max(keptTokens, 1)
      : type === 'dr_grpo' ? kept * T : a.normalizer!;
    for (let t = 0; t < T; t++) {
      const i = s * T + t;
      if (a.mask[i] === 0) continue;
      const r = Math.exp(lp[i] - a.oldLogprobs[i]);
      const rc = Math.min(Math.max(r, lo), hi);
      const u = r * A, c = rc * A, dc = r >= lo && r <= hi ? r * A : 0;
      let obj: number, dobj: number;
      if (u < c) { obj = u; dobj = r * A; } else if (c < u) { obj = c; dobj = dc; } else { obj = u; dobj = 0.5 * (r * A + dc); }
      if ((r < lo && A < 0) || (r > hi && A > 0)) clipped++;
      if (useKl) {
        const d = a.refLogprobs![i] - lp[i], e = Math.exp(d);
        obj -= beta * (e - d - 1);
        dobj += beta * (e - 1);
        kl += e - d - 1;
      }
      loss -= obj / N;
      grad[i] = -dobj / N;
    }
  }
  return { loss, grad, kept, keptTokens, clipFraction: keptTokens ? clipped / keptTokens : 0, kl: useKl && keptTokens ? kl / keptTokens : 0 };
}

/**
 * A random batch: ratios exp(lp - old) spread over about [0.6, 1.6] (so many tokens clip at
 * eps 0.2), masks with random lengths and holes (one sequence fully masked), and advantages of
 * both signs with some under the filter threshold (0.1): exactly 0, +-0.05, +-0.1.
 */
function batch(S: number, T: number, seed: number, extra: Partial<GrpoArgs> = {}): GrpoArgs {
  const r = rng(seed);
  const logprobs = randomF32(S * T, seed + 1, -4, -0.05);
  const oldLogprobs = new Float32Array(S * T), refLogprobs = new Float32Array(S * T);
  const mask = new Float32Array(S * T), advantages = new Float32Array(S);
  for (let i = 0; i < S * T; i++) {
    oldLogprobs[i] = logprobs[i] + (r() - 0.5) * 0.9;
    refLogprobs[i] = logprobs[i] + (r() - 0.5) * 1.2;
  }
  for (let s = 0; s < S; s++) {
    const len = s === 1 ? 0 : 1 + Math.floor(r() * T);
    for (let t = 0; t < len; t++) mask[s * T + t] = r() < 0.9 ? 1 : 0;
    const kind = s % 7;
    advantages[s] = kind === 3 ? 0 : kind === 5 ? (s % 2 ? 0.05 : -0.1) : (r() - 0.5) * 3;
  }
  return { logprobs, oldLogprobs, refLogprobs, advantages, mask, seqs: S, tokens: T, clipLow: 0.2, clipHigh: 0.28,
    beta: 0.04, filterThreshold: 0.1, lossType: 'grpo', ...extra };
}

// The CUDA kernel computes each token in fp32 (native/cuda/grpo.cu), the CPU one in float64: the
// loss statistics are then compared to 1e-6 relative instead of 1e-10.
const onCuda = kernels.backend === 'cuda';
const lossDigits = onCuda ? 6 : 12;

function check(args: GrpoArgs, what: string) {
  const out = kernels.grpo(args), ref = refGrpo(args);
  expect(out.kept, `${what} kept`).toBe(ref.kept);
  expect(out.keptTokens, `${what} keptTokens`).toBe(ref.keptTokens);
  expect(out.loss, `${what} loss`).toBeCloseTo(ref.loss, lossDigits);
  expect(Math.abs(out.loss - ref.loss)).toBeLessThanOrEqual(onCuda ? 1e-9 + 1e-6 * Math.abs(ref.loss) : 1e-12 + 1e-10 * Math.abs(ref.loss));
  expect(out.clipFraction, `${what} clipFraction`).toBeCloseTo(ref.clipFraction, 14);
  expect(out.kl, `${what} kl`).toBeCloseTo(ref.kl, lossDigits);
  expectClose(out.grad, ref.grad, 1e-6, 1e-12, `${what} grad`);
  return { out, ref };
}

const types: GrpoLossType[] = ['grpo', 'bnpo', 'dr_grpo', 'dapo'];
const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe('grpo', () => {
  for (const lossType of types)
    for (const variant of ['ref, beta 0.04', 'ref, beta 0', 'no ref'] as const)
      it(`${lossType} (${variant}) matches the float64 reference`, () => {
        const extra: Partial<GrpoArgs> = { lossType, normalizer: lossType === 'dapo' ? 377 : undefined };
        if (variant === 'ref, beta 0') extra.beta = 0;
        const args = batch(23, 41, types.indexOf(lossType) * 10 + 1, extra);
        if (variant === 'no ref') delete args.refLogprobs;
        const { out, ref } = check(args, lossType);
        expect(out.kept).toBeGreaterThan(0);
        expect(out.kept).toBeLessThan(23);
        expect(out.clipFraction).toBeGreaterThan(0.05);
        if (variant === 'ref, beta 0.04') expect(out.kl).toBeGreaterThan(0.01);
        else expect(out.kl).toBe(0);
        // dropped sequences and masked tokens get exactly zero gradient
        for (let s = 0; s < 23; s++)
          for (let t = 0; t < 41; t++)
            if (Math.abs(args.advantages[s]) <= 0.1 || args.mask[s * 41 + t] === 0) expect(out.grad[s * 41 + t]).toBe(0);
        expect(ref.loss).not.toBe(0);
      });

  for (const lossType of types)
    it(`${lossType} gradient matches central finite differences of the reference`, () => {
      const args = batch(12, 21, 100 + types.indexOf(lossType), { lossType, normalizer: lossType === 'dapo' ? 61 : undefined });
      const out = kernels.grpo(args);
      const lo = 1 - Math.fround(0.2), hi = 1 + Math.fround(0.28), h = 1e-6;
      const lp = Float64Array.from(args.logprobs);
      let checked = 0;
      for (let i = 0; i < lp.length; i++) {
        const r = Math.exp(lp[i] - args.oldLogprobs[i]);
        if (Math.abs(r - lo) < 1e-4 || Math.abs(r - hi) < 1e-4) continue; // kinks of the clip
        const x = lp[i];
        lp[i] = x + h;
        const fp = refGrpo(args, lp).loss;
        lp[i] = x - h;
        const fm = refGrpo(args, lp).loss;
        lp[i] = x;
        const fd = (fp - fm) / (2 * h);
        const err = Math.abs(out.grad[i] - fd);
        if (err > 1e-8 + 1e-5 * Math.abs(fd)) expect.fail(`grad[${i}] = ${out.grad[i]}, finite difference ${fd}`);
        if (fd !== 0) checked++;
      }
      expect(checked).toBeGreaterThan(30);
    });

  it('on-policy (old = logprobs), no KL: grad is -A / N per token and the loss is -mean A', () => {
    const S = 4, T = 5, lp = randomF32(S * T, 3, -3, -0.1);
    const advantages = new Float32Array([0.5, -1.25, 2, -0.75]);
    const mask = new Float32Array(S * T).fill(1);
    mask[4] = mask[3] = 0; // sequence 0 has 3 tokens
    const out = kernels.grpo({ logprobs: lp, oldLogprobs: lp, advantages, mask, seqs: S, tokens: T, lossType: 'grpo' });
    // r = 1 sits inside the clip range: the min is a tie, whose two halves both carry r*A
    for (let s = 0; s < S; s++)
      for (let t = 0; t < T; t++) {
        const n = s === 0 ? 3 : 5;
        expect(out.grad[s * T + t]).toBeCloseTo(mask[s * T + t] ? -advantages[s] / (S * n) : 0, 7);
      }
    expect(out.loss).toBeCloseTo(-(0.5 - 1.25 + 2 - 0.75) / 4, 7);
    expect(out.clipFraction).toBe(0);
    expect(out.kept).toBe(4);
    expect(out.keptTokens).toBe(18);
  });

  it('clipping: hand-computed values for each side of the clip', () => {
    // one sequence per case, one token each: ratio r, advantage A
    const cases: [number, number, boolean][] = [
      [1.5, 1, true], // r > 1+eps, A > 0: clipped, grad 0
      [1.5, -1, false], // r > 1+eps, A < 0: unclipped branch is the min
      [0.5, -1, true], // r < 1-eps, A < 0: clipped
      [0.5, 1, false], // r < 1-eps, A > 0: unclipped
      [1.1, 2, false], // inside
    ];
    const S = cases.length;
    const oldLogprobs = new Float32Array(S).fill(-1);
    const logprobs = Float32Array.from(cases, ([r]) => -1 + Math.log(r));
    const advantages = Float32Array.from(cases, ([, A]) => A);
    const out = kernels.grpo({ logprobs, oldLogprobs, advantages, mask: new Float32Array(S).fill(1), seqs: S, tokens: 1, clipLow: 0.2, clipHigh: 0.2, lossType: 'bnpo' });
    let obj = 0;
    cases.forEach(([r0, A, clipped], s) => {
      const r = Math.exp(logprobs[s] - oldLogprobs[s]);
      obj += clipped ? Math.min(Math.max(r0, 0.8), 1.2) * A : r * A;
      expect(out.grad[s]).toBeCloseTo(clipped ? 0 : (-r * A) / S, 6);
    });
    expect(out.clipFraction).toBeCloseTo(2 / 5, 12);
    expect(out.loss).toBeCloseTo(-obj / S, 6);
  });

  it('KL: value and gradient for hand-picked tokens', () => {
    const lp = new Float32Array([-1, -2]), ref = new Float32Array([-1.5, -1.25]);
    const out = kernels.grpo({ logprobs: lp, oldLogprobs: lp, refLogprobs: ref, advantages: new Float32Array([1]),
      mask: new Float32Array([1, 1]), seqs: 1, tokens: 2, beta: 0.5, lossType: 'grpo' });
    const kl = [0, 1].map((i) => Math.exp(ref[i] - lp[i]) - (ref[i] - lp[i]) - 1);
    expect(out.kl).toBeCloseTo((kl[0] + kl[1]) / 2, 7);
    expect(out.loss).toBeCloseTo(-(1 - 0.5 * kl[0] + 1 - 0.5 * kl[1]) / 2, 7);
    for (const i of [0, 1]) expect(out.grad[i]).toBeCloseTo(-(1 + 0.5 * (Math.exp(ref[i] - lp[i]) - 1)) / 2, 7);
  });

  it('a filtered sequence changes neither the loss nor the other gradients', () => {
    for (const lossType of types) {
      const normalizer = lossType === 'dapo' ? 100 : undefined;
      const a = batch(6, 13, 7, { lossType, normalizer, filterThreshold: 0.3 });
      a.advantages.set([0.9, -1.1, 0.7, -0.5, 1.3, -2]);
      const base = kernels.grpo(a);
      // the same batch plus a seventh sequence whose |A| <= threshold, with a full mask
      const b = batch(7, 13, 8, { lossType, normalizer, filterThreshold: 0.3 });
      for (const k of ['logprobs', 'oldLogprobs', 'refLogprobs', 'mask'] as const) b[k]!.set(a[k]!);
      b.mask.fill(1, 6 * 13);
      b.advantages.set([...a.advantages, -0.3]);
      const more = kernels.grpo(b);
      expect(more.kept, lossType).toBe(6);
      expect(more.loss, lossType).toBe(base.loss);
      expect(more.keptTokens).toBe(base.keptTokens);
      expect(more.clipFraction).toBe(base.clipFraction);
      expect(more.kl).toBe(base.kl);
      expect(bits(more.grad.subarray(0, 6 * 13)).equals(bits(base.grad)), lossType).toBe(true);
      expect(Array.from(more.grad.subarray(6 * 13)).every((g) => g === 0)).toBe(true);
    }
  });

  it('dapo micro-batches sum to the full batch (gradient accumulation)', () => {
    const S = 12, T = 29, full = batch(S, T, 55, { lossType: 'dapo', normalizer: 1 });
    const total = refGrpo({ ...full, lossType: 'bnpo' }).keptTokens;
    full.normalizer = total;
    const whole = kernels.grpo(full);
    const slice = (s0: number, s1: number): GrpoArgs => ({
      ...full, seqs: s1 - s0,
      logprobs: full.logprobs.slice(s0 * T, s1 * T), oldLogprobs: full.oldLogprobs.slice(s0 * T, s1 * T),
      refLogprobs: full.refLogprobs!.slice(s0 * T, s1 * T), mask: full.mask.slice(s0 * T, s1 * T),
      advantages: full.advantages.slice(s0, s1),
    });
    const a = kernels.grpo(slice(0, 5)), b = kernels.grpo(slice(5, S));
    expect(a.loss + b.loss).toBeCloseTo(whole.loss, onCuda ? 6 : 13);
    expect(a.kept + b.kept).toBe(whole.kept);
    expect(a.keptTokens + b.keptTokens).toBe(total);
    const grad = new Float32Array(S * T);
    grad.set(a.grad, 0);
    grad.set(b.grad, 5 * T);
    expect(bits(grad).equals(bits(whole.grad))).toBe(true);
    // the global normalizer is what makes this work: bnpo per micro-batch does not add up
    const bn = kernels.grpo({ ...slice(0, 5), lossType: 'bnpo' }).loss + kernels.grpo({ ...slice(5, S), lossType: 'bnpo' }).loss;
    expect(Math.abs(bn - whole.loss)).toBeGreaterThan(1e-4);
  });

  it('with no sequence kept: loss 0, grad 0, kept 0', () => {
    const args = batch(5, 8, 9, { filterThreshold: 10 });
    const out = kernels.grpo(args);
    expect(out).toMatchObject({ loss: 0, kept: 0, keptTokens: 0, clipFraction: 0, kl: 0 });
    expect(Array.from(out.grad).every((g) => g === 0)).toBe(true);
  });

  it('a kept sequence with no unmasked token counts in the grpo mean but adds 0', () => {
    const a = batch(3, 6, 12, { beta: 0 });
    a.advantages.set([1, -1, 0.5]);
    a.mask.fill(0, 6, 12); // sequence 1: kept, no tokens
    const out = kernels.grpo(a), ref = refGrpo(a);
    expect(out.kept).toBe(3);
    expect(out.loss).toBeCloseTo(ref.loss, lossDigits);
    const two = kernels.grpo({ ...a, seqs: 2, advantages: new Float32Array([1, 0.5]),
      logprobs: new Float32Array([...a.logprobs.subarray(0, 6), ...a.logprobs.subarray(12)]),
      oldLogprobs: new Float32Array([...a.oldLogprobs.subarray(0, 6), ...a.oldLogprobs.subarray(12)]),
      refLogprobs: undefined, mask: new Float32Array([...a.mask.subarray(0, 6), ...a.mask.subarray(12)]) });
    expect(out.loss).toBeCloseTo((two.loss * 2) / 3, lossDigits);
  });

  it('is bit-identical across thread counts, and async equals sync', async () => {
    const args = batch(301, 257, 77, { lossType: 'bnpo' });
    const before = kernels.threads;
    try {
      kernels.threads = 1;
      const one = kernels.grpo(args);
      kernels.threads = 3;
      const three = kernels.grpo(args);
      expect(three.loss).toBe(one.loss);
      expect(three.clipFraction).toBe(one.clipFraction);
      expect(three.kl).toBe(one.kl);
      expect(bits(three.grad).equals(bits(one.grad))).toBe(true);
      const async = await kernels.async.grpo(args);
      expect(async.loss).toBe(one.loss);
      expect(bits(async.grad).equals(bits(one.grad))).toBe(true);
    } finally {
      kernels.threads = before;
    }
  });

  it('rejects bad arguments with errors naming them', () => {
    const a = batch(3, 4, 1);
    expect(() => kernels.grpo({ ...a, mask: a.mask.map((m, i) => (i === 2 ? 0.5 : m)) })).toThrow(/mask\[2\] = 0.5 must be 0 or 1/);
    expect(() => kernels.grpo({ ...a, mask: new Float32Array(11) })).toThrow(/mask must have length 12/);
    expect(() => kernels.grpo({ ...a, lossType: 'ppo' as never })).toThrow(/lossType must be one of "grpo", "bnpo", "dr_grpo", "dapo"/);
    expect(() => kernels.grpo({ ...a, lossType: 'dapo' })).toThrow(/normalizer is required/);
    expect(() => kernels.grpo({ ...a, lossType: 'dapo', normalizer: 0 })).toThrow(/normalizer must be/);
    expect(() => kernels.grpo({ ...a, lossType: 'dapo', normalizer: Infinity })).toThrow(/normalizer must be/);
    expect(() => kernels.grpo({ ...a, clipLow: 1 })).toThrow(/clipLow must be/);
    expect(() => kernels.grpo({ ...a, clipLow: -0.1 })).toThrow(/clipLow must be/);
    expect(() => kernels.grpo({ ...a, clipHigh: -0.1 })).toThrow(/clipHigh must be/);
    expect(() => kernels.grpo({ ...a, beta: -1 })).toThrow(/beta must be/);
    expect(() => kernels.grpo({ ...a, beta: NaN })).toThrow(/beta must be/);
    expect(() => kernels.grpo({ ...a, filterThreshold: -0.5 })).toThrow(/filterThreshold must be/);
    expect(() => kernels.grpo({ ...a, advantages: new Float32Array(2) })).toThrow(/advantages must have length 3/);
    expect(() => kernels.grpo({ ...a, advantages: new Float32Array([1, NaN, 1]) })).toThrow(/advantages\[1\] = NaN is not finite/);
    expect(() => kernels.grpo({ ...a, refLogprobs: new Float32Array(5) })).toThrow(/refLogprobs must have length 12/);
    expect(() => kernels.grpo({ ...a, oldLogprobs: new Float64Array(12) as never })).toThrow(/oldLogprobs must be a Float32Array/);
    expect(() => kernels.grpo({ ...a, seqs: 0 })).toThrow(/seqs must be an integer/);
    expect(() => kernels.grpo(undefined as never)).toThrow(/args must be an object/);
    // beta > 0 without refLogprobs is accepted: the KL term is 0
    const { refLogprobs: _, ...noRef } = a;
    expect(kernels.grpo(noRef).kl).toBe(0);
  });
});
