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

/** C (m,n) = op(A) @ op(B). A is m×k (k×m with transA); B is k×n (n×k with transB). */
export const matmul = defineOp((a: Float32Array, b: Float32Array, opts: MatmulOptions) => {
  const o = v.options(opts);
  const m = v.size(o.m, 'm'), k = v.size(o.k, 'k'), n = v.size(o.n, 'n');
  const transA = v.bool(o.transA, 'transA'), transB = v.bool(o.transB, 'transB');
  v.f32(a, 'a', v.elements('a', m, k));
  v.f32(b, 'b', v.elements('b', k, n));
  const c = new Float32Array(v.elements('result', m, n));
  return {
    run: (async: boolean) => native.sgemm(a, b, c, m, n, k, transA, transB, 1, 0, async),
    result: () => c,
  };
});
