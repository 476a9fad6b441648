// Grouped-query attention: prefill forward (with the log-sum-exp saved for training), its
// backward, and one decode step against a KV cache. Layouts are token-major, like the model's
// projections: q (batch, seqQ, heads, headDim), k and v (batch, seqK, kvHeads, headDim).
// Query head h reads kv head floor(h * kvHeads / heads); scores are scaled by 1/sqrt(headDim).
import { native } from '../native.js';
import type { AttentionDecodeOptions, AttentionShape } from '../native-api.js';
import { defineOp } from './define.js';
import * as v from './validate.js';

export type { AttentionDecodeOptions, AttentionShape };

export interface AttentionOptions extends AttentionShape {
  /** (batch, seqQ, heads, headDim) */
  q: Float32Array;
  /** (batch, seqK, kvHeads, headDim) */
  k: Float32Array;
  /** (batch, seqK, kvHeads, headDim) */
  v: Float32Array;
}

export interface AttentionBackwardOptions extends AttentionOptions {
  /** Gradient of the loss with respect to out, (batch, seqQ, heads, headDim). */
  dout: Float32Array;
  /** out and lse from attentionForward with the same inputs. */
  out: Float32Array;
  /** (batch, heads, seqQ) */
  lse: Float32Array;
}


interface Dims {
  B: number; H: number; KVH: number; Tq: number; Tk: number; D: number; causal: boolean;
  nq: number; nk: number; nl: number;
}

function heads(o: v.Options): [number, number] {
  const H = v.size(o.heads, 'heads'), KVH = v.size(o.kvHeads, 'kvHeads');
  if (H % KVH !== 0) throw new RangeError(`kvHeads must divide heads, got heads ${H} and kvHeads ${KVH}`);
  return [H, KVH];
}

function dims(o: v.Options): Dims {
  const B = v.size(o.batch, 'batch');
  const [H, KVH] = heads(o);
  const Tq = v.size(o.seqQ, 'seqQ'), Tk = v.size(o.seqK, 'seqK'), D = v.size(o.headDim, 'headDim');
  const causal = v.bool(o.causal, 'causal', true);
  return {
    B, H, KVH, Tq, Tk, D, causal,
    nq: v.elements('q', B, Tq, H, D), nk: v.elements('k', B, Tk, KVH, D), nl: v.elements('lse', B, H, Tq),
  };
}

/** The binding's shape fields of these dims. */
function attentionShape(d: Dims): AttentionShape {
  return { batch: d.B, heads: d.H, kvHeads: d.KVH, seqQ: d.Tq, seqK: d.Tk, headDim: d.D, causal: d.causal };
}

function inputs(o: v.Options, d: Dims): [Float32Array, Float32Array, Float32Array] {
  return [v.f32(o.q, 'q', d.nq), v.f32(o.k, 'k', d.nk), v.f32(o.v, 'v', d.nk)];
}

/** Attention output, shaped like q: (batch, seqQ, heads, headDim). */
export const attention = defineOp((opts: AttentionOptions) => {
  const o = v.options(opts);
  const d = dims(o);
  const [q, k, vv] = inputs(o, d);
  const out = new Float32Array(d.nq);
  return {
    run: (async: boolean) =>
      native.attentionForward({ out, lse: null, q, k, v: vv, ...attentionShape(d) }, async),
    result: () => out,
  };
});

export interface AttentionBf16Options extends AttentionShape {
  /** bf16 bits (kernels.toBf16), (batch, seqQ, heads, headDim) */
  q: Uint16Array;
  /** bf16 bits, (batch, seqK, kvHeads, headDim) */
  k: Uint16Array;
  v: Uint16Array;
}

/**
 * The forward on bf16 q, k, v: out in bf16 bits (batch, seqQ, heads, headDim), lse fp32. On the
 * CUDA backend a FlashAttention-2-style tensor-core kernel (headDim 64 or 128; others widen to
 * fp32); on the CPU the fp32 kernel on the widened values. Agreement: bf16 precision (~1e-2).
 */
export const attentionBf16 = defineOp((opts: AttentionBf16Options) => {
  const o = v.options(opts);
  const d = dims(o);
  const q = v.bf16(o.q, 'q', d.nq), k = v.bf16(o.k, 'k', d.nk), vv = v.bf16(o.v, 'v', d.nk);
  const out = new Uint16Array(d.nq), lse = new Float32Array(d.nl);
  return {
    run: (async: boolean) =>
      native.attentionForwardBf16({ out, lse, q, k, v: vv, ...attentionShape(d) }, async),
    result: () => ({ out, lse }),
  };
});

/** Forward for training: out (batch, seqQ, heads, headDim) and lse (batch, heads, seqQ). */
export const attentionForward = defineOp((opts: AttentionOptions) => {
  const o = v.options(opts);
  const d = dims(o);
  const [q, k, vv] = inputs(o, d);
  const out = new Float32Array(d.nq), lse = new Float32Array(d.nl);
  return {
    run: (async: boolean) =>
      native.attentionForward({ out, lse, q, k, v: vv, ...attentionShape(d) }, async),
    result: () => ({ out, lse }),
  };
});

/** Gradients of attention: dq shaped like q, dk and dv like k. Recomputes the scores from lse. */
export const attentionBackward = defineOp((opts: AttentionBackwardOptions) => {
  const o = v.options(opts);
  const d = dims(o);
  const [q, k, vv] = inputs(o, d);
  const dout = v.f32(o.dout, 'dout', d.nq), out = v.f32(o.out, 'out', d.nq), lse = v.f32(o.lse, 'lse', d.nl);
  const dq = new Float32Array(d.nq), dk = new Float32Array(d.nk), dv = new Float32Array(d.nk);
  return {
    run: (async: boolean) =>
      native.attentionBackward({ dq, dk, dv, dout, q, k, v: vv, out, lse, ...attentionShape(d) }, async),
    result: () => ({ dq, dk, dv }),
  };
});

/** One decode step: out (batch, heads, headDim), row b attending to cache positions 0..lengths[b]-1. */
export const attentionDecode = defineOp((opts: AttentionDecodeOptions) => {
  const o = v.options(opts);
  const B = v.size(o.batch, 'batch');
  const [H, KVH] = heads(o);
  const maxT = v.size(o.maxSeq, 'maxSeq'), D = v.size(o.headDim, 'headDim');
  const nq = v.elements('q', B, H, D), nc = v.elements('kCache', B, maxT, KVH, D);
  const q = v.f32(o.q, 'q', nq), kc = v.f32(o.kCache, 'kCache', nc), vc = v.f32(o.vCache, 'vCache', nc);
  const lengths = v.i32(o.lengths, 'lengths', B);
  for (let b = 0; b < B; b++)
    if (lengths[b] < 1 || lengths[b] > maxT)
      throw new RangeError(`lengths[${b}] = ${lengths[b]} is outside [1, ${maxT}]`);
  const out = new Float32Array(nq);
  return {
    run: (async: boolean) => native.attentionDecode({ out, q, kCache: kc, vCache: vc, lengths, batch: B, heads: H, kvHeads: KVH, maxSeq: maxT, headDim: D }, async),
    result: () => out,
  };
});
