// The addon's surface, as binding/ implements it: every native function, its options object and
// its result. Every call takes one options object; the ones that can run off the event loop take
// an `async` flag after it (true: the work runs on a libuv worker and a Promise is returned).
// Field names are the binding's (binding/*.cpp reads them by name through `Args`), so an error
// from the addon names the field as it is written here. The typed, validated surface for users is
// src/kernels; this file is the boundary.

import type { ModelConfig } from './models/config.js';

/** A native op: runs now (`async` false) or on a worker thread (`async` true: a Promise). */
export interface NativeOp<A, R = void> {
  (args: A, async: false): R;
  (args: A, async: true): Promise<R>;
  (args: A, async: boolean): R | Promise<R>;
}

export type Bf16Bits = Uint16Array;

/** C (m,n) = alpha · op(A) @ op(B) + beta · C, tight leading dimensions, row-major. */
export interface GemmArgs<T extends Float32Array | Bf16Bits> {
  a: T;
  b: T;
  c: Float32Array;
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  alpha: number;
  beta: number;
}

/** q (batch, seqQ, heads, headDim); k, v (batch, seqK, kvHeads, headDim); lse (batch, heads, seqQ). */
export interface AttentionShape {
  batch: number;
  heads: number;
  /** Must divide heads (heads / kvHeads query heads share each kv head). */
  kvHeads: number;
  seqQ: number;
  seqK: number;
  headDim: number;
  /**
   * Default true in src/kernels (the binding's default: false). Query i sits at absolute position
   * seqK - seqQ + i and sees keys 0..that position (so seqQ < seqK continues a prefix). With
   * seqQ > seqK the first seqQ - seqK queries see no key: their output is 0, their lse -Infinity
   * and their gradients 0.
   */
  causal?: boolean;
}
export interface AttentionForwardArgs<T extends Float32Array | Bf16Bits> extends AttentionShape {
  out: T;
  lse: Float32Array | null;
  q: T;
  k: T;
  v: T;
}
export interface AttentionBackwardArgs extends AttentionShape {
  dq: Float32Array;
  dk: Float32Array;
  dv: Float32Array;
  dout: Float32Array;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  out: Float32Array;
  lse: Float32Array;
}
/** One query per row against a KV cache. */
export interface AttentionDecodeOptions {
  /** One query per batch row: (batch, heads, headDim). */
  q: Float32Array;
  /** (batch, maxSeq, kvHeads, headDim); row b's positions 0..lengths[b]-1 are filled. */
  kCache: Float32Array;
  vCache: Float32Array;
  /** Int32Array (batch): keys each row sees, in [1, maxSeq] (its own key already written). */
  lengths: Int32Array;
  batch: number;
  heads: number;
  kvHeads: number;
  maxSeq: number;
  headDim: number;
}
export interface AttentionDecodeArgs extends AttentionDecodeOptions {
  out: Float32Array;
}

export interface RowsDim {
  rows: number;
  dim: number;
}
export interface RowsVocab {
  rows: number;
  vocab: number;
}
export interface RopeShape {
  positions: Int32Array;
  tokens: number;
  heads: number;
  headDim: number;
  theta: number;
}
export interface EmbeddingShape {
  ids: Int32Array;
  tokens: number;
  vocab: number;
  dim: number;
}

export type GrpoLossType = 'grpo' | 'bnpo' | 'dr_grpo' | 'dapo';

/** The GRPO loss's parameters. */
export interface GrpoParams {
  /** Lower clip epsilon, in [0, 1): ratios below 1 - clipLow are clipped (default 0.2). */
  clipLow?: number;
  /** Upper clip epsilon, >= 0: ratios above 1 + clipHigh are clipped (default 0.2; kernels.grpo: clipLow). */
  clipHigh?: number;
  /** KL penalty weight, >= 0 (default 0). */
  beta?: number;
  /** Sequences with |advantage| <= filterThreshold (>= 0) are dropped before backprop; null or omitted keeps every sequence. */
  filterThreshold?: number | null;
  /** Normalisation (default "grpo"). */
  lossType?: GrpoLossType;
  /** dapo only (required there, finite > 0): the global count of unmasked tokens. */
  normalizer?: number;
}

export interface GrpoLossResult {
  loss: number;
  kept: number;
  clipFraction: number;
  kl: number;
  keptTokens: number;
}

export interface SamplingArgs {
  logits: Float32Array;
  ids: Int32Array;
  logprobs: Float32Array | null;
  rows: number;
  vocab: number;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  seeds: BigUint64Array;
  counters: BigUint64Array;
}

export interface AdamwArgs {
  param: Float32Array;
  grad: Float32Array;
  /** First moment, updated in place (start at zeros). */
  m: Float32Array;
  /** Second moment, updated in place (start at zeros). */
  v: Float32Array;
  lr: number;
  /** Default 0.9. */
  beta1?: number;
  /** Default 0.999. */
  beta2?: number;
  /** Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay (default 0.01, as torch.optim.AdamW). */
  weightDecay?: number;
  /** 1 for the first update. */
  step: number;
}

// --- the model ------------------------------------------------------------------------------

/** The native model's configuration: the fields of ModelConfig (src/models/config.ts) that shape the graph. */
export type NativeModelConfig = Pick<ModelConfig, 'vocabSize' | 'hiddenSize' | 'intermediateSize' | 'numLayers' | 'numHeads' |
  'numKvHeads' | 'headDim'> & Partial<Pick<ModelConfig, 'ropeTheta' | 'rmsNormEps' | 'tieWordEmbeddings' | 'attentionBias' | 'qkNorm'>> & {
  device?: 'cpu' | 'cuda';
  /** The linear layers' GEMM inputs (default fp32): "bf16" is mixed precision, fp32 master weights and math elsewhere. */
  dtype?: 'fp32' | 'bf16';
};

/** Shared prompt prefixes of a batch of rows (rows of one prefix together). */
export interface NativePrefix {
  /** count × length, right-padded. */
  tokens: Int32Array;
  count: number;
  length: number;
  lengths: Int32Array;
  /** Per row, the prefix it starts with (non-decreasing). */
  rowPrefix: Int32Array;
}

/** Right-padded token rows (batch × seq). */
export interface TokenBatch {
  tokens: Int32Array;
  batch: number;
  seq: number;
}

/** One GRPO micro-batch of a training step. */
export interface GrpoMicroBatchArgs extends TokenBatch, GrpoParams {
  /** Next-token targets (< 0: not scored). */
  targets: Int32Array;
  mask?: Float32Array | null;
  oldLogprobs?: Float32Array | null;
  refLogprobs?: Float32Array | null;
  /** One per row. */
  advantages: Float32Array;
  /** The loss's multiplier (1 by default). */
  lossScale?: number;
  prefix?: NativePrefix | null;
}

/** One training micro-batch's result. */
export interface StepResult {
  loss: number;
  tokens: number;
  entropy: number;
  kept: number;
  clipFraction: number;
  kl: number;
}

export interface NativeOptimizerArgs {
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** 0: no clipping. */
  maxGradNorm?: number;
}

export interface NativeSampling {
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
}

export interface AddRowsArgs {
  promptTokens: Int32Array;
  /** Row b's prompt is promptTokens[offsets[b], offsets[b + 1]). */
  offsets: Int32Array;
  seeds: BigUint64Array;
  maxNew: Int32Array;
  sampling: NativeSampling;
  stopIds: Int32Array;
  /** The prompts' activations stay in the model's prompt store. */
  keepPrompts?: boolean;
}

export interface DecodeResult {
  /** Rows still generating. */
  active: number;
  /** New tokens per row since the last decode. */
  counts: Int32Array;
  tokens: Int32Array;
  logprobs: Float32Array;
  finished: Uint8Array;
}

/** A generation context: KV caches and row slots of one model. */
export interface NativeContext {
  /** Adds and prefills rows; resolves to the first new row's index. */
  addRows: NativeOp<AddRowsArgs, number>;
  decode: NativeOp<{ steps: number }, DecodeResult>;
  finishRow(row: number): void;
  active(): number;
  /** Frees the KV caches now (idempotent); later calls throw. */
  dispose(): void;
}

export interface NativeModel {
  tensors(): { name: string; shape: number[] }[];
  setTensor(args: { name: string; data: Float32Array }): void;
  getTensor(name: string): Float32Array;
  getGrad(name: string): Float32Array;
  initRandom(args: { seed: number; std: number }): void;
  numParams(): number;
  promptStore(): { stored: number; hits: number };
  activationFloatsPerToken(): number;
  forwardLogits: NativeOp<TokenBatch, Float32Array>;
  score: NativeOp<TokenBatch & { targets: Int32Array; entropy?: boolean; prefix?: NativePrefix | null },
    { logprobs: Float32Array; entropy?: Float32Array }>;
  /** A score head on the last token's final hidden state: r (batch). */
  valueForward: NativeOp<TokenBatch & { last: Int32Array; w: Float32Array; prefix?: NativePrefix | null }, Float32Array>;
  /** Right after valueForward: dw (hidden), the backbone's gradients accumulated. */
  valueBackward: NativeOp<{ dr: Float32Array; w: Float32Array }, Float32Array>;
  trainSft: NativeOp<TokenBatch & { targets: Int32Array; normalizer: number }, StepResult>;
  trainGrpo: NativeOp<GrpoMicroBatchArgs, StepResult>;
  trainGrpoMany: NativeOp<{ microBatches: GrpoMicroBatchArgs[] }, StepResult[]>;
  /** Resolves to the gradient norm before clipping. */
  optimizerStep: NativeOp<NativeOptimizerArgs, number>;
  zeroGrad(): void;
  getStep(): number;
  setStep(step: number): void;
  getOptimizerState(): { m: Float32Array; v: Float32Array } | null;
  setOptimizerState(args: { m: Float32Array; v: Float32Array }): void;
  createContext(args: { maxBatch: number; maxSeq: number }): NativeContext;
}

// --- the addon --------------------------------------------------------------------------------

export interface NativeAddon {
  /** "cpu", or the CUDA build's backend name. */
  readonly backend: string;
  /** The CPU SIMD path in use: "avx512", "avx2" or "generic". */
  readonly isa: string;
  getThreads(): number;
  setThreads(threads: number): void;

  sgemm: NativeOp<GemmArgs<Float32Array>>;
  /** fp32 in and out, tf32 products. */
  sgemmTf32: NativeOp<GemmArgs<Float32Array>>;
  /** bf16 bits in, fp32 C. */
  gemmBf16: NativeOp<GemmArgs<Bf16Bits>>;
  /** out = bf16 bits of x (round to nearest even; NaN stays NaN). */
  castBf16: NativeOp<{ out: Bf16Bits; x: Float32Array }>;
  /** GFLOP/s of the SIMD path's FMA loop over `threads` pool threads at once. */
  measureFmaPeak(args: { seconds: number; threads: number }): number;
  /** GB/s of a streaming sum over `bytes` per thread. */
  measureReadBandwidth(args: { bytes: number; seconds: number; threads: number }): number;
  openblasAvailable(): boolean;
  openblasSgemm(args: { a: Float32Array; b: Float32Array; c: Float32Array; m: number; k: number; n: number; transB?: boolean; threads: number }): void;

  attentionForward: NativeOp<AttentionForwardArgs<Float32Array>>;
  attentionForwardBf16: NativeOp<AttentionForwardArgs<Bf16Bits>>;
  attentionBackward: NativeOp<AttentionBackwardArgs>;
  attentionDecode: NativeOp<AttentionDecodeArgs>;

  rmsnormForward: NativeOp<RowsDim & { out: Float32Array; rstd: Float32Array | null; inp: Float32Array; weight: Float32Array; eps: number }>;
  /** dweight accumulates. */
  rmsnormBackward: NativeOp<RowsDim & { dinp: Float32Array; dweight: Float32Array; dout: Float32Array; inp: Float32Array; weight: Float32Array; rstd: Float32Array }>;
  ropeForward: NativeOp<RopeShape & { out: Float32Array; inp: Float32Array }>;
  ropeBackward: NativeOp<RopeShape & { dinp: Float32Array; dout: Float32Array }>;
  swigluForward: NativeOp<RowsDim & { out: Float32Array; gate: Float32Array; up: Float32Array }>;
  swigluBackward: NativeOp<RowsDim & { dgate: Float32Array; dup: Float32Array; dout: Float32Array; gate: Float32Array; up: Float32Array }>;
  embeddingForward: NativeOp<EmbeddingShape & { out: Float32Array; table: Float32Array }>;
  /** dtable accumulates. */
  embeddingBackward: NativeOp<EmbeddingShape & { dtable: Float32Array; dout: Float32Array }>;
  residualForward: NativeOp<{ out: Float32Array; a: Float32Array; b: Float32Array }>;
  /** da += dout, db += dout. */
  residualBackward: NativeOp<{ da: Float32Array; db: Float32Array; dout: Float32Array }>;

  softmaxForward: NativeOp<RowsVocab & { probs: Float32Array; logits: Float32Array }>;
  logSoftmaxForward: NativeOp<RowsVocab & { out: Float32Array; logits: Float32Array }>;
  tokenLogprobsForward: NativeOp<RowsVocab & { logprob: Float32Array; lse: Float32Array; entropy: Float32Array | null; logits: Float32Array; ids: Int32Array }>;
  tokenLogprobsBackward: NativeOp<RowsVocab & {
    dlogits: Float32Array; dlogprob: Float32Array; dentropy: Float32Array | null; logits: Float32Array; ids: Int32Array;
    lse: Float32Array; entropy: Float32Array | null;
  }>;
  /** targets < 0 are ignored. */
  crossentropyForward: NativeOp<RowsVocab & { losses: Float32Array; lse: Float32Array; logits: Float32Array; targets: Int32Array }>;
  crossentropyBackward: NativeOp<RowsVocab & { dlogits: Float32Array; dlosses: Float32Array; logits: Float32Array; targets: Int32Array; lse: Float32Array }>;
  grpoLoss: NativeOp<GrpoParams & {
    grad: Float32Array; logprobs: Float32Array; oldLogprobs: Float32Array; refLogprobs: Float32Array | null;
    advantages: Float32Array; mask: Float32Array; seqs: number; tokens: number;
  }, GrpoLossResult>;

  sampleTokens: NativeOp<SamplingArgs>;
  /** The raw Philox4x32-10 block. */
  philox4x32(args: { counter: Uint32Array; key: Uint32Array }): Uint32Array;
  philoxUniform(args: { keys: BigUint64Array; counters: BigUint64Array; out: Float32Array }): void;

  adamwUpdate: NativeOp<AdamwArgs>;
  /** Σ x² in float64. */
  sumSquares: NativeOp<{ x: Float32Array }, number>;
  scaleInplace: NativeOp<{ x: Float32Array; s: number }>;

  Model: new (config: NativeModelConfig) => NativeModel;

  /** The CUDA build only. */
  deviceCount?(): number;
  deviceName?(): string | null;
}
