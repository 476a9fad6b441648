// GGUF v3 export (for llama.cpp) and a validating GGUF reader.
//
// Layout (little-endian): magic "GGUF", u32 version 3, u64 tensor_count, u64 kv_count, kv pairs
// (string key = u64 length + UTF-8 bytes; u32 value type; value), tensor infos (name, u32 n_dims,
// u64 dims[n_dims] innermost first, u32 ggml type, u64 offset relative to the data section), zero padding to
// general.alignment, then the tensor data, each tensor starting at a multiple of the alignment (llama.cpp
// requires offset[i] == sum of the padded sizes of the tensors before it, so they are written in order).
//
// A Hugging Face [rows, cols] weight is written with dims [cols, rows] and the same row-major bytes.
// llama.cpp's "llama" architecture applies RoPE to interleaved pairs (the original Meta layout) whereas HF
// checkpoints use rotate-half, so q_proj / k_proj rows are permuted back exactly as convert_hf_to_gguf.py
// does; qwen2 / qwen3 use NeoX (rotate-half) RoPE in llama.cpp and are written unpermuted.
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { writeFileAtomic } from './atomic.js';
import { type ModelConfig, validateConfig } from './config.js';
import { bf16ToF32, f16ToF32, f32ToF16, validateAgainstConfig } from './safetensors.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

export enum GgufType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

export enum GgmlType {
  F32 = 0,
  F16 = 1,
  BF16 = 30,
}
const GGML_ELEMENT_BYTES: Partial<Record<number, number>> = { [GgmlType.F32]: 4, [GgmlType.F16]: 2, [GgmlType.BF16]: 2 };

/** Scalar values: numbers (64-bit integers become bigint only when not exactly representable), booleans, strings. */
export type GgufScalar = number | bigint | boolean | string;
/** Arrays: typed arrays for numeric element types, plain arrays for strings, booleans and nested arrays. */
export type GgufArrayValue =
  | Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array | Float32Array | Float64Array
  | BigUint64Array | BigInt64Array | string[] | boolean[] | GgufKv[];

export interface GgufKv {
  type: GgufType;
  /** Element type when type is ARRAY. */
  arrayType?: GgufType;
  value: GgufScalar | GgufArrayValue;
}

export interface GgufTensorInfo {
  name: string;
  /** Innermost first (dims[0] = number of columns of a row-major matrix). */
  dims: number[];
  type: number;
  /** Relative to the data section. */
  offset: number;
  /** Bytes of data (unpadded); only known for F32/F16/BF16, else -1. */
  nbytes: number;
}

export interface GgufFile {
  file: string;
  version: number;
  alignment: number;
  /** Absolute file offset of the data section. */
  dataOffset: number;
  fileSize: number;
  metadata: Map<string, GgufKv>;
  /** In file order. */
  tensors: Map<string, GgufTensorInfo>;
}

export class GgufError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GgufError';
  }
}

// ---------------------------------------------------------------------------------------------------------
// q/k permutation (convert_hf_to_gguf.py LlamaModel.permute)

/**
 * HF rotate-half rows → Meta interleaved rows, for a [nHead * headDim, cols] weight (cols = 1 for a bias):
 * w.reshape(nHead, 2, headDim/2, cols).swapaxes(1, 2).reshape(w.shape), i.e.
 * out row h*headDim + 2j + i = in row h*headDim + i*headDim/2 + j.
 */
export function permuteQK(w: Float32Array, nHead: number, cols: number): Float32Array {
  return permuteRows(w, nHead, cols, false);
}

/** Inverse of permuteQK (Meta interleaved rows → HF rotate-half rows). */
export function unpermuteQK(w: Float32Array, nHead: number, cols: number): Float32Array {
  return permuteRows(w, nHead, cols, true);
}

function permuteRows(w: Float32Array, nHead: number, cols: number, inverse: boolean): Float32Array {
  const rows = w.length / cols;
  if (!Number.isInteger(rows) || rows % nHead !== 0 || (rows / nHead) % 2 !== 0)
    throw new RangeError(`cannot permute ${w.length} values as ${nHead} heads × even head_dim × ${cols} columns`);
  const dh = rows / nHead;
  const half = dh / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < nHead; h++)
    for (let i = 0; i < 2; i++)
      for (let j = 0; j < half; j++) {
        const hf = (h * dh + i * half + j) * cols;
        const meta = (h * dh + 2 * j + i) * cols;
        if (inverse) out.set(w.subarray(meta, meta + cols), hf);
        else out.set(w.subarray(hf, hf + cols), meta);
      }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Tensor names

const LAYER_NAMES: Record<string, string> = {
  'input_layernorm.weight': 'attn_norm.weight',
  'self_attn.q_proj.weight': 'attn_q.weight',
  'self_attn.k_proj.weight': 'attn_k.weight',
  'self_attn.v_proj.weight': 'attn_v.weight',
  'self_attn.q_proj.bias': 'attn_q.bias',
  'self_attn.k_proj.bias': 'attn_k.bias',
  'self_attn.v_proj.bias': 'attn_v.bias',
  'self_attn.o_proj.weight': 'attn_output.weight',
  'self_attn.q_norm.weight': 'attn_q_norm.weight',
  'self_attn.k_norm.weight': 'attn_k_norm.weight',
  'post_attention_layernorm.weight': 'ffn_norm.weight',
  'mlp.gate_proj.weight': 'ffn_gate.weight',
  'mlp.up_proj.weight': 'ffn_up.weight',
  'mlp.down_proj.weight': 'ffn_down.weight',
};

/** The llama.cpp tensor name for a Hugging Face parameter name (throws for names it does not know). */
export function ggufTensorName(hfName: string): string {
  if (hfName === 'model.embed_tokens.weight') return 'token_embd.weight';
  if (hfName === 'model.norm.weight') return 'output_norm.weight';
  if (hfName === 'lm_head.weight') return 'output.weight';
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName);
  if (m && LAYER_NAMES[m[2]]) return `blk.${m[1]}.${LAYER_NAMES[m[2]]}`;
  throw new GgufError(`no GGUF name for tensor "${hfName}"`);
}

// ---------------------------------------------------------------------------------------------------------
// Tokenizer metadata

export interface GgufTokenizer {
  /** tokenizer.ggml.model: "llama" (SentencePiece), "gpt2" (byte-level BPE), ... */
  model: string;
  tokens: string[];
  scores?: ArrayLike<number>;
  /** 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte. */
  tokenTypes?: ArrayLike<number>;
  merges?: string[];
  /** tokenizer.ggml.pre (pre-tokenizer name, for gpt2-style vocabularies). */
  pre?: string;
  bosTokenId?: number;
  eosTokenId?: number;
  unknownTokenId?: number;
  paddingTokenId?: number;
  addBosToken?: boolean;
  addEosToken?: boolean;
  chatTemplate?: string;
}

export const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

/**
 * A placeholder SentencePiece-style vocabulary for a model used in token-id space (no tokenizer files):
 * vocabSize entries, "<unk>" at 0, "<s>" at the BOS id, "</s>" at the EOS id(s) (control tokens), and, when
 * the ids follow the usual llama layout (unk 0, bos 1, eos 2) and the vocabulary is large enough, the 256
 * byte tokens "<0x00>".."<0xFF>" at 3..258 as in llama2.c / Llama-2 vocabularies; every other id is "tok_N".
 */
export function syntheticTokenizer(config: ModelConfig): GgufTokenizer {
  const V = config.vocabSize;
  const tokens = Array.from({ length: V }, (_, i) => `tok_${i}`);
  const types = new Int32Array(V).fill(TOKEN_TYPE.NORMAL);
  const scores = new Float32Array(V);
  const bos = config.bosTokenId;
  const eosList = config.eosTokenId === null ? [] : Array.isArray(config.eosTokenId) ? config.eosTokenId : [config.eosTokenId];
  const special = new Set<number>([...(bos !== null ? [bos] : []), ...eosList]);
  let unk: number | undefined;
  if (!special.has(0)) {
    unk = 0;
    tokens[0] = '<unk>';
    types[0] = TOKEN_TYPE.UNKNOWN;
  }
  if (bos !== null) {
    tokens[bos] = '<s>';
    types[bos] = TOKEN_TYPE.CONTROL;
  }
  eosList.forEach((id, k) => {
    if (id === bos) return;
    tokens[id] = k === 0 ? '</s>' : `</s_${k}>`;
    types[id] = TOKEN_TYPE.CONTROL;
  });
  if (unk === 0 && bos === 1 && eosList[0] === 2 && [...special].every((id) => id <= 2) && V >= 259)
    for (let b = 0; b < 256; b++) {
      tokens[3 + b] = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
      types[3 + b] = TOKEN_TYPE.BYTE;
    }
  return {
    model: 'llama',
    tokens,
    scores,
    tokenTypes: types,
    bosTokenId: bos ?? undefined,
    eosTokenId: eosList[0],
    unknownTokenId: unk,
    addBosToken: bos !== null,
    addEosToken: false,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Writing

class ByteWriter {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  u8(v: number): void { this.reserve(1); this.buf.writeUInt8(v, this.length); this.length += 1; }
  i8(v: number): void { this.reserve(1); this.buf.writeInt8(v, this.length); this.length += 1; }
  u16(v: number): void { this.reserve(2); this.buf.writeUInt16LE(v, this.length); this.length += 2; }
  i16(v: number): void { this.reserve(2); this.buf.writeInt16LE(v, this.length); this.length += 2; }
  u32(v: number): void { this.reserve(4); this.buf.writeUInt32LE(v, this.length); this.length += 4; }
  i32(v: number): void { this.reserve(4); this.buf.writeInt32LE(v, this.length); this.length += 4; }
  f32(v: number): void { this.reserve(4); this.buf.writeFloatLE(v, this.length); this.length += 4; }
  f64(v: number): void { this.reserve(8); this.buf.writeDoubleLE(v, this.length); this.length += 8; }
  u64(v: number | bigint): void {
    this.reserve(8);
    if (typeof v === 'number' && v <= 0xffffffff) {
      this.buf.writeUInt32LE(v, this.length);
      this.buf.writeUInt32LE(0, this.length + 4);
    } else this.buf.writeBigUInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  i64(v: number | bigint): void { this.reserve(8); this.buf.writeBigInt64LE(BigInt(v), this.length); this.length += 8; }
  str(s: string): void {
    const n = Buffer.byteLength(s, 'utf8');
    this.u64(n);
    this.reserve(n);
    this.buf.write(s, this.length, n, 'utf8');
    this.length += n;
  }
  pad(alignment: number): void {
    const n = (alignment - (this.length % alignment)) % alignment;
    this.reserve(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function badValue(key: string, type: GgufType, v: unknown): never {
  throw new GgufError(`metadata "${key}": value ${String(v)} does not fit type ${GgufType[type] ?? type}`);
}

function checkInt(key: string, type: GgufType, v: unknown, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) badValue(key, type, v);
  return v as number;
}

// No closures in here: it runs once per vocabulary entry.
function writeScalar(w: ByteWriter, type: GgufType, v: unknown, key: string): void {
  switch (type) {
    case GgufType.UINT8: return w.u8(checkInt(key, type, v, 0, 0xff));
    case GgufType.INT8: return w.i8(checkInt(key, type, v, -0x80, 0x7f));
    case GgufType.UINT16: return w.u16(checkInt(key, type, v, 0, 0xffff));
    case GgufType.INT16: return w.i16(checkInt(key, type, v, -0x8000, 0x7fff));
    case GgufType.UINT32: return w.u32(checkInt(key, type, v, 0, 0xffffffff));
    case GgufType.INT32: return w.i32(checkInt(key, type, v, -0x80000000, 0x7fffffff));
    case GgufType.FLOAT32: if (typeof v !== 'number') badValue(key, type, v); return w.f32(v as number);
    case GgufType.FLOAT64: if (typeof v !== 'number') badValue(key, type, v); return w.f64(v as number);
    case GgufType.BOOL: if (typeof v !== 'boolean') badValue(key, type, v); return w.u8(v ? 1 : 0);
    case GgufType.STRING: if (typeof v !== 'string') badValue(key, type, v); return w.str(v as string);
    case GgufType.UINT64:
      if (typeof v === 'bigint' ? v < 0n || v >= 1n << 64n : typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) badValue(key, type, v);
      return w.u64(v as number | bigint);
    case GgufType.INT64:
      if (typeof v === 'bigint' ? v < -(1n << 63n) || v >= 1n << 63n : typeof v !== 'number' || !Number.isSafeInteger(v)) badValue(key, type, v);
      return w.i64(v as number | bigint);
    default:
      throw new GgufError(`metadata "${key}": unknown value type ${type}`);
  }
}

function writeKv(w: ByteWriter, key: string, kv: GgufKv): void {
  w.str(key);
  w.u32(kv.type);
  writeValue(w, key, kv);
}

function writeValue(w: ByteWriter, key: string, kv: GgufKv): void {
  if (kv.type !== GgufType.ARRAY) return writeScalar(w, kv.type, kv.value, key);
  const at = kv.arrayType;
  if (at === undefined) throw new GgufError(`metadata "${key}": array without an element type`);
  const arr = kv.value as ArrayLike<unknown>;
  w.u32(at);
  w.u64(arr.length);
  for (let i = 0; i < arr.length; i++) {
    if (at === GgufType.ARRAY) {
      const inner = arr[i] as GgufKv;
      w.u32(inner.arrayType!);
      const a = inner.value as ArrayLike<unknown>;
      w.u64(a.length);
      for (let j = 0; j < a.length; j++) writeScalar(w, inner.arrayType!, a[j], key);
    } else writeScalar(w, at, arr[i], key);
  }
}

export interface GgufTensorInput {
  shape: readonly number[];
  data: Float32Array;
}

export interface ExportGgufOptions {
  config: ModelConfig;
  /** Hugging Face parameter names → tensors (e.g. from readSafetensors / loadCheckpointTensors). */
  tensors: Map<string, GgufTensorInput>;
  outFile: string;
  /** 'f16' stores 2-D weights as F16 (1-D norms and biases stay F32). Default 'f32'. */
  dtype?: 'f32' | 'f16';
  /** Default: syntheticTokenizer(config). */
  tokenizer?: GgufTokenizer;
  /** general.name; default "wst-dash <architecture>". */
  name?: string;
  /** Extra metadata written after the standard keys (overrides nothing: duplicate keys are an error). */
  extraMetadata?: Map<string, GgufKv>;
}

interface PlannedTensor {
  name: string;
  dims: number[];
  type: GgmlType;
  data: Float32Array;
  offset: number;
  nbytes: number;
}

/** The metadata exportGguf writes for `config` (and tokenizer), in order. */
export function ggufMetadata(config: ModelConfig, options: { dtype?: 'f32' | 'f16'; tokenizer?: GgufTokenizer; name?: string } = {}): Map<string, GgufKv> {
  const arch = config.architecture;
  const tok = options.tokenizer ?? syntheticTokenizer(config);
  const m = new Map<string, GgufKv>();
  const u32 = (k: string, v: number) => m.set(k, { type: GgufType.UINT32, value: v });
  const f32 = (k: string, v: number) => m.set(k, { type: GgufType.FLOAT32, value: v });
  const str = (k: string, v: string) => m.set(k, { type: GgufType.STRING, value: v });
  const bool = (k: string, v: boolean) => m.set(k, { type: GgufType.BOOL, value: v });
  str('general.architecture', arch);
  str('general.name', options.name ?? `wst-dash ${arch}`);
  u32('general.file_type', options.dtype === 'f16' ? 1 : 0);
  u32('general.alignment', GGUF_DEFAULT_ALIGNMENT);
  u32(`${arch}.vocab_size`, config.vocabSize);
  u32(`${arch}.context_length`, config.maxPositionEmbeddings);
  u32(`${arch}.embedding_length`, config.hiddenSize);
  u32(`${arch}.block_count`, config.numLayers);
  u32(`${arch}.feed_forward_length`, config.intermediateSize);
  u32(`${arch}.rope.dimension_count`, config.headDim);
  u32(`${arch}.attention.head_count`, config.numHeads);
  u32(`${arch}.attention.head_count_kv`, config.numKvHeads);
  u32(`${arch}.attention.key_length`, config.headDim);
  u32(`${arch}.attention.value_length`, config.headDim);
  f32(`${arch}.attention.layer_norm_rms_epsilon`, config.rmsNormEps);
  f32(`${arch}.rope.freq_base`, config.ropeTheta);

  if (tok.tokens.length !== config.vocabSize)
    throw new GgufError(`tokenizer has ${tok.tokens.length} tokens but the model's vocab_size is ${config.vocabSize}`);
  str('tokenizer.ggml.model', tok.model);
  if (tok.pre !== undefined) str('tokenizer.ggml.pre', tok.pre);
  m.set('tokenizer.ggml.tokens', { type: GgufType.ARRAY, arrayType: GgufType.STRING, value: tok.tokens.slice() });
  if (tok.scores) {
    if (tok.scores.length !== config.vocabSize) throw new GgufError(`tokenizer scores has ${tok.scores.length} entries, expected ${config.vocabSize}`);
    m.set('tokenizer.ggml.scores', { type: GgufType.ARRAY, arrayType: GgufType.FLOAT32, value: Float32Array.from(tok.scores) });
  }
  if (tok.tokenTypes) {
    if (tok.tokenTypes.length !== config.vocabSize)
      throw new GgufError(`tokenizer token types has ${tok.tokenTypes.length} entries, expected ${config.vocabSize}`);
    m.set('tokenizer.ggml.token_type', { type: GgufType.ARRAY, arrayType: GgufType.INT32, value: Int32Array.from(tok.tokenTypes) });
  }
  if (tok.merges) m.set('tokenizer.ggml.merges', { type: GgufType.ARRAY, arrayType: GgufType.STRING, value: tok.merges.slice() });
  const id = (k: string, v: number | undefined) => {
    if (v === undefined) return;
    if (!Number.isInteger(v) || v < 0 || v >= config.vocabSize) throw new GgufError(`tokenizer ${k} ${v} is outside the vocabulary`);
    u32(`tokenizer.ggml.${k}`, v);
  };
  id('bos_token_id', tok.bosTokenId);
  id('eos_token_id', tok.eosTokenId);
  id('unknown_token_id', tok.unknownTokenId);
  id('padding_token_id', tok.paddingTokenId);
  if (tok.addBosToken !== undefined) bool('tokenizer.ggml.add_bos_token', tok.addBosToken);
  if (tok.addEosToken !== undefined) bool('tokenizer.ggml.add_eos_token', tok.addEosToken);
  if (tok.chatTemplate !== undefined) str('tokenizer.chat_template', tok.chatTemplate);
  return m;
}

function planTensors(config: ModelConfig, tensors: Map<string, GgufTensorInput>, f16: boolean): PlannedTensor[] {
  const errors = validateAgainstConfig(tensors, config);
  if (errors.length > 0) throw new GgufError(`tensors do not match the config:\n  ${errors.join('\n  ')}`);
  const out: PlannedTensor[] = [];
  const add = (hfName: string) => {
    const t = tensors.get(hfName)!;
    if (!(t.data instanceof Float32Array) || t.data.length !== t.shape.reduce((a, b) => a * b, 1))
      throw new GgufError(`tensor "${hfName}": data must be a Float32Array of ${t.shape.join('×')} values`);
    let data = t.data;
    if (config.architecture === 'llama') {
      const cols = t.shape.length === 2 ? t.shape[1] : 1;
      if (/\.self_attn\.q_proj\.(weight|bias)$/.test(hfName)) data = permuteQK(data, config.numHeads, cols);
      else if (/\.self_attn\.k_proj\.(weight|bias)$/.test(hfName)) data = permuteQK(data, config.numKvHeads, cols);
    }
    const type = f16 && t.shape.length >= 2 ? GgmlType.F16 : GgmlType.F32;
    const dims = [...t.shape].reverse();
    out.push({ name: ggufTensorName(hfName), dims, type, data, offset: 0, nbytes: data.length * GGML_ELEMENT_BYTES[type]! });
  };
  add('model.embed_tokens.weight');
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}.`;
    const names = ['input_layernorm.weight', 'self_attn.q_proj.weight', 'self_attn.k_proj.weight', 'self_attn.v_proj.weight'];
    if (config.attentionBias) names.push('self_attn.q_proj.bias', 'self_attn.k_proj.bias', 'self_attn.v_proj.bias');
    names.push('self_attn.o_proj.weight');
    if (config.qkNorm) names.push('self_attn.q_norm.weight', 'self_attn.k_norm.weight');
    names.push('post_attention_layernorm.weight', 'mlp.gate_proj.weight', 'mlp.up_proj.weight', 'mlp.down_proj.weight');
    for (const n of names) add(p + n);
  }
  add('model.norm.weight');
  // Tied embeddings: no output.weight; llama.cpp then uses token_embd.weight for the output projection.
  if (!config.tieWordEmbeddings) add('lm_head.weight');
  let offset = 0;
  for (const t of out) {
    t.offset = offset;
    offset += t.nbytes + ((GGUF_DEFAULT_ALIGNMENT - (t.nbytes % GGUF_DEFAULT_ALIGNMENT)) % GGUF_DEFAULT_ALIGNMENT);
  }
  return out;
}

/** Writes a GGUF v3 file for llama.cpp from a Hugging Face-layout model (atomically: temp file + rename). */
export async function exportGguf(options: ExportGgufOptions): Promise<void> {
  const config = validateConfig(options.config, 'exportGguf config');
  const dtype = options.dtype ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16') throw new GgufError(`dtype must be 'f32' or 'f16', got ${JSON.stringify(dtype)}`);
  const metadata = ggufMetadata(config, { dtype, tokenizer: options.tokenizer, name: options.name });
  for (const [k, v] of options.extraMetadata ?? []) {
    if (metadata.has(k)) throw new GgufError(`extra metadata key "${k}" duplicates a standard key`);
    metadata.set(k, v);
  }
  const planned = planTensors(config, options.tensors, dtype === 'f16');

  const w = new ByteWriter();
  w.u32(GGUF_MAGIC);
  w.u32(GGUF_VERSION);
  w.u64(planned.length);
  w.u64(metadata.size);
  for (const [k, kv] of metadata) writeKv(w, k, kv);
  for (const t of planned) {
    w.str(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(t.type);
    w.u64(t.offset);
  }
  w.pad(GGUF_DEFAULT_ALIGNMENT);
  const head = w.bytes();

  await writeFileAtomic(options.outFile, async (fh) => {
    await writeAt(fh, head, 0);
    let pos = head.length;
    for (const t of planned) {
      const bytes = t.type === GgmlType.F16 ? new Uint8Array(f32ToF16(t.data).buffer) : new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      await writeAt(fh, bytes, pos + t.offset);
      const end = t.offset + t.nbytes;
      const pad = (GGUF_DEFAULT_ALIGNMENT - (end % GGUF_DEFAULT_ALIGNMENT)) % GGUF_DEFAULT_ALIGNMENT;
      if (pad) await writeAt(fh, new Uint8Array(pad), pos + end);
    }
  });
}

async function writeAt(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, Math.min(1 << 30, bytes.length - done), position + done);
    done += bytesWritten;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Reading

class NeedMore extends Error {}

class ByteReader {
  pos = 0;
  constructor(private readonly buf: Buffer, private readonly complete: boolean, private readonly fail: (msg: string) => never) {}

  private need(n: number): number {
    if (this.pos + n > this.buf.length) {
      if (this.complete) this.fail(`unexpected end of file at byte ${this.pos} (needed ${n} more bytes)`);
      throw new NeedMore();
    }
    const at = this.pos;
    this.pos += n;
    return at;
  }
  u8(): number { return this.buf.readUInt8(this.need(1)); }
  i8(): number { return this.buf.readInt8(this.need(1)); }
  u16(): number { return this.buf.readUInt16LE(this.need(2)); }
  i16(): number { return this.buf.readInt16LE(this.need(2)); }
  u32(): number { return this.buf.readUInt32LE(this.need(4)); }
  i32(): number { return this.buf.readInt32LE(this.need(4)); }
  f32(): number { return this.buf.readFloatLE(this.need(4)); }
  f64(): number { return this.buf.readDoubleLE(this.need(8)); }
  u64(): bigint { return this.buf.readBigUInt64LE(this.need(8)); }
  i64(): bigint { return this.buf.readBigInt64LE(this.need(8)); }
  /** A u64 that must be a safe integer ≤ limit. */
  count(what: string, limit: number): number {
    const v = this.u64();
    if (v > BigInt(limit)) this.fail(`${what} ${v} is larger than possible (limit ${limit})`);
    return Number(v);
  }
  str(what: string, fileSize: number): string {
    const n = this.count(`length of ${what}`, fileSize);
    const at = this.need(n);
    return this.buf.toString('utf8', at, at + n);
  }
}

function bigToValue(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function readScalar(r: ByteReader, type: number, fileSize: number, fail: (m: string) => never, key: string): GgufScalar {
  switch (type) {
    case GgufType.UINT8: return r.u8();
    case GgufType.INT8: return r.i8();
    case GgufType.UINT16: return r.u16();
    case GgufType.INT16: return r.i16();
    case GgufType.UINT32: return r.u32();
    case GgufType.INT32: return r.i32();
    case GgufType.FLOAT32: return r.f32();
    case GgufType.FLOAT64: return r.f64();
    case GgufType.BOOL: {
      const b = r.u8();
      if (b > 1) fail(`metadata "${key}": bool value ${b} is not 0 or 1`);
      return b === 1;
    }
    case GgufType.STRING: return r.str(`a string in "${key}"`, fileSize);
    case GgufType.UINT64: return bigToValue(r.u64());
    case GgufType.INT64: return bigToValue(r.i64());
    default: return fail(`metadata "${key}": unknown value type ${type}`);
  }
}

const TYPED: Partial<Record<number, new (n: number) => ArrayLike<unknown> & { [i: number]: unknown }>> = {
  [GgufType.UINT8]: Uint8Array, [GgufType.INT8]: Int8Array, [GgufType.UINT16]: Uint16Array, [GgufType.INT16]: Int16Array,
  [GgufType.UINT32]: Uint32Array, [GgufType.INT32]: Int32Array, [GgufType.FLOAT32]: Float32Array, [GgufType.FLOAT64]: Float64Array,
  [GgufType.UINT64]: BigUint64Array, [GgufType.INT64]: BigInt64Array,
};

function readKvValue(r: ByteReader, type: number, fileSize: number, fail: (m: string) => never, key: string, depth = 0): GgufKv {
  if (type !== GgufType.ARRAY) return { type, value: readScalar(r, type, fileSize, fail, key) };
  const at = r.u32();
  const n = r.count(`length of array "${key}"`, fileSize);
  if (at === GgufType.ARRAY) {
    if (depth > 0) fail(`metadata "${key}": arrays nested more than two deep are not supported`);
    const items: GgufKv[] = [];
    for (let i = 0; i < n; i++) items.push(readKvValue(r, GgufType.ARRAY, fileSize, fail, key, depth + 1));
    return { type, arrayType: at, value: items };
  }
  const Ctor = TYPED[at];
  if (Ctor) {
    const arr = new Ctor(n);
    for (let i = 0; i < n; i++) {
      const v = readScalar(r, at, fileSize, fail, key);
      arr[i] = at === GgufType.UINT64 || at === GgufType.INT64 ? BigInt(v as number | bigint) : v;
    }
    return { type, arrayType: at, value: arr as GgufArrayValue };
  }
  if (at !== GgufType.STRING && at !== GgufType.BOOL) fail(`metadata "${key}": unknown array element type ${at}`);
  const items: (string | boolean)[] = [];
  for (let i = 0; i < n; i++) items.push(readScalar(r, at, fileSize, fail, key) as string | boolean);
  return { type, arrayType: at, value: items as string[] | boolean[] };
}

function parseGgufHeader(buf: Buffer, complete: boolean, file: string, fileSize: number): GgufFile {
  const fail = (msg: string): never => {
    throw new GgufError(`${file}: ${msg}`);
  };
  const r = new ByteReader(buf, complete, fail);
  const magic = r.u32();
  if (magic !== GGUF_MAGIC) fail(`not a GGUF file (magic 0x${magic.toString(16).padStart(8, '0')})`);
  const version = r.u32();
  if (version !== 2 && version !== 3) fail(`unsupported GGUF version ${version} (2 and 3 are supported)`);
  const nTensors = r.count('tensor count', fileSize);
  const nKv = r.count('metadata count', fileSize);
  const metadata = new Map<string, GgufKv>();
  for (let i = 0; i < nKv; i++) {
    const key = r.str('a metadata key', fileSize);
    if (metadata.has(key)) fail(`duplicate metadata key "${key}"`);
    const type = r.u32();
    metadata.set(key, readKvValue(r, type, fileSize, fail, key));
  }
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const al = metadata.get('general.alignment');
  if (al !== undefined) {
    if (al.type !== GgufType.UINT32 || typeof al.value !== 'number' || al.value === 0 || (al.value & (al.value - 1)) !== 0)
      fail(`general.alignment must be a u32 power of two, got ${String(al.value)}`);
    alignment = al.value as number;
  }
  const tensors = new Map<string, GgufTensorInfo>();
  for (let i = 0; i < nTensors; i++) {
    const name = r.str('a tensor name', fileSize);
    if (tensors.has(name)) fail(`duplicate tensor "${name}"`);
    const nDims = r.u32();
    if (nDims < 1 || nDims > 4) fail(`tensor "${name}": ${nDims} dimensions (1 to 4 allowed)`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(r.count(`tensor "${name}" dimension`, Number.MAX_SAFE_INTEGER));
    const type = r.u32();
    const offset = r.count(`tensor "${name}" offset`, fileSize);
    if (offset % alignment !== 0) fail(`tensor "${name}": offset ${offset} is not a multiple of the alignment ${alignment}`);
    const elem = GGML_ELEMENT_BYTES[type];
    const nbytes = elem === undefined ? -1 : dims.reduce((a, b) => a * b, 1) * elem;
    tensors.set(name, { name, dims, type, offset, nbytes });
  }
  const dataOffset = r.pos + ((alignment - (r.pos % alignment)) % alignment);
  for (const t of tensors.values())
    if (t.nbytes >= 0 && dataOffset + t.offset + t.nbytes > fileSize)
      fail(`tensor "${t.name}" (bytes ${t.offset}..${t.offset + t.nbytes} of the data section) runs past the end of the file`);
  const known = [...tensors.values()].filter((t) => t.nbytes >= 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < known.length; i++)
    if (known[i].offset < known[i - 1].offset + known[i - 1].nbytes) fail(`tensors "${known[i - 1].name}" and "${known[i].name}" overlap`);
  return { file, version, alignment, dataOffset, fileSize, metadata, tensors };
}

/** Parses and validates a GGUF file's header, metadata and tensor infos (tensor data is read on demand). */
export async function readGguf(file: string): Promise<GgufFile> {
  let fh: FileHandle;
  try {
    fh = await fsp.open(file, 'r');
  } catch (err) {
    throw new GgufError(`${file}: cannot open: ${(err as Error).message}`);
  }
  try {
    const { size } = await fh.stat();
    let want = Math.min(size, 1 << 20);
    for (;;) {
      const buf = Buffer.alloc(want);
      const { bytesRead } = await fh.read(buf, 0, want, 0);
      const complete = want >= size;
      try {
        return parseGgufHeader(buf.subarray(0, bytesRead), complete, file, size);
      } catch (err) {
        if (!(err instanceof NeedMore)) throw err;
        want = Math.min(size, want * 4);
      }
    }
  } finally {
    await fh.close();
  }
}

/** Reads one tensor's data as Float32Array (F32 exact; F16 / BF16 widened exactly). Dims are gguf.tensors' dims. */
export async function readGgufTensor(gguf: GgufFile, name: string): Promise<Float32Array> {
  const info = gguf.tensors.get(name);
  if (!info) throw new GgufError(`${gguf.file}: tensor "${name}" not found`);
  if (info.nbytes < 0) throw new GgufError(`${gguf.file}: tensor "${name}" has ggml type ${info.type}, which cannot be read (F32, F16, BF16 only)`);
  const fh = await fsp.open(gguf.file, 'r');
  try {
    const bytes = new Uint8Array(info.nbytes);
    let done = 0;
    while (done < bytes.length) {
      const { bytesRead } = await fh.read(bytes, done, Math.min(1 << 30, bytes.length - done), gguf.dataOffset + info.offset + done);
      if (bytesRead === 0) throw new GgufError(`${gguf.file}: unexpected end of file in tensor "${name}"`);
      done += bytesRead;
    }
    if (info.type === GgmlType.F32) return new Float32Array(bytes.buffer);
    const half = new Uint16Array(bytes.buffer);
    return info.type === GgmlType.F16 ? f16ToF32(half) : bf16ToF32(half);
  } finally {
    await fh.close();
  }
}

/** The plain value of a metadata key (undefined when absent). */
export function ggufValue(gguf: GgufFile, key: string): GgufKv['value'] | undefined {
  return gguf.metadata.get(key)?.value;
}
