// The test helpers themselves: a helper that passes wrongly hides every failure behind it.
import { describe, expect, it } from 'vitest';
import { bitsEqual, withThreads } from './helpers.js';
import { kernels } from '../src/kernels/index.js';

describe('test helpers', () => {
  it('bitsEqual compares the views it is given, not their whole buffers (the old attention copy did)', () => {
    const buf = new Float32Array([1, 2, 3, 4]);
    expect(bitsEqual(buf.subarray(0, 2), buf.subarray(2, 4))).toBe(false);
    expect(bitsEqual(buf.subarray(1, 3), Float32Array.from([2, 3]))).toBe(true);
    expect(bitsEqual(Float32Array.from([0]), Float32Array.from([-0]))).toBe(false); // equal values, other bits
    expect(bitsEqual(Float32Array.from([NaN]), Float32Array.from([NaN]))).toBe(true);
    expect(bitsEqual(buf, buf.subarray(0, 3))).toBe(false);
  });

  it('withThreads restores the thread count, also when its function throws', () => {
    const before = kernels.threads;
    expect(withThreads(1, () => kernels.threads)).toBe(1);
    expect(() => withThreads(1, () => { throw new Error('x'); })).toThrow('x');
    expect(kernels.threads).toBe(before);
  });
});
