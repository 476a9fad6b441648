import { describe, expect, it } from 'vitest';
import { kernels } from '../src/index.js';
import { native } from '../src/native.js';
import { bitsEqual, expectClose, randomF32, rng, withThreads } from './helpers.js';

interface Shape {
  B: number; H: number; KVH: number; Tq: number; Tk: number; D: number; causal: boolean;
}
type Arr = ArrayLike<number>;

const opts = (s: Shape) => ({ batch: s.B, heads: s.H, kvHeads: s.KVH, seqQ: s.Tq, seqK: s.Tk, headDim: s.D, causal: s.causal });
const visible = (s: Shape, i: number) => (s.causal ? Math.max(0, Math.min(s.Tk, s.Tk - s.Tq + i + 1)) : s.Tk);
const qi = (s: Shape, b: number, i: number, h: number) => ((b * s.Tq + i) * s.H + h) * s.D;
const ki = (s: Shape, b: number, j: number, kvh: number) => ((b * s.Tk + j) * s.KVH + kvh) * s.D;

/** Materialised float64 attention: out, lse and the probabilities of every (b, h, i) row. */
function refForward(s: Shape, q: Arr, k: Arr, v: Arr) {
  const out = new Float64Array(s.B * s.Tq * s.H * s.D), lse = new Float64Array(s.B * s.H * s.Tq);
  const probs: Float64Array[] = [];
  const scale = 1 / Math.sqrt(s.D);
  for (let b = 0; b < s.B; b++)
    for (let h = 0; h < s.H; h++)
      for (let i = 0; i < s.Tq; i++) {
        const kvh = Math.floor((h * s.KVH) / s.H), n = visible(s, i), p = new Float64Array(n);
        let mx = -Infinity;
        for (let j = 0; j < n; j++) {
          let dot = 0;
          for (let d = 0; d < s.D; d++) dot += q[qi(s, b, i, h) + d] * k[ki(s, b, j, kvh) + d];
          p[j] = dot * scale;
          mx = Math.max(mx, p[j]);
        }
        let sum = 0;
        for (let j = 0; j < n; j++) sum += p[j] = Math.exp(p[j] - mx);
        for (let j = 0; j < n; j++) {
          p[j] /= sum;
          for (let d = 0; d < s.D; d++) out[qi(s, b, i, h) + d] += p[j] * v[ki(s, b, j, kvh) + d];
        }
        lse[(b * s.H + h) * s.Tq + i] = n ? mx + Math.log(sum) : -Infinity;
        probs.push(p);
      }
  return { out, lse, probs };
}

/** Float64 gradients of sum(out * dout) through the materialised softmax. */
function refBackward(s: Shape, q: Arr, k: Arr, v: Arr, dout: Arr) {
  const { probs } = refForward(s, q, k, v);
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length), dv = new Float64Array(v.length);
  const scale = 1 / Math.sqrt(s.D);
  let row = 0;
  for (let b = 0; b < s.B; b++)
    for (let h = 0; h < s.H; h++)
      for (let i = 0; i < s.Tq; i++) {
        const kvh = Math.floor((h * s.KVH) / s.H), p = probs[row++], n = p.length;
        const dp = new Float64Array(n);
        let dsum = 0;
        for (let j = 0; j < n; j++) {
          for (let d = 0; d < s.D; d++) {
            dp[j] += dout[qi(s, b, i, h) + d] * v[ki(s, b, j, kvh) + d];
            dv[ki(s, b, j, kvh) + d] += p[j] * dout[qi(s, b, i, h) + d];
          }
          dsum += p[j] * dp[j];
        }
        for (let j = 0; j < n; j++) {
          const ds = p[j] * (dp[j] - dsum) * scale;
          for (let d = 0; d < s.D; d++) {
            dq[qi(s, b, i, h) + d] += ds * k[ki(s, b, j, kvh) + d];
            dk[ki(s, b, j, kvh) + d] += ds * q[qi(s, b, i, h) + d];
          }
        }
      }
  return { dq, dk, dv };
}

function inputs(s: Shape, seed: number) {
  return {
    q: randomF32(s.B * s.Tq * s.H * s.D, seed, -2, 2),
    k: randomF32(s.B * s.Tk * s.KVH * s.D, seed + 1, -2, 2),
    v: randomF32(s.B * s.Tk * s.KVH * s.D, seed + 2),
  };
}

const rms = (x: Arr) => Math.sqrt(Array.from(x).reduce((a, y) => a + y * y, 0) / x.length);


// Sizes straddle the 64-key blocks and the query tiles (about 64 rows of heads/kvHeads heads).
const shapes: [string, Shape][] = [
  ['Tq = Tk = 37, D = 12, H = KVH', { B: 1, H: 2, KVH: 2, Tq: 37, Tk: 37, D: 12, causal: true }],
  ['Tq = 5 < Tk = 70 (a continued prefix), GQA 6/2', { B: 1, H: 6, KVH: 2, Tq: 5, Tk: 70, D: 12, causal: true }],
  ['B = 2, T = 150 (3 key blocks, several query tiles), GQA 6/2', { B: 2, H: 6, KVH: 2, Tq: 150, Tk: 150, D: 20, causal: true }],
  ['non-causal, Tq = 37, Tk = 130, B = 2', { B: 2, H: 3, KVH: 3, Tq: 37, Tk: 130, D: 16, causal: false }],
  ['non-causal, Tq = 70 > Tk = 9, GQA 4/1', { B: 1, H: 4, KVH: 1, Tq: 70, Tk: 9, D: 8, causal: false }],
  ['D = 80 (a partial vector), T = 100, GQA 4/1', { B: 1, H: 4, KVH: 1, Tq: 100, Tk: 100, D: 80, causal: true }],
  ['B * kvHeads = 32 (one task per kv head in the backward)', { B: 4, H: 16, KVH: 8, Tq: 67, Tk: 67, D: 8, causal: true }],
  ['causal with Tq = 9 > Tk = 5: early queries see no key', { B: 2, H: 2, KVH: 1, Tq: 9, Tk: 5, D: 8, causal: true }],
];

describe('attention forward', () => {
  for (const [name, s] of shapes)
    it(`${name}: out and lse match a float64 reference`, () => {
      const { q, k, v } = inputs(s, s.Tq * 31 + s.Tk);
      const { out, lse } = kernels.ops.attentionForward({ q, k, v, ...opts(s) });
      const ref = refForward(s, q, k, v);
      expectClose(out, ref.out, 1e-5, 2e-6, 'out');
      expectClose(lse, ref.lse, 1e-5, 1e-5, 'lse');
      expect(Array.from(kernels.attention({ q, k, v, ...opts(s) }))).toEqual(Array.from(out));
    });

  it('queries before key 0 (causal, seqQ > seqK) give out = 0 and lse = -Infinity', () => {
    const s: Shape = { B: 1, H: 2, KVH: 1, Tq: 9, Tk: 5, D: 8, causal: true };
    const { q, k, v } = inputs(s, 3);
    const { out, lse } = kernels.ops.attentionForward({ q, k, v, ...opts(s) });
    for (let h = 0; h < s.H; h++)
      for (let i = 0; i < s.Tq; i++) {
        const row = Array.from(out.subarray(qi(s, 0, i, h), qi(s, 0, i, h) + s.D));
        if (i < s.Tq - s.Tk) {
          expect(lse[h * s.Tq + i]).toBe(-Infinity);
          expect(row.every((x) => x === 0)).toBe(true);
        } else {
          expect(Number.isFinite(lse[h * s.Tq + i])).toBe(true);
          expect(row.some((x) => x !== 0)).toBe(true);
        }
      }
    const { dq, dk, dv } = kernels.ops.attentionBackward({ q, k, v, ...opts(s), dout: randomF32(out.length, 4), out, lse });
    for (const g of [dq, dk, dv]) expect(g.every(Number.isFinite)).toBe(true);
    expect(Array.from(dq.subarray(0, (s.Tq - s.Tk) * s.H * s.D)).every((x) => x === 0)).toBe(true);
  });

  it('the first key alone: a causal query at position 0 returns v[0]', () => {
    const s: Shape = { B: 1, H: 3, KVH: 1, Tq: 4, Tk: 4, D: 5, causal: true };
    const { q, k, v } = inputs(s, 9);
    const out = kernels.attention({ q, k, v, ...opts(s) });
    for (let h = 0; h < s.H; h++) expectClose(out.subarray(h * s.D, (h + 1) * s.D), v.subarray(0, s.D), 1e-6, 1e-7, 'out');
  });
});

describe('attention backward', () => {
  for (const [name, s] of shapes)
    it(`${name}: dq, dk, dv match a float64 reference`, () => {
      const { q, k, v } = inputs(s, s.Tq * 7 + s.Tk);
      const dout = randomF32(q.length, 77);
      const { out, lse } = kernels.ops.attentionForward({ q, k, v, ...opts(s) });
      const g = kernels.ops.attentionBackward({ q, k, v, ...opts(s), dout, out, lse });
      const ref = refBackward(s, q, k, v, dout);
      expectClose(g.dq, ref.dq, 1e-4, 1e-4 * rms(ref.dq), 'dq');
      expectClose(g.dk, ref.dk, 1e-4, 1e-4 * rms(ref.dk), 'dk');
      expectClose(g.dv, ref.dv, 1e-4, 1e-4 * rms(ref.dv), 'dv');
    });

  for (const s of [shapes[1][1], shapes[2][1], shapes[3][1]])
    it(`matches central differences of L = sum(out * W) (B ${s.B}, H ${s.H}/${s.KVH}, ${s.Tq}x${s.Tk}, causal ${s.causal})`, () => {
      const { q, k, v } = inputs(s, 101);
      const W = randomF32(q.length, 102);
      const { out, lse } = kernels.ops.attentionForward({ q, k, v, ...opts(s) });
      const g = kernels.ops.attentionBackward({ q, k, v, ...opts(s), dout: W, out, lse });
      const x = { q: Float64Array.from(q), k: Float64Array.from(k), v: Float64Array.from(v) };
      const loss = () => {
        const o = refForward(s, x.q, x.k, x.v).out;
        let l = 0;
        for (let i = 0; i < o.length; i++) l += o[i] * W[i];
        return l;
      };
      const r = rng(103), eps = 1e-3;
      for (const [name, grad] of [['q', g.dq], ['k', g.dk], ['v', g.dv]] as const) {
        const arr = x[name], tol = 1e-3 * rms(grad);
        for (let t = 0; t < 6; t++) {
          const idx = Math.floor(r() * arr.length), x0 = arr[idx];
          arr[idx] = x0 + eps;
          const lp = loss();
          arr[idx] = x0 - eps;
          const lm = loss();
          arr[idx] = x0;
          const fd = (lp - lm) / (2 * eps);
          expect(Math.abs(grad[idx] - fd), `d${name}[${idx}]: got ${grad[idx]}, finite difference ${fd}`)
            .toBeLessThanOrEqual(1e-3 * Math.abs(fd) + tol);
        }
      }
    });
});

describe('attention decode', () => {
  it('matches the last row of a causal prefill, with ragged lengths', () => {
    const B = 3, H = 6, KVH = 2, D = 12, maxSeq = 80, lengths = Int32Array.from([1, 37, 70]);
    // Unfilled cache slots hold NaN: reading past a row's length would poison its output.
    const kCache = new Float32Array(B * maxSeq * KVH * D).fill(NaN), vCache = new Float32Array(kCache.length).fill(NaN);
    const q = new Float32Array(B * H * D);
    for (let b = 0; b < B; b++) {
      const s: Shape = { B: 1, H, KVH, Tq: lengths[b], Tk: lengths[b], D, causal: true };
      const x = inputs(s, 500 + b);
      kCache.set(x.k, b * maxSeq * KVH * D);
      vCache.set(x.v, b * maxSeq * KVH * D);
      q.set(x.q.subarray(qi(s, 0, s.Tq - 1, 0)), b * H * D);
    }
    const out = kernels.ops.attentionDecode({ q, kCache, vCache, lengths, batch: B, heads: H, kvHeads: KVH, maxSeq, headDim: D });
    for (let b = 0; b < B; b++) {
      const s: Shape = { B: 1, H, KVH, Tq: lengths[b], Tk: lengths[b], D, causal: true };
      const x = inputs(s, 500 + b);
      const prefill = kernels.attention({ ...x, ...opts(s) });
      const last = prefill.subarray(qi(s, 0, s.Tq - 1, 0));
      expectClose(out.subarray(b * H * D, (b + 1) * H * D), last, 1e-5, 1e-6, `decode row ${b}`);
      expectClose(out.subarray(b * H * D, (b + 1) * H * D), refForward(s, x.q, x.k, x.v).out.subarray(qi(s, 0, s.Tq - 1, 0)), 1e-5, 2e-6, `decode row ${b} vs float64`);
    }
  });
});

describe('attention determinism and async', () => {
  it('is bit-identical for 1, 2 and 3 threads (forward, both backward paths, decode)', () => {
    const cases: Shape[] = [
      { B: 2, H: 6, KVH: 2, Tq: 150, Tk: 150, D: 20, causal: true },
      { B: 4, H: 16, KVH: 8, Tq: 67, Tk: 67, D: 8, causal: true },
    ];
    for (const s of cases) {
      const { q, k, v } = inputs(s, 11);
      const dout = randomF32(q.length, 12);
      const lengths = Int32Array.from({ length: s.B }, (_, b) => s.Tk - 13 * b);
      const run = () => {
        const f = kernels.ops.attentionForward({ q, k, v, ...opts(s) });
        const g = kernels.ops.attentionBackward({ q, k, v, ...opts(s), dout, ...f });
        const dec = kernels.ops.attentionDecode({
          q: q.subarray(0, s.B * s.H * s.D), kCache: k, vCache: v, lengths,
          batch: s.B, heads: s.H, kvHeads: s.KVH, maxSeq: s.Tk, headDim: s.D,
        });
        return [f.out, f.lse, g.dq, g.dk, g.dv, dec];
      };
      const one = withThreads(1, run), two = withThreads(2, run), three = withThreads(3, run);
      for (let i = 0; i < one.length; i++) {
        expect(bitsEqual(two[i], one[i]), `output ${i}, 2 threads`).toBe(true);
        expect(bitsEqual(three[i], one[i]), `output ${i}, 3 threads`).toBe(true);
      }
    }
  });

  it('async forms give the same results as the sync forms', async () => {
    const s: Shape = { B: 2, H: 4, KVH: 2, Tq: 33, Tk: 70, D: 16, causal: true };
    const { q, k, v } = inputs(s, 21);
    const dout = randomF32(q.length, 22);
    const f = kernels.ops.attentionForward({ q, k, v, ...opts(s) });
    const fa = await kernels.async.attentionForward({ q, k, v, ...opts(s) });
    expect(bitsEqual(fa.out, f.out) && bitsEqual(fa.lse, f.lse)).toBe(true);
    expect(bitsEqual(await kernels.async.attention({ q, k, v, ...opts(s) }), f.out)).toBe(true);
    const g = kernels.ops.attentionBackward({ q, k, v, ...opts(s), dout, ...f });
    const ga = await kernels.async.attentionBackward({ q, k, v, ...opts(s), dout, ...f });
    expect(bitsEqual(ga.dq, g.dq) && bitsEqual(ga.dk, g.dk) && bitsEqual(ga.dv, g.dv)).toBe(true);
    const dargs = { q: q.subarray(0, s.B * s.H * s.D), kCache: k, vCache: v, lengths: Int32Array.from([70, 41]), batch: s.B, heads: s.H, kvHeads: s.KVH, maxSeq: s.Tk, headDim: s.D };
    expect(bitsEqual(await kernels.async.attentionDecode(dargs), kernels.ops.attentionDecode(dargs))).toBe(true);
  });

  it('causal defaults to true', () => {
    const s: Shape = { B: 1, H: 2, KVH: 1, Tq: 20, Tk: 20, D: 8, causal: true };
    const { q, k, v } = inputs(s, 31);
    const { causal: _, ...noCausal } = opts(s);
    expect(bitsEqual(kernels.attention({ q, k, v, ...noCausal }), kernels.attention({ q, k, v, ...opts(s) }))).toBe(true);
    expect(bitsEqual(kernels.attention({ q, k, v, ...opts({ ...s, causal: false }) }), kernels.attention({ q, k, v, ...opts(s) }))).toBe(false);
  });
});

describe('attention rejects bad arguments', () => {
  const s: Shape = { B: 1, H: 4, KVH: 2, Tq: 3, Tk: 5, D: 4, causal: true };
  const { q, k, v } = inputs(s, 41);
  const good = { q, k, v, ...opts(s) };

  it('forward', () => {
    expect(() => kernels.attention({ ...good, kvHeads: 3 })).toThrow(RangeError);
    expect(() => kernels.attention({ ...good, kvHeads: 3 })).toThrow(/kvHeads must divide heads/);
    expect(() => kernels.attention({ ...good, q: q.subarray(1) })).toThrow(/q must have length 48, got 47/);
    expect(() => kernels.attention({ ...good, k: new Float32Array(39) })).toThrow(/k must have length 40/);
    expect(() => kernels.attention({ ...good, v: new Float64Array(40) as unknown as Float32Array })).toThrow(/v must be a Float32Array/);
    expect(() => kernels.attention({ ...good, seqQ: 0 })).toThrow(/seqQ must be an integer/);
    expect(() => kernels.attention({ ...good, headDim: 2.5 })).toThrow(/headDim must be an integer/);
    expect(() => kernels.attention({ ...good, batch: '1' as never })).toThrow(/batch must be a number/);
    expect(() => kernels.attention({ ...good, heads: undefined as never })).toThrow(/heads must be a number/);
    expect(() => kernels.attention({ ...good, causal: 1 as never })).toThrow(/causal must be a boolean/);
    expect(() => kernels.attention(null as never)).toThrow(/options must be an object/);
  });

  it('backward', () => {
    const f = kernels.ops.attentionForward(good);
    const args = { ...good, dout: randomF32(q.length, 42), ...f };
    expect(() => kernels.ops.attentionBackward({ ...args, lse: f.lse.subarray(1) })).toThrow(/lse must have length 12, got 11/);
    expect(() => kernels.ops.attentionBackward({ ...args, out: undefined as never })).toThrow(/out must be a Float32Array/);
    expect(() => kernels.ops.attentionBackward({ ...args, dout: new Float32Array(5) })).toThrow(/dout must have length 48/);
  });

  it('decode', () => {
    const kCache = randomF32(2 * 6 * 2 * 4, 43);
    const args = { q: randomF32(2 * 4 * 4, 44), kCache, vCache: kCache, lengths: Int32Array.from([6, 1]), batch: 2, heads: 4, kvHeads: 2, maxSeq: 6, headDim: 4 };
    expect(kernels.ops.attentionDecode(args).every(Number.isFinite)).toBe(true);
    expect(() => kernels.ops.attentionDecode({ ...args, lengths: Int32Array.from([7, 1]) })).toThrow(/lengths\[0\] = 7 is outside \[1, 6\]/);
    expect(() => kernels.ops.attentionDecode({ ...args, lengths: Int32Array.from([6, 0]) })).toThrow(/lengths\[1\] = 0/);
    expect(() => kernels.ops.attentionDecode({ ...args, lengths: Int32Array.from([6]) })).toThrow(/lengths must have length 2/);
    expect(() => kernels.ops.attentionDecode({ ...args, lengths: [6, 1] as never })).toThrow(/lengths must be a Int32Array/);
    expect(() => kernels.ops.attentionDecode({ ...args, kvHeads: 3 })).toThrow(/kvHeads must divide heads/);
    expect(() => kernels.ops.attentionDecode({ ...args, vCache: kCache.subarray(2) })).toThrow(/vCache must have length 96/);
    expect(() => kernels.ops.attentionDecode({ ...args, maxSeq: 0 })).toThrow(/maxSeq must be an integer/);
  });

  it('the addon checks too (a direct call cannot read out of bounds)', () => {
    const out = new Float32Array(48);
    expect(() => native.attentionForward({ out, lse: null, q, k, v, batch: 1, heads: 4, kvHeads: 3, seqQ: 3, seqK: 5, headDim: 4, causal: true }, false)).toThrow(/kvHeads must divide heads/);
    expect(() => native.attentionForward({ out, lse: null, q, k: k.subarray(1), v, batch: 1, heads: 4, kvHeads: 2, seqQ: 3, seqK: 5, headDim: 4, causal: true }, false)).toThrow(/k must have length 40/);
    expect(() => native.attentionDecode({ out: new Float32Array(16), q: q.subarray(0, 16), kCache: k, vCache: v, lengths: Int32Array.from([6]), batch: 1, heads: 4, kvHeads: 2, maxSeq: 5, headDim: 4 }, false)).toThrow(/lengths\[0\] = 6 is outside \[1, 5\]/);
  });
});

describe('bf16 attention forward', () => {
  // The float64 reference on the widened bf16 inputs; out is bf16 (relative precision 2^-8), lse fp32.
  for (const s of [
    { B: 2, H: 4, KVH: 2, Tq: 37, Tk: 37, D: 64, causal: true },
    { B: 1, H: 2, KVH: 1, Tq: 20, Tk: 45, D: 128, causal: true },
    { B: 1, H: 3, KVH: 3, Tq: 9, Tk: 30, D: 40, causal: false },
  ] satisfies Shape[])
    it(`B${s.B} H${s.H}/${s.KVH} Tq${s.Tq} Tk${s.Tk} D${s.D}${s.causal ? ' causal' : ''} matches float64 to bf16 precision`, () => {
      const f = inputs(s, 31 + s.D);
      const q = kernels.toBf16(f.q), k = kernels.toBf16(f.k), v = kernels.toBf16(f.v);
      const { out, lse } = kernels.ops.attentionBf16({ ...opts(s), q, k, v });
      expect(out).toBeInstanceOf(Uint16Array);
      const ref = refForward(s, kernels.fromBf16(q), kernels.fromBf16(k), kernels.fromBf16(v));
      const got = kernels.fromBf16(out);
      let maxRef = 0;
      for (const x of ref.out) maxRef = Math.max(maxRef, Math.abs(x));
      for (let i = 0; i < got.length; i++) expect(Math.abs(got[i] - ref.out[i])).toBeLessThanOrEqual(1e-2 * maxRef);
      expectClose(lse, ref.lse, 1e-4, 1e-4, 'lse');
    });

  it('rejects fp32 inputs with a clear error', () => {
    const s = { B: 1, H: 1, KVH: 1, Tq: 2, Tk: 2, D: 4, causal: true };
    expect(() => kernels.ops.attentionBf16({ ...opts(s), q: new Float32Array(8) as never, k: new Uint16Array(8), v: new Uint16Array(8) })).toThrow(/q must be a Uint16Array/);
  });
});
