// Row-wise and elementwise layers: RMSNorm, RoPE, SwiGLU, embedding, residual (forward and
// backward). Shapes follow native/kernels.h; every output is a fresh Float32Array unless an
// accumulation target is passed in.
import { native } from '../native.js';
import { defineOp } from './define.js';
import * as v from './validate.js';

export interface RmsnormOptions {
  rows: number;
  dim: number;
  /** Added to mean(x^2) before the square root (default 1e-6). */
  eps?: number;
}

/** RMSNorm over rows: inp (rows,dim), weight (dim) -> out = inp * rstd * weight, rstd (rows). */
export const rmsnorm = defineOp((inp: Float32Array, weight: Float32Array, opts: RmsnormOptions) => {
  const o = v.options(opts);
  const rows = v.size(o.rows, 'rows'), dim = v.size(o.dim, 'dim');
  const eps = v.optionalFinite(o.eps, 'eps', 1e-6, 0);
  v.f32(inp, 'inp', v.elements('inp', rows, dim));
  v.f32(weight, 'weight', dim);
  const out = new Float32Array(rows * dim), rstd = new Float32Array(rows);
  return {
    run: (async: boolean) => native.rmsnormForward({ out, rstd, inp, weight, rows, dim, eps }, async),
    result: () => ({ out, rstd }),
  };
});

export interface RmsnormBackwardArgs {
  dout: Float32Array;
  inp: Float32Array;
  weight: Float32Array;
  /** From the forward. */
  rstd: Float32Array;
  rows: number;
  dim: number;
  /** Accumulated into (+=) when given; otherwise a new zeroed array. */
  dweight?: Float32Array;
}

/** RMSNorm backward -> { dinp (rows,dim), dweight (dim, accumulated) }. */
export const rmsnormBackward = defineOp((args: RmsnormBackwardArgs) => {
  const o = v.options(args, 'args');
  const rows = v.size(o.rows, 'rows'), dim = v.size(o.dim, 'dim');
  const n = v.elements('dout', rows, dim);
  const dout = v.f32(o.dout, 'dout', n), inp = v.f32(o.inp, 'inp', n);
  const weight = v.f32(o.weight, 'weight', dim), rstd = v.f32(o.rstd, 'rstd', rows);
  const dweight = o.dweight === undefined ? new Float32Array(dim) : v.f32(o.dweight, 'dweight', dim);
  const dinp = new Float32Array(n);
  return {
    run: (async: boolean) => native.rmsnormBackward({ dinp, dweight, dout, inp, weight, rstd, rows, dim }, async),
    result: () => ({ dinp, dweight }),
  };
});

export interface RopeOptions {
  tokens: number;
  heads: number;
  /** Even. */
  headDim: number;
  /** RoPE base (default 10000). */
  theta?: number;
}

function ropeArgs(x: unknown, name: string, positions: unknown, opts: RopeOptions) {
  const o = v.options(opts);
  const tokens = v.size(o.tokens, 'tokens'), heads = v.size(o.heads, 'heads');
  const headDim = v.size(o.headDim, 'headDim', 2);
  if (headDim % 2 !== 0) throw new RangeError(`headDim must be even, got ${headDim}`);
  const theta = v.optionalFinite(o.theta, 'theta', 10000, 1);
  if (theta <= 1) throw new RangeError(`theta must be > 1, got ${theta}`);
  const n = v.elements(name, tokens, heads, headDim);
  v.f32(x, name, n);
  v.i32(positions, 'positions', tokens);
  return { tokens, heads, headDim, theta, n };
}

/**
 * Rotary position embedding, Hugging Face rotate-half convention (float32 angles as HF computes
 * them). inp (tokens,heads,headDim), positions (tokens) -> out (tokens,heads,headDim).
 */
export const rope = defineOp((inp: Float32Array, positions: Int32Array, opts: RopeOptions) => {
  const a = ropeArgs(inp, 'inp', positions, opts);
  const out = new Float32Array(a.n);
  return {
    run: (async: boolean) => native.ropeForward({ out, inp, positions, tokens: a.tokens, heads: a.heads, headDim: a.headDim, theta: a.theta }, async),
    result: () => out,
  };
});

/** RoPE backward: the inverse rotation of dout (tokens,heads,headDim) -> dinp. */
export const ropeBackward = defineOp((dout: Float32Array, positions: Int32Array, opts: RopeOptions) => {
  const a = ropeArgs(dout, 'dout', positions, opts);
  const dinp = new Float32Array(a.n);
  return {
    run: (async: boolean) => native.ropeBackward({ dinp, dout, positions, tokens: a.tokens, heads: a.heads, headDim: a.headDim, theta: a.theta }, async),
    result: () => dinp,
  };
});

export interface RowsOptions {
  rows: number;
  dim: number;
}

/** SwiGLU: gate, up (rows,dim) -> silu(gate) * up. */
export const swiglu = defineOp((gate: Float32Array, up: Float32Array, opts: RowsOptions) => {
  const o = v.options(opts);
  const rows = v.size(o.rows, 'rows'), dim = v.size(o.dim, 'dim');
  const n = v.elements('gate', rows, dim);
  v.f32(gate, 'gate', n);
  v.f32(up, 'up', n);
  const out = new Float32Array(n);
  return {
    run: (async: boolean) => native.swigluForward({ out, gate, up, rows, dim }, async),
    result: () => out,
  };
});

export interface SwigluBackwardArgs {
  dout: Float32Array;
  gate: Float32Array;
  up: Float32Array;
  rows: number;
  dim: number;
}

/** SwiGLU backward -> { dgate, dup } (rows,dim). */
export const swigluBackward = defineOp((args: SwigluBackwardArgs) => {
  const o = v.options(args, 'args');
  const rows = v.size(o.rows, 'rows'), dim = v.size(o.dim, 'dim');
  const n = v.elements('dout', rows, dim);
  const dout = v.f32(o.dout, 'dout', n), gate = v.f32(o.gate, 'gate', n), up = v.f32(o.up, 'up', n);
  const dgate = new Float32Array(n), dup = new Float32Array(n);
  return {
    run: (async: boolean) => native.swigluBackward({ dgate, dup, dout, gate, up, rows, dim }, async),
    result: () => ({ dgate, dup }),
  };
});

export interface EmbeddingOptions {
  tokens: number;
  vocab: number;
  dim: number;
}

/** Embedding lookup: ids (tokens) in [0, vocab), table (vocab,dim) -> out (tokens,dim). */
export const embedding = defineOp((ids: Int32Array, table: Float32Array, opts: EmbeddingOptions) => {
  const o = v.options(opts);
  const tokens = v.size(o.tokens, 'tokens'), vocab = v.size(o.vocab, 'vocab'), dim = v.size(o.dim, 'dim');
  v.ids(ids, 'ids', tokens, vocab);
  v.f32(table, 'table', v.elements('table', vocab, dim));
  const out = new Float32Array(v.elements('out', tokens, dim));
  return {
    run: (async: boolean) => native.embeddingForward({ out, ids, table, tokens, vocab, dim }, async),
    result: () => out,
  };
});

export interface EmbeddingBackwardArgs extends EmbeddingOptions {
  dout: Float32Array;
  ids: Int32Array;
  /** Accumulated into (+=) when given; otherwise a new zeroed (vocab,dim) array. */
  dtable?: Float32Array;
}

/** Embedding backward: dtable[ids[n]] += dout[n], in token order (deterministic) -> dtable. */
export const embeddingBackward = defineOp((args: EmbeddingBackwardArgs) => {
  const o = v.options(args, 'args');
  const tokens = v.size(o.tokens, 'tokens'), vocab = v.size(o.vocab, 'vocab'), dim = v.size(o.dim, 'dim');
  const dout = v.f32(o.dout, 'dout', v.elements('dout', tokens, dim));
  const ids = v.ids(o.ids, 'ids', tokens, vocab);
  const n = v.elements('dtable', vocab, dim);
  const dtable = o.dtable === undefined ? new Float32Array(n) : v.f32(o.dtable, 'dtable', n);
  return {
    run: (async: boolean) => native.embeddingBackward({ dtable, dout, ids, tokens, vocab, dim }, async),
    result: () => dtable,
  };
});

/** Residual add: a + b (same length). */
export const residual = defineOp((a: Float32Array, b: Float32Array) => {
  v.f32(a, 'a');
  v.f32(b, 'b', a.length);
  const out = new Float32Array(a.length);
  return {
    run: (async: boolean) => native.residualForward({ out, a, b }, async),
    result: () => out,
  };
});

export interface ResidualGrads {
  da?: Float32Array;
  db?: Float32Array;
}

/**
 * Residual backward: da += dout, db += dout. Pass `into` to accumulate into existing gradients;
 * otherwise both start at zero (each a copy of dout).
 */
export const residualBackward = defineOp((dout: Float32Array, into?: ResidualGrads) => {
  v.f32(dout, 'dout');
  const o = into === undefined ? {} : v.options(into, 'into');
  const da = o.da === undefined ? new Float32Array(dout.length) : v.f32(o.da, 'da', dout.length);
  const db = o.db === undefined ? new Float32Array(dout.length) : v.f32(o.db, 'db', dout.length);
  return {
    run: (async: boolean) => native.residualBackward({ da, db, dout }, async),
    result: () => ({ da, db }),
  };
});
