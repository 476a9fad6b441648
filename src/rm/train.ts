// Reward-model training: Bradley-Terry loss -log σ(r_chosen − r_rejected) on preference pairs, the
// score read at the last token (Hugging Face *ForSequenceClassification), held-out pairwise
// accuracy after every epoch. Optionally a language-model warm-up of the backbone on the same
// texts first (the usual start of a reward model: an SFT model).
import { parseConfig, type ModelConfig } from '../models/config.js';
import { Model, type Device } from '../models/model.js';
import { CharTokenizer } from '../models/tokenizer.js';
import { shuffleInPlace } from '../rl/tasks/common.js';
import { pairwiseAccuracy } from './baselines.js';
import { rewardText, type PreferencePair } from './preferences.js';

export interface RewardTrainOptions {
  model: Model;
  train: readonly PreferencePair[];
  heldOut: readonly PreferencePair[];
  /** Bradley-Terry epochs (default 3). */
  epochs?: number;
  /** Language-model warm-up epochs on the training texts before (default 0). */
  lmEpochs?: number;
  /** Pairs per optimizer step (default 8). */
  pairsPerStep?: number;
  /** Peak learning rate, linear warm-up over 20 steps then cosine (default 1e-3). */
  lr?: number;
  /** The last N characters of each text are scored (default 256; 0: all). */
  maxChars?: number;
  seed?: number;
  /** Each pair's common start (the shared dialogue) computed once in the training forward (default true). */
  sharePrefix?: boolean;
  onEpoch?: (e: RewardEpoch) => void | Promise<void>;
  onStep?: (phase: 'lm' | 'rm', step: number, steps: number, loss: number) => void;
}

export interface RewardEpoch {
  epoch: number;
  loss: number;
  heldout_accuracy: number;
  seconds: number;
}

export interface RewardEvaluation {
  accuracy: number;
  n: number;
  chosen_mean: number;
  rejected_mean: number;
  margin_mean: number;
  margin_sd: number;
}

const cosine = (peak: number, step: number, total: number) => peak * Math.min(1, (step + 1) / 20) * 0.5 * (1 + Math.cos((Math.PI * step) / total));

/**
 * Token ids a reward model scores: rewardText, then the end-of-sequence token when the model has
 * one (the score is read there: the same readout token for every text, as RM trainers append EOS).
 */
export function rewardIds(model: Model, text: string, maxChars: number): number[] {
  const eos = model.config.eosTokenId;
  const end = Array.isArray(eos) ? eos[0] : eos;
  const ids = model.encode(rewardText(text, maxChars), false);
  if (end !== null && end !== undefined) ids.push(end);
  const limit = model.config.maxPositionEmbeddings;
  return ids.length > limit ? ids.slice(-limit) : ids;
}

/** The text a reward model scores for a prompt and a response (joined by one space unless the response starts with one). */
export function rewardInput(prompt: string, response: string): string {
  return prompt + (response.startsWith(' ') || response.startsWith('\n') || response === '' ? '' : ' ') + response;
}

/** Tokens two sequences share at their start, leaving each at least its last token (the readout). */
function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length) - 1;
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** A reward model's scores of (prompt, response) pairs, as train rm scored its texts. */
export async function rewardScores(model: Model, items: readonly { prompt: string; response: string }[], options: { maxChars?: number; batchSize?: number } = {}): Promise<number[]> {
  const ids = items.map((it) => rewardIds(model, rewardInput(it.prompt, it.response), options.maxChars ?? 256));
  return Array.from(await model.reward(ids, { batchSize: options.batchSize ?? 32 }));
}

const encoder = (model: Model, maxChars: number) => (text: string) => rewardIds(model, text, maxChars);

/** Pairwise accuracy (ties half) and score statistics of a reward model on pairs. */
export async function evaluateRewardModel(model: Model, pairs: readonly PreferencePair[], options: { maxChars?: number; batchSize?: number } = {}): Promise<RewardEvaluation> {
  const enc = encoder(model, options.maxChars ?? 256);
  const c = await model.reward(pairs.map((p) => enc(p.chosen)), { batchSize: options.batchSize ?? 32 });
  const r = await model.reward(pairs.map((p) => enc(p.rejected)), { batchSize: options.batchSize ?? 32 });
  const n = pairs.length, margins = Array.from(c, (x, i) => x - r[i]);
  const mean = (xs: ArrayLike<number>) => {
    let s = 0;
    for (let i = 0; i < xs.length; i++) s += xs[i];
    return s / Math.max(1, xs.length);
  };
  const mm = mean(margins);
  const sd = n > 1 ? Math.sqrt(margins.reduce((a, m) => a + (m - mm) ** 2, 0) / (n - 1)) : 0;
  return { accuracy: pairwiseAccuracy(c, r), n, chosen_mean: mean(c), rejected_mean: mean(r), margin_mean: mm, margin_sd: sd };
}

export async function trainRewardModel(o: RewardTrainOptions): Promise<RewardEpoch[]> {
  const { model } = o;
  if (!model.config.scoreHead) throw new Error('trainRewardModel: the model has no score head (config.scoreHead)');
  const maxChars = o.maxChars ?? 256, epochs = o.epochs ?? 3, lmEpochs = o.lmEpochs ?? 0, P = o.pairsPerStep ?? 8, lr = o.lr ?? 1e-3, seed = o.seed ?? 0;
  const enc = encoder(model, maxChars);
  const sharePrefix = o.sharePrefix ?? true;
  const t0 = performance.now();
  // Language-model warm-up (the tied embedding is the LM head of a reward model's backbone).
  if (lmEpochs > 0) {
    const texts = o.train.flatMap((p) => [p.chosen, p.rejected]);
    const total = lmEpochs * Math.ceil(texts.length / 16);
    let step = 0;
    for (let e = 0; e < lmEpochs; e++) {
      const order = shuffleInPlace(texts.slice(), seed * 7919 + 101 + e);
      for (let i = 0; i < order.length; i += 16) {
        const r = await model.trainSft({ sequences: order.slice(i, i + 16).map(enc), from: 1 });
        await model.optimizerStep({ lr: cosine(3 * lr, step, total), weightDecay: 0.01, maxGradNorm: 1 });
        o.onStep?.('lm', ++step, total, r.loss);
      }
    }
  }
  const history: RewardEpoch[] = [];
  const total = epochs * Math.ceil(o.train.length / P);
  let step = 0;
  for (let e = 0; e < epochs; e++) {
    const order = shuffleInPlace(o.train.slice(), seed * 7919 + 1 + e);
    let lossSum = 0;
    for (let i = 0; i < order.length; i += P) {
      const batch = order.slice(i, i + P);
      // Rows 2k and 2k+1: pair k's chosen and rejected texts, their common start computed once.
      const seqs = batch.flatMap((p) => [enc(p.chosen), enc(p.rejected)]);
      const from = sharePrefix ? batch.flatMap((_, k) => {
        const f = 1 + commonPrefix(seqs[2 * k], seqs[2 * k + 1]);
        return [f, f];
      }) : undefined;
      const r = await model.valueForward(seqs, { from });
      const dr = new Float32Array(r.length);
      let loss = 0;
      for (let k = 0; k < batch.length; k++) {
        const d = r[2 * k] - r[2 * k + 1];
        loss += Math.log1p(Math.exp(-Math.abs(d))) + Math.max(0, -d); // -log σ(d), stable
        const g = 1 / (1 + Math.exp(d)); // -dL/dd = 1 - σ(d)
        dr[2 * k] = -g / batch.length;
        dr[2 * k + 1] = g / batch.length;
      }
      await model.valueBackward(dr);
      await model.optimizerStep({ lr: cosine(lr, step, total), weightDecay: 0.01, maxGradNorm: 1 });
      lossSum += loss;
      o.onStep?.('rm', ++step, total, loss / batch.length);
    }
    const ev = await evaluateRewardModel(model, o.heldOut, { maxChars });
    const epoch = { epoch: e + 1, loss: lossSum / order.length, heldout_accuracy: ev.accuracy, seconds: (performance.now() - t0) / 1000 };
    history.push(epoch);
    await o.onEpoch?.(epoch);
  }
  return history;
}

/** The built-in reward model: a character-level Llama over the training texts' characters. */
export function builtinRewardModel(texts: readonly string[], options: { hidden?: number; layers?: number; maxChars?: number; seed?: number; device?: Device } = {}): Model {
  const chars = [...new Set(texts.flatMap((t) => [...t]))].sort();
  const tokenizer = new CharTokenizer(chars);
  const hidden = options.hidden ?? 64;
  const config: ModelConfig = parseConfig({
    architectures: ['LlamaForSequenceClassification'], model_type: 'llama', vocab_size: tokenizer.vocabSize, hidden_size: hidden,
    intermediate_size: 2 * hidden, num_hidden_layers: options.layers ?? 2, num_attention_heads: 4, num_key_value_heads: 2,
    max_position_embeddings: Math.max(64, (options.maxChars ?? 256) + 8), rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: true,
    id2label: { 0: 'LABEL_0' }, label2id: { LABEL_0: 0 }, bos_token_id: CharTokenizer.BOS, eos_token_id: CharTokenizer.EOS,
  });
  return Model.create(config, { seed: options.seed ?? 1, std: 0.05, tokenizer, device: options.device });
}
