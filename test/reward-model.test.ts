// Reward models: a Llama / Qwen backbone with the Hugging Face *ForSequenceClassification score
// head (score.weight on the last token's final hidden state). A public-layout folder loads and
// scores as the float64 reference does; the value head's backward matches finite differences of
// the reference; save -> load round-trips.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/models/config.js';
import { Model } from '../src/models/model.js';
import { writeSafetensors } from '../src/models/safetensors.js';
import { rng } from './helpers.js';
import { referenceLogits, type Weights } from './reference/llama.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'wst-rm-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A config.json as transformers writes it for LlamaForSequenceClassification (num_labels 1). */
function hfConfig(arch: 'llama' | 'qwen2') {
  return {
    architectures: [arch === 'llama' ? 'LlamaForSequenceClassification' : 'Qwen2ForSequenceClassification'], model_type: arch,
    vocab_size: 41, hidden_size: 24, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
    max_position_embeddings: 64, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
    id2label: { 0: 'LABEL_0' }, label2id: { LABEL_0: 0 }, pad_token_id: 0, torch_dtype: 'float32',
  };
}

/** Writes a public-layout reward-model folder with random weights (no lm_head, a score.weight). */
async function publicFolder(arch: 'llama' | 'qwen2', seed: number): Promise<{ dir: string; weights: Weights }> {
  const raw = hfConfig(arch);
  const config = parseConfig(raw);
  const shapes = new Map<string, number[]>();
  for (const t of Model.create({ ...config, scoreHead: undefined, tieWordEmbeddings: true }).tensorNames()) shapes.set(t.name, t.shape);
  shapes.set('score.weight', [1, config.hiddenSize]);
  if (arch === 'qwen2') for (let l = 0; l < config.numLayers; l++) for (const k of ['q', 'k', 'v']) shapes.set(`model.layers.${l}.self_attn.${k}_proj.bias`, [k === 'q' ? 24 : 12]);
  const r = rng(seed);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  const weights: Weights = new Map();
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = Float32Array.from({ length: n }, () => (name.includes('norm') ? 1 + 0.1 * (r() - 0.5) : 0.4 * (r() - 0.5)));
    tensors.set(name, { shape, data });
    weights.set(name, Float64Array.from(data));
  }
  const dir = path.join(tmp, `${arch}-${seed}`);
  mkdirSync(dir);
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(raw));
  await writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  return { dir, weights };
}

const seqs = [[1, 5, 9, 4, 7], [3, 3, 8], [2, 11, 13, 17, 19, 23, 29]];

describe.each(['llama', 'qwen2'] as const)('a public-layout %s reward model', (arch) => {
  it('loads (score.weight, no lm_head) and scores every sequence as the float64 reference', async () => {
    const { dir, weights } = await publicFolder(arch, 5);
    const model = await Model.load(dir);
    expect(model.config.scoreHead).toBe(true);
    const r = await model.reward(seqs);
    seqs.forEach((s, b) => {
      const ref = referenceLogits(model.config, weights, s);
      expect(Math.abs(r[b] - ref[s.length - 1][0]), `row ${b}`).toBeLessThan(1e-4);
    });
  });

  it('the value head backward matches central finite differences of the reference (backbone and head)', async () => {
    const { dir } = await publicFolder(arch, 9);
    const model = await Model.load(dir);
    const c = Float32Array.from([0.7, -1.3, 0.4]); // loss = sum_b c_b r_b
    await model.zeroGrad();
    await model.valueForward(seqs);
    await model.valueBackward(c);
    const w: Weights = new Map();
    for (const [name, t] of model.tensors()) w.set(name, Float64Array.from(t.data));
    const loss = () => seqs.reduce((s, q, b) => s + c[b] * referenceLogits(model.config, w, q)[q.length - 1][0], 0);
    const r = rng(3);
    for (const name of [...model.tensorNames().map((t) => t.name), 'score.weight']) {
      const grad = model.getGrad(name), param = w.get(name) as Float64Array;
      let gmax = 0;
      for (const g of grad) gmax = Math.max(gmax, Math.abs(g));
      expect(gmax, `${name} has a gradient`).toBeGreaterThan(0);
      for (let k = 0; k < 2; k++) {
        const i = Math.floor(r() * param.length), eps = 1e-5, orig = param[i];
        param[i] = orig + eps;
        const up = loss();
        param[i] = orig - eps;
        const down = loss();
        param[i] = orig;
        const fd = (up - down) / (2 * eps);
        expect(Math.abs(grad[i] - fd), `${name}[${i}]: ${grad[i]} vs ${fd}`).toBeLessThan(2e-4 + 2e-3 * Math.abs(fd) + 1e-3 * gmax);
      }
    }
  });
});

describe('preference pairs sharing their dialogue', () => {
  it('scores and gradients with the common prefix computed once equal those of the rows written out in full', async () => {
    const { dir } = await publicFolder('llama', 13);
    const a = await Model.load(dir), b = await Model.load(dir);
    const common = [1, 5, 9, 4, 7, 2, 8];
    const pairs = [[...common, 11, 12, 13], [...common, 14, 15], [3, 3, 8, 10], [3, 3, 8, 16, 17, 18]];
    const from = [common.length + 1, common.length + 1, 4, 4]; // prefix = tokens before from - 1
    const dr = Float32Array.from([0.5, -0.5, -1.25, 1.25]);
    await a.zeroGrad();
    await b.zeroGrad();
    const full = await a.valueForward(pairs);
    await a.valueBackward(dr);
    const shared = await b.valueForward(pairs, { from });
    await b.valueBackward(dr);
    full.forEach((x, i) => expect(Math.abs(shared[i] - x), `row ${i}`).toBeLessThan(1e-5));
    for (const name of [...a.tensorNames().map((t) => t.name), 'score.weight']) {
      const ga = a.getGrad(name), gb = b.getGrad(name);
      let diff = 0, scale = 0;
      for (let i = 0; i < ga.length; i++) {
        diff = Math.max(diff, Math.abs(ga[i] - gb[i]));
        scale = Math.max(scale, Math.abs(ga[i]));
      }
      expect(diff, name).toBeLessThanOrEqual(1e-5 + 1e-4 * scale);
    }
  });
});

describe('reward model state', () => {
  it('saves the public layout and loads back to the same scores; valueBackward needs a valueForward just before', async () => {
    const { dir } = await publicFolder('llama', 2);
    const model = await Model.load(dir);
    const out = path.join(tmp, 'saved');
    await model.save(out);
    const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(cfg.architectures).toEqual(['LlamaForSequenceClassification']);
    const back = await Model.load(out);
    expect(Array.from(await back.reward(seqs))).toEqual(Array.from(await model.reward(seqs)));
    await back.valueForward(seqs);
    await back.score([[1, 2, 3]], { from: 1 }); // any other forward in between
    await expect(back.valueBackward(new Float32Array(3))).rejects.toThrow(/call value_forward first/);
    await expect(back.valueForward([[1, 2, 99]])).rejects.toThrow();
    const lm = Model.create(parseConfig({ ...hfConfig('llama'), architectures: ['LlamaForCausalLM'] }));
    await expect(lm.valueForward(seqs)).rejects.toThrow(/not a reward model/);
  });
});
