// Hugging Face config.json → a normalised, validated ModelConfig (and back), plus the tensor names and
// shapes a checkpoint of that config must contain.
//
// Supported: model_type llama / mistral (→ 'llama'), qwen2, qwen3, i.e. pre-norm decoder-only transformers
// with RMSNorm, rotate-half RoPE, grouped-query attention and a SwiGLU MLP.
// Rejected with an error naming the field and the file (these change the maths and are not implemented):
// - rope_scaling other than null / {rope_type: "default"} (e.g. Llama 3.1+ "llama3", "yarn", "linear");
// - sliding-window attention that is actually in effect: Mistral's `sliding_window` smaller than
//   max_position_embeddings, Qwen's `use_sliding_window: true` (a window ≥ the context is plain attention and
//   is accepted);
// - hidden_act other than silu, mlp_bias true, attention_bias true for llama/mistral/qwen3 (llama's would also
//   put a bias on o_proj).
// Unknown extra keys are ignored.
import { promises as fsp } from 'node:fs';

export type Architecture = 'llama' | 'qwen2' | 'qwen3';
export type TorchDtype = 'float32' | 'float16' | 'bfloat16';

export interface ModelConfig {
  architecture: Architecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** Per-head dimension: config.head_dim when given (Qwen3 always gives it), else hiddenSize / numHeads. */
  headDim: number;
  ropeTheta: number;
  rmsNormEps: number;
  tieWordEmbeddings: boolean;
  maxPositionEmbeddings: number;
  /** Bias on q_proj, k_proj and v_proj (not o_proj). True exactly for qwen2. */
  attentionBias: boolean;
  /** Per-head RMSNorm on q and k before RoPE (qwen3). */
  qkNorm: boolean;
  /** null when the config does not name one. */
  bosTokenId: number | null;
  /** null when the config does not name one. */
  eosTokenId: number | number[] | null;
  torchDtype: TorchDtype;
  /**
   * A reward model (Hugging Face `*ForSequenceClassification` with one label): `score.weight`
   * (1, hidden) on the final hidden state of the last token, no LM head.
   */
  scoreHead?: boolean;
}

const MODEL_TYPES: Record<string, Architecture> = { llama: 'llama', mistral: 'llama', qwen2: 'qwen2', qwen3: 'qwen3' };
const ARCH_CLASSES: Record<string, Architecture> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'llama',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
  LlamaForSequenceClassification: 'llama',
  MistralForSequenceClassification: 'llama',
  Qwen2ForSequenceClassification: 'qwen2',
  Qwen3ForSequenceClassification: 'qwen3',
};
const HF_SCORE_CLASS: Record<Architecture, string> = { llama: 'LlamaForSequenceClassification', qwen2: 'Qwen2ForSequenceClassification', qwen3: 'Qwen3ForSequenceClassification' };
const HF_CLASS: Record<Architecture, string> = { llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM' };
// Transformers' own defaults for keys a config.json may omit.
const DEFAULT_MAX_POS: Record<Architecture, number> = { llama: 2048, qwen2: 32768, qwen3: 32768 };

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Json = Record<string, unknown>;

class Fields {
  constructor(readonly raw: Json, readonly where: string) {}

  fail(key: string, msg: string): never {
    throw new ConfigError(`${this.where}: ${key} ${msg}`);
  }

  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }

  int(key: string, opts: { min?: number; default?: number } = {}): number {
    const min = opts.min ?? 1;
    if (!this.has(key)) {
      if (opts.default !== undefined) return opts.default;
      this.fail(key, 'is missing');
    }
    const v = this.raw[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min)
      this.fail(key, `must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return v;
  }

  positive(key: string, def?: number): number {
    if (!this.has(key)) {
      if (def !== undefined) return def;
      this.fail(key, 'is missing');
    }
    const v = this.raw[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.fail(key, `must be a positive finite number, got ${JSON.stringify(v)}`);
    return v;
  }

  bool(key: string, def: boolean): boolean {
    if (!this.has(key)) return def;
    const v = this.raw[key];
    if (typeof v !== 'boolean') this.fail(key, `must be a boolean, got ${JSON.stringify(v)}`);
    return v;
  }

  tokenId(key: string): number | null {
    if (!this.has(key)) return null;
    const v = this.raw[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) this.fail(key, `must be a non-negative integer, got ${JSON.stringify(v)}`);
    return v;
  }

  tokenIds(key: string): number | number[] | null {
    if (!this.has(key)) return null;
    const v = this.raw[key];
    if (Array.isArray(v)) {
      if (v.length === 0) this.fail(key, 'must not be an empty list');
      for (const x of v)
        if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0)
          this.fail(key, `must contain non-negative integers, got ${JSON.stringify(x)}`);
      return v.slice() as number[];
    }
    return this.tokenId(key);
  }
}

function isPlainObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Normalises and validates a parsed config.json. `where` names the source (a file path) in errors.
 * Throws ConfigError naming the field and `where`.
 */
export function parseConfig(raw: unknown, where = 'config.json'): ModelConfig {
  if (!isPlainObject(raw)) throw new ConfigError(`${where}: expected a JSON object, got ${Array.isArray(raw) ? 'an array' : typeof raw}`);
  const f = new Fields(raw, where);

  let architecture: Architecture | undefined;
  let scoreHead = false;
  if (f.has('model_type')) {
    const mt = raw.model_type;
    if (typeof mt !== 'string' || !(mt in MODEL_TYPES))
      f.fail('model_type', `${JSON.stringify(mt)} is not supported (supported: ${Object.keys(MODEL_TYPES).join(', ')})`);
    architecture = MODEL_TYPES[mt as string];
  }
  if (f.has('architectures')) {
    const archs = raw.architectures;
    if (!Array.isArray(archs) || archs.length === 0 || archs.some((a) => typeof a !== 'string'))
      f.fail('architectures', `must be a non-empty list of strings, got ${JSON.stringify(archs)}`);
    const known = (archs as string[]).map((a) => ARCH_CLASSES[a]).filter((a): a is Architecture => a !== undefined);
    if (known.length === 0)
      f.fail('architectures', `${JSON.stringify(archs)} names no supported class (supported: ${Object.keys(ARCH_CLASSES).join(', ')})`);
    if (architecture !== undefined && known[0] !== architecture)
      f.fail('architectures', `${JSON.stringify(archs)} disagrees with model_type ${JSON.stringify(raw.model_type)}`);
    architecture = known[0];
    scoreHead = (archs as string[]).some((a) => a.endsWith('ForSequenceClassification'));
    if (scoreHead) {
      const labels = raw.id2label !== undefined && isPlainObject(raw.id2label) ? Object.keys(raw.id2label).length : raw.num_labels ?? 1;
      if (labels !== 1) f.fail('id2label', `a reward model has one label (a scalar score), got ${JSON.stringify(labels)}`);
    }
  }
  if (architecture === undefined) throw new ConfigError(`${where}: neither model_type nor architectures is given`);

  const vocabSize = f.int('vocab_size');
  const hiddenSize = f.int('hidden_size');
  const intermediateSize = f.int('intermediate_size');
  const numLayers = f.int('num_hidden_layers');
  const numHeads = f.int('num_attention_heads');
  const numKvHeads = f.int('num_key_value_heads', { default: numHeads });
  if (numHeads % numKvHeads !== 0)
    f.fail('num_attention_heads', `(${numHeads}) must be divisible by num_key_value_heads (${numKvHeads})`);
  let headDim: number;
  if (f.has('head_dim')) headDim = f.int('head_dim');
  else {
    if (architecture === 'qwen3') f.fail('head_dim', 'is missing (Qwen3 configs give it explicitly)');
    if (hiddenSize % numHeads !== 0)
      f.fail('hidden_size', `(${hiddenSize}) must be divisible by num_attention_heads (${numHeads}) when head_dim is not given`);
    headDim = hiddenSize / numHeads;
  }
  if (headDim % 2 !== 0) f.fail('head_dim', `must be even for rotary embeddings, got ${headDim}`);

  // Transformers v5 moves rope_theta / rope_scaling into rope_parameters.
  let ropeTheta: number;
  const rp = raw.rope_parameters;
  if (rp !== undefined && rp !== null) {
    if (!isPlainObject(rp)) return f.fail('rope_parameters', `must be an object, got ${JSON.stringify(rp)}`);
    const type = rp.rope_type ?? rp.type ?? 'default';
    if (type !== 'default') f.fail('rope_parameters', `rope_type ${JSON.stringify(type)} is not supported (only "default")`);
    ropeTheta = new Fields(rp, `${where}: rope_parameters`).positive('rope_theta', f.positive('rope_theta', 10000));
  } else ropeTheta = f.positive('rope_theta', 10000);
  const rs = raw.rope_scaling;
  if (rs !== undefined && rs !== null) {
    const type = isPlainObject(rs) ? (rs.rope_type ?? rs.type) : undefined;
    if (type !== 'default') f.fail('rope_scaling', `${JSON.stringify(rs)} is not supported (only null)`);
  }

  const rmsNormEps = f.positive('rms_norm_eps', 1e-6);
  const maxPositionEmbeddings = f.int('max_position_embeddings', { default: DEFAULT_MAX_POS[architecture] });
  const tieWordEmbeddings = f.bool('tie_word_embeddings', false);

  if (f.has('hidden_act') && raw.hidden_act !== 'silu')
    f.fail('hidden_act', `${JSON.stringify(raw.hidden_act)} is not supported (only "silu")`);
  if (f.bool('mlp_bias', false)) f.fail('mlp_bias', 'true is not supported');
  // Qwen2 always has q/k/v biases (its config has no switch); the others must not have any.
  const attentionBias = architecture === 'qwen2';
  if (!attentionBias && f.bool('attention_bias', false))
    f.fail('attention_bias', `true is not supported for ${String(raw.model_type ?? architecture)}`);

  if (raw.model_type === 'mistral' || (raw.architectures as string[] | undefined)?.includes('MistralForCausalLM')) {
    if (f.has('sliding_window')) {
      const sw = f.int('sliding_window');
      if (sw < maxPositionEmbeddings)
        f.fail('sliding_window', `${sw} < max_position_embeddings ${maxPositionEmbeddings}: sliding-window attention is not supported`);
    }
  }
  if ((architecture === 'qwen2' || architecture === 'qwen3') && f.bool('use_sliding_window', false))
    f.fail('use_sliding_window', 'true is not supported (sliding-window attention)');

  const dtypeKey = f.has('torch_dtype') ? 'torch_dtype' : 'dtype';
  let torchDtype: TorchDtype = 'float32';
  if (f.has(dtypeKey)) {
    const d = raw[dtypeKey];
    if (d !== 'float32' && d !== 'float16' && d !== 'bfloat16')
      f.fail(dtypeKey, `${JSON.stringify(d)} is not supported (float32, float16, bfloat16)`);
    torchDtype = d as TorchDtype;
  }

  const bosTokenId = f.tokenId('bos_token_id');
  const eosTokenId = f.tokenIds('eos_token_id');
  if (bosTokenId !== null && bosTokenId >= vocabSize) f.fail('bos_token_id', `${bosTokenId} is outside the vocabulary (vocab_size ${vocabSize})`);
  for (const id of eosTokenId === null ? [] : Array.isArray(eosTokenId) ? eosTokenId : [eosTokenId])
    if (id >= vocabSize) f.fail('eos_token_id', `${id} is outside the vocabulary (vocab_size ${vocabSize})`);

  return {
    architecture,
    vocabSize,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    ropeTheta,
    rmsNormEps,
    tieWordEmbeddings,
    maxPositionEmbeddings,
    attentionBias,
    qkNorm: architecture === 'qwen3',
    bosTokenId,
    eosTokenId,
    torchDtype,
    ...(scoreHead ? { scoreHead } : {}),
  };
}

/** Reads and parses a config.json file (or the config.json inside a directory path ending in config.json). */
export async function readConfigFile(file: string): Promise<ModelConfig> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${file}: cannot read config: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${file}: invalid JSON: ${(err as Error).message}`);
  }
  return parseConfig(raw, file);
}

/** Checks an already-normalised ModelConfig (e.g. one built in code) by round-tripping it through the parser. */
export function validateConfig(config: ModelConfig, where = 'config'): ModelConfig {
  const back = parseConfig(configToHf(config), where);
  if (back.qkNorm !== config.qkNorm) throw new ConfigError(`${where}: qkNorm must be ${back.qkNorm} for ${config.architecture}`);
  if (back.attentionBias !== config.attentionBias)
    throw new ConfigError(`${where}: attentionBias must be ${back.attentionBias} for ${config.architecture}`);
  return back;
}

/** The config.json object for a ModelConfig (Hugging Face key names; parseConfig(configToHf(c)) equals c). */
export function configToHf(config: ModelConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {
    architectures: [(config.scoreHead ? HF_SCORE_CLASS : HF_CLASS)[config.architecture]],
    model_type: config.architecture,
    vocab_size: config.vocabSize,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
  };
  if (config.architecture === 'qwen3' || config.headDim * config.numHeads !== config.hiddenSize) out.head_dim = config.headDim;
  Object.assign(out, {
    max_position_embeddings: config.maxPositionEmbeddings,
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    rope_scaling: null,
    tie_word_embeddings: config.tieWordEmbeddings,
    hidden_act: 'silu',
  });
  if (config.bosTokenId !== null) out.bos_token_id = config.bosTokenId;
  if (config.eosTokenId !== null) out.eos_token_id = Array.isArray(config.eosTokenId) ? config.eosTokenId.slice() : config.eosTokenId;
  out.torch_dtype = config.torchDtype;
  if (config.scoreHead) Object.assign(out, { id2label: { 0: 'LABEL_0' }, label2id: { LABEL_0: 0 } });
  if (config.architecture === 'llama') Object.assign(out, { attention_bias: false, mlp_bias: false });
  if (config.architecture === 'qwen3') out.attention_bias = false;
  if (config.architecture !== 'llama') out.use_sliding_window = false;
  return out;
}

/** Every parameter tensor a Hugging Face checkpoint of `config` holds, with its shape ([out, in] for Linear weights). */
export function tensorShapes(config: ModelConfig): Map<string, number[]> {
  const { vocabSize: V, hiddenSize: C, intermediateSize: I, numHeads: H, numKvHeads: KVH, headDim: Dh } = config;
  const m = new Map<string, number[]>();
  m.set('model.embed_tokens.weight', [V, C]);
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}.`;
    m.set(p + 'input_layernorm.weight', [C]);
    m.set(p + 'self_attn.q_proj.weight', [H * Dh, C]);
    m.set(p + 'self_attn.k_proj.weight', [KVH * Dh, C]);
    m.set(p + 'self_attn.v_proj.weight', [KVH * Dh, C]);
    if (config.attentionBias) {
      m.set(p + 'self_attn.q_proj.bias', [H * Dh]);
      m.set(p + 'self_attn.k_proj.bias', [KVH * Dh]);
      m.set(p + 'self_attn.v_proj.bias', [KVH * Dh]);
    }
    m.set(p + 'self_attn.o_proj.weight', [C, H * Dh]);
    if (config.qkNorm) {
      m.set(p + 'self_attn.q_norm.weight', [Dh]);
      m.set(p + 'self_attn.k_norm.weight', [Dh]);
    }
    m.set(p + 'post_attention_layernorm.weight', [C]);
    m.set(p + 'mlp.gate_proj.weight', [I, C]);
    m.set(p + 'mlp.up_proj.weight', [I, C]);
    m.set(p + 'mlp.down_proj.weight', [C, I]);
  }
  m.set('model.norm.weight', [C]);
  if (config.scoreHead) m.set('score.weight', [1, C]);
  else if (!config.tieWordEmbeddings) m.set('lm_head.weight', [V, C]);
  return m;
}

/** Total parameter count of `config` (tied embeddings counted once). */
export function parameterCount(config: ModelConfig): number {
  let n = 0;
  for (const shape of tensorShapes(config).values()) n += shape.reduce((a, b) => a * b, 1);
  return n;
}
