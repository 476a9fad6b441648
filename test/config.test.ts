import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, configToHf, parameterCount, parseConfig, readConfigFile, tensorShapes, validateConfig } from '../src/models/config.js';

const SHARED = process.env.WST_DASH_SHARED ?? fileURLToPath(new URL('../../shared', import.meta.url));
const STORIES = path.join(SHARED, 'models', 'stories260K');
const haveStories = existsSync(path.join(STORIES, 'config.json'));
if (!haveStories) console.warn(`stories260K fixture not found at ${STORIES} (set WST_DASH_SHARED): skipping its tests`);

// Abridged from the published config.json files of Qwen2.5-0.5B, Qwen3-0.6B and Mistral-7B-v0.3.
const QWEN2 = {
  architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', attention_dropout: 0.0, bos_token_id: 151643, eos_token_id: 151645,
  hidden_act: 'silu', hidden_size: 896, initializer_range: 0.02, intermediate_size: 4864, max_position_embeddings: 32768,
  max_window_layers: 21, num_attention_heads: 14, num_hidden_layers: 24, num_key_value_heads: 2, rms_norm_eps: 1e-6,
  rope_theta: 1000000.0, sliding_window: 32768, tie_word_embeddings: true, torch_dtype: 'bfloat16', use_cache: true,
  use_sliding_window: false, vocab_size: 151936,
};
const QWEN3 = {
  architectures: ['Qwen3ForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 151643, eos_token_id: 151645,
  head_dim: 128, hidden_act: 'silu', hidden_size: 1024, initializer_range: 0.02, intermediate_size: 3072, max_position_embeddings: 40960,
  max_window_layers: 28, model_type: 'qwen3', num_attention_heads: 16, num_hidden_layers: 28, num_key_value_heads: 8,
  rms_norm_eps: 1e-6, rope_scaling: null, rope_theta: 1000000, sliding_window: null, tie_word_embeddings: true,
  torch_dtype: 'bfloat16', use_cache: true, use_sliding_window: false, vocab_size: 151936,
};
const MISTRAL = {
  architectures: ['MistralForCausalLM'], attention_dropout: 0.0, bos_token_id: 1, eos_token_id: 2, hidden_act: 'silu',
  hidden_size: 4096, intermediate_size: 14336, max_position_embeddings: 32768, model_type: 'mistral', num_attention_heads: 32,
  num_hidden_layers: 32, num_key_value_heads: 8, rms_norm_eps: 1e-5, rope_theta: 1000000.0, sliding_window: null,
  tie_word_embeddings: false, torch_dtype: 'bfloat16', vocab_size: 32768,
};

describe('config', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'wst-config-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.skipIf(!haveStories)('parses the stories260K config', async () => {
    const c = await readConfigFile(path.join(STORIES, 'config.json'));
    expect(c).toEqual({
      architecture: 'llama', vocabSize: 512, hiddenSize: 64, intermediateSize: 172, numLayers: 5, numHeads: 8, numKvHeads: 4,
      headDim: 8, ropeTheta: 10000, rmsNormEps: 1e-5, tieWordEmbeddings: true, maxPositionEmbeddings: 512, attentionBias: false,
      qkNorm: false, bosTokenId: 1, eosTokenId: 2, torchDtype: 'float32',
    });
    expect(parameterCount(c)).toBe(260032);
  });

  it('parses Qwen2, Qwen3 and Mistral configs', () => {
    const q2 = parseConfig(QWEN2);
    expect(q2).toMatchObject({ architecture: 'qwen2', headDim: 64, numKvHeads: 2, attentionBias: true, qkNorm: false, tieWordEmbeddings: true, ropeTheta: 1e6, torchDtype: 'bfloat16' });
    const q3 = parseConfig(QWEN3);
    expect(q3).toMatchObject({ architecture: 'qwen3', headDim: 128, hiddenSize: 1024, numHeads: 16, attentionBias: false, qkNorm: true, maxPositionEmbeddings: 40960 });
    const m = parseConfig(MISTRAL);
    expect(m).toMatchObject({ architecture: 'llama', headDim: 128, numKvHeads: 8, tieWordEmbeddings: false, eosTokenId: 2 });
  });

  it('applies defaults for omitted optional keys', () => {
    const c = parseConfig({ model_type: 'llama', vocab_size: 10, hidden_size: 8, intermediate_size: 12, num_hidden_layers: 1, num_attention_heads: 2 });
    expect(c).toMatchObject({ numKvHeads: 2, headDim: 4, ropeTheta: 10000, rmsNormEps: 1e-6, tieWordEmbeddings: false, maxPositionEmbeddings: 2048, bosTokenId: null, eosTokenId: null, torchDtype: 'float32' });
  });

  it('accepts a list of eos ids and transformers v5 rope_parameters', () => {
    const c = parseConfig({ ...QWEN3, eos_token_id: [151645, 151643], rope_theta: undefined, rope_parameters: { rope_type: 'default', rope_theta: 5e5 } });
    expect(c.eosTokenId).toEqual([151645, 151643]);
    expect(c.ropeTheta).toBe(5e5);
  });

  it('round-trips through configToHf', () => {
    for (const raw of [QWEN2, QWEN3, MISTRAL]) {
      const c = parseConfig(raw);
      expect(parseConfig(JSON.parse(JSON.stringify(configToHf(c))))).toEqual(c);
      expect(validateConfig(c)).toEqual(c);
    }
  });

  it('gives the expected tensor names and shapes', () => {
    const q2 = tensorShapes(parseConfig({ ...QWEN2, num_hidden_layers: 2 }));
    expect(q2.get('model.embed_tokens.weight')).toEqual([151936, 896]);
    expect(q2.get('model.layers.1.self_attn.q_proj.weight')).toEqual([896, 896]);
    expect(q2.get('model.layers.1.self_attn.k_proj.weight')).toEqual([128, 896]);
    expect(q2.get('model.layers.1.self_attn.k_proj.bias')).toEqual([128]);
    expect(q2.get('model.layers.0.self_attn.o_proj.weight')).toEqual([896, 896]);
    expect(q2.has('model.layers.0.self_attn.o_proj.bias')).toBe(false);
    expect(q2.get('model.layers.0.mlp.down_proj.weight')).toEqual([896, 4864]);
    expect(q2.has('lm_head.weight')).toBe(false);
    expect(q2.size).toBe(1 + 2 * 12 + 1);
    const q3 = tensorShapes(parseConfig({ ...QWEN3, num_hidden_layers: 1, tie_word_embeddings: false }));
    expect(q3.get('model.layers.0.self_attn.q_proj.weight')).toEqual([2048, 1024]);
    expect(q3.get('model.layers.0.self_attn.o_proj.weight')).toEqual([1024, 2048]);
    expect(q3.get('model.layers.0.self_attn.q_norm.weight')).toEqual([128]);
    expect(q3.get('model.layers.0.self_attn.k_norm.weight')).toEqual([128]);
    expect(q3.get('lm_head.weight')).toEqual([151936, 1024]);
    expect(q3.has('model.layers.0.self_attn.q_proj.bias')).toBe(false);
  });

  const base = { model_type: 'llama', vocab_size: 32, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 };
  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['unsupported model_type', { model_type: 'gpt2' }, /model_type "gpt2" is not supported/],
    ['unsupported architectures', { model_type: undefined, architectures: ['GPT2LMHeadModel'] }, /architectures .* names no supported class/],
    ['conflicting architectures', { architectures: ['Qwen2ForCausalLM'] }, /disagrees with model_type/],
    ['missing hidden_size', { hidden_size: undefined }, /hidden_size is missing/],
    ['zero layers', { num_hidden_layers: 0 }, /num_hidden_layers must be an integer >= 1, got 0/],
    ['fractional vocab', { vocab_size: 31.5 }, /vocab_size must be an integer/],
    ['string heads', { num_attention_heads: '4' }, /num_attention_heads must be an integer/],
    ['heads not divisible by kv heads', { num_key_value_heads: 3 }, /num_attention_heads \(4\) must be divisible by num_key_value_heads \(3\)/],
    ['hidden not divisible by heads', { hidden_size: 18 }, /hidden_size \(18\) must be divisible by num_attention_heads/],
    ['odd head_dim', { head_dim: 5 }, /head_dim must be even/],
    ['negative eps', { rms_norm_eps: -1 }, /rms_norm_eps must be a positive finite number/],
    ['rope_scaling llama3', { rope_scaling: { rope_type: 'llama3', factor: 32 } }, /rope_scaling .* is not supported/],
    ['gelu', { hidden_act: 'gelu' }, /hidden_act "gelu" is not supported/],
    ['llama attention bias', { attention_bias: true }, /attention_bias true is not supported/],
    ['mlp bias', { mlp_bias: true }, /mlp_bias true is not supported/],
    ['bos outside vocab', { bos_token_id: 32 }, /bos_token_id 32 is outside the vocabulary/],
    ['eos list outside vocab', { eos_token_id: [1, 40] }, /eos_token_id 40 is outside the vocabulary/],
    ['bad dtype', { torch_dtype: 'int8' }, /torch_dtype "int8" is not supported/],
    ['mistral sliding window', { model_type: 'mistral', sliding_window: 1024, max_position_embeddings: 4096 }, /sliding_window 1024 < max_position_embeddings 4096/],
    ['qwen sliding window', { model_type: 'qwen2', use_sliding_window: true }, /use_sliding_window true is not supported/],
    ['qwen3 without head_dim', { model_type: 'qwen3' }, /head_dim is missing/],
  ];
  for (const [what, patch, msg] of bad)
    it(`rejects ${what} with an error naming the field and the file`, () => {
      const raw: Record<string, unknown> = { ...base, ...patch };
      for (const k of Object.keys(raw)) if (raw[k] === undefined) delete raw[k];
      let err: unknown;
      try {
        parseConfig(raw, '/models/x/config.json');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toMatch(msg);
      expect((err as Error).message.startsWith('/models/x/config.json: ')).toBe(true);
    });

  it('accepts a Mistral sliding window that covers the whole context', () => {
    expect(parseConfig({ ...base, model_type: 'mistral', sliding_window: 4096, max_position_embeddings: 4096 }).architecture).toBe('llama');
  });

  it('reports unreadable and malformed files clearly', async () => {
    const file = path.join(dir, 'config.json');
    await writeFile(file, '{"model_type": "llama",');
    await expect(readConfigFile(file)).rejects.toThrow(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: invalid JSON`));
    await writeFile(file, '[1, 2]');
    await expect(readConfigFile(file)).rejects.toThrow(/expected a JSON object, got an array/);
    await expect(readConfigFile(path.join(dir, 'nope.json'))).rejects.toThrow(/nope\.json: cannot read config/);
  });
});
