import { describe, expect, it } from 'vitest';
import { kernels } from '../src/index.js';
import { expectClose, randomF32 } from './helpers.js';

function refMatmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number, transA: boolean, transB: boolean): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += (transA ? a[p * m + i] : a[i * k + p]) * (transB ? b[j * k + p] : b[p * n + j]);
      c[i * n + j] = s;
    }
  return c;
}

describe('matmul', () => {
  const shapes: [number, number, number][] = [[1, 1, 1], [3, 5, 7], [17, 33, 9], [65, 129, 47], [100, 257, 31], [1, 300, 513], [200, 3, 200]];
  for (const [m, k, n] of shapes)
    for (const transA of [false, true])
      for (const transB of [false, true])
        it(`${m}x${k}x${n} transA=${transA} transB=${transB} matches a float64 reference`, () => {
          const a = randomF32(m * k, m * 7 + k), b = randomF32(k * n, n * 13 + k);
          const c = kernels.ops.matmul(a, b, { m, k, n, transA, transB });
          expectClose(c, refMatmul(a, b, m, k, n, transA, transB), 1e-4, 1e-4 * Math.sqrt(k), 'c');
        });

  it('async form gives the same result', async () => {
    const a = randomF32(37 * 41, 1), b = randomF32(41 * 29, 2);
    const sync = kernels.matmul(a, b, { m: 37, k: 41, n: 29 });
    const async = await kernels.async.matmul(a, b, { m: 37, k: 41, n: 29 });
    expect(Array.from(async)).toEqual(Array.from(sync));
  });

  it('rejects bad arguments with errors naming them', () => {
    const a = new Float32Array(6);
    expect(() => kernels.matmul(a, a, { m: 2, k: 3, n: 3 })).toThrow(/b must have length 9/);
    expect(() => kernels.matmul(a, a, { m: -2, k: 3, n: 2 })).toThrow(/m must be an integer/);
    expect(() => kernels.matmul(a, a, { m: NaN, k: 3, n: 2 })).toThrow(/m must be/);
    expect(() => kernels.matmul(new Float64Array(6) as unknown as Float32Array, a, { m: 2, k: 3, n: 2 })).toThrow(/a must be a Float32Array/);
    expect(() => kernels.matmul(a, a, null as never)).toThrow(/options must be an object/);
    expect(() => kernels.matmul(a, a, { m: 2, k: 3, n: 2, transB: 1 as never })).toThrow(/transB must be a boolean/);
  });

  it('is bit-identical across thread counts', () => {
    const a = randomF32(130 * 300, 5), b = randomF32(300 * 70, 6);
    const before = kernels.threads;
    try {
      kernels.threads = 1;
      const one = kernels.matmul(a, b, { m: 130, k: 300, n: 70 });
      kernels.threads = 3;
      const three = kernels.matmul(a, b, { m: 130, k: 300, n: 70 });
      expect(Buffer.from(three.buffer).equals(Buffer.from(one.buffer))).toBe(true);
    } finally {
      kernels.threads = before;
    }
  });
});
