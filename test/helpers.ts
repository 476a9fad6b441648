// Test helpers: seeded random inputs (never zeros) and comparison with clear failure messages.
import { expect } from 'vitest';
import { kernels } from '../src/kernels/index.js';

/** Mulberry32: a small seeded PRNG for reproducible test inputs. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform floats in [lo, hi). */
export function randomF32(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}

export function randomInts(n: number, seed: number, lo: number, hiExclusive: number): Int32Array {
  const r = rng(seed);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + Math.floor(r() * (hiExclusive - lo));
  return out;
}

/** Max |a-b| / (atol + rtol*|b|) must be <= 1; reports the worst index. */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol = 1e-5, atol = 1e-5, what = 'value'): void {
  expect(actual.length, `${what} length`).toBe(expected.length);
  let worst = 0, at = -1;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i], b = expected[i];
    if (Number.isNaN(a) !== Number.isNaN(b)) { worst = Infinity; at = i; break; }
    const err = Math.abs(a - b) / (atol + rtol * Math.abs(b));
    if (err > worst) { worst = err; at = i; }
  }
  if (worst > 1) expect.fail(`${what}[${at}]: got ${actual[at]}, expected ${expected[at]} (rtol ${rtol}, atol ${atol})`);
}

/** Whether two float arrays hold the same bits (views honoured: byteOffset and length, not the whole buffer). */
export function bitsEqual(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Runs `fn` with the kernel thread pool at `n` threads, then restores it. */
export function withThreads<T>(n: number, fn: () => T): T {
  const before = kernels.threads;
  try {
    kernels.threads = n;
    return fn();
  } finally {
    kernels.threads = before;
  }
}
