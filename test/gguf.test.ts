import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, tensorShapes, type ModelConfig } from '../src/models/config.js';
import {
  GgmlType, GgufError, GgufType, TOKEN_TYPE, exportGguf, ggufTensorName, ggufValue, permuteQK, readGguf, readGgufTensor,
  syntheticTokenizer, unpermuteQK, type GgufFile,
} from '../src/models/gguf.js';
import { f16ToF32, f32ToF16, loadCheckpoint, type Tensor } from '../src/models/safetensors.js';
import { randomF32, rng } from './helpers.js';

const SHARED = process.env.WST_DASH_SHARED ?? fileURLToPath(new URL('../../shared', import.meta.url));
const STORIES = path.join(SHARED, 'models', 'stories260K');
const haveStories = existsSync(path.join(STORIES, 'model.safetensors'));
if (!haveStories) console.warn(`stories260K fixture not found at ${STORIES} (set WST_DASH_SHARED): skipping its tests`);

function randomTensors(config: ModelConfig, seed: number): Map<string, Tensor> {
  const m = new Map<string, Tensor>();
  for (const [name, shape] of tensorShapes(config))
    m.set(name, { dtype: 'F32', shape, data: randomF32(shape.reduce((a, b) => a * b, 1), seed++) });
  return m;
}

/** numpy's w.reshape(nHead, 2, rows/nHead/2, cols).swapaxes(1, 2).reshape(w.shape), by generic index arithmetic. */
function numpyPermute(w: Float32Array, nHead: number, cols: number): Float32Array {
  const rows = w.length / cols;
  const shape = [nHead, 2, rows / nHead / 2, cols];
  const swapped = [shape[0], shape[2], shape[1], shape[3]];
  const out = new Float32Array(w.length);
  const idx = [0, 0, 0, 0];
  for (let flat = 0; flat < w.length; flat++) {
    let r = flat; // index into the swapped (output) array, row-major
    for (let d = 3; d >= 0; d--) {
      idx[d] = r % swapped[d];
      r = Math.floor(r / swapped[d]);
    }
    const src = [idx[0], idx[2], idx[1], idx[3]]; // output[a,b,c,d] = input[a,c,b,d]
    const srcFlat = ((src[0] * shape[1] + src[1]) * shape[2] + src[2]) * shape[3] + src[3];
    out[flat] = w[srcFlat];
  }
  return out;
}

/** Checks the llama.cpp layout rules: aligned data section, offsets == running sum of padded sizes. */
function checkLayout(g: GgufFile): void {
  expect(g.dataOffset % g.alignment).toBe(0);
  let expected = 0;
  for (const t of g.tensors.values()) {
    expect(t.offset, t.name).toBe(expected);
    expected += Math.ceil(t.nbytes / g.alignment) * g.alignment;
  }
  expect(g.fileSize).toBe(g.dataOffset + expected);
}

describe('q/k permutation', () => {
  it('matches numpy reshape/swapaxes and inverts exactly', () => {
    for (const [nHead, dh, cols] of [[8, 8, 64], [4, 8, 64], [3, 6, 5], [2, 2, 1], [5, 16, 7]]) {
      const w = randomF32(nHead * dh * cols, nHead * 100 + dh);
      const p = permuteQK(w, nHead, cols);
      expect(Array.from(p)).toEqual(Array.from(numpyPermute(w, nHead, cols)));
      expect(Array.from(unpermuteQK(p, nHead, cols))).toEqual(Array.from(w));
    }
    expect(() => permuteQK(new Float32Array(30), 4, 5)).toThrow(RangeError);
  });

  it('turns rotate-half RoPE into interleaved RoPE with identical attention scores', () => {
    // HF: rotate (x[j], x[j + Dh/2]); llama.cpp "llama" arch: rotate (x[2j], x[2j + 1]); same angle pos·θ^(-2j/Dh).
    const nHead = 3, Dh = 8, C = 11, theta = 10000;
    const ropeHalf = (v: Float64Array, pos: number) => {
      for (let h = 0; h < nHead; h++)
        for (let j = 0; j < Dh / 2; j++) {
          const a = pos * theta ** (-(2 * j) / Dh), x = v[h * Dh + j], y = v[h * Dh + j + Dh / 2];
          v[h * Dh + j] = x * Math.cos(a) - y * Math.sin(a);
          v[h * Dh + j + Dh / 2] = y * Math.cos(a) + x * Math.sin(a);
        }
    };
    const ropeInterleaved = (v: Float64Array, pos: number) => {
      for (let h = 0; h < nHead; h++)
        for (let j = 0; j < Dh / 2; j++) {
          const a = pos * theta ** (-(2 * j) / Dh), x = v[h * Dh + 2 * j], y = v[h * Dh + 2 * j + 1];
          v[h * Dh + 2 * j] = x * Math.cos(a) - y * Math.sin(a);
          v[h * Dh + 2 * j + 1] = y * Math.cos(a) + x * Math.sin(a);
        }
    };
    const matvec = (w: Float32Array, x: Float32Array) => {
      const out = new Float64Array(w.length / C);
      for (let r = 0; r < out.length; r++) for (let k = 0; k < C; k++) out[r] += w[r * C + k] * x[k];
      return out;
    };
    const wq = randomF32(nHead * Dh * C, 1), wk = randomF32(nHead * Dh * C, 2);
    const x1 = randomF32(C, 3), x2 = randomF32(C, 4);
    const qh = matvec(wq, x1), kh = matvec(wk, x2);
    ropeHalf(qh, 7);
    ropeHalf(kh, 3);
    const qm = matvec(permuteQK(wq, nHead, C), x1), km = matvec(permuteQK(wk, nHead, C), x2);
    ropeInterleaved(qm, 7);
    ropeInterleaved(km, 3);
    const pq = permuteQK(Float32Array.from(qh), nHead, 1);
    for (let i = 0; i < qm.length; i++) expect(qm[i]).toBeCloseTo(pq[i], 5);
    for (let h = 0; h < nHead; h++) {
      let sh = 0, sm = 0;
      for (let i = 0; i < Dh; i++) {
        sh += qh[h * Dh + i] * kh[h * Dh + i];
        sm += qm[h * Dh + i] * km[h * Dh + i];
      }
      expect(sm).toBeCloseTo(sh, 10);
    }
  });
});

describe('gguf', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'wst-gguf-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe.skipIf(!haveStories)('stories260K', () => {
    it('exports F32 and reads back every tensor and metadata value exactly', async () => {
      const { config, tensors } = await loadCheckpoint(STORIES);
      const out = path.join(dir, 'stories260K.gguf');
      await exportGguf({ config, tensors, outFile: out, name: 'stories260K' });
      const g = await readGguf(out);
      expect(g.version).toBe(3);
      expect(g.alignment).toBe(32);
      const expectKv = (key: string, type: GgufType, value: unknown) => {
        const kv = g.metadata.get(key);
        expect(kv, key).toBeDefined();
        expect(kv!.type, key).toBe(type);
        expect(kv!.value, key).toEqual(value);
      };
      expectKv('general.architecture', GgufType.STRING, 'llama');
      expectKv('general.name', GgufType.STRING, 'stories260K');
      expectKv('general.file_type', GgufType.UINT32, 0);
      expectKv('general.alignment', GgufType.UINT32, 32);
      expectKv('llama.context_length', GgufType.UINT32, 512);
      expectKv('llama.embedding_length', GgufType.UINT32, 64);
      expectKv('llama.block_count', GgufType.UINT32, 5);
      expectKv('llama.feed_forward_length', GgufType.UINT32, 172);
      expectKv('llama.rope.dimension_count', GgufType.UINT32, 8);
      expectKv('llama.attention.head_count', GgufType.UINT32, 8);
      expectKv('llama.attention.head_count_kv', GgufType.UINT32, 4);
      expectKv('llama.attention.layer_norm_rms_epsilon', GgufType.FLOAT32, Math.fround(1e-5));
      expectKv('llama.rope.freq_base', GgufType.FLOAT32, 10000);
      expectKv('llama.vocab_size', GgufType.UINT32, 512);
      expectKv('tokenizer.ggml.model', GgufType.STRING, 'llama');
      expectKv('tokenizer.ggml.bos_token_id', GgufType.UINT32, 1);
      expectKv('tokenizer.ggml.eos_token_id', GgufType.UINT32, 2);
      expectKv('tokenizer.ggml.unknown_token_id', GgufType.UINT32, 0);
      const tokens = ggufValue(g, 'tokenizer.ggml.tokens') as string[];
      expect(tokens.length).toBe(512);
      expect(tokens.slice(0, 4)).toEqual(['<unk>', '<s>', '</s>', '<0x00>']);
      expect(tokens[258]).toBe('<0xFF>');
      expect(tokens[259]).toBe('tok_259');
      expect(g.metadata.get('tokenizer.ggml.scores')).toMatchObject({ type: GgufType.ARRAY, arrayType: GgufType.FLOAT32 });
      const types = ggufValue(g, 'tokenizer.ggml.token_type') as Int32Array;
      expect(Array.from(types.slice(0, 4))).toEqual([TOKEN_TYPE.UNKNOWN, TOKEN_TYPE.CONTROL, TOKEN_TYPE.CONTROL, TOKEN_TYPE.BYTE]);
      expect(types[300]).toBe(TOKEN_TYPE.NORMAL);

      // Tied embeddings: 1 + 9 per layer + output_norm, no output.weight.
      expect(g.tensors.size).toBe(47);
      expect(g.tensors.has('output.weight')).toBe(false);
      expect([...g.tensors.keys()].slice(0, 5)).toEqual(['token_embd.weight', 'blk.0.attn_norm.weight', 'blk.0.attn_q.weight', 'blk.0.attn_k.weight', 'blk.0.attn_v.weight']);
      expect(g.tensors.get('token_embd.weight')!.dims).toEqual([64, 512]);
      expect(g.tensors.get('blk.0.attn_k.weight')!.dims).toEqual([64, 32]);
      expect(g.tensors.get('blk.4.ffn_down.weight')!.dims).toEqual([172, 64]);
      expect(g.tensors.get('output_norm.weight')!.dims).toEqual([64]);
      checkLayout(g);
      for (const [hfName, t] of tensors) {
        const info = g.tensors.get(ggufTensorName(hfName))!;
        expect(info.type, hfName).toBe(GgmlType.F32);
        expect(info.dims, hfName).toEqual([...t.shape].reverse());
        let data = await readGgufTensor(g, info.name);
        if (hfName.endsWith('q_proj.weight')) {
          expect(Buffer.from(data.buffer).equals(Buffer.from(t.data.buffer)), `${hfName} must be permuted`).toBe(false);
          data = unpermuteQK(data, 8, 64);
        }
        if (hfName.endsWith('k_proj.weight')) data = unpermuteQK(data, 4, 64);
        expect(Buffer.from(data.buffer).equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)), hfName).toBe(true);
      }
      expect((await readdir(dir)).filter((f) => f.startsWith('.'))).toEqual([]);
    });

    it('exports F16: 2-D weights rounded to f16, norms kept F32', async () => {
      const { config, tensors } = await loadCheckpoint(STORIES);
      const out = path.join(dir, 'stories260K-f16.gguf');
      await exportGguf({ config, tensors, outFile: out, dtype: 'f16' });
      const g = await readGguf(out);
      expect(ggufValue(g, 'general.file_type')).toBe(1);
      checkLayout(g);
      expect((await stat(out)).size).toBeLessThan((await stat(path.join(STORIES, 'model.safetensors'))).size * 0.6);
      for (const [hfName, t] of tensors) {
        const info = g.tensors.get(ggufTensorName(hfName))!;
        expect(info.type, hfName).toBe(t.shape.length === 2 ? GgmlType.F16 : GgmlType.F32);
        let data = await readGgufTensor(g, info.name);
        if (hfName.endsWith('q_proj.weight')) data = unpermuteQK(data, 8, 64);
        if (hfName.endsWith('k_proj.weight')) data = unpermuteQK(data, 4, 64);
        const want = t.shape.length === 2 ? f16ToF32(f32ToF16(t.data)) : t.data;
        expect(Array.from(data), hfName).toEqual(Array.from(want));
      }
    });
  });

  it('exports an untied GQA llama with explicit head_dim, without touching v/o/mlp', async () => {
    const config = parseConfig({
      model_type: 'llama', vocab_size: 300, hidden_size: 24, head_dim: 10, intermediate_size: 37, num_hidden_layers: 2,
      num_attention_heads: 6, num_key_value_heads: 2, tie_word_embeddings: false, bos_token_id: 1, eos_token_id: 2, rope_theta: 5e5,
    });
    const tensors = randomTensors(config, 100);
    const out = path.join(dir, 'untied.gguf');
    await exportGguf({ config, tensors, outFile: out });
    const g = await readGguf(out);
    checkLayout(g);
    expect(g.tensors.size).toBe(1 + 2 * 9 + 2);
    expect(ggufValue(g, 'llama.attention.key_length')).toBe(10);
    expect(ggufValue(g, 'llama.rope.dimension_count')).toBe(10);
    expect(ggufValue(g, 'llama.rope.freq_base')).toBe(5e5);
    expect(g.tensors.get('blk.1.attn_q.weight')!.dims).toEqual([24, 60]);
    expect(g.tensors.get('blk.1.attn_output.weight')!.dims).toEqual([60, 24]);
    for (const [hfName, t] of tensors) {
      let data = await readGgufTensor(g, ggufTensorName(hfName));
      if (hfName.endsWith('q_proj.weight')) data = unpermuteQK(data, 6, 24);
      if (hfName.endsWith('k_proj.weight')) data = unpermuteQK(data, 2, 24);
      expect(Array.from(data), hfName).toEqual(Array.from(t.data));
    }
    expect(Array.from(await readGgufTensor(g, 'output.weight'))).toEqual(Array.from(tensors.get('lm_head.weight')!.data));
  });

  it('exports qwen2 (q/k/v biases) and qwen3 (q/k norms) unpermuted under their own architecture names', async () => {
    for (const raw of [
      { model_type: 'qwen2', vocab_size: 50, hidden_size: 16, intermediate_size: 20, num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 2, tie_word_embeddings: true, eos_token_id: 7 },
      { model_type: 'qwen3', vocab_size: 50, hidden_size: 16, head_dim: 6, intermediate_size: 20, num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 2, bos_token_id: 3, eos_token_id: [4, 5] },
    ]) {
      const config = parseConfig(raw);
      const tensors = randomTensors(config, 7);
      const out = path.join(dir, `${config.architecture}.gguf`);
      await exportGguf({ config, tensors, outFile: out });
      const g = await readGguf(out);
      checkLayout(g);
      const arch = config.architecture;
      expect(ggufValue(g, 'general.architecture')).toBe(arch);
      expect(ggufValue(g, `${arch}.attention.head_count_kv`)).toBe(2);
      expect(ggufValue(g, `${arch}.attention.key_length`)).toBe(config.headDim);
      expect(g.tensors.has('blk.0.attn_q.bias')).toBe(arch === 'qwen2');
      expect(g.tensors.has('blk.0.attn_q_norm.weight')).toBe(arch === 'qwen3');
      expect(g.tensors.size).toBe(tensorShapes(config).size);
      for (const [hfName, t] of tensors) expect(Array.from(await readGgufTensor(g, ggufTensorName(hfName))), hfName).toEqual(Array.from(t.data));
    }
  });

  it('builds synthetic vocabularies around the configured special ids and accepts a real tokenizer', async () => {
    const base = { model_type: 'llama', vocab_size: 40, hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2 };
    const t1 = syntheticTokenizer(parseConfig({ ...base, bos_token_id: 10, eos_token_id: [11, 12] }));
    expect([t1.tokens[0], t1.tokens[10], t1.tokens[11], t1.tokens[12], t1.tokens[13]]).toEqual(['<unk>', '<s>', '</s>', '</s_1>', 'tok_13']);
    expect([t1.bosTokenId, t1.eosTokenId, t1.unknownTokenId]).toEqual([10, 11, 0]);
    expect(new Set(t1.tokens).size).toBe(40);
    const t2 = syntheticTokenizer(parseConfig({ ...base, bos_token_id: 0, eos_token_id: 0 }));
    expect([t2.tokens[0], t2.unknownTokenId, t2.tokenTypes![0]]).toEqual(['<s>', undefined, TOKEN_TYPE.CONTROL]);

    const config = parseConfig({ ...base, bos_token_id: 1, eos_token_id: 2 });
    const tensors = randomTensors(config, 3);
    const tokens = Array.from({ length: 40 }, (_, i) => `piece${i}`);
    const out = path.join(dir, 'tok.gguf');
    await exportGguf({ config, tensors, outFile: out, tokenizer: { model: 'gpt2', pre: 'qwen2', tokens, merges: ['p i', 'pi e'], bosTokenId: 1, eosTokenId: 2, chatTemplate: '{{x}}' } });
    const g = await readGguf(out);
    expect(ggufValue(g, 'tokenizer.ggml.model')).toBe('gpt2');
    expect(ggufValue(g, 'tokenizer.ggml.pre')).toBe('qwen2');
    expect(ggufValue(g, 'tokenizer.ggml.tokens')).toEqual(tokens);
    expect(ggufValue(g, 'tokenizer.ggml.merges')).toEqual(['p i', 'pi e']);
    expect(ggufValue(g, 'tokenizer.chat_template')).toBe('{{x}}');
    expect(g.metadata.has('tokenizer.ggml.scores')).toBe(false);
    await expect(exportGguf({ config, tensors, outFile: out, tokenizer: { model: 'gpt2', tokens: tokens.slice(1) } })).rejects.toThrow(/tokenizer has 39 tokens but the model's vocab_size is 40/);
    await expect(exportGguf({ config, tensors, outFile: out, tokenizer: { model: 'gpt2', tokens, eosTokenId: 40 } })).rejects.toThrow(/eos_token_id 40 is outside the vocabulary/);
  });

  it('refuses tensors that do not match the config, leaving no file behind', async () => {
    const config = parseConfig({ model_type: 'llama', vocab_size: 30, hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2 });
    const tensors = randomTensors(config, 1);
    tensors.delete('model.layers.0.mlp.up_proj.weight');
    const out = path.join(dir, 'never.gguf');
    await expect(exportGguf({ config, tensors, outFile: out })).rejects.toThrow(/missing tensor "model\.layers\.0\.mlp\.up_proj\.weight"/);
    await expect(exportGguf({ config, tensors: randomTensors(config, 1), outFile: out, dtype: 'q8' as never })).rejects.toThrow(/dtype must be 'f32' or 'f16'/);
    expect(existsSync(out)).toBe(false);
  });

  describe('reader rejects corrupt files with one clear error', () => {
    let good: Buffer;
    let g: GgufFile;
    beforeAll(async () => {
      const config = parseConfig({ model_type: 'llama', vocab_size: 30, hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2, bos_token_id: 1 });
      const file = path.join(dir, 'small.gguf');
      await exportGguf({ config, tensors: randomTensors(config, 5), outFile: file });
      good = await readFile(file);
      g = await readGguf(file);
    });
    const corrupt = async (name: string, bytes: Buffer, msg: RegExp) => {
      const file = path.join(dir, name);
      await writeFile(file, bytes);
      await expect(readGguf(file)).rejects.toThrow(GgufError);
      await expect(readGguf(file)).rejects.toThrow(msg);
    };
    it('bad magic', async () => {
      const b = Buffer.from(good);
      b.write('GGML', 0);
      await corrupt('magic.gguf', b, /not a GGUF file/);
    });
    it('unsupported version', async () => {
      const b = Buffer.from(good);
      b.writeUInt32LE(1, 4);
      await corrupt('v1.gguf', b, /unsupported GGUF version 1/);
    });
    it('truncated inside the metadata', async () => {
      await corrupt('trunc-meta.gguf', good.subarray(0, 200), /unexpected end of file/);
    });
    it('truncated inside the tensor data', async () => {
      await corrupt('trunc-data.gguf', good.subarray(0, good.length - 40), /tensor "output\.weight" .* runs past the end of the file/);
    });
    it('absurd counts', async () => {
      const b = Buffer.from(good);
      b.writeBigUInt64LE(1n << 60n, 16);
      await corrupt('count.gguf', b, /metadata count \d+ is larger than possible/);
    });
    it('misaligned tensor offset', async () => {
      // The last tensor info's offset is the u64 just before the padding that precedes the data section.
      const last = [...g.tensors.values()].at(-1)!;
      const b = Buffer.from(good);
      let at = -1;
      for (let p = g.dataOffset - 8; p > 0; p--) if (b.readBigUInt64LE(p) === BigInt(last.offset)) { at = p; break; }
      expect(at).toBeGreaterThan(0);
      b.writeBigUInt64LE(BigInt(last.offset + 4), at);
      await corrupt('misaligned.gguf', b, /tensor "output\.weight": offset \d+ is not a multiple of the alignment 32/);
    });
    it('unknown value type', async () => {
      // The first kv is general.architecture: key length (8) + key + type u32.
      const b = Buffer.from(good);
      const typeAt = 24 + 8 + 'general.architecture'.length;
      expect(b.readUInt32LE(typeAt)).toBe(GgufType.STRING);
      b.writeUInt32LE(99, typeAt);
      await corrupt('vtype.gguf', b, /metadata "general\.architecture": unknown value type 99/);
    });
    it('missing tensor and missing file', async () => {
      await expect(readGgufTensor(g, 'nope')).rejects.toThrow(/tensor "nope" not found/);
      await expect(readGguf(path.join(dir, 'absent.gguf'))).rejects.toThrow(/absent\.gguf: cannot open/);
    });
  });

  it('reads metadata spread over more than the first read window', async () => {
    // A 300k-token vocabulary makes the header several MB, past the reader's first 1 MiB window.
    const V = 300_000;
    const config = parseConfig({ model_type: 'llama', vocab_size: V, hidden_size: 2, intermediate_size: 2, num_hidden_layers: 1, num_attention_heads: 1 });
    const tensors = new Map<string, Tensor>();
    const r = rng(9);
    for (const [name, shape] of tensorShapes(config)) {
      const n = shape.reduce((a, b) => a * b, 1);
      tensors.set(name, { dtype: 'F32', shape, data: Float32Array.from({ length: n }, () => r()) });
    }
    const out = path.join(dir, 'bigvocab.gguf');
    await exportGguf({ config, tensors, outFile: out });
    const g = await readGguf(out);
    expect(g.dataOffset).toBeGreaterThan(1 << 20);
    const tokens = ggufValue(g, 'tokenizer.ggml.tokens') as string[];
    expect(tokens.length).toBe(V);
    expect(tokens[V - 1]).toBe(`tok_${V - 1}`);
    expect(Array.from(await readGgufTensor(g, 'token_embd.weight'))).toEqual(Array.from(tensors.get('model.embed_tokens.weight')!.data));
  });
});
