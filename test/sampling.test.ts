import { describe, expect, it } from 'vitest';
import { kernels } from '../src/index.js';
import { philox4x32, philoxUniform } from '../src/kernels/sampling.js';
import { randomF32, rng } from './helpers.js';

// ---------------------------------------------------------------------------------------
// Independent references.

/** Philox4x32-10 in TypeScript (32x32 -> 64-bit products from 16-bit halves). */
function mulhilo(a: number, b: number): [number, number] {
  const aL = a & 0xffff, aH = a >>> 16, bL = b & 0xffff, bH = b >>> 16;
  const p0 = aL * bL, p1 = aL * bH, p2 = aH * bL, p3 = aH * bH;
  const mid = (p0 >>> 16) + (p1 & 0xffff) + (p2 & 0xffff);
  const hi = (p3 + Math.floor(p1 / 65536) + Math.floor(p2 / 65536) + Math.floor(mid / 65536)) >>> 0;
  return [hi, Math.imul(a, b) >>> 0];
}
function refPhilox(ctr: number[], key: number[]): number[] {
  let [c0, c1, c2, c3] = ctr;
  let [k0, k1] = key;
  for (let round = 0; round < 10; round++) {
    if (round > 0) {
      k0 = (k0 + 0x9e3779b9) >>> 0;
      k1 = (k1 + 0xbb67ae85) >>> 0;
    }
    const [hi0, lo0] = mulhilo(0xd2511f53, c0);
    const [hi1, lo1] = mulhilo(0xcd9e8d57, c2);
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
  }
  return [c0, c1, c2, c3];
}
const lo32 = (x: bigint) => Number(x & 0xffffffffn), hi32 = (x: bigint) => Number((x >> 32n) & 0xffffffffn);
function refUniform(key: bigint, counter: bigint): number {
  return (refPhilox([lo32(counter), hi32(counter), 0, 0], [lo32(key), hi32(key)])[0] >>> 8) / 16777216;
}

interface Params { temperature: number; topK?: number; topP?: number; minP?: number }
const f = Math.fround;
const keyOf = (x: number) => (Number.isNaN(x) ? -Infinity : x);

/**
 * The kept set of one row (in canonical order: logit descending, then index) and its masses,
 * following the documented definition with the kernel's float32 scaled logits and weights.
 */
function refKept(x: Float32Array, p: Params) {
  const V = x.length;
  let m = -Infinity;
  for (let i = 0; i < V; i++) m = Math.max(m, keyOf(x[i]));
  if (m === -Infinity) return null;
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => keyOf(x[b]) - keyOf(x[a]) || a - b);
  const s = new Float64Array(V), w = new Float64Array(V);
  for (let i = 0; i < V; i++) {
    const k = keyOf(x[i]);
    s[i] = m === Infinity ? (k === Infinity ? 0 : -Infinity) : f(f(k - m) / f(p.temperature));
    w[i] = f(Math.exp(s[i]));
  }
  let L = order.filter((i) => w[i] > 0).length;
  if (p.topK && p.topK < V) L = Math.min(L, p.topK);
  const mass = (n: number) => { let z = 0; for (let j = 0; j < n; j++) z += w[order[j]]; return z; };
  let Z = mass(L);
  if (p.topP !== undefined && p.topP < 1) {
    const target = f(p.topP) * Z;
    let cum = 0, j = 0;
    for (; j < L - 1; j++) { cum += w[order[j]]; if (cum >= target) break; }
    L = j + 1;
    Z = mass(L);
  }
  if (p.minP) {
    const n = order.filter((i) => w[i] >= f(p.minP!)).length;
    if (Math.max(n, 1) < L) { L = Math.max(n, 1); Z = mass(L); }
  }
  return { order, L, Z, s, w, kept: order.slice(0, L) };
}

/** The token the definition draws for uniform u, and its log-probability. */
function refSample(x: Float32Array, p: Params, u: number): { id: number; logprob: number } {
  if (p.temperature === 0) {
    let best = -Infinity, arg = 0;
    for (let i = 0; i < x.length; i++) if (x[i] > best) { best = x[i]; arg = i; }
    return { id: arg, logprob: best === -Infinity ? NaN : 0 };
  }
  const k = refKept(x, p);
  if (!k) return { id: 0, logprob: NaN };
  const target = u * k.Z;
  let cum = 0, j = 0;
  for (; j < k.L - 1; j++) { cum += k.w[k.order[j]]; if (cum > target) break; }
  const id = k.order[j];
  return { id, logprob: k.s[id] - Math.log(k.Z) };
}

/** Exact (float64) renormalised kept probabilities over the whole vocabulary. */
function keptProbs(x: Float32Array, p: Params): Float64Array {
  const k = refKept(x, p)!;
  const m = keyOf(x[k.order[0]]);
  const probs = new Float64Array(x.length);
  let z = 0;
  for (const i of k.kept) z += Math.exp((x[i] - m) / p.temperature);
  for (const i of k.kept) probs[i] = Math.exp((x[i] - m) / p.temperature) / z;
  return probs;
}

// Chi-square goodness of fit, critical values at p = 0.001.
const CHI2_CRIT_001: Record<number, number> = {
  1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458, 7: 24.322, 8: 26.124, 9: 27.877,
  10: 29.588, 11: 31.264, 12: 32.909, 13: 34.528, 14: 36.123, 15: 37.697,
};
function chiSquare(counts: ArrayLike<number>, probs: ArrayLike<number>, n: number): { stat: number; df: number; crit: number } {
  let stat = 0, cats = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue;
    const e = probs[i] * n;
    if (e < 5) throw new Error(`category ${i} expects ${e} < 5 draws: use more rows`);
    stat += (counts[i] - e) ** 2 / e;
    cats++;
  }
  const df = cats - 1;
  return { stat, df, crit: CHI2_CRIT_001[df] };
}

function histogram(ids: Int32Array, vocab: number): Float64Array {
  const h = new Float64Array(vocab);
  for (const id of ids) h[id]++;
  return h;
}

/** The same row repeated: every row is one independent draw from the row's distribution. */
function repeatRow(row: Float32Array, rows: number): Float32Array {
  const out = new Float32Array(rows * row.length);
  for (let r = 0; r < rows; r++) out.set(row, r * row.length);
  return out;
}

/** Draws `rows` samples of one row; checks the support and the chi-square fit. */
function expectDistribution(row: Float32Array, p: Params, rows = 20000, seed = 1234): void {
  const V = row.length;
  const ids = kernels.sample(repeatRow(row, rows), { rows, vocab: V, seed, ...p });
  const counts = histogram(ids, V), probs = keptProbs(row, p);
  for (let i = 0; i < V; i++)
    if (probs[i] === 0) expect(counts[i], `token ${i} is outside the kept set`).toBe(0);
  const { stat, df, crit } = chiSquare(counts, probs, rows);
  expect(stat, `chi-square ${stat.toFixed(2)} with ${df} df (critical ${crit})`).toBeLessThan(crit);
}

function gaussian(n: number, seed: number, sd: number): Float32Array {
  const r = rng(seed), out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = sd * Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  return out;
}

// ---------------------------------------------------------------------------------------

describe('philox', () => {
  const kats: [number[], number[], number[]][] = [
    [[0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]],
    [[0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]],
    [[0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]],
  ];
  it('matches the Random123 known-answer vectors (native and the TS reference)', () => {
    for (const [ctr, key, want] of kats) {
      expect(Array.from(philox4x32(Uint32Array.from(ctr), Uint32Array.from(key)))).toEqual(want);
      expect(refPhilox(ctr, key)).toEqual(want);
    }
  });

  it('philox_uniform is the top 24 bits of word 0 for (key, counter) split into 32-bit halves', () => {
    const n = 500, r = rng(3);
    const keys = new BigUint64Array(n), counters = new BigUint64Array(n);
    for (let i = 0; i < n; i++) {
      keys[i] = (BigInt(Math.floor(r() * 2 ** 32)) << 32n) | BigInt(Math.floor(r() * 2 ** 32));
      counters[i] = i < 10 ? BigInt(i) : (BigInt(Math.floor(r() * 2 ** 32)) << 32n) | BigInt(Math.floor(r() * 2 ** 32));
    }
    const u = philoxUniform(keys, counters);
    let sum = 0;
    for (let i = 0; i < n; i++) {
      expect(u[i]).toBe(refUniform(keys[i], counters[i]));
      expect(u[i] >= 0 && u[i] < 1).toBe(true);
      sum += u[i];
    }
    expect(Math.abs(sum / n - 0.5)).toBeLessThan(0.05);
  });
});

describe('chi-square helper', () => {
  it('accepts draws from the right distribution and rejects a wrong expected distribution', () => {
    const row = Float32Array.from([0.3, -1.2, 1.1, 0.0, 2.0, -0.4, 0.8, -2.5, 1.6, 0.2]);
    const rows = 20000, p = { temperature: 1 };
    const ids = kernels.sample(repeatRow(row, rows), { rows, vocab: 10, seed: 99, ...p });
    const counts = histogram(ids, 10), right = keptProbs(row, p);
    const good = chiSquare(counts, right, rows);
    expect(good.stat).toBeLessThan(good.crit);
    // Slightly wrong: temperature 1.1 instead of 1, and one probability moved by 10%.
    const hotter = keptProbs(row, { temperature: 1.1 });
    expect(chiSquare(counts, hotter, rows).stat).toBeGreaterThan(good.crit);
    const moved = Float64Array.from(right);
    moved[0] *= 1.1; moved[1] -= right[0] * 0.1;
    expect(chiSquare(counts, moved, rows).stat).toBeGreaterThan(good.crit);
  });
});

describe('sample', () => {
  it('temperature 0 is argmax with ties to the lowest index, logprob 0', () => {
    const logits = Float32Array.from([1, 3, 3, 2, /**/ -5, -5, -5, -5, /**/ 0, NaN, 0.5, 0.5, /**/ -Infinity, -Infinity, Infinity, Infinity]);
    const { ids, logprobs } = kernels.ops.sampleWithLogprobs(logits, { rows: 4, vocab: 4, temperature: 0, seed: 5 });
    expect(Array.from(ids)).toEqual([1, 0, 2, 2]);
    expect(Array.from(logprobs)).toEqual([0, 0, 0, 0]);
    const big = randomF32(33 * 1001, 7, -4, 4);
    const greedy = kernels.sample(big, { rows: 33, vocab: 1001, temperature: 0, seed: 1, topP: 0.5, topK: 3 });
    for (let r = 0; r < 33; r++) expect(greedy[r]).toBe(refSample(big.subarray(r * 1001, (r + 1) * 1001), { temperature: 0 }, 0).id);
  });

  it('temperature 1 matches softmax (chi-square)', () => {
    expectDistribution(Float32Array.from([0.3, -1.2, 1.1, 0.0, 2.0, -0.4, 0.8, -2.5, 1.6, 0.2]), { temperature: 1 });
  });

  it('temperature 0.5 matches softmax(logits / 0.5) (chi-square)', () => {
    expectDistribution(Float32Array.from([0.3, -0.2, 1.1, 0.0, 1.4, -0.4, 0.8, -0.5, 1.2, 0.6]), { temperature: 0.5 }, 20000, 77);
  });

  it('top-p keeps exactly the minimal set, renormalised (chi-square)', () => {
    const row = Float32Array.from([0.1, 1.5, -0.3, 1.2, 0.9, 2.0, -1.0, 0.4, 1.0, 0.0, 0.7, -2.0]);
    const p = { temperature: 1, topP: 0.7 };
    const k = refKept(row, p)!;
    // The minimal set: its mass reaches 0.7, without its last token it does not.
    const probs = keptProbs(row, { temperature: 1 });
    const massOf = (ids: number[]) => ids.reduce((a, i) => a + probs[i], 0);
    expect(massOf(k.kept)).toBeGreaterThanOrEqual(0.7);
    expect(massOf(k.kept.slice(0, -1))).toBeLessThan(0.7);
    expect(k.kept.length).toBeGreaterThan(2);
    expect(k.kept.length).toBeLessThan(12);
    expectDistribution(row, p, 20000, 8);
  });

  it('top-k (chi-square)', () => {
    const row = Float32Array.from([0.1, 1.5, -0.3, 1.2, 0.9, 2.0, -1.0, 0.4, 1.0, 0.0, 0.7, -2.0]);
    expectDistribution(row, { temperature: 1, topK: 4 }, 20000, 9);
    expectDistribution(row, { temperature: 0.8, topK: 7, topP: 0.9 }, 20000, 10);
  });

  it('min-p (chi-square)', () => {
    const row = Float32Array.from([0.1, 1.5, -0.3, 1.2, 0.9, 2.0, -1.0, 0.4, 1.0, 0.0, 0.7, -2.0]);
    const p = { temperature: 1, minP: 0.3 };
    expect(refKept(row, p)!.L).toBe(5); // p / pmax >= 0.3 <=> logit >= 2 + ln 0.3 = 0.796
    expectDistribution(row, p, 20000, 11);
  });

  it('draws exactly the token the reference draws, with its renormalised logprob', () => {
    const cases: [number, Params][] = [
      [50, { temperature: 1 }], [50, { temperature: 0.7, topP: 0.9 }], [50, { temperature: 1.3, topK: 5 }],
      [50, { temperature: 1, minP: 0.05 }], [50, { temperature: 0.9, topK: 20, topP: 0.8, minP: 0.02 }],
      [3001, { temperature: 1, topP: 0.95 }], [3001, { temperature: 0.6, topK: 40, topP: 0.9 }],
      [3001, { temperature: 1, topK: 2500, topP: 0.999 }], [3001, { temperature: 2, minP: 0.1 }],
      [3001, { temperature: 1.5 }],
    ];
    let c = 0;
    for (const [V, p] of cases) {
      const rows = V > 100 ? 24 : 200;
      const logits = randomF32(rows * V, 100 + c, -4, 4);
      // Half the cases round logits to quarters: many ties, which the canonical order breaks
      // by index (at the top-k and top-p cuts and in the draw).
      if (c % 2) for (let i = 0; i < rows * V; i++) logits[i] = Math.round(logits[i] * 4) / 4;
      // A few masked (-inf) and NaN logits, counted as -inf.
      for (let i = 0; i < rows * V; i += 17) logits[i] = i % 3 ? -Infinity : NaN;
      const seed = 1000 + c++;
      const { ids, logprobs } = kernels.ops.sampleWithLogprobs(logits, { rows, vocab: V, seed, ...p });
      for (let r = 0; r < rows; r++) {
        const u = refUniform(BigInt(seed), BigInt(r));
        const want = refSample(logits.subarray(r * V, (r + 1) * V), p, u);
        expect(ids[r], `V=${V} ${JSON.stringify(p)} row ${r}`).toBe(want.id);
        expect(Math.abs(logprobs[r] - want.logprob)).toBeLessThan(1e-5);
      }
    }
  });

  it('vocab 151,936 with top-p 0.9 draws from the reference kept set', () => {
    const V = 151936, rows = 3, p = { temperature: 1, topP: 0.9 };
    const logits = gaussian(rows * V, 21, 2.5);
    const seed = [11, 22, 33], counter = [4, 5, 6];
    const { ids, logprobs } = kernels.ops.sampleWithLogprobs(logits, { rows, vocab: V, seed, counter, ...p });
    for (let r = 0; r < rows; r++) {
      const row = logits.subarray(r * V, (r + 1) * V);
      const k = refKept(row, p)!;
      expect(k.L).toBeGreaterThan(1000); // a large kept set spanning many buckets
      expect(k.kept.includes(ids[r])).toBe(true);
      // logprob = s - log Z_kept: matching it checks the kept mass, i.e. the same kept set.
      expect(Math.abs(logprobs[r] - (k.s[ids[r]] - Math.log(k.Z)))).toBeLessThan(1e-5);
      expect(ids[r]).toBe(refSample(row, p, refUniform(BigInt(seed[r]), BigInt(counter[r]))).id);
    }
    // No filter at all also avoids a full sort and still draws the reference token.
    const plain = kernels.sample(logits.subarray(0, V), { rows: 1, vocab: V, temperature: 1, seed: [7], counter: [8] });
    expect(plain[0]).toBe(refSample(logits.subarray(0, V), { temperature: 1 }, refUniform(7n, 8n)).id);
  });

  it('NaN and infinite logits', () => {
    const V = 6;
    const logits = Float32Array.from([
      NaN, NaN, NaN, NaN, NaN, NaN, //          no distribution: token 0, logprob NaN
      -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity,
      NaN, 1, NaN, 2, NaN, -Infinity, //        NaN counts as -inf
      0, Infinity, 3, Infinity, NaN, 1, //      +inf tokens share the mass
    ]);
    for (const p of [{ temperature: 1 }, { temperature: 1, topK: 2 }, { temperature: 0.5, topP: 0.5, minP: 0.1 }]) {
      const rows = 4;
      const { ids, logprobs } = kernels.ops.sampleWithLogprobs(logits, { rows, vocab: V, seed: [1, 2, 3, 4], ...p });
      expect(ids[0]).toBe(0); expect(logprobs[0]).toBeNaN();
      expect(ids[1]).toBe(0); expect(logprobs[1]).toBeNaN();
      expect([1, 3]).toContain(ids[2]);
      if (p.topP) expect(ids[3]).toBe(1); // top-p 0.5 keeps the first of the two halves
      else expect([1, 3]).toContain(ids[3]);
      expect(logprobs[3]).toBeCloseTo(p.topP ? 0 : -Math.log(2), 6);
    }
    const greedy = kernels.ops.sampleWithLogprobs(logits, { rows: 4, vocab: V, temperature: 0, seed: 0 });
    expect(Array.from(greedy.ids)).toEqual([0, 0, 3, 1]);
    expect(greedy.logprobs[0]).toBeNaN();
    // Both +inf tokens are drawn, evenly.
    const inf = repeatRow(logits.subarray(18, 24), 4000);
    const h = histogram(kernels.sample(inf, { rows: 4000, vocab: V, temperature: 1, seed: 3 }), V);
    expect(h[1] + h[3]).toBe(4000);
    expect(Math.abs(h[1] - 2000)).toBeLessThan(150);
  });

  it('vocab 1, and tokens whose weight underflows to 0 are never drawn', () => {
    const one = kernels.ops.sampleWithLogprobs(Float32Array.from([3, -1, NaN]), { rows: 3, vocab: 1, temperature: 1, seed: 2 });
    expect(Array.from(one.ids)).toEqual([0, 0, 0]);
    expect(Array.from(one.logprobs.subarray(0, 2))).toEqual([0, 0]);
    expect(one.logprobs[2]).toBeNaN();
    const V = 3000, row = new Float32Array(V).fill(-300); // top-k 2500 takes the bucketed path
    row[1] = 5; row[2] = -200; row[3] = -Infinity; row[4] = 4.5;
    for (const p of [{ temperature: 1 }, { temperature: 1, topK: 4 }, { temperature: 1, topK: 2500 }, { temperature: 1, topP: 0.9999 }]) {
      const { ids, logprobs } = kernels.ops.sampleWithLogprobs(repeatRow(row, 1000), { rows: 1000, vocab: V, seed: 6, ...p });
      const h = histogram(ids, V);
      expect(h[1] + h[4]).toBe(1000);
      expect(h[1]).toBeGreaterThan(550);
      const z = 1 + Math.exp(-0.5);
      for (let r = 0; r < 1000; r++) expect(logprobs[r]).toBeCloseTo(ids[r] === 1 ? -Math.log(z) : -0.5 - Math.log(z), 5);
    }
  });

  it('a row draws the same token alone or in any batch (per-row seeds), for 1, 2 and 3 threads', () => {
    const V = 4099, rows = 37;
    const logits = randomF32(rows * V, 31, -3, 3);
    const seed = Array.from({ length: rows }, (_, r) => 1000 + 7 * r), counter = Array.from({ length: rows }, (_, r) => r % 5);
    const before = kernels.threads;
    try {
      for (const p of [{ temperature: 1, topP: 0.9 }, { temperature: 0.8, topK: 50 }, { temperature: 1.2, minP: 0.05 }]) {
        const results: Buffer[] = [];
        let batch: Int32Array | undefined;
        for (const t of [1, 2, 3]) {
          kernels.threads = t;
          const out = kernels.ops.sampleWithLogprobs(logits, { rows, vocab: V, seed, counter, ...p });
          results.push(Buffer.concat([Buffer.from(out.ids.buffer), Buffer.from(out.logprobs.buffer)]));
          batch = out.ids;
        }
        expect(results[1].equals(results[0])).toBe(true);
        expect(results[2].equals(results[0])).toBe(true);
        // Alone, and inside a reversed batch.
        for (const r of [0, 5, 36]) {
          const alone = kernels.sample(logits.subarray(r * V, (r + 1) * V), { rows: 1, vocab: V, seed: [seed[r]], counter: [counter[r]], ...p });
          expect(alone[0]).toBe(batch![r]);
        }
        const rev = new Float32Array(rows * V);
        for (let r = 0; r < rows; r++) rev.set(logits.subarray(r * V, (r + 1) * V), (rows - 1 - r) * V);
        const revIds = kernels.sample(rev, { rows, vocab: V, seed: seed.slice().reverse(), counter: counter.slice().reverse(), ...p });
        expect(Array.from(revIds).reverse()).toEqual(Array.from(batch!));
      }
    } finally {
      kernels.threads = before;
    }
  });

  it('seed and counter forms: one seed uses counter * 2^32 + row; per-row seeds use counter (default 0)', () => {
    const V = 300, rows = 5, p = { temperature: 1 };
    const logits = randomF32(rows * V, 41, -1, 1);
    const expectDraws = (ids: Int32Array, keys: bigint[], ctrs: bigint[]) => {
      for (let r = 0; r < rows; r++)
        expect(ids[r]).toBe(refSample(logits.subarray(r * V, (r + 1) * V), p, refUniform(keys[r], ctrs[r])).id);
    };
    const rowsIdx = [0n, 1n, 2n, 3n, 4n];
    expectDraws(kernels.sample(logits, { rows, vocab: V, seed: 9, ...p }), rowsIdx.map(() => 9n), rowsIdx);
    expectDraws(kernels.sample(logits, { rows, vocab: V, seed: 9, counter: 3, ...p }), rowsIdx.map(() => 9n), rowsIdx.map((r) => (3n << 32n) + r));
    const big = BigUint64Array.from([2n ** 64n - 1n, 1n, 2n ** 40n, 5n, 6n]);
    expectDraws(kernels.sample(logits, { rows, vocab: V, seed: big, ...p }), Array.from(big), rowsIdx.map(() => 0n));
    expectDraws(kernels.sample(logits, { rows, vocab: V, seed: [1, 2, 3, 4, 5], counter: 12, ...p }), [1n, 2n, 3n, 4n, 5n], rowsIdx.map(() => 12n));
    const ctr = BigUint64Array.from([7n, 2n ** 63n, 0n, 1n, 2n]);
    expectDraws(kernels.sample(logits, { rows, vocab: V, seed: 2 ** 53 - 1, counter: ctr, ...p }), rowsIdx.map(() => 2n ** 53n - 1n), Array.from(ctr));
  });

  it('async form gives the same result', async () => {
    const logits = randomF32(9 * 777, 51, -2, 2);
    const opts = { rows: 9, vocab: 777, temperature: 0.9, topP: 0.8, seed: 4 };
    const sync = kernels.ops.sampleWithLogprobs(logits, opts);
    const async = await kernels.async.sampleWithLogprobs(logits, opts);
    expect(Array.from(async.ids)).toEqual(Array.from(sync.ids));
    expect(Array.from(async.logprobs)).toEqual(Array.from(sync.logprobs));
    expect(Array.from(await kernels.async.sample(logits, opts))).toEqual(Array.from(sync.ids));
  });

  it('rejects bad arguments with errors naming them', () => {
    const logits = new Float32Array(12);
    const ok = { rows: 3, vocab: 4, temperature: 1, seed: 1 };
    const bad = (o: object, re: RegExp, type: typeof TypeError | typeof RangeError = RangeError) =>
      expect(() => kernels.sample(logits, { ...ok, ...o } as never)).toThrow(expect.objectContaining({ constructor: type, message: expect.stringMatching(re) }));
    bad({ temperature: -0.1 }, /temperature must be/);
    bad({ temperature: NaN }, /temperature must be/);
    bad({ temperature: Infinity }, /temperature must be/);
    bad({ temperature: '1' }, /temperature must be a number/, TypeError);
    bad({ topK: 1.5 }, /topK must be an integer/);
    bad({ topK: -1 }, /topK must be an integer/);
    bad({ topK: 5 }, /topK must be an integer in \[0, 4\]/);
    bad({ topP: 0 }, /topP must be in \(0, 1\]/);
    bad({ topP: 1.01 }, /topP must be/);
    bad({ minP: 1 }, /minP must be in \[0, 1\)/);
    bad({ minP: -0.1 }, /minP must be/);
    bad({ rows: 0 }, /rows must be an integer/);
    bad({ vocab: 0 }, /vocab must be an integer/);
    bad({ rows: 2 }, /logits must have length 8, got 12/);
    bad({ seed: -1 }, /seed must be an integer/);
    bad({ seed: 1.5 }, /seed must be an integer/);
    bad({ seed: 2 ** 53 }, /seed must be an integer/);
    bad({ seed: undefined }, /seed is required/, TypeError);
    bad({ seed: '1' }, /seed must be a number/, TypeError);
    bad({ seed: [1, 2] }, /seed must have length 3, got 2/);
    bad({ seed: [1, -2, 3] }, /seed\[1\] must be an integer/);
    bad({ seed: new BigUint64Array(2) }, /seed must have length 3/);
    bad({ counter: -1 }, /counter must be an integer/);
    bad({ counter: 2 ** 32 }, /counter must be an integer in \[0, 4294967295\]/);
    bad({ seed: [1, 2, 3], counter: [0, 1] }, /counter must have length 3/);
    expect(() => kernels.sample(new Float64Array(12) as never, ok)).toThrow(/logits must be a Float32Array/);
    expect(() => kernels.sample(logits, null as never)).toThrow(/options must be an object/);
  });
});
