import { describe, expect, it } from 'vitest';
import { kernels } from '../src/index.js';
import { native } from '../src/native.js';
import { bitsEqual, expectClose, randomF32, randomInts, withThreads } from './helpers.js';

const ops = kernels.ops;

// ---- float64 references --------------------------------------------------------------------

function refRmsnorm(x: ArrayLike<number>, w: ArrayLike<number>, rows: number, dim: number, eps: number): Float64Array {
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] ** 2;
    const s = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[r * dim + i] = x[r * dim + i] * s * w[i];
  }
  return out;
}

// Hugging Face computes inv_freq, the angle and cos/sin inputs in float32; so does the reference.
function refRope(x: ArrayLike<number>, pos: ArrayLike<number>, T: number, H: number, D: number, theta: number, inverse = false): Float64Array {
  const half = D / 2, out = new Float64Array(T * H * D);
  const f = Math.fround;
  for (let t = 0; t < T; t++)
    for (let i = 0; i < half; i++) {
      const inv = f(1 / f(Math.pow(f(theta), f(f(2 * i) / f(D)))));
      const ang = f(f(pos[t]) * inv);
      const c = Math.cos(ang), s = inverse ? -Math.sin(ang) : Math.sin(ang);
      for (let h = 0; h < H; h++) {
        const o = (t * H + h) * D, x1 = x[o + i], x2 = x[o + i + half];
        out[o + i] = x1 * c - x2 * s;
        out[o + i + half] = x2 * c + x1 * s;
      }
    }
  return out;
}

const silu = (g: number) => g / (1 + Math.exp(-g));

function refSwiglu(g: ArrayLike<number>, u: ArrayLike<number>): Float64Array {
  const out = new Float64Array(g.length);
  for (let i = 0; i < g.length; i++) out[i] = silu(g[i]) * u[i];
  return out;
}

function refEmbedding(ids: ArrayLike<number>, table: ArrayLike<number>, dim: number): Float64Array {
  const out = new Float64Array(ids.length * dim);
  for (let n = 0; n < ids.length; n++) for (let i = 0; i < dim; i++) out[n * dim + i] = table[ids[n] * dim + i];
  return out;
}

/** Weighted sum Σ out∘W in float64: the scalar loss whose gradient the backward computes. */
function dotF64(out: ArrayLike<number>, w: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < out.length; i++) s += out[i] * w[i];
  return s;
}

/**
 * Central finite differences of L(x) = Σ f(x)∘W at the given indices of x (float64 copy of x),
 * h scaled to the element.
 */
function finiteDiff(x: Float32Array, f: (x: Float64Array) => ArrayLike<number>, W: ArrayLike<number>, indices?: number[]): Map<number, number> {
  const xx = Float64Array.from(x), grads = new Map<number, number>();
  for (const i of indices ?? [...x.keys()]) {
    const h = 1e-4 * Math.max(1, Math.abs(xx[i])), keep = xx[i];
    xx[i] = keep + h;
    const lp = dotF64(f(xx), W);
    xx[i] = keep - h;
    const lm = dotF64(f(xx), W);
    xx[i] = keep;
    grads.set(i, (lp - lm) / (2 * h));
  }
  return grads;
}

function expectGradClose(actual: Float32Array, fd: Map<number, number>, rtol: number, atol: number, what: string) {
  const idx = [...fd.keys()];
  expectClose(idx.map((i) => actual[i]), idx.map((i) => fd.get(i)!), rtol, atol, what);
}

function sampleIndices(n: number, count: number, seed: number): number[] {
  if (n <= count) return [...Array(n).keys()];
  return Array.from(randomInts(count, seed, 0, n));
}



// ---- RMSNorm -------------------------------------------------------------------------------

describe('rmsnorm', () => {
  const shapes: [number, number][] = [[1, 1], [3, 7], [5, 37], [70, 129], [131, 67]];
  for (const [rows, dim] of shapes)
    it(`forward ${rows}x${dim} matches a float64 reference`, () => {
      const x = randomF32(rows * dim, rows * 31 + dim, -2, 2), w = randomF32(dim, dim + 5, 0.5, 1.5);
      const eps = 1e-5;
      const { out, rstd } = ops.rmsnorm(x, w, { rows, dim, eps });
      expectClose(out, refRmsnorm(x, w, rows, dim, eps), 1e-5, 1e-6, 'out');
      const expRstd = Array.from({ length: rows }, (_, r) => {
        let ss = 0;
        for (let i = 0; i < dim; i++) ss += x[r * dim + i] ** 2;
        return 1 / Math.sqrt(ss / dim + eps);
      });
      expectClose(rstd, expRstd, 1e-6, 0, 'rstd');
    });

  for (const [rows, dim] of [[3, 7], [5, 37], [131, 67]] as [number, number][])
    it(`backward ${rows}x${dim} matches finite differences`, () => {
      const x = randomF32(rows * dim, rows + dim * 3, -2, 2), w = randomF32(dim, dim * 7, 0.5, 1.5);
      const W = randomF32(rows * dim, 99 + rows);
      const eps = 1e-5;
      const { rstd } = ops.rmsnorm(x, w, { rows, dim, eps });
      const { dinp, dweight } = ops.rmsnormBackward({ dout: W, inp: x, weight: w, rstd, rows, dim });
      const fdX = finiteDiff(x, (xx) => refRmsnorm(xx, w, rows, dim, eps), W, sampleIndices(rows * dim, 300, 3));
      expectGradClose(dinp, fdX, 1e-4, 1e-5, 'dinp');
      const fdW = finiteDiff(w, (ww) => refRmsnorm(x, ww, rows, dim, eps), W);
      expectGradClose(dweight, fdW, 1e-4, 1e-4, 'dweight');
    });

  it('backward accumulates into a given dweight (+=)', () => {
    const rows = 150, dim = 33;
    const x = randomF32(rows * dim, 1), w = randomF32(dim, 2), dout = randomF32(rows * dim, 3);
    const { rstd } = ops.rmsnorm(x, w, { rows, dim });
    const fresh = ops.rmsnormBackward({ dout, inp: x, weight: w, rstd, rows, dim }).dweight;
    const start = randomF32(dim, 4, -3, 3), acc = start.slice();
    const r = ops.rmsnormBackward({ dout, inp: x, weight: w, rstd, rows, dim, dweight: acc });
    expect(r.dweight).toBe(acc);
    for (let i = 0; i < dim; i++) expect(acc[i]).toBe(Math.fround(start[i] + fresh[i]));
  });

  it('backward is bit-identical across thread counts', () => {
    const rows = 1000, dim = 257;
    const x = randomF32(rows * dim, 11), w = randomF32(dim, 12), dout = randomF32(rows * dim, 13);
    const { rstd } = ops.rmsnorm(x, w, { rows, dim });
    const run = () => ops.rmsnormBackward({ dout, inp: x, weight: w, rstd, rows, dim });
    const one = withThreads(1, run), three = withThreads(3, run);
    expect(bitsEqual(one.dinp, three.dinp)).toBe(true);
    expect(bitsEqual(one.dweight, three.dweight)).toBe(true);
    const f1 = withThreads(1, () => ops.rmsnorm(x, w, { rows, dim }).out);
    const f3 = withThreads(3, () => ops.rmsnorm(x, w, { rows, dim }).out);
    expect(bitsEqual(f1, f3)).toBe(true);
  });

  it('runs in place when out aliases inp and dinp aliases dout (native)', () => {
    const rows = 70, dim = 45, x = randomF32(rows * dim, 14), w = randomF32(dim, 15), dout = randomF32(rows * dim, 16);
    const ref = ops.rmsnorm(x, w, { rows, dim });
    const refB = ops.rmsnormBackward({ dout, inp: x, weight: w, rstd: ref.rstd, rows, dim });
    const buf = x.slice(), rstd = new Float32Array(rows);
    native.rmsnormForward({ out: buf, rstd, inp: buf, weight: w, rows, dim, eps: 1e-6 }, false);
    expect(bitsEqual(buf, ref.out) && bitsEqual(rstd, ref.rstd)).toBe(true);
    const d = dout.slice(), dw = new Float32Array(dim);
    native.rmsnormBackward({ dinp: d, dweight: dw, dout: d, inp: x, weight: w, rstd, rows, dim }, false);
    expect(bitsEqual(d, refB.dinp) && bitsEqual(dw, refB.dweight)).toBe(true);
  });

  it('async forms give the same results', async () => {
    const rows = 9, dim = 21, x = randomF32(rows * dim, 5), w = randomF32(dim, 6), dout = randomF32(rows * dim, 7);
    const s = ops.rmsnorm(x, w, { rows, dim });
    const a = await kernels.async.rmsnorm(x, w, { rows, dim });
    expect(bitsEqual(a.out, s.out) && bitsEqual(a.rstd, s.rstd)).toBe(true);
    const sb = ops.rmsnormBackward({ dout, inp: x, weight: w, rstd: s.rstd, rows, dim });
    const ab = await kernels.async.rmsnormBackward({ dout, inp: x, weight: w, rstd: s.rstd, rows, dim });
    expect(bitsEqual(ab.dinp, sb.dinp) && bitsEqual(ab.dweight, sb.dweight)).toBe(true);
  });

  it('rejects bad arguments', () => {
    const x = randomF32(12, 1), w = randomF32(4, 2);
    expect(() => ops.rmsnorm(x, w, { rows: 3, dim: 5 })).toThrow(/inp must have length 15, got 12/);
    expect(() => ops.rmsnorm(x, randomF32(3, 1), { rows: 3, dim: 4 })).toThrow(/weight must have length 4/);
    expect(() => ops.rmsnorm(x, w, { rows: 0, dim: 4 })).toThrow(/rows must be an integer/);
    expect(() => ops.rmsnorm(x, w, { rows: 3, dim: 4, eps: -1 })).toThrow(/eps must be/);
    expect(() => ops.rmsnorm(x, w, { rows: 3, dim: 4, eps: NaN })).toThrow(/eps must be/);
    expect(() => ops.rmsnorm(new Float64Array(12) as never, w, { rows: 3, dim: 4 })).toThrow(/inp must be a Float32Array/);
    const rstd = new Float32Array(3);
    expect(() => ops.rmsnormBackward({ dout: x, inp: x, weight: w, rstd: new Float32Array(2), rows: 3, dim: 4 })).toThrow(/rstd must have length 3/);
    expect(() => ops.rmsnormBackward({ dout: x, inp: x, weight: w, rstd, rows: 3, dim: 4, dweight: new Float32Array(5) })).toThrow(/dweight must have length 4/);
    expect(() => ops.rmsnormBackward(null as never)).toThrow(/args must be an object/);
    // The binding's own checks hold for direct calls too.
    expect(() => native.rmsnormForward({ out: new Float32Array(12), rstd: null, inp: x, weight: w, rows: 3, dim: 5, eps: 1e-5 }, false)).toThrow(/must have length 15/);
  });
});

// ---- RoPE ----------------------------------------------------------------------------------

describe('rope', () => {
  const cases: [number, number, number, number][] = [
    [5, 3, 64, 10000], [7, 2, 6, 10000], [9, 1, 2, 1e6], [13, 3, 128, 1e6], [3, 5, 34, 500000],
  ];
  for (const [T, H, D, theta] of cases)
    it(`forward tokens=${T} heads=${H} headDim=${D} theta=${theta} matches HF's float32 angles`, () => {
      const x = randomF32(T * H * D, T * 100 + D);
      const pos = randomInts(T, T + D, 0, 4096);
      pos[0] = 4000;
      pos[T - 1] = 0;
      const out = ops.rope(x, pos, { tokens: T, heads: H, headDim: D, theta });
      expectClose(out, refRope(x, pos, T, H, D, theta), 1e-5, 1e-6, 'out');
    });

  it('uses theta 10000 by default', () => {
    const T = 4, H = 2, D = 16, x = randomF32(T * H * D, 8), pos = Int32Array.from([1, 17, 300, 4000]);
    expectClose(ops.rope(x, pos, { tokens: T, heads: H, headDim: D }), refRope(x, pos, T, H, D, 10000), 1e-5, 1e-6, 'out');
  });

  for (const theta of [10000, 1e6])
    it(`backward matches finite differences and inverts the forward (theta ${theta})`, () => {
      const T = 6, H = 3, D = 10, n = T * H * D;
      const x = randomF32(n, 21), W = randomF32(n, 22);
      const pos = Int32Array.from([0, 1, 5, 999, 4000, 4095]);
      const opts = { tokens: T, heads: H, headDim: D, theta };
      const dinp = ops.ropeBackward(W, pos, opts);
      const fd = finiteDiff(x, (xx) => refRope(xx, pos, T, H, D, theta), W);
      expectGradClose(dinp, fd, 1e-4, 1e-5, 'dinp');
      const y = ops.rope(x, pos, opts);
      expectClose(ops.ropeBackward(y, pos, opts), x, 1e-5, 1e-6, 'ropeBackward(rope(x))');
    });

  it('runs in place when out aliases inp (native)', () => {
    const T = 5, H = 2, D = 12, x = randomF32(T * H * D, 31), pos = randomInts(T, 32, 0, 5000);
    const expected = ops.rope(x, pos, { tokens: T, heads: H, headDim: D, theta: 10000 });
    const buf = x.slice();
    native.ropeForward({ out: buf, inp: buf, positions: pos, tokens: T, heads: H, headDim: D, theta: 10000 }, false);
    expect(bitsEqual(buf, expected)).toBe(true);
    native.ropeBackward({ dinp: buf, dout: buf, positions: pos, tokens: T, heads: H, headDim: D, theta: 10000 }, false);
    expect(bitsEqual(buf, ops.ropeBackward(expected, pos, { tokens: T, heads: H, headDim: D }))).toBe(true);
  });

  it('is bit-identical across thread counts', () => {
    const T = 300, H = 4, D = 64, x = randomF32(T * H * D, 41), pos = randomInts(T, 42, 0, 8192);
    const run = () => ops.rope(x, pos, { tokens: T, heads: H, headDim: D, theta: 1e6 });
    expect(bitsEqual(withThreads(1, run), withThreads(3, run))).toBe(true);
  });

  it('async form gives the same result', async () => {
    const T = 7, H = 2, D = 8, x = randomF32(T * H * D, 51), pos = randomInts(T, 52, 0, 100);
    const opts = { tokens: T, heads: H, headDim: D };
    expect(bitsEqual(await kernels.async.rope(x, pos, opts), ops.rope(x, pos, opts))).toBe(true);
    expect(bitsEqual(await kernels.async.ropeBackward(x, pos, opts), ops.ropeBackward(x, pos, opts))).toBe(true);
  });

  it('rejects bad arguments', () => {
    const x = randomF32(2 * 3 * 5, 1), pos = new Int32Array(2);
    expect(() => ops.rope(x, pos, { tokens: 2, heads: 3, headDim: 5 })).toThrow(/headDim must be even, got 5/);
    expect(() => ops.rope(x, pos, { tokens: 2, heads: 3, headDim: 1 })).toThrow(/headDim/);
    const y = randomF32(2 * 3 * 4, 1);
    expect(() => ops.rope(y, new Int32Array(3), { tokens: 2, heads: 3, headDim: 4 })).toThrow(/positions must have length 2/);
    expect(() => ops.rope(y, new Float32Array(2) as never, { tokens: 2, heads: 3, headDim: 4 })).toThrow(/positions must be a Int32Array/);
    expect(() => ops.rope(y, pos, { tokens: 2, heads: 3, headDim: 4, theta: 0.5 })).toThrow(/theta must be/);
    expect(() => ops.rope(x, pos, { tokens: 2, heads: 3, headDim: 4 })).toThrow(/inp must have length 24/);
    expect(() => ops.ropeBackward(x, pos, { tokens: 2, heads: 3, headDim: 4 })).toThrow(/dout must have length 24/);
    expect(() => native.ropeForward({ out: x, inp: x, positions: pos, tokens: 2, heads: 3, headDim: 5, theta: 10000 }, false)).toThrow(/headDim must be even/);
  });
});

// ---- SwiGLU --------------------------------------------------------------------------------

describe('swiglu', () => {
  for (const [rows, dim] of [[1, 1], [3, 17], [33, 65], [7, 5001]] as [number, number][])
    it(`forward ${rows}x${dim} matches a float64 reference`, () => {
      const g = randomF32(rows * dim, rows + dim, -6, 6), u = randomF32(rows * dim, rows * dim, -2, 2);
      expectClose(ops.swiglu(g, u, { rows, dim }), refSwiglu(g, u), 1e-5, 1e-6, 'out');
    });

  it('stays finite for large |gate|', () => {
    const g = Float32Array.from([-200, -90, 90, 200, 1e30, -1e30]), u = Float32Array.from([1, 2, 3, 4, 0.5, 0.5]);
    const out = ops.swiglu(g, u, { rows: 2, dim: 3 });
    expectClose(out, refSwiglu(g, u), 1e-6, 1e-30, 'out');
    const { dgate, dup } = ops.swigluBackward({ dout: new Float32Array(6).fill(1), gate: g, up: u, rows: 2, dim: 3 });
    for (const x of [...dgate, ...dup]) expect(Number.isFinite(x)).toBe(true);
  });

  for (const [rows, dim] of [[3, 17], [33, 65]] as [number, number][])
    it(`backward ${rows}x${dim} matches finite differences`, () => {
      const n = rows * dim;
      const g = randomF32(n, 61 + n, -5, 5), u = randomF32(n, 62 + n, -2, 2), W = randomF32(n, 63 + n);
      const { dgate, dup } = ops.swigluBackward({ dout: W, gate: g, up: u, rows, dim });
      const idx = sampleIndices(n, 400, 64);
      expectGradClose(dgate, finiteDiff(g, (gg) => refSwiglu(gg, u), W, idx), 1e-4, 1e-5, 'dgate');
      expectGradClose(dup, finiteDiff(u, (uu) => refSwiglu(g, uu), W, idx), 1e-4, 1e-5, 'dup');
    });

  it('is bit-identical across thread counts and async', async () => {
    const n = 300 * 333, g = randomF32(n, 71, -4, 4), u = randomF32(n, 72), d = randomF32(n, 73);
    const f = () => ops.swiglu(g, u, { rows: 300, dim: 333 });
    const b = () => ops.swigluBackward({ dout: d, gate: g, up: u, rows: 300, dim: 333 });
    expect(bitsEqual(withThreads(1, f), withThreads(3, f))).toBe(true);
    const b1 = withThreads(1, b), b3 = withThreads(3, b);
    expect(bitsEqual(b1.dgate, b3.dgate) && bitsEqual(b1.dup, b3.dup)).toBe(true);
    expect(bitsEqual(await kernels.async.swiglu(g, u, { rows: 300, dim: 333 }), f())).toBe(true);
  });

  it('rejects bad arguments', () => {
    const a = randomF32(6, 1);
    expect(() => ops.swiglu(a, randomF32(5, 1), { rows: 2, dim: 3 })).toThrow(/up must have length 6, got 5/);
    expect(() => ops.swiglu(a, a, { rows: 2, dim: 2.5 })).toThrow(/dim must be an integer/);
    expect(() => ops.swigluBackward({ dout: a, gate: a, up: new Float32Array(7), rows: 2, dim: 3 })).toThrow(/up must have length 6/);
    expect(() => ops.swigluBackward({ dout: [1, 2] as never, gate: a, up: a, rows: 2, dim: 3 })).toThrow(/dout must be a Float32Array/);
  });
});

// ---- Embedding -----------------------------------------------------------------------------

describe('embedding', () => {
  it('forward copies the rows of the table', () => {
    const tokens = 37, vocab = 101, dim = 19;
    const table = randomF32(vocab * dim, 81), ids = randomInts(tokens, 82, 0, vocab);
    ids[0] = 0;
    ids[1] = vocab - 1;
    const out = ops.embedding(ids, table, { tokens, vocab, dim });
    expect(Array.from(out)).toEqual(Array.from(refEmbedding(ids, table, dim)));
  });

  it('backward with repeated ids matches finite differences and the in-order float32 sum', () => {
    const tokens = 200, vocab = 13, dim = 71;
    const ids = randomInts(tokens, 91, 0, vocab), dout = randomF32(tokens * dim, 92);
    const table = randomF32(vocab * dim, 93);
    const dtable = ops.embeddingBackward({ dout, ids, tokens, vocab, dim });
    const fd = finiteDiff(table, (tt) => refEmbedding(ids, tt, dim), dout, sampleIndices(vocab * dim, 300, 94));
    expectGradClose(dtable, fd, 1e-4, 1e-5, 'dtable');
    // Each row is the float32 sum of its tokens' gradients, added in token order.
    const expected = new Float32Array(vocab * dim);
    for (let n = 0; n < tokens; n++)
      for (let i = 0; i < dim; i++) expected[ids[n] * dim + i] = Math.fround(expected[ids[n] * dim + i] + dout[n * dim + i]);
    expect(bitsEqual(dtable, expected)).toBe(true);
  });

  it('backward accumulates into a given dtable (+=)', () => {
    const tokens = 9, vocab = 4, dim = 5;
    const ids = Int32Array.from([1, 1, 3, 1, 0, 3, 3, 1, 1]), dout = randomF32(tokens * dim, 95);
    const start = randomF32(vocab * dim, 96), dtable = start.slice();
    expect(ops.embeddingBackward({ dout, ids, tokens, vocab, dim, dtable })).toBe(dtable);
    const expected = start.slice();
    for (let n = 0; n < tokens; n++)
      for (let i = 0; i < dim; i++) expected[ids[n] * dim + i] = Math.fround(expected[ids[n] * dim + i] + dout[n * dim + i]);
    expect(bitsEqual(dtable, expected)).toBe(true);
    // Row 2 has no token: untouched.
    expect(Array.from(dtable.subarray(2 * dim, 3 * dim))).toEqual(Array.from(start.subarray(2 * dim, 3 * dim)));
  });

  it('backward is bit-identical across thread counts', () => {
    const tokens = 3000, vocab = 50, dim = 300;
    const ids = randomInts(tokens, 97, 0, vocab), dout = randomF32(tokens * dim, 98);
    const run = () => ops.embeddingBackward({ dout, ids, tokens, vocab, dim });
    expect(bitsEqual(withThreads(1, run), withThreads(3, run))).toBe(true);
  });

  it('async forms give the same results', async () => {
    const tokens = 11, vocab = 7, dim = 9, ids = randomInts(tokens, 1, 0, vocab), table = randomF32(vocab * dim, 2);
    const opts = { tokens, vocab, dim };
    expect(bitsEqual(await kernels.async.embedding(ids, table, opts), ops.embedding(ids, table, opts))).toBe(true);
    const dout = randomF32(tokens * dim, 3);
    expect(bitsEqual(await kernels.async.embeddingBackward({ dout, ids, ...opts }), ops.embeddingBackward({ dout, ids, ...opts }))).toBe(true);
  });

  it('rejects bad arguments', () => {
    const table = randomF32(12, 1);
    expect(() => ops.embedding(Int32Array.from([0, 3]), table, { tokens: 2, vocab: 3, dim: 4 })).toThrow(/ids\[1\] = 3 is outside \[0, 3\)/);
    expect(() => ops.embedding(Int32Array.from([-1, 0]), table, { tokens: 2, vocab: 3, dim: 4 })).toThrow(/ids\[0\] = -1/);
    expect(() => ops.embedding(Int32Array.from([0]), table, { tokens: 2, vocab: 3, dim: 4 })).toThrow(/ids must have length 2/);
    expect(() => ops.embedding(Int32Array.from([0, 1]), table, { tokens: 2, vocab: 3, dim: 5 })).toThrow(/table must have length 15/);
    expect(() => ops.embeddingBackward({ dout: new Float32Array(8), ids: Int32Array.from([0, 9]), tokens: 2, vocab: 3, dim: 4 })).toThrow(/ids\[1\] = 9/);
    expect(() => ops.embeddingBackward({ dout: new Float32Array(8), ids: Int32Array.from([0, 1]), tokens: 2, vocab: 3, dim: 4, dtable: new Float32Array(11) })).toThrow(/dtable must have length 12/);
    // Direct binding calls check ids too instead of reading out of bounds.
    expect(() => native.embeddingForward({ out: new Float32Array(8), ids: Int32Array.from([0, 1000000]), table, tokens: 2, vocab: 3, dim: 4 }, false)).toThrow(/outside/);
    expect(() => native.embeddingBackward({ dtable: new Float32Array(12), dout: new Float32Array(8), ids: Int32Array.from([-5, 0]), tokens: 2, vocab: 3, dim: 4 }, false)).toThrow(/outside/);
  });
});

// ---- Residual ------------------------------------------------------------------------------

describe('residual', () => {
  it('forward adds in float32 and backward passes dout to both inputs', () => {
    const n = 100003, a = randomF32(n, 1), b = randomF32(n, 2);
    const out = ops.residual(a, b);
    for (let i = 0; i < n; i++) if (out[i] !== Math.fround(a[i] + b[i])) expect.fail(`out[${i}]`);
    const m = 1001, sa = a.subarray(0, m), sb = b.subarray(0, m), W = randomF32(m, 3);
    const { da, db } = ops.residualBackward(W);
    expectGradClose(da, finiteDiff(sa, (aa) => aa.map((x, i) => x + sb[i]), W), 1e-6, 1e-7, 'da');
    expectGradClose(db, finiteDiff(sb, (bb) => bb.map((x, i) => sa[i] + x), W), 1e-6, 1e-7, 'db');
  });

  it('backward accumulates into given gradients (+=)', () => {
    const n = 77, dout = randomF32(n, 5), a0 = randomF32(n, 6), b0 = randomF32(n, 7);
    const da = a0.slice(), db = b0.slice();
    const r = ops.residualBackward(dout, { da, db });
    expect(r.da).toBe(da);
    expect(r.db).toBe(db);
    for (let i = 0; i < n; i++) {
      expect(da[i]).toBe(Math.fround(a0[i] + dout[i]));
      expect(db[i]).toBe(Math.fround(b0[i] + dout[i]));
    }
  });

  it('async forms and bad arguments', async () => {
    const a = randomF32(10, 1), b = randomF32(10, 2);
    expect(bitsEqual(await kernels.async.residual(a, b), ops.residual(a, b))).toBe(true);
    expect((await kernels.async.residualBackward(a)).db[3]).toBe(a[3]);
    expect(() => ops.residual(a, randomF32(9, 1))).toThrow(/b must have length 10, got 9/);
    expect(() => ops.residual(null as never, b)).toThrow(/a must be a Float32Array/);
    expect(() => ops.residualBackward(a, { da: new Float32Array(3) })).toThrow(/da must have length 10/);
    expect(() => native.residualForward({ out: new Float32Array(10), a, b: new Float32Array(4) }, false)).toThrow(/b must have length 10/);
  });
});
