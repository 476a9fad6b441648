// The Llama-family model on the native engine, checked against an independent float64 reference.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseConfig, type ModelConfig } from '../src/models/config.js';
import type { NativeModel, NativePrefix } from '../src/native-api.js';
import { checkDtype, Model, type StepResult } from '../src/models/model.js';
import { kernels } from '../src/kernels/index.js';
import { CharTokenizer } from '../src/models/tokenizer.js';
import { rng } from './helpers.js';
import { referenceLogits, referenceLoss, type Weights } from './reference/llama.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const stories = path.resolve(process.env.WST_DASH_SHARED ?? path.join(here, '../../shared'), 'models/stories260K');
const haveStories = existsSync(path.join(stories, 'model.safetensors'));
if (!haveStories) console.warn(`[model.test] skipping stories260K tests: ${stories} not found (it lives in ../shared, beside the repository)`);

function tinyConfig(arch: 'llama' | 'qwen2' | 'qwen3', tied: boolean): ModelConfig {
  return parseConfig({
    model_type: arch, vocab_size: 37, hidden_size: 24, intermediate_size: 40, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, head_dim: arch === 'qwen3' ? 8 : undefined,
    rms_norm_eps: 1e-5, rope_theta: arch === 'llama' ? 10000 : 1000000, tie_word_embeddings: tied,
    max_position_embeddings: 128, bos_token_id: 1, eos_token_id: 2,
  });
}

function randomTokens(n: number, vocab: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => 3 + Math.floor(r() * (vocab - 3)));
}

function weightsOf(model: Model): Weights {
  const w: Weights = new Map();
  for (const [name, t] of model.tensors()) w.set(name, Float64Array.from(t.data));
  return w;
}

const archs = [
  ['llama', false], ['llama', true], ['qwen2', false], ['qwen3', true],
] as const;

describe.each(archs)('random %s model (tied=%s)', (arch, tied) => {
  const cfg = tinyConfig(arch, tied);
  const model = Model.create(cfg, { seed: 7, std: 0.3 });
  if (arch === 'qwen2') // non-zero biases so they are really checked
    for (const { name } of model.tensorNames())
      if (name.endsWith('.bias')) model.setTensor(name, Float32Array.from(model.getTensor(name), (_, i) => Math.sin(i + 1) * 0.2));
  if (arch === 'qwen3')
    for (const { name } of model.tensorNames())
      if (name.endsWith('_norm.weight')) model.setTensor(name, Float32Array.from(model.getTensor(name), (_, i) => 1 + Math.cos(i) * 0.3));

  it('logits match the float64 reference at every position, on ragged batches', async () => {
    const seqs = [randomTokens(11, cfg.vocabSize, 1), randomTokens(6, cfg.vocabSize, 2)];
    const T = 11;
    const tokens = new Int32Array(2 * T);
    seqs.forEach((s, b) => tokens.set(s, b * T));
    const logits = await model.forwardLogits(tokens, 2, T);
    const w = weightsOf(model);
    seqs.forEach((s, b) => {
      const ref = referenceLogits(cfg, w, s);
      for (let t = 0; t < s.length; t++)
        for (let v = 0; v < cfg.vocabSize; v++)
          expect(Math.abs(logits[(b * T + t) * cfg.vocabSize + v] - ref[t][v])).toBeLessThan(1e-4);
    });
  });

  it('every parameter gradient matches central finite differences of the float64 reference', async () => {
    const seq = randomTokens(9, cfg.vocabSize, 3);
    await model.zeroGrad();
    const res = await model.trainSft({ sequences: [seq], from: 3 });
    const w = weightsOf(model);
    expect(res.loss).toBeCloseTo(referenceLoss(cfg, w, seq, 3), 4);
    const r = rng(11);
    for (const { name } of model.tensorNames()) {
      const grad = model.getGrad(name);
      const param = w.get(name) as Float64Array;
      let gmax = 0;
      for (const g of grad) gmax = Math.max(gmax, Math.abs(g));
      expect(gmax, `${name} has a non-zero gradient`).toBeGreaterThan(0);
      for (let k = 0; k < 3; k++) {
        const i = Math.floor(r() * param.length);
        const eps = 1e-5, orig = param[i];
        param[i] = orig + eps;
        const up = referenceLoss(cfg, w, seq, 3);
        param[i] = orig - eps;
        const down = referenceLoss(cfg, w, seq, 3);
        param[i] = orig;
        const fd = (up - down) / (2 * eps);
        expect(Math.abs(grad[i] - fd), `${name}[${i}]: analytic ${grad[i]} vs finite difference ${fd}`).toBeLessThan(2e-4 + 2e-3 * Math.abs(fd) + 1e-3 * gmax);
      }
    }
    await model.zeroGrad();
  });

  it('GRPO at ratio 1 with A = 1 (bnpo) gives the SFT gradient', async () => {
    const seq = randomTokens(10, cfg.vocabSize, 4);
    await model.zeroGrad();
    await model.trainSft({ sequences: [seq], from: 4 });
    const sft = model.getGrad('model.layers.0.self_attn.q_proj.weight');
    await model.zeroGrad();
    const { logprobs } = await model.score([seq], { from: 4 });
    const res = await model.trainGrpo({ sequences: [seq], from: 4 }, { advantages: [1], oldLogprobs: logprobs, lossType: 'bnpo' });
    expect(res.kept).toBe(1);
    const grpo = model.getGrad('model.layers.0.self_attn.q_proj.weight');
    for (let i = 0; i < sft.length; i++) expect(Math.abs(grpo[i] - sft[i])).toBeLessThan(1e-6 + 1e-4 * Math.abs(sft[i]));
    await model.zeroGrad();
  });

  it('shared prompt prefixes (sharePrefix) give the full rows\' log-probs, GRPO loss and every gradient', async () => {
    // Two prompts, their completions interleaved (the packing must regroup and restore the order),
    // ragged completions, one prompt of a single token (an empty shared prefix).
    const pa = randomTokens(9, cfg.vocabSize, 11), pb = randomTokens(5, cfg.vocabSize, 12), pc = randomTokens(1, cfg.vocabSize, 13);
    const rows = [[pa, 4], [pb, 6], [pa, 2], [pc, 3], [pb, 5], [pa, 6]] as const;
    const sequences = rows.map(([p, n], i) => [...p, ...randomTokens(n, cfg.vocabSize, 20 + i)]);
    const from = rows.map(([p]) => p.length);
    const full = await model.score(sequences, { from, entropy: true });
    const shared = await model.score(sequences, { from, entropy: true, sharePrefix: true, batchSize: 4 });
    for (let b = 0; b < sequences.length; b++) {
      expect(shared.logprobs[b].length).toBe(full.logprobs[b].length);
      for (let i = 0; i < full.logprobs[b].length; i++) {
        expect(Math.abs(shared.logprobs[b][i] - full.logprobs[b][i])).toBeLessThan(1e-5);
        expect(Math.abs(shared.entropy![b][i] - full.entropy![b][i])).toBeLessThan(1e-5);
      }
    }
    const advantages = [0.8, -0.5, -1.1, 0.3, 0.9, -0.4];
    const oldLogprobs = full.logprobs.map((lp, b) => lp.map((x, i) => x + 0.2 * Math.sin(b * 7 + i)));
    const refLogprobs = full.logprobs.map((lp, b) => lp.map((x, i) => x + 0.05 * Math.cos(b + i)));
    const opts = { advantages, oldLogprobs, refLogprobs, beta: 0.04, clipHigh: 0.28 };
    const grads = async (sharePrefix: boolean) => {
      await model.zeroGrad();
      const r = await model.trainGrpo({ sequences, from }, { ...opts, sharePrefix });
      return { r, g: model.tensorNames().map(({ name }) => model.getGrad(name)) };
    };
    const a = await grads(false), b = await grads(true);
    await model.zeroGrad();
    expect(Math.abs(b.r.loss - a.r.loss)).toBeLessThan(1e-5 * Math.max(1, Math.abs(a.r.loss)));
    expect(b.r.tokens).toBe(a.r.tokens);
    let gmax = 0;
    a.g.forEach((ga, t) => {
      for (let i = 0; i < ga.length; i++) {
        gmax = Math.max(gmax, Math.abs(ga[i]));
        expect(Math.abs(b.g[t][i] - ga[i])).toBeLessThan(1e-6 + 1e-4 * Math.abs(ga[i]));
      }
    });
    expect(gmax).toBeGreaterThan(1e-4);
  });

  it('trainGrpoMany: the micro-batches of a step in one call give trainGrpo\'s losses and summed gradients', async () => {
    const pa = randomTokens(7, cfg.vocabSize, 31), pb = randomTokens(4, cfg.vocabSize, 32);
    const mk = (p: number[], n: number, seed: number) => [...p, ...randomTokens(n, cfg.vocabSize, seed)];
    const calls = [
      { batch: { sequences: [mk(pa, 3, 1), mk(pa, 5, 2), mk(pb, 2, 3)], from: [7, 7, 4] }, options: { advantages: [1.2, -0.6, 0.4], sharePrefix: true, lossScale: 0.3 } },
      { batch: { sequences: [mk(pb, 6, 4), mk(pa, 1, 5)], from: [4, 7] }, options: { advantages: [-0.9, 0.7], lossScale: 0.5 } },
      { batch: { sequences: [mk(pa, 4, 6), mk(pa, 4, 7), mk(pa, 2, 8), mk(pb, 3, 9)], from: [7, 7, 7, 4] }, options: { advantages: [0.5, -1.3, 0.2, 0.9], sharePrefix: true, lossScale: 0.2 } },
    ];
    await model.zeroGrad();
    const one: StepResult[] = [];
    for (const c of calls) one.push(await model.trainGrpo(c.batch, c.options));
    const want = model.tensorNames().map(({ name }) => model.getGrad(name));
    await model.zeroGrad();
    const many = await model.trainGrpoMany(calls);
    const got = model.tensorNames().map(({ name }) => model.getGrad(name));
    await model.zeroGrad();
    expect(many.length).toBe(3);
    many.forEach((r, i) => {
      expect(Math.abs(r.loss - one[i].loss)).toBeLessThan(1e-5 * Math.max(1, Math.abs(one[i].loss)));
      expect(r.tokens).toBe(one[i].tokens);
    });
    let gmax = 0;
    want.forEach((gw, t) => {
      for (let i = 0; i < gw.length; i++) {
        gmax = Math.max(gmax, Math.abs(gw[i]));
        expect(Math.abs(got[t][i] - gw[i])).toBeLessThan(1e-6 + 1e-4 * Math.abs(gw[i]));
      }
    });
    expect(gmax).toBeGreaterThan(1e-4);
    await expect(model.trainGrpoMany([])).rejects.toThrow(/microBatches must be a non-empty array/);
    await expect(model.trainGrpoMany([calls[0], { ...calls[1], options: { advantages: [1] } }])).rejects.toThrow(/microBatches\[1\]: advantages must have one value per sequence/);
  });

  it('generate with keepPromptActivations: the next sharePrefix step takes its prompts from the store, with the same gradients', async () => {
    const pa = randomTokens(9, cfg.vocabSize, 51), pb = randomTokens(6, cfg.vocabSize, 52);
    const prompts = [pa, pb, pa, pb, pa];
    const hits0 = model.promptStore.hits;
    const gens = await model.generate(prompts, { maxNewTokens: 4, seed: 5, temperature: 1, keepPromptActivations: true });
    const cpu = model.device === 'cpu';  // the store is a CPU-backend optimisation
    expect(model.promptStore.stored).toBe(cpu ? 2 : 0);
    const sequences = gens.map((g) => [...g.promptIds, ...g.ids]);
    const from = gens.map((g) => g.promptIds.length);
    const advantages = [0.7, -1.2, 0.4, 0.9, -0.5];
    const grads = async (sharePrefix: boolean) => {
      await model.zeroGrad();
      const r = await model.trainGrpo({ sequences, from }, { advantages, sharePrefix });
      return { r, g: model.tensorNames().map(({ name }) => model.getGrad(name)) };
    };
    const stored = await grads(true);
    expect(model.promptStore.hits).toBe(hits0 + (cpu ? 1 : 0));
    const full = await grads(false);  // every row written out, nothing shared or stored
    await model.zeroGrad();
    expect(stored.r.tokens).toBe(full.r.tokens);
    expect(Math.abs(stored.r.loss - full.r.loss)).toBeLessThan(1e-5 * Math.max(1, Math.abs(full.r.loss)));
    let gmax = 0;
    full.g.forEach((gf, t) => {
      for (let i = 0; i < gf.length; i++) {
        gmax = Math.max(gmax, Math.abs(gf[i]));
        expect(Math.abs(stored.g[t][i] - gf[i])).toBeLessThan(1e-6 + 1e-4 * Math.abs(gf[i]));
      }
    });
    expect(gmax).toBeGreaterThan(1e-4);
    // The store lives as long as the weights: an optimizer step (here one that changes nothing but
    // the version) empties it.
    await model.optimizerStep({ lr: 0 });
    expect(model.promptStore.stored).toBe(0);
  });
});

describe('generation on a random model', () => {
  const cfg = tinyConfig('llama', false);
  const model = Model.create(cfg, { seed: 3, std: 0.5 });
  const prompts = [randomTokens(5, cfg.vocabSize, 10), randomTokens(1, cfg.vocabSize, 11), randomTokens(9, cfg.vocabSize, 12),
    randomTokens(3, cfg.vocabSize, 13), randomTokens(7, cfg.vocabSize, 14)];

  it('decode with the KV cache matches a full prefill at every position', async () => {
    const gens = await model.generate(prompts, { maxNewTokens: 12, temperature: 1, seed: 5, stop: [] });
    const seqs = gens.map((g) => [...g.promptIds, ...g.ids]);
    const { logprobs } = await model.score(seqs, { from: prompts.map((p) => p.length) });
    gens.forEach((g, i) => {
      expect(logprobs[i].length).toBe(g.ids.length);
      for (let t = 0; t < g.ids.length; t++) expect(Math.abs(logprobs[i][t] - g.logprobs[t])).toBeLessThan(1e-4);
    });
  });

  it('stops every row at the model context (prompt + new tokens <= max_position_embeddings) and refuses a prompt that fills it', async () => {
    const context = cfg.maxPositionEmbeddings; // 128
    const long = randomTokens(context - 5, cfg.vocabSize, 21), short = randomTokens(4, cfg.vocabSize, 22);
    const gens = await model.generate([long, short], { maxNewTokens: 200, temperature: 1, seed: 9, stop: [], batchSize: 2 });
    for (const g of gens) {
      expect(g.promptIds.length + g.ids.length).toBeLessThanOrEqual(context);
      if (g.finishReason === 'length') expect(g.promptIds.length + g.ids.length).toBe(context);
    }
    await expect(model.generate([randomTokens(context, cfg.vocabSize, 23)], { maxNewTokens: 1 })).rejects.toThrow(/prompt 0 has 128 tokens; the model's context is 128 positions/);
  });

  it('batched ragged generation (with continuous batching) equals one-by-one', async () => {
    const seeds = [101, 202, 303, 404, 505];
    const batched = await model.generate(prompts, { maxNewTokens: 10, temperature: 0.8, topK: 20, seed: seeds, batchSize: 3 });
    for (let i = 0; i < prompts.length; i++) {
      const [alone] = await model.generate([prompts[i]], { maxNewTokens: 10, temperature: 0.8, topK: 20, seed: [seeds[i]] });
      expect(alone.ids).toEqual(batched[i].ids);
    }
  });

  it('repeated prompts (a GRPO group) are prefilled once and decode exactly as when given alone', async () => {
    const group = [prompts[2], prompts[2], prompts[0], prompts[2], prompts[0], prompts[2]];
    const seeds = [11, 12, 13, 14, 15, 16];
    const batched = await model.generate(group, { maxNewTokens: 10, temperature: 1, seed: seeds, batchSize: 4 });
    for (let i = 0; i < group.length; i++) {
      const [alone] = await model.generate([group[i]], { maxNewTokens: 10, temperature: 1, seed: [seeds[i]] });
      expect(batched[i].ids).toEqual(alone.ids);
      for (let t = 0; t < alone.logprobs.length; t++) expect(Math.abs(batched[i].logprobs[t] - alone.logprobs[t])).toBeLessThan(1e-5);
    }
  });

  it('stops on stop ids and reports the reason', async () => {
    const [g] = await model.generate([prompts[0]], { maxNewTokens: 50, temperature: 1, seed: 1 });
    const stopAt = g.ids[2];
    const [s] = await model.generate([prompts[0]], { maxNewTokens: 50, temperature: 1, seed: 1, stop: [stopAt] });
    expect(s.ids).toEqual(g.ids.slice(0, g.ids.indexOf(stopAt) + 1));
    expect(s.finishReason).toBe('stop');
  });

  it('stop strings cut the text and drop tokens decoded after the stop', async () => {
    const tok = new CharTokenizer([...'abcdefghij\n']);
    const cfgChar = parseConfig({ model_type: 'llama', vocab_size: tok.vocabSize, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1,
      num_attention_heads: 2, num_key_value_heads: 1, bos_token_id: 1, eos_token_id: 2 });
    const m = Model.create(cfgChar, { seed: 4, std: 0.5, tokenizer: tok });
    const [free] = await m.generate(['abc'], { maxNewTokens: 60, temperature: 1, seed: 3, stop: [] });
    const text = free.text!;
    const stopChar = [...text].find((c, i) => i > 0 && c !== '\n')!;
    const [cut] = await m.generate(['abc'], { maxNewTokens: 60, temperature: 1, seed: 3, stop: [stopChar], stepsPerCall: 16 });
    const at = text.indexOf(stopChar);
    expect(cut.text).toBe(text.slice(0, at));
    expect(cut.ids).toEqual(free.ids.slice(0, at + 1));
    expect(cut.logprobs.length).toBe(cut.ids.length);
    expect(cut.finishReason).toBe('stop');
  });

  it('streams the same tokens as generate', async () => {
    const [g] = await model.generate([prompts[2]], { maxNewTokens: 20, temperature: 1, seed: 9 });
    const streamed: number[] = [];
    for await (const chunk of model.stream([prompts[2]], { maxNewTokens: 20, temperature: 1, seed: 9, stepsPerCall: 3 })) streamed.push(...chunk.ids);
    expect(streamed).toEqual(g.ids);
  });

  it('rejects bad input with clear errors', async () => {
    await expect(model.generate([[999]], {})).rejects.toThrow(/prompt\[0\] = 999/);
    await expect(model.generate([[3]], { maxNewTokens: 0 })).rejects.toThrow(/maxNewTokens/);
    await expect(model.generate([[3]], { temperature: -1 })).rejects.toThrow(/temperature/);
    await expect(model.generate(['text'], {})).rejects.toThrow(/no tokenizer/);
    await expect(model.logits([])).rejects.toThrow(/ids must not be empty/);
  });

  it('a generation context frees its KV caches on dispose (generate does it); a disposed one refuses work', async () => {
    const handle = (model as unknown as { handle: NativeModel }).handle;
    const ctx = handle.createContext({ maxBatch: 2, maxSeq: 16 });
    expect(ctx.active()).toBe(0);
    ctx.dispose();
    ctx.dispose();  // idempotent
    expect(() => ctx.decode({ steps: 1 }, false)).toThrow(/disposed/);
    expect(() => ctx.active()).toThrow(/disposed/);
    // Stopping a stream early still frees its context, and generation goes on working.
    for await (const chunk of model.stream([[3, 4]], { maxNewTokens: 8, temperature: 0 })) {
      expect(chunk.ids.length).toBeGreaterThan(0);
      break;
    }
    const again = await model.generate([[3, 4]], { maxNewTokens: 4, temperature: 0 });
    expect(again[0].ids.length).toBeGreaterThan(0);
  });

  it('rejects a malformed shared-prefix description with errors naming the field', () => {
    const handle = (model as unknown as { handle: NativeModel }).handle;
    const B = 2, T = 3;
    const tokens = new Int32Array(B * T).fill(4), targets = new Int32Array(B * T).fill(-1);
    const ok = { tokens: new Int32Array(2 * 4).fill(5), count: 2, length: 4, lengths: Int32Array.from([4, 2]), rowPrefix: Int32Array.from([0, 1]) };
    const call = (prefix: unknown) => handle.score({ tokens, targets, batch: B, seq: T, prefix: prefix as NativePrefix }, false);
    expect(() => call(ok)).not.toThrow();
    expect(() => call(5)).toThrow(/prefix must be an object/);
    expect(() => call({ ...ok, count: 0 })).toThrow(/prefix.count must be an integer in \[1, /);
    expect(() => call({ ...ok, length: 1.5 })).toThrow(/prefix.length must be an integer/);
    expect(() => call({ ...ok, tokens: new Float32Array(8) })).toThrow(/prefix.tokens must be an Int32Array/);
    expect(() => call({ ...ok, tokens: new Int32Array(7) })).toThrow(/prefix.tokens must have length 8/);
    expect(() => call({ ...ok, tokens: new Int32Array(8).fill(999) })).toThrow(/prefix.tokens/);
    expect(() => call({ ...ok, lengths: Int32Array.from([5, 2]) })).toThrow(/prefix.lengths\[0\] must be in 0..4/);
    expect(() => call({ ...ok, rowPrefix: Int32Array.from([1, 0]) })).toThrow(/rowPrefix must be non-decreasing/);
    expect(() => call({ ...ok, rowPrefix: Int32Array.from([0, 2]) })).toThrow(/rowPrefix/);
    expect(() => call({ ...ok, rowPrefix: Int32Array.from([0]) })).toThrow(/prefix.rowPrefix must have length 2/);
  });
});

describe('training', () => {
  it('a few hundred SFT steps on a copy task drive the loss down', async () => {
    const cfg = parseConfig({ model_type: 'llama', vocab_size: 12, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,
      num_attention_heads: 4, num_key_value_heads: 2, tie_word_embeddings: true, bos_token_id: 1, eos_token_id: 2 });
    const model = Model.create(cfg, { seed: 1, std: 0.1 });
    const r = rng(5);
    const batch = () => Array.from({ length: 8 }, () => {
      const s = Array.from({ length: 5 }, () => 4 + Math.floor(r() * 8));
      return [1, ...s, 3, ...s];
    });
    let first = 0, last = 0;
    for (let step = 0; step < 250; step++) {
      const res = await model.trainSft({ sequences: batch(), from: 7 });
      await model.optimizerStep({ lr: 3e-3, weightDecay: 0, maxGradNorm: 1 });
      if (step === 0) first = res.loss;
      last = res.loss;
    }
    expect(first).toBeGreaterThan(1.8);
    expect(last).toBeLessThan(first * 0.5);
  });

  it('a checkpoint resumes to exactly the step it would have taken', async () => {
    const cfg = tinyConfig('qwen2', false);
    const a = Model.create(cfg, { seed: 2, std: 0.1 });
    const seqs = [randomTokens(8, cfg.vocabSize, 21), randomTokens(6, cfg.vocabSize, 22)];
    for (let i = 0; i < 3; i++) {
      await a.trainSft({ sequences: seqs, from: 2 });
      await a.optimizerStep({ lr: 1e-2, weightDecay: 0.1, maxGradNorm: 1 });
    }
    const dir = mkdtempSync(path.join(tmpdir(), 'wst-ckpt-'));
    try {
      await a.save(path.join(dir, 'ckpt'), { training: { note: 'test' } });
      const b = await Model.load(path.join(dir, 'ckpt'));
      expect(b.step).toBe(3);
      for (const m of [a, b]) {
        await m.trainSft({ sequences: seqs, from: 2 });
        await m.optimizerStep({ lr: 1e-2, weightDecay: 0.1, maxGradNorm: 1 });
      }
      for (const { name } of a.tensorNames())
        expect(Buffer.from(b.getTensor(name).buffer).equals(Buffer.from(a.getTensor(name).buffer)), name).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!haveStories)('stories260K (real pretrained checkpoint)', () => {
  it('logits match the float64 reference, greedy decoding is deterministic, decode equals prefill', async () => {
    const model = await Model.load(stories);
    const w = weightsOf(model);
    const [g1] = await model.generate([[1]], { maxNewTokens: 40, temperature: 0 });
    const [g2] = await model.generate([[1]], { maxNewTokens: 40, temperature: 0 });
    expect(g1.ids).toEqual(g2.ids);
    const seq = [1, ...g1.ids];
    const ref = referenceLogits(model.config, w, seq);
    const T = seq.length;
    const logits = await model.forwardLogits(Int32Array.from(seq), 1, T);
    let worst = 0;
    for (let t = 0; t < T; t++)
      for (let v = 0; v < model.config.vocabSize; v++) worst = Math.max(worst, Math.abs(logits[t * model.config.vocabSize + v] - ref[t][v]));
    expect(worst).toBeLessThan(1e-4);
    // Greedy ids: the reference's argmax at each position reproduces the generated continuation.
    for (let t = 0; t < g1.ids.length; t++) {
      let best = 0;
      for (let v = 1; v < model.config.vocabSize; v++) if (ref[t][v] > ref[t][best]) best = v;
      expect(best, `position ${t}`).toBe(g1.ids[t]);
    }
  });

  it('greedy decoding from BOS gives the ids llama.cpp gives on our GGUF export', async () => {
    // Recorded with node-llama-cpp 3.21.1 on `wst-dash export gguf` of this checkpoint (F32 and F16),
    // and equal to the float64 reference's argmax chain.
    const model = await Model.load(stories);
    const [g] = await model.generate([[1]], { maxNewTokens: 20, temperature: 0 });
    expect(g.ids).toEqual([461, 461, 401, 401, 401, 461, 378, 455, 473, 456, 435, 299, 362, 409, 283, 264, 283, 452, 288, 13]);
  });

  it('safetensors save/load round trip is bit-exact', async () => {
    const model = await Model.load(stories);
    const dir = mkdtempSync(path.join(tmpdir(), 'wst-stories-'));
    try {
      await model.save(path.join(dir, 'copy'));
      const again = await Model.load(path.join(dir, 'copy'));
      for (const { name } of model.tensorNames())
        expect(Buffer.from(again.getTensor(name).buffer).equals(Buffer.from(model.getTensor(name).buffer)), name).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('bf16 mixed precision', () => {
  const cfg = tinyConfig('qwen2', false);
  const maxRel = (x: Float32Array, y: Float32Array) => {
    let e = 0, d = 0;
    for (let i = 0; i < x.length; i++) {
      e = Math.max(e, Math.abs(x[i] - y[i]));
      d = Math.max(d, Math.abs(y[i]));
    }
    return e / d;
  };
  it('defaults to fp32 on the CPU and bf16 on CUDA, $WST_DASH_DTYPE overriding; a bad dtype is a clear error', () => {
    expect(checkDtype(undefined, 'cpu')).toBe('fp32');
    expect(checkDtype(undefined, 'cuda')).toBe('bf16');
    expect(checkDtype('fp32', 'cuda')).toBe('fp32');
    process.env.WST_DASH_DTYPE = 'bf16';
    try {
      expect(checkDtype(undefined, 'cpu')).toBe('bf16');
      process.env.WST_DASH_DTYPE = 'fp16';
      expect(() => checkDtype(undefined, 'cpu')).toThrow(/WST_DASH_DTYPE must be "fp32" or "bf16"/);
    } finally {
      delete process.env.WST_DASH_DTYPE;
    }
    expect(() => Model.create(cfg, { dtype: 'half' as never })).toThrow(/options.dtype must be "fp32" or "bf16"/);
  });
  it('a bf16 model agrees with the fp32 one within bf16 tolerances (logits, SFT loss and gradients), and differs', async () => {
    const a = Model.create(cfg, { seed: 3, std: 0.1 });
    const b = Model.create(cfg, { seed: 3, std: 0.1, dtype: 'bf16' });
    expect([a.dtype, b.dtype]).toEqual(['fp32', 'bf16']);
    const ids = [1, 5, 9, 2, 7, 3, 8, 4, 6];
    const la = await a.logits(ids), lb = await b.logits(ids);
    expect(maxRel(lb, la)).toBeLessThan(2e-2);
    expect(maxRel(lb, la)).toBeGreaterThan(1e-6);
    const batch = { sequences: [ids, [4, 4, 2, 9, 1]], from: 2 };
    const ra = await a.trainSft(batch), rb = await b.trainSft(batch);
    expect(Math.abs(rb.loss - ra.loss) / Math.abs(ra.loss)).toBeLessThan(2e-3);
    for (const { name } of a.tensorNames()) expect(maxRel(b.getGrad(name), a.getGrad(name)), name).toBeLessThan(5e-2);
  });
  it.skipIf(kernels.backend !== 'cuda')('on the GPU (bf16 by default) it agrees with the fp32 CPU model within bf16 tolerances', async () => {
    const a = Model.create(cfg, { seed: 3, std: 0.1 });
    const b = Model.create(cfg, { seed: 3, std: 0.1, device: 'cuda' });
    expect(b.dtype).toBe('bf16');
    const ids = [1, 5, 9, 2, 7, 3, 8, 4, 6];
    expect(maxRel(await b.logits(ids), await a.logits(ids))).toBeLessThan(2e-2);
    const batch = { sequences: [ids, [4, 4, 2, 9, 1]], from: 2 };
    await a.trainSft(batch);
    await b.trainSft(batch);
    for (const { name } of a.tensorNames()) expect(maxRel(b.getGrad(name), a.getGrad(name)), name).toBeLessThan(5e-2);
  });
  it('GRPO micro-batches in CPU lanes give what they give one by one, in bf16 too', async () => {
    const mk = () => Model.create(cfg, { seed: 4, std: 0.1, dtype: 'bf16' });
    const a = mk(), b = mk();
    const seqs = Array.from({ length: 8 }, (_, i) => Array.from({ length: 6 + (i % 3) }, (_, t) => 3 + ((i * 5 + t * 7) % 30)));
    const mbs = [0, 2, 4, 6].map((i) => ({ batch: { sequences: seqs.slice(i, i + 2), from: 3 }, options: { advantages: [1 - i / 4, -0.5] } }));
    const many = await a.trainGrpoMany(mbs);
    const one = [];
    for (const mb of mbs) one.push(await b.trainGrpo(mb.batch, mb.options));
    for (let i = 0; i < mbs.length; i++) expect(Math.abs(many[i].loss - one[i].loss)).toBeLessThan(1e-5 * Math.max(1, Math.abs(one[i].loss)));
    for (const { name } of a.tensorNames()) expect(maxRel(a.getGrad(name), b.getGrad(name)), name).toBeLessThan(1e-4);
    const gen = await a.generate([[3, 4, 5]], { maxNewTokens: 5, temperature: 0 });
    expect(gen[0].ids.length).toBe(5);
  });
});

describe('device placement', () => {
  const cfg = tinyConfig('qwen3', true);
  it('rejects an unknown device with a clear error', () => {
    expect(() => Model.create(cfg, { device: 'gpu' as never })).toThrow(/options.device must be "cpu" or "cuda"/);
  });
  it.skipIf(kernels.backend === 'cuda')('asks for the CUDA build when the addon has no usable GPU', () => {
    expect(() => Model.create(cfg, { device: 'cuda' })).toThrow(/cuda/i);
  });
  // Runs where a GPU is present (the CUDA addon loaded): the same model resident on the GPU agrees
  // with the CPU one on logits, a train step's gradients and greedy generation.
  it.skipIf(kernels.backend !== 'cuda')('a model resident on the GPU matches the CPU model (logits, greedy tokens, SFT gradients)', async () => {
    const a = Model.create(cfg, { seed: 9, std: 0.3 });
    const b = Model.create(cfg, { seed: 9, std: 0.3, device: 'cuda', dtype: 'fp32' });
    expect(b.device).toBe('cuda');
    const ids = [1, 5, 9, 2, 7, 3, 8];
    const la = await a.logits(ids), lb = await b.logits(ids);
    let err = 0, den = 0;
    for (let i = 0; i < la.length; i++) {
      err = Math.max(err, Math.abs(la[i] - lb[i]));
      den = Math.max(den, Math.abs(la[i]));
    }
    expect(err / den).toBeLessThan(1e-4);
    const [ga] = await a.generate([ids], { maxNewTokens: 8, temperature: 0 });
    const [gb] = await b.generate([ids], { maxNewTokens: 8, temperature: 0 });
    expect(gb.ids).toEqual(ga.ids);
    const batch = { sequences: [ids, [4, 4, 2, 9, 1]], from: 2 };
    const ra = await a.trainSft(batch), rb = await b.trainSft(batch);
    expect(Math.abs(rb.loss - ra.loss)).toBeLessThan(1e-5 * Math.max(1, Math.abs(ra.loss)));
    for (const { name } of a.tensorNames()) {
      const x = a.getGrad(name), y = b.getGrad(name);
      let e = 0, d = 0;
      for (let i = 0; i < x.length; i++) {
        e = Math.max(e, Math.abs(x[i] - y[i]));
        d = Math.max(d, Math.abs(x[i]));
      }
      expect(e, name).toBeLessThanOrEqual(1e-3 * d + 1e-7);
    }
  });
});
