import { describe, expect, it } from 'vitest';
import { kernels } from '../src/index.js';
import { native } from '../src/native.js';
import { expectClose, randomF32, randomInts, withThreads } from './helpers.js';

// ---- float64 references --------------------------------------------------------------------

function rowLse(z: ArrayLike<number>, off: number, V: number): number {
  let m = -Infinity;
  for (let v = 0; v < V; v++) m = Math.max(m, z[off + v]);
  let s = 0;
  for (let v = 0; v < V; v++) s += Math.exp(z[off + v] - m);
  return m + Math.log(s);
}

function rowEntropy(z: ArrayLike<number>, off: number, V: number, lse: number): number {
  let h = 0;
  for (let v = 0; v < V; v++) {
    const lp = z[off + v] - lse, p = Math.exp(lp);
    if (p > 0) h -= p * lp;
  }
  return h;
}

function refSoftmax(z: Float32Array, N: number, V: number, log: boolean): Float64Array {
  const out = new Float64Array(N * V);
  for (let r = 0; r < N; r++) {
    const lse = rowLse(z, r * V, V);
    for (let v = 0; v < V; v++) out[r * V + v] = log ? z[r * V + v] - lse : Math.exp(z[r * V + v] - lse);
  }
  return out;
}

function refTokenLogprobs(z: ArrayLike<number>, ids: Int32Array, N: number, V: number) {
  const logprobs = new Float64Array(N), lse = new Float64Array(N), entropy = new Float64Array(N);
  for (let r = 0; r < N; r++) {
    lse[r] = rowLse(z, r * V, V);
    logprobs[r] = z[r * V + ids[r]] - lse[r];
    entropy[r] = rowEntropy(z, r * V, V, lse[r]);
  }
  return { logprobs, lse, entropy };
}

/** Analytic float64 gradient of sum_r g_r lp_r + dH_r H_r. */
function refTokenLogprobsGrad(z: Float32Array, ids: Int32Array, g: Float32Array, dH: Float32Array | null, N: number, V: number): Float64Array {
  const out = new Float64Array(N * V);
  for (let r = 0; r < N; r++) {
    const lse = rowLse(z, r * V, V), H = rowEntropy(z, r * V, V, lse);
    for (let v = 0; v < V; v++) {
      const lp = z[r * V + v] - lse, p = Math.exp(lp);
      let d = -g[r] * p + (v === ids[r] ? g[r] : 0);
      if (dH && p > 0) d += dH[r] * -p * (lp + H);
      out[r * V + v] = d;
    }
  }
  return out;
}

/** Central finite differences of a row objective f(row as float64), element by element. */
function fdRows(z: Float32Array, N: number, V: number, f: (r: number, row: Float64Array) => number, h = 1e-5): Float64Array {
  const out = new Float64Array(N * V);
  for (let r = 0; r < N; r++) {
    const row = Float64Array.from(z.subarray(r * V, (r + 1) * V));
    for (let v = 0; v < V; v++) {
      const x = row[v];
      row[v] = x + h;
      const fp = f(r, row);
      row[v] = x - h;
      const fm = f(r, row);
      row[v] = x;
      out[r * V + v] = (fp - fm) / (2 * h);
    }
  }
  return out;
}

/** Random logits in [-scale, scale) with a few rows shifted, so rows differ in max and spread. */
function logits(N: number, V: number, seed: number, scale = 6): Float32Array {
  const z = randomF32(N * V, seed, -scale, scale);
  for (let r = 0; r < N; r++) for (let v = 0; v < V; v++) z[r * V + v] += (r % 3) * 7 - 5;
  return z;
}


const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

// ---- tests ---------------------------------------------------------------------------------

const shapes: [number, number][] = [[7, 1], [7, 13], [7, 1001], [1, 50000], [2, 151936]];

describe('softmax / logSoftmax', () => {
  for (const [N, V] of shapes)
    it(`${N}x${V} match a float64 reference`, () => {
      const z = logits(N, V, N * 31 + V);
      expectClose(kernels.ops.softmax(z, { rows: N, vocab: V }), refSoftmax(z, N, V, false), 1e-5, 1e-9, 'softmax');
      expectClose(kernels.ops.logSoftmax(z, { rows: N, vocab: V }), refSoftmax(z, N, V, true), 1e-6, 2e-5, 'logSoftmax');
    });

  it('softmax rows sum to 1', () => {
    const N = 5, V = 30011, p = kernels.ops.softmax(logits(N, V, 3, 10), { rows: N, vocab: V });
    for (let r = 0; r < N; r++) {
      let s = 0;
      for (let v = 0; v < V; v++) s += p[r * V + v];
      expect(Math.abs(s - 1)).toBeLessThan(1e-5);
    }
  });
});

describe('logprobs / tokenLogprobs', () => {
  for (const [N, V] of shapes)
    it(`${N}x${V} logprobs, lse and entropy match a float64 reference`, () => {
      const z = logits(N, V, N * 17 + V), ids = randomInts(N, V, 0, V);
      const ref = refTokenLogprobs(z, ids, N, V);
      expectClose(kernels.logprobs(z, ids, { rows: N, vocab: V }), ref.logprobs, 1e-6, 2e-5, 'logprobs');
      const out = kernels.ops.tokenLogprobs(z, ids, { rows: N, vocab: V, entropy: true });
      expectClose(out.logprobs, ref.logprobs, 1e-6, 2e-5, 'logprobs');
      expectClose(out.lse, ref.lse, 1e-6, 2e-5, 'lse');
      expectClose(out.entropy!, ref.entropy, 1e-5, 2e-5, 'entropy');
      expect(kernels.ops.tokenLogprobs(z, ids, { rows: N, vocab: V }).entropy).toBeUndefined();
    });

  it('entropy of a uniform row is log V, of a one-hot-like row about 0', () => {
    const V = 1000, z = new Float32Array(2 * V).fill(0.25);
    for (let v = 0; v < V; v++) z[V + v] = v === 3 ? 100 : 0;
    const out = kernels.ops.tokenLogprobs(z, new Int32Array([7, 3]), { rows: 2, vocab: V, entropy: true });
    expect(out.entropy![0]).toBeCloseTo(Math.log(V), 5);
    expect(out.entropy![1]).toBeLessThan(1e-38 * V + 1e-30);
    expect(out.logprobs[0]).toBeCloseTo(-Math.log(V), 5);
    expect(out.logprobs[1]).toBe(0);
  });

  it('is stable for logits around +-1e4 and with -inf entries', () => {
    const N = 4, V = 777;
    const z = logits(N, V, 9, 20);
    for (let i = 0; i < N * V; i++) z[i] += i < 2 * V ? 1e4 : -1e4;
    for (let v = 0; v < V; v += 5) z[3 * V + v] = -Infinity;
    const ids = new Int32Array([1, 2, 3, 4]);
    const ref = refTokenLogprobs(z, ids, N, V);
    const out = kernels.ops.tokenLogprobs(z, ids, { rows: N, vocab: V, entropy: true });
    for (const a of [out.logprobs, out.lse, out.entropy!]) for (const x of a) expect(Number.isFinite(x)).toBe(true);
    expectClose(out.logprobs, ref.logprobs, 1e-6, 1e-5, 'logprobs');
    expectClose(out.entropy!, ref.entropy, 1e-5, 1e-5, 'entropy');
    const p = kernels.ops.softmax(z, { rows: N, vocab: V });
    expectClose(p, refSoftmax(z, N, V, false), 1e-5, 1e-9, 'softmax');
    expect(p[3 * V]).toBe(0);
    const g = kernels.ops.tokenLogprobsBackward({
      logits: z, ids, lse: out.lse, entropy: out.entropy, rows: N, vocab: V,
      dlogprobs: new Float32Array([1, -1, 0.5, 2]), dentropy: new Float32Array([0.3, 0.3, -1, 0.7]),
    });
    for (const x of g) expect(Number.isFinite(x)).toBe(true);
    expect(g[3 * V]).toBe(0);
    const ce = kernels.ops.crossEntropy(z, ids, { rows: N, vocab: V });
    expectClose(ce.losses, Array.from(ref.logprobs, (x) => -x), 1e-6, 1e-5, 'losses');
  });

  it('async form gives the same result', async () => {
    const z = logits(9, 501, 4), ids = randomInts(9, 5, 0, 501);
    const sync = kernels.ops.tokenLogprobs(z, ids, { rows: 9, vocab: 501, entropy: true });
    const async = await kernels.async.tokenLogprobs(z, ids, { rows: 9, vocab: 501, entropy: true });
    expect(async).toEqual(sync);
    expect(await kernels.async.logprobs(z, ids, { rows: 9, vocab: 501 })).toEqual(sync.logprobs);
  });
});

describe('tokenLogprobsBackward', () => {
  const fdShapes: [number, number][] = [[7, 1], [7, 13], [3, 1001]];
  for (const [N, V] of fdShapes)
    for (const withEntropy of [false, true])
      it(`${N}x${V}${withEntropy ? ' with the entropy gradient' : ''} matches finite differences`, () => {
        const z = logits(N, V, V + N, 3), ids = randomInts(N, V * 3, 0, V);
        const g = randomF32(N, 11, -2, 2), dH = withEntropy ? randomF32(N, 12, -2, 2) : null;
        const fwd = kernels.ops.tokenLogprobs(z, ids, { rows: N, vocab: V, entropy: true });
        const dz = kernels.ops.tokenLogprobsBackward({
          logits: z, ids, lse: fwd.lse, dlogprobs: g, rows: N, vocab: V,
          ...(dH ? { dentropy: dH, entropy: fwd.entropy } : {}),
        });
        const fd = fdRows(z, N, V, (r, row) => {
          const lse = rowLse(row, 0, V);
          return g[r] * (row[ids[r]] - lse) + (dH ? dH[r] * rowEntropy(row, 0, V, lse) : 0);
        });
        expectClose(dz, fd, 1e-4, 1e-6, 'dlogits vs finite differences');
        expectClose(dz, refTokenLogprobsGrad(z, ids, g, dH, N, V), 1e-4, 1e-7, 'dlogits vs analytic');
      });

  it('50,000 vocab with entropy matches the float64 gradient', () => {
    const N = 2, V = 50000;
    const z = logits(N, V, 77, 8), ids = new Int32Array([123, 49999]);
    const g = new Float32Array([1.5, -0.7]), dH = new Float32Array([-0.4, 0.9]);
    const fwd = kernels.ops.tokenLogprobs(z, ids, { rows: N, vocab: V, entropy: true });
    const dz = kernels.ops.tokenLogprobsBackward({ logits: z, ids, lse: fwd.lse, entropy: fwd.entropy, dlogprobs: g, dentropy: dH, rows: N, vocab: V });
    expectClose(dz, refTokenLogprobsGrad(z, ids, g, dH, N, V), 1e-4, 1e-9, 'dlogits');
  });

  it('in place (dlogits aliasing logits) equals the out-of-place result bit for bit', () => {
    const N = 5, V = 3001, z = logits(N, V, 5), ids = randomInts(N, 6, 0, V);
    const g = randomF32(N, 7), dH = randomF32(N, 8);
    const fwd = kernels.ops.tokenLogprobs(z, ids, { rows: N, vocab: V, entropy: true });
    const args = { ids, lse: fwd.lse, entropy: fwd.entropy, dlogprobs: g, dentropy: dH, rows: N, vocab: V };
    const out = kernels.ops.tokenLogprobsBackward({ logits: z, ...args });
    const copy = z.slice();
    const inPlace = kernels.ops.tokenLogprobsBackward({ logits: copy, ...args, inPlace: true });
    expect(inPlace).toBe(copy);
    expect(bits(inPlace).equals(bits(out))).toBe(true);
    // and straight through the binding, with the same array as dlogits and logits
    const raw = z.slice();
    native.tokenLogprobsBackward({ dlogits: raw, dlogprob: g, dentropy: dH, logits: raw, ids, lse: fwd.lse, entropy: fwd.entropy, rows: N, vocab: V }, false);
    expect(bits(raw).equals(bits(out))).toBe(true);
  });

  it('recomputes the entropy when the binding gets dentropy without entropy', () => {
    const N = 3, V = 211, z = logits(N, V, 15), ids = randomInts(N, 16, 0, V);
    const g = randomF32(N, 17), dH = randomF32(N, 18);
    const fwd = kernels.ops.tokenLogprobs(z, ids, { rows: N, vocab: V, entropy: true });
    const a = new Float32Array(N * V), b = new Float32Array(N * V);
    native.tokenLogprobsBackward({ dlogits: a, dlogprob: g, dentropy: dH, logits: z, ids, lse: fwd.lse, entropy: fwd.entropy, rows: N, vocab: V }, false);
    native.tokenLogprobsBackward({ dlogits: b, dlogprob: g, dentropy: dH, logits: z, ids, lse: fwd.lse, entropy: null, rows: N, vocab: V }, false);
    expectClose(b, a, 1e-5, 1e-8, 'dlogits');
  });
});

describe('crossEntropy', () => {
  for (const [N, V] of shapes)
    it(`${N}x${V} forward matches a float64 reference, ignoring negative targets`, () => {
      const z = logits(N, V, N + V * 5), t = randomInts(N, V + 1, 0, V);
      if (N > 2) t[2] = -1;
      if (N > 5) t[5] = -100;
      const ref = refTokenLogprobs(z, t.map((x) => Math.max(x, 0)), N, V);
      const out = kernels.ops.crossEntropy(z, t, { rows: N, vocab: V });
      expectClose(out.losses, Array.from(ref.logprobs, (x, r) => (t[r] < 0 ? 0 : -x)), 1e-6, 2e-5, 'losses');
      expectClose(out.lse, ref.lse, 1e-6, 2e-5, 'lse');
    });

  for (const [N, V] of [[7, 1], [7, 13], [4, 1001]] as [number, number][])
    it(`${N}x${V} backward matches finite differences`, () => {
      const z = logits(N, V, 3 * V + N, 3), t = randomInts(N, V + 2, 0, V);
      t[1] = -1;
      const dl = randomF32(N, 21, -2, 2);
      const fwd = kernels.ops.crossEntropy(z, t, { rows: N, vocab: V });
      const dz = kernels.ops.crossEntropyBackward({ logits: z, targets: t, lse: fwd.lse, dlosses: dl, rows: N, vocab: V });
      const fd = fdRows(z, N, V, (r, row) => (t[r] < 0 ? 0 : dl[r] * (rowLse(row, 0, V) - row[t[r]])));
      expectClose(dz, fd, 1e-4, 1e-6, 'dlogits');
      for (let v = 0; v < V; v++) expect(dz[V + v]).toBe(0);
    });

  it('backward at 151,936 vocab, in place, matches the float64 gradient', () => {
    const N = 2, V = 151936, z = logits(N, V, 99, 10), t = new Int32Array([151935, 17]);
    const dl = new Float32Array([0.75, -1.25]);
    const fwd = kernels.ops.crossEntropy(z, t, { rows: N, vocab: V });
    const ref = refTokenLogprobsGrad(z, t, dl.map((x) => -x), null, N, V);
    const out = kernels.ops.crossEntropyBackward({ logits: z.slice(), targets: t, lse: fwd.lse, dlosses: dl, rows: N, vocab: V, inPlace: true });
    expectClose(out, ref, 1e-4, 1e-10, 'dlogits');
    const copy = kernels.ops.crossEntropyBackward({ logits: z, targets: t, lse: fwd.lse, dlosses: dl, rows: N, vocab: V });
    expect(bits(copy).equals(bits(out))).toBe(true);
  });
});

describe('losses: determinism and bad input', () => {
  it('is bit-identical across thread counts', () => {
    const N = 37, V = 4099, z = logits(N, V, 123), ids = randomInts(N, 124, 0, V);
    const g = randomF32(N, 125), dH = randomF32(N, 126);
    const run = () => {
      const f = kernels.ops.tokenLogprobs(z, ids, { rows: N, vocab: V, entropy: true });
      const b = kernels.ops.tokenLogprobsBackward({ logits: z, ids, lse: f.lse, entropy: f.entropy, dlogprobs: g, dentropy: dH, rows: N, vocab: V });
      const ce = kernels.ops.crossEntropy(z, ids, { rows: N, vocab: V });
      const cb = kernels.ops.crossEntropyBackward({ logits: z, targets: ids, lse: ce.lse, dlosses: g, rows: N, vocab: V });
      return [f.logprobs, f.lse, f.entropy!, b, ce.losses, cb, kernels.ops.softmax(z, { rows: N, vocab: V }), kernels.ops.logSoftmax(z, { rows: N, vocab: V })];
    };
    const one = withThreads(1, run), three = withThreads(3, run);
    one.forEach((a, i) => expect(bits(three[i]).equals(bits(a)), `output ${i}`).toBe(true));
  });

  it('rejects bad arguments with errors naming them', () => {
    const z = new Float32Array(12), ids = new Int32Array([0, 1, 2]);
    const o = { rows: 3, vocab: 4 };
    expect(() => kernels.logprobs(z, new Int32Array([0, 4, 1]), o)).toThrow(/ids\[1\] = 4 is outside \[0, 4\)/);
    expect(() => kernels.logprobs(z, new Int32Array([0, -1, 1]), o)).toThrow(/ids\[1\] = -1/);
    expect(() => kernels.logprobs(z, ids, { rows: 3, vocab: 5 })).toThrow(/logits must have length 15, got 12/);
    expect(() => kernels.logprobs(z, new Int32Array(2), o)).toThrow(/ids must have length 3/);
    expect(() => kernels.logprobs(z, new Float32Array(3) as never, o)).toThrow(/ids must be a Int32Array/);
    expect(() => kernels.logprobs(z, ids, { rows: 3, vocab: 0 })).toThrow(/vocab must be an integer/);
    expect(() => kernels.logprobs(z, ids, { rows: 1.5, vocab: 4 })).toThrow(/rows must be an integer/);
    expect(() => kernels.ops.softmax(new Float64Array(12) as never, o)).toThrow(/logits must be a Float32Array/);
    expect(() => kernels.ops.tokenLogprobs(z, ids, { ...o, entropy: 1 as never })).toThrow(/entropy must be a boolean/);
    expect(() => kernels.ops.crossEntropy(z, new Int32Array([0, 4, 1]), o)).toThrow(/targets\[1\] = 4/);
    const lse = new Float32Array(3), d = new Float32Array(3);
    expect(() => kernels.ops.tokenLogprobsBackward({ logits: z, ids, lse, dlogprobs: d, dentropy: d, ...o })).toThrow(/entropy .* is required with dentropy/);
    expect(() => kernels.ops.tokenLogprobsBackward({ logits: z, ids, lse: new Float32Array(2), dlogprobs: d, ...o })).toThrow(/lse must have length 3/);
    expect(() => kernels.ops.crossEntropyBackward({ logits: z, targets: ids, lse, dlosses: new Float32Array(4), ...o })).toThrow(/dlosses must have length 3/);
    expect(() => kernels.ops.crossEntropyBackward(null as never)).toThrow(/args must be an object/);
    // the binding's own checks (the last line behind the TS validation)
    expect(() => native.tokenLogprobsForward({ logprob: d, lse: d, entropy: null, logits: z, ids: new Int32Array([0, 9, 0]), rows: 3, vocab: 4 }, false)).toThrow(/ids\[1\] = 9/);
    expect(() => native.crossentropyBackward({ dlogits: z, dlosses: d, logits: z, targets: new Int32Array([0, 4, 0]), lse, rows: 3, vocab: 4 }, false)).toThrow(/targets\[1\] = 4/);
    expect(() => native.softmaxForward({ probs: z, logits: z, rows: 3, vocab: 5 }, false)).toThrow(/probs must have length 15/);
  });
});
