import { native } from '../native.js';
import { defineOp } from './define.js';
import * as v from './validate.js';

export interface MatmulOptions {
  m: number;
  k: number;
  n: number;
  /** B is given as (n,k) instead of (k,n). */
  transB?: boolean;
  /** A is given as (k,m) instead of (m,k). */
  transA?: boolean;
}

function matmulShape(opts: MatmulOptions) {
  const o = v.options(opts);
  return {
    m: v.size(o.m, 'm'), k: v.size(o.k, 'k'), n: v.size(o.n, 'n'),
    transA: v.bool(o.transA, 'transA'), transB: v.bool(o.transB, 'transB'),
  };
}

/**
 * The same product with bf16 A and B (Uint16Array of bf16 bits, see kernels.toBf16) and fp32 C:
 * tensor cores on the CUDA backend (wgmma on Hopper for transB, mma.sync otherwise), the fp32
 * GEMM of the widened values on the CPU. Products of bf16 values are exact in fp32, so backends
 * differ only by the order of the fp32 sums.
 */
export const matmulBf16 = defineOp((a: Uint16Array, b: Uint16Array, opts: MatmulOptions) => {
  const { m, k, n, transA, transB } = matmulShape(opts);
  v.bf16(a, 'a', v.elements('a', m, k));
  v.bf16(b, 'b', v.elements('b', k, n));
  const c = new Float32Array(v.elements('result', m, n));
  return {
    run: (async: boolean) => native.gemmBf16({ a, b, c, m, n, k, transA, transB, alpha: 1, beta: 0 }, async),
    result: () => c,
  };
});

/**
 * The fp32 product on tf32 tensor cores (inputs rounded to 10-bit mantissas, fp32 sums): ~1e-3
 * relative to the exact product. On the CPU the same rounding, then the fp32 GEMM.
 */
export const matmulTf32 = defineOp((a: Float32Array, b: Float32Array, opts: MatmulOptions) => {
  const { m, k, n, transA, transB } = matmulShape(opts);
  v.f32(a, 'a', v.elements('a', m, k));
  v.f32(b, 'b', v.elements('b', k, n));
  const c = new Float32Array(v.elements('result', m, n));
  return {
    run: (async: boolean) => native.sgemmTf32({ a, b, c, m, n, k, transA, transB, alpha: 1, beta: 0 }, async),
    result: () => c,
  };
});

/** Float32Array -> bf16 bits (round to nearest even; NaN stays NaN): the engine's cast_bf16. */
export function toBf16(x: Float32Array): Uint16Array {
  if (!(x instanceof Float32Array)) throw new TypeError('toBf16 expects a Float32Array');
  const out = new Uint16Array(x.length);
  native.castBf16({ out, x }, false);
  return out;
}

/** bf16 bits -> Float32Array (exact). */
export function fromBf16(h: Uint16Array): Float32Array {
  if (!(h instanceof Uint16Array)) throw new TypeError('fromBf16 expects a Uint16Array');
  const u = new Uint32Array(h.length);
  for (let i = 0; i < h.length; i++) u[i] = h[i] << 16;
  return new Float32Array(u.buffer);
}

/** C (m,n) = op(A) @ op(B). A is m×k (k×m with transA); B is k×n (n×k with transB). */
export const matmul = defineOp((a: Float32Array, b: Float32Array, opts: MatmulOptions) => {
  const { m, k, n, transA, transB } = matmulShape(opts);
  v.f32(a, 'a', v.elements('a', m, k));
  v.f32(b, 'b', v.elements('b', k, n));
  const c = new Float32Array(v.elements('result', m, n));
  return {
    run: (async: boolean) => native.sgemm({ a, b, c, m, n, k, transA, transB, alpha: 1, beta: 0 }, async),
    result: () => c,
  };
});
