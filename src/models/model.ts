// A Llama-family model on the native engine: load → generate / score → train → save.
// Weights, gradients, optimizer state and KV caches live natively; every heavy call is one
// native step run off the event loop. TypeScript orchestrates; it never shuttles activations.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { native } from '../native.js';
import type { GrpoMicroBatchArgs, GrpoParams, NativeModel, StepResult } from '../native-api.js';
import { GRPO_LOSS_TYPES } from '../kernels/losses.js';
import { writeDirAtomic, writeFileAtomic } from './atomic.js';
import { configToHf, validateConfig, type ModelConfig } from './config.js';
import { loadCheckpoint, readSafetensors, writeSafetensors } from './safetensors.js';
import { loadTokenizer, type Tokenizer } from './tokenizer.js';

export type { ModelConfig } from './config.js';

export interface SamplingOptions {
  /** 0 = greedy (argmax). Default 1. */
  temperature?: number;
  /** Keep the k most likely tokens (0 = off). */
  topK?: number;
  /** Nucleus: keep the smallest set with this much mass (1 = off). */
  topP?: number;
  /** Keep tokens with p >= minP * pmax (0 = off). */
  minP?: number;
}

export interface GenerateOptions extends SamplingOptions {
  /** Default 64. A row stops at the model's context: prompt + new tokens <= max_position_embeddings. */
  maxNewTokens?: number;
  /** Row i draws with Philox key seed + i (or seed[i] when an array), counter = tokens generated so far. */
  seed?: number | readonly number[];
  /** Stop token ids and/or stop strings (strings need a tokenizer). EOS ids of the config always stop. */
  stop?: readonly (string | number)[];
  /** Most rows decoded together (continuous batching refills freed rows). Default 64. */
  batchSize?: number;
  /** Decode steps per native call (streaming granularity). Default 16. */
  stepsPerCall?: number;
  /** Prepend BOS when encoding text prompts (default: true when the config has a BOS id). */
  addBos?: boolean;
  /** Called after each native decode call with the number of rows finished so far. */
  onProgress?: (finished: number, total: number) => void;
  /**
   * Keep the prompts' activations in the model's prompt store (CPU backend; until the weights
   * change), so that a training step on these prompts with the same weights (trainGrpo with
   * sharePrefix, as DASH runs right after its generation) copies them instead of recomputing the
   * prompts' forward. Default false.
   */
  keepPromptActivations?: boolean;
}

export interface Generation {
  /** The prompt's token ids. */
  promptIds: number[];
  /** New token ids (the stop token included when one stopped it). */
  ids: number[];
  /** Log-prob of each sampled token under the sampling distribution. */
  logprobs: number[];
  /** Decoded new text (when the model has a tokenizer), cut before a matched stop string. */
  text?: string;
  finishReason: 'stop' | 'length';
}

export interface StreamChunk {
  row: number;
  ids: number[];
  logprobs: number[];
  done: boolean;
}

export interface ScoreOptions {
  /** Score tokens at positions >= from (each conditioned on its prefix). Default 1. */
  from?: number | readonly number[];
  /** Sequences per native call. Default 16. */
  batchSize?: number;
  entropy?: boolean;
  /** Compute each distinct prefix once for the rows that share it (see GrpoStepOptions.sharePrefix). */
  sharePrefix?: boolean;
}

export interface TrainBatch {
  /** Input token ids per sequence (ragged; right-padded natively). */
  sequences: readonly (readonly number[])[];
  /** Loss starts at this position of each sequence: tokens[from..] are predicted. */
  from: number | readonly number[];
}

export interface SftStepOptions {
  /** Divide the summed token loss by this (for accumulation across micro-batches). Default: tokens here. */
  normalizer?: number;
}

export interface GrpoStepOptions extends GrpoParams {
  /** Per-sequence advantage. */
  advantages: readonly number[];
  /**
   * Old-policy log-probs of the scored tokens, per sequence (length = sequence.length - from).
   * Omitted: the current policy's own log-probs, detached (ratio 1; one iteration per batch).
   */
  oldLogprobs?: readonly (ArrayLike<number>)[];
  refLogprobs?: readonly (ArrayLike<number>)[];
  /** Multiplies this micro-batch's loss and gradient (weighting for gradient accumulation). Default 1. */
  lossScale?: number;
  /**
   * Compute each distinct prefix (sequence[0 .. from-1), the prompt) once per micro-batch: the rows
   * that share it (the G completions of a group) attend to its keys and its gradient is summed over
   * them. The same loss and gradients as the rows written out in full, up to float rounding, for
   * a fraction of the work when prompts are long. Default false (TRL computes every row in full).
   */
  sharePrefix?: boolean;
}

export type { StepResult };

export interface OptimizerOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Global-norm gradient clipping (0 = off). */
  maxGradNorm?: number;
}

/** The one "no filtering" convention: null/undefined keeps every sequence; τ must be >= 0. */
export function checkFilterThreshold(tau: number | null | undefined): number | null {
  if (tau === undefined || tau === null) return null;
  if (typeof tau !== 'number' || !Number.isFinite(tau) || tau < 0) throw new RangeError(`filterThreshold must be a number >= 0 (or null: no filtering), got ${String(tau)}`);
  return tau;
}

/**
 * Where a model lives: 'cpu' (default) or 'cuda' — weights, KV caches, activations and AdamW state
 * resident on the GPU, each call one native step. 'cuda' needs the CUDA build of the addon and a
 * usable device (kernels.backend === 'cuda').
 */
export type Device = 'cpu' | 'cuda';

export function checkDevice(device: unknown, name = 'device'): Device {
  if (device === undefined) return 'cpu';
  if (device !== 'cpu' && device !== 'cuda') throw new RangeError(`${name} must be "cpu" or "cuda", got ${JSON.stringify(device)}`);
  return device;
}

/**
 * The linear layers' GEMM precision. 'bf16' is mixed precision as torch's bf16 autocast: the GEMMs
 * take bf16 inputs (a bf16 copy of the weights, activations and gradients cast per call) with fp32
 * accumulation; master weights, gradients, AdamW state, norms, attention, softmax, log-probs and
 * losses stay fp32. Default: $WST_DASH_DTYPE when set (the CLI's --dtype sets it), else 'bf16' on
 * CUDA and 'fp32' on the CPU (where the CPU GEMM widens bf16 back to fp32: a check of the numerics,
 * not a speed-up).
 */
export type Dtype = 'fp32' | 'bf16';

export function checkDtype(dtype: unknown, device: Device, name = 'dtype'): Dtype {
  if (dtype === undefined) {
    const env = process.env.WST_DASH_DTYPE;
    if (env !== undefined && env !== '') return checkDtype(env, device, 'WST_DASH_DTYPE');
    return device === 'cuda' ? 'bf16' : 'fp32';
  }
  if (dtype !== 'fp32' && dtype !== 'bf16') throw new RangeError(`${name} must be "fp32" or "bf16", got ${JSON.stringify(dtype)}`);
  return dtype;
}

/** Row i of a generate call with one numeric seed draws with Philox key seed + i. */
function rowSeed(seed: number, row: number): bigint {
  return BigInt.asUintN(64, BigInt(Math.floor(seed)) + BigInt(row));
}

export class Model {
  private readonly handle: NativeModel;
  private queue: Promise<unknown> = Promise.resolve();
  /** The trainer state saved with this checkpoint (save(dir, { training })), when loaded from one. */
  trainingState: Record<string, unknown> | undefined;

  private constructor(
    readonly config: ModelConfig,
    readonly tokenizer: Tokenizer | undefined,
    readonly device: Device,
    readonly dtype: Dtype,
  ) {
    // A reward model has no LM head natively (its score head lives here, see `head`).
    this.handle = new native.Model({ ...config, tieWordEmbeddings: config.tieWordEmbeddings || config.scoreHead === true, device, dtype });
    if (config.scoreHead) {
      const C = config.hiddenSize;
      this.head = { w: new Float32Array(C), g: new Float32Array(C), m: new Float32Array(C), v: new Float32Array(C), t: 0 };
    }
  }

  /**
   * Reward models (config.scoreHead): `score.weight` (hidden,), its accumulated gradient and its
   * AdamW moments. Zeros at creation (the first rewards are 0; the backbone learns from step 2).
   */
  private head: { w: Float32Array; g: Float32Array; m: Float32Array; v: Float32Array; t: number } | undefined;

  /** A model with seeded random weights (normal(0, std); norms 1). */
  static create(config: ModelConfig, options: { seed?: number; std?: number; tokenizer?: Tokenizer; device?: Device; dtype?: Dtype } = {}): Model {
    validateConfig(config);
    const device = checkDevice(options.device, 'options.device');
    const m = new Model(config, options.tokenizer, device, checkDtype(options.dtype, device, 'options.dtype'));
    m.handle.initRandom({ seed: options.seed ?? 0, std: options.std ?? 0.02 });
    return m;
  }

  /** A reward model on this language model's backbone and tokenizer (its LM head dropped), with a zero score head. */
  static rewardModelFrom(lm: Model): Model {
    const rm = new Model({ ...lm.config, scoreHead: true }, lm.tokenizer, lm.device, lm.dtype);
    for (const t of rm.tensorNames()) rm.handle.setTensor({ name: t.name, data: lm.getTensor(t.name) });
    return rm;
  }

  /** Loads a Hugging Face folder: config.json, model.safetensors (or shards), tokenizer if any. */
  static async load(dir: string, options: { device?: Device; dtype?: Dtype } = {}): Promise<Model> {
    const device = checkDevice(options.device, 'options.device');
    const dtype = checkDtype(options.dtype, device, 'options.dtype');
    if (!existsSync(dir)) throw new Error(`model folder ${dir} does not exist`);
    const { config, tensors } = await loadCheckpoint(dir);
    const tokenizer = await loadTokenizer(dir);
    const m = new Model(config, tokenizer, device, dtype);
    for (const [name, t] of tensors) {
      if (name === 'score.weight' && m.head) m.head.w.set(t.data);
      else m.handle.setTensor({ name, data: t.data });
    }
    const trainer = path.join(dir, 'trainer_state.json');
    if (existsSync(trainer)) m.trainingState = await m.loadTrainingState(dir);
    return m;
  }

  /** Serialises native calls on this model (one at a time, in call order). */
  private run<T>(fn: () => T | Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  get numParams(): number {
    return this.handle.numParams();
  }

  get eosIds(): number[] {
    const e = this.config.eosTokenId;
    return e === null ? [] : Array.isArray(e) ? e : [e];
  }

  /** Floats of saved activations per training token (peak training memory ≈ this × 4 B × tokens). */
  get activationFloatsPerToken(): number {
    return this.handle.activationFloatsPerToken();
  }

  /**
   * The prompt store (GenerateOptions.keepPromptActivations): prompts held for the current
   * weights, and prefixed training forwards so far that took their prompts' rows from it.
   */
  get promptStore(): { stored: number; hits: number } {
    return this.handle.promptStore();
  }

  tensorNames(): { name: string; shape: number[] }[] {
    return this.handle.tensors();
  }

  getTensor(name: string): Float32Array {
    if (name === 'score.weight' && this.head) return this.head.w.slice();
    return this.handle.getTensor(name);
  }

  /** The gradient accumulated since the last optimizerStep / zeroGrad. */
  getGrad(name: string): Float32Array {
    if (name === 'score.weight' && this.head) return this.head.g.slice();
    return this.handle.getGrad(name);
  }

  setTensor(name: string, data: Float32Array): void {
    if (name === 'score.weight' && this.head) {
      if (data.length !== this.head.w.length) throw new RangeError(`score.weight must have ${this.head.w.length} values, got ${data.length}`);
      this.head.w.set(data);
    } else this.handle.setTensor({ name, data });
  }

  private checkIds(ids: readonly number[], name: string): void {
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= this.config.vocabSize)
        throw new RangeError(`${name}[${i}] = ${id} is not a token id in [0, ${this.config.vocabSize})`);
    }
  }

  /** Encodes a prompt (text needs a tokenizer; arrays are token ids). */
  encode(prompt: string | readonly number[], addBos?: boolean): number[] {
    if (typeof prompt !== 'string') {
      if (!Array.isArray(prompt) && !ArrayBuffer.isView(prompt)) throw new TypeError('prompt must be a string or an array of token ids');
      const ids = Array.from(prompt as ArrayLike<number>);
      this.checkIds(ids, 'prompt');
      return ids;
    }
    if (!this.tokenizer) throw new Error('this model has no tokenizer: give prompts as token ids');
    const ids = this.tokenizer.encode(prompt, { addSpecialTokens: false });
    const bos = this.config.bosTokenId;
    return (addBos ?? bos !== null) && bos !== null ? [bos, ...ids] : ids;
  }

  /** Logits (B,T,V) of right-padded tokens (B,T). */
  forwardLogits(tokens: Int32Array, batch: number, seq: number): Promise<Float32Array> {
    return this.run(() => this.handle.forwardLogits({ tokens, batch, seq }, true));
  }

  /** Logits at the last position of one sequence of token ids. */
  async logits(ids: readonly number[]): Promise<Float32Array> {
    this.checkIds(ids, 'ids');
    if (ids.length === 0) throw new RangeError('ids must not be empty');
    const all = await this.forwardLogits(Int32Array.from(ids), 1, ids.length);
    const V = this.config.vocabSize;
    return all.slice((ids.length - 1) * V, ids.length * V);
  }

  /** Batched generation with continuous batching; see GenerateOptions. */
  async generate(prompts: readonly (string | readonly number[])[], options: GenerateOptions = {}): Promise<Generation[]> {
    const results: Generation[] = [];
    for await (const _ of this.streamRows(prompts, options, results)) {
      /* drain */
    }
    return results;
  }

  /** Streams new tokens as they are decoded (chunks of stepsPerCall per row). */
  stream(prompts: readonly (string | readonly number[])[], options: GenerateOptions = {}): AsyncIterable<StreamChunk> {
    return this.streamRows(prompts, options, []);
  }

  private async *streamRows(prompts: readonly (string | readonly number[])[], options: GenerateOptions, results: Generation[]): AsyncGenerator<StreamChunk> {
    if (!Array.isArray(prompts)) throw new TypeError('prompts must be an array');
    const maxNew = options.maxNewTokens ?? 64;
    if (!Number.isInteger(maxNew) || maxNew < 1) throw new RangeError(`maxNewTokens must be an integer >= 1, got ${maxNew}`);
    const batchSize = options.batchSize ?? 64;
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be an integer >= 1, got ${batchSize}`);
    const stepsPerCall = options.stepsPerCall ?? 16;
    const temperature = options.temperature ?? 1;
    if (!Number.isFinite(temperature) || temperature < 0) throw new RangeError(`temperature must be a finite number >= 0, got ${temperature}`);
    const topK = options.topK ?? 0, topP = options.topP ?? 1, minP = options.minP ?? 0;
    if (!Number.isInteger(topK) || topK < 0) throw new RangeError(`topK must be an integer >= 0, got ${topK}`);
    if (!(topP > 0 && topP <= 1)) throw new RangeError(`topP must be in (0, 1], got ${topP}`);
    if (!(minP >= 0 && minP < 1)) throw new RangeError(`minP must be in [0, 1), got ${minP}`);
    const seed = options.seed ?? 0;
    if (Array.isArray(seed) ? seed.length !== prompts.length : !Number.isInteger(seed) || (seed as number) < 0)
      throw new RangeError('seed must be a non-negative integer or one per prompt');
    const stopIds = new Set<number>(this.eosIds);
    const stopStrings: string[] = [];
    for (const s of options.stop ?? []) {
      if (typeof s === 'number') stopIds.add(s);
      else if (typeof s === 'string' && s.length > 0) stopStrings.push(s);
      else throw new TypeError('stop entries must be token ids or non-empty strings');
    }
    if (stopStrings.length > 0 && !this.tokenizer) throw new Error('stop strings need a tokenizer');
    // A GRPO group repeats its prompt G times: each distinct prompt is encoded once (copies after).
    const seen = new Map<string, number[]>();
    const encoded = prompts.map((p) => {
      if (typeof p !== 'string') return this.encode(p, options.addBos);
      const hit = seen.get(p);
      if (hit) return hit.slice();
      const ids = this.encode(p, options.addBos);
      seen.set(p, ids);
      return ids.slice();
    });
    encoded.forEach((ids, i) => {
      if (ids.length === 0) throw new RangeError(`prompt ${i} is empty`);
    });
    // Generation stops at the model's context (max_position_embeddings): a row whose prompt plus
    // maxNewTokens would pass it gets fewer new tokens (finishReason "length").
    const context = this.config.maxPositionEmbeddings;
    encoded.forEach((ids, i) => {
      if (ids.length >= context) throw new RangeError(`prompt ${i} has ${ids.length} tokens; the model's context is ${context} positions`);
    });
    const maxPrompt = Math.max(0, ...encoded.map((e) => e.length));
    const rowMaxNew = encoded.map((ids) => Math.min(maxNew, context - ids.length));
    for (let i = 0; i < encoded.length; i++)
      results[i] = { promptIds: encoded[i], ids: [], logprobs: [], finishReason: 'length', text: this.tokenizer ? '' : undefined };
    if (encoded.length === 0) return;

    const rowsTotal = encoded.length;
    const ctx = this.handle.createContext({ maxBatch: Math.min(batchSize, rowsTotal), maxSeq: Math.min(maxPrompt + maxNew, context) });
    const sampling = { temperature, topK, topP, minP };
    const stopArr = Int32Array.from(stopIds);
    const rowOf: number[] = []; // context row -> prompt index
    const done: boolean[] = new Array(rowsTotal).fill(false);
    let next = 0, finished = 0, active = 0;
    const capacity = Math.min(batchSize, rowsTotal);
    // The KV caches are freed when generation ends (or the consumer stops early), not at the next
    // garbage collection: V8 does not see native memory, and a training loop makes a context per step.
    try {
      while (finished < rowsTotal) {
        const free = capacity - active;
        if (free > 0 && next < rowsTotal) {
          const take = encoded.slice(next, next + free);
          const offsets = new Int32Array(take.length + 1);
          take.forEach((t, i) => (offsets[i + 1] = offsets[i] + t.length));
          // Typed-array copies, not Int32Array.from(take.flat()) (an iterator over every token: ~1 ms
          // per call for 128 prompts of 70 tokens, on the event loop).
          const promptTokens = new Int32Array(offsets[take.length]);
          take.forEach((t, i) => promptTokens.set(t, offsets[i]));
          const seeds = new BigUint64Array(take.map((_, i) =>
            Array.isArray(seed) ? BigInt.asUintN(64, BigInt(seed[next + i])) : rowSeed(seed as number, next + i)));
          const maxNew = Int32Array.from(rowMaxNew.slice(next, next + take.length));
          await this.run(() => ctx.addRows({ promptTokens, offsets, seeds, maxNew, sampling, stopIds: stopArr,
            keepPrompts: options.keepPromptActivations === true }, true));
          for (let i = 0; i < take.length; i++) rowOf.push(next + i);
          next += take.length;
          active += take.length;
        }
        const out = await this.run(() => ctx.decode({ steps: stepsPerCall }, true));
        let at = 0;
        for (let r = 0; r < out.counts.length; r++) {
          const n = out.counts[r];
          const idx = rowOf[r];
          const ids = Array.from(out.tokens.subarray(at, at + n));
          const lps = Array.from(out.logprobs.subarray(at, at + n));
          at += n;
          if (done[idx]) continue;
          const res = results[idx];
          let rowDone = out.finished[r] === 1;
          if (n === 0 && !rowDone) continue;
          const before = res.ids.length;
          res.ids.push(...ids);
          res.logprobs.push(...lps);
          if (rowDone && ids.length > 0 && stopIds.has(ids[ids.length - 1])) res.finishReason = 'stop';
          if (this.tokenizer) {
            res.text = this.tokenizer.decode(res.ids);
            const hit = (text: string) => stopStrings.some((s) => text.includes(s));
            if (stopStrings.length > 0 && hit(res.text)) {
              // Keep the tokens up to the one that completed the stop string (it stays, like EOS);
              // tokens decoded after it in the same native call are dropped.
              let k = before + 1;
              while (k < res.ids.length && !hit(this.tokenizer.decode(res.ids.slice(0, k)))) k++;
              res.ids.length = k;
              res.logprobs.length = k;
              ids.length = Math.max(0, k - before);
              lps.length = ids.length;
              const full = this.tokenizer.decode(res.ids);
              res.text = full.slice(0, Math.min(...stopStrings.map((s) => full.indexOf(s)).filter((i) => i >= 0)));
              res.finishReason = 'stop';
              if (!rowDone) await this.run(() => ctx.finishRow(r));
              rowDone = true;
            }
          }
          if (rowDone) {
            done[idx] = true;
            finished++;
            active--;
          }
          yield { row: idx, ids, logprobs: lps, done: rowDone };
        }
        options.onProgress?.(finished, rowsTotal);
      }
    } finally {
      ctx.dispose();
    }
  }

  private packBatch(sequences: readonly (readonly number[])[], from: number | readonly number[]) {
    const B = sequences.length;
    if (B === 0) throw new RangeError('sequences must not be empty');
    const froms = typeof from === 'number' ? new Array(B).fill(from) : Array.from(from);
    if (froms.length !== B) throw new RangeError(`from must be a number or one per sequence (${B})`);
    const T = Math.max(...sequences.map((s) => s.length));
    const tokens = new Int32Array(B * T), targets = new Int32Array(B * T).fill(-1);
    sequences.forEach((s, b) => {
      this.checkIds(s, `sequences[${b}]`);
      const f = froms[b];
      if (!Number.isInteger(f) || f < 1 || f > s.length) throw new RangeError(`from[${b}] = ${f} must be in [1, ${s.length}]`);
      for (let t = 0; t < s.length; t++) tokens[b * T + t] = s[t];
      // The logits at position t predict token t+1.
      for (let t = f - 1; t < s.length - 1; t++) targets[b * T + t] = s[t + 1];
    });
    return { B, T, tokens, targets, froms };
  }

  /**
   * The rows as blocks after shared prefixes: row b's prefix is sequence[0 .. from-1) (rows with
   * equal prefixes share one), its block sequence[from-1 ..] (the last prefix token predicts the
   * first scored one). Rows are reordered so that rows of one prefix are adjacent: `order[k]` is
   * the caller's row at packed row k; each row's scored tokens start at its block's position 0.
   */
  private packPrefixBatch(sequences: readonly (readonly number[])[], from: number | readonly number[]) {
    const B = sequences.length;
    if (B === 0) throw new RangeError('sequences must not be empty');
    const froms = typeof from === 'number' ? new Array<number>(B).fill(from) : Array.from(from);
    if (froms.length !== B) throw new RangeError(`from must be a number or one per sequence (${B})`);
    const ids = new Map<string, number>();
    const prefixes: (readonly number[])[] = [];
    const pid = new Array<number>(B);
    sequences.forEach((s, b) => {
      this.checkIds(s, `sequences[${b}]`);
      const f = froms[b];
      if (!Number.isInteger(f) || f < 1 || f > s.length) throw new RangeError(`from[${b}] = ${f} must be in [1, ${s.length}]`);
      const p = s.slice(0, f - 1);
      const key = p.join(',');
      let id = ids.get(key);
      if (id === undefined) {
        id = prefixes.length;
        ids.set(key, id);
        prefixes.push(p);
      }
      pid[b] = id;
    });
    const order = Array.from({ length: B }, (_, b) => b).sort((a, b) => pid[a] - pid[b] || a - b);
    const T = Math.max(...sequences.map((s, b) => s.length - froms[b] + 1));
    const Tp = Math.max(...prefixes.map((p) => p.length));
    const tokens = new Int32Array(B * T), targets = new Int32Array(B * T).fill(-1), rowPrefix = new Int32Array(B);
    order.forEach((b, k) => {
      const s = sequences[b], f = froms[b];
      for (let t = f - 1; t < s.length; t++) tokens[k * T + t - f + 1] = s[t];
      for (let t = f - 1; t < s.length - 1; t++) targets[k * T + t - f + 1] = s[t + 1];
      rowPrefix[k] = pid[b];
    });
    const prefixTokens = new Int32Array(prefixes.length * Tp), lengths = new Int32Array(prefixes.length);
    prefixes.forEach((p, i) => {
      prefixTokens.set(p, i * Tp);
      lengths[i] = p.length;
    });
    const prefix = { tokens: prefixTokens, count: prefixes.length, length: Tp, lengths, rowPrefix };
    return { B, T, tokens, targets, froms, order, prefix };
  }

  /** Teacher-forced log-probs of sequence[from..] given the prefix, per sequence. */
  async score(sequences: readonly (readonly number[])[], options: ScoreOptions = {}): Promise<{ logprobs: Float32Array[]; entropy?: Float32Array[] }> {
    const batchSize = options.batchSize ?? 16;
    const from = options.from ?? 1;
    const lps: Float32Array[] = [], ents: Float32Array[] = [];
    for (let i = 0; i < sequences.length; i += batchSize) {
      const seqs = sequences.slice(i, i + batchSize);
      const f = typeof from === 'number' ? from : from.slice(i, i + batchSize);
      if (options.sharePrefix) {
        const { B, T, tokens, targets, froms, order, prefix } = this.packPrefixBatch(seqs, f);
        const r = await this.run(() => this.handle.score({ tokens, targets, batch: B, seq: T, entropy: options.entropy ?? false, prefix }, true));
        const lpRows = new Array<Float32Array>(B), entRows = new Array<Float32Array>(B);
        order.forEach((b, k) => {
          const n = seqs[b].length - froms[b];
          lpRows[b] = r.logprobs.slice(k * T, k * T + n);
          if (r.entropy) entRows[b] = r.entropy.slice(k * T, k * T + n);
        });
        lps.push(...lpRows);
        if (options.entropy) ents.push(...entRows);
        continue;
      }
      const { B, T, tokens, targets, froms } = this.packBatch(seqs, f);
      const r = await this.run(() => this.handle.score({ tokens, targets, batch: B, seq: T, entropy: options.entropy ?? false }, true));
      for (let b = 0; b < B; b++) {
        const lo = b * T + froms[b] - 1, hi = b * T + seqs[b].length - 1;
        lps.push(r.logprobs.slice(lo, hi));
        if (r.entropy) ents.push(r.entropy.slice(lo, hi));
      }
    }
    return options.entropy ? { logprobs: lps, entropy: ents } : { logprobs: lps };
  }

  /** One SFT micro-batch: forward + backward, gradients accumulate until optimizerStep. */
  async trainSft(batch: TrainBatch, options: SftStepOptions = {}): Promise<StepResult> {
    const { B, T, tokens, targets } = this.packBatch(batch.sequences, batch.from);
    let count = 0;
    for (const t of targets) if (t >= 0) count++;
    const normalizer = options.normalizer ?? Math.max(1, count);
    return this.run(() => this.handle.trainSft({ tokens, targets, batch: B, seq: T, normalizer }, true));
  }

  /** One GRPO micro-batch (the loss of kernels.grpo on the policy's log-probs); gradients accumulate. */
  async trainGrpo(batch: TrainBatch, options: GrpoStepOptions): Promise<StepResult> {
    const args = this.grpoArgs(batch, options);
    return this.run(() => this.handle.trainGrpo(args, true));
  }

  /**
   * Several GRPO micro-batches of one optimizer step in one call; gradients accumulate as from
   * trainGrpo per micro-batch (up to float rounding). On the CPU the micro-batches are dealt
   * round-robin to 4 lanes that run concurrently, each single-threaded with its own activations and
   * gradient (summed in lane order at the end), which is much faster than op-level threading when
   * micro-batches are small; give them largest first for balance. Results do not depend on the
   * thread count. Memory: 4 activation sets and 4 gradient buffers.
   */
  async trainGrpoMany(microBatches: readonly { batch: TrainBatch; options: GrpoStepOptions }[]): Promise<StepResult[]> {
    if (!Array.isArray(microBatches) || microBatches.length === 0) throw new RangeError('microBatches must be a non-empty array of { batch, options }');
    const list = microBatches.map((mb, i) => {
      try {
        return this.grpoArgs(mb.batch, mb.options);
      } catch (e) {
        throw new RangeError(`microBatches[${i}]: ${(e as Error).message}`);
      }
    });
    return this.run(() => this.handle.trainGrpoMany({ microBatches: list }, true));
  }

  // One micro-batch as the native trainGrpo takes it.
  private grpoArgs(batch: TrainBatch, options: GrpoStepOptions): GrpoMicroBatchArgs {
    const shared = options.sharePrefix ? this.packPrefixBatch(batch.sequences, batch.from) : null;
    const { B, T, tokens, targets, froms } = shared ?? this.packBatch(batch.sequences, batch.from);
    // Packed row k holds the caller's row order[k]; its scored tokens start at `start(k)`.
    const order = shared ? shared.order : null;
    const rowAt = (k: number) => (order ? order[k] : k);
    const start = (k: number) => k * T + (order ? 0 : froms[k] - 1);
    if (options.advantages.length !== B) throw new RangeError(`advantages must have one value per sequence (${B})`);
    const scatter = (rows: readonly ArrayLike<number>[], name: string) => {
      if (rows.length !== B) throw new RangeError(`${name} must have one array per sequence (${B})`);
      const out = new Float32Array(B * T);
      for (let k = 0; k < B; k++) {
        const b = rowAt(k), row = rows[b];
        const n = batch.sequences[b].length - froms[b];
        if (row.length !== n) throw new RangeError(`${name}[${b}] must have ${n} values (sequence length - from), got ${row.length}`);
        for (let i = 0; i < n; i++) out[start(k) + i] = row[i];
      }
      return out;
    };
    const old = options.oldLogprobs ? scatter(options.oldLogprobs, 'oldLogprobs') : null;
    const ref = options.refLogprobs ? scatter(options.refLogprobs, 'refLogprobs') : null;
    const lossType = options.lossType ?? 'grpo';
    if (!GRPO_LOSS_TYPES.includes(lossType)) throw new RangeError(`lossType must be one of ${GRPO_LOSS_TYPES.join(', ')}`);
    return {
      tokens, targets, batch: B, seq: T, oldLogprobs: old, refLogprobs: ref,
      advantages: Float32Array.from({ length: B }, (_, k) => options.advantages[rowAt(k)]),
      clipLow: options.clipLow ?? 0.2,
      clipHigh: options.clipHigh ?? 0.2,
      beta: options.beta ?? 0,
      filterThreshold: checkFilterThreshold(options.filterThreshold) ?? null,
      lossType,
      normalizer: options.normalizer ?? 0,
      lossScale: options.lossScale ?? 1,
      prefix: shared?.prefix ?? null,
    };
  }

  /** Clip (global norm), AdamW, zero gradients. Returns the gradient norm before clipping. */
  optimizerStep(options: OptimizerOptions): Promise<number> {
    if (!(Number.isFinite(options.lr) && options.lr >= 0)) throw new RangeError(`lr must be a finite number >= 0, got ${options.lr}`);
    const head = this.head;
    if (head) {
      // AdamW on the score head (C floats: not worth a native call; not part of the clipped norm).
      const b1 = options.beta1 ?? 0.9, b2 = options.beta2 ?? 0.999, eps = options.eps ?? 1e-8, wd = options.weightDecay ?? 0;
      head.t++;
      const c1 = 1 - b1 ** head.t, c2 = 1 - b2 ** head.t;
      for (let i = 0; i < head.w.length; i++) {
        head.m[i] = b1 * head.m[i] + (1 - b1) * head.g[i];
        head.v[i] = b2 * head.v[i] + (1 - b2) * head.g[i] * head.g[i];
        head.w[i] -= options.lr * (head.m[i] / c1 / (Math.sqrt(head.v[i] / c2) + eps) + wd * head.w[i]);
      }
      head.g.fill(0);
    }
    return this.run(() => this.handle.optimizerStep(options, true));
  }

  zeroGrad(): Promise<void> {
    this.head?.g.fill(0);
    return this.run(() => this.handle.zeroGrad());
  }

  /** The score head of a reward model (a copy), or null for a language model. */
  get scoreWeight(): Float32Array | null {
    return this.head ? this.head.w.slice() : null;
  }

  private needHead() {
    if (!this.head) throw new Error('not a reward model (config.scoreHead): no score head');
    return this.head;
  }

  private packLast(sequences: readonly (readonly number[])[]) {
    const B = sequences.length;
    if (B === 0) throw new RangeError('sequences must not be empty');
    const T = Math.max(...sequences.map((s) => s.length));
    const tokens = new Int32Array(B * T), last = new Int32Array(B);
    sequences.forEach((s, b) => {
      if (s.length === 0) throw new RangeError(`sequences[${b}] is empty`);
      this.checkIds(s, `sequences[${b}]`);
      tokens.set(s, b * T);
      last[b] = s.length - 1;
    });
    return { B, T, tokens, last };
  }

  /**
   * Reward models: the score of each sequence (the head on the final hidden state of its last
   * token, as transformers' *ForSequenceClassification computes it). Keeps what valueBackward
   * needs: a training step is valueForward, then valueBackward with dL/dr, then optimizerStep.
   */
  async valueForward(sequences: readonly (readonly number[])[], options: { from?: readonly number[] } = {}): Promise<Float32Array> {
    const head = this.needHead();
    if (!options.from) {
      this.valueOrder = null;
      const { B, T, tokens, last } = this.packLast(sequences);
      return this.run(() => this.handle.valueForward({ tokens, last, w: head.w, batch: B, seq: T }, true));
    }
    // Shared prefixes: row b's tokens before from[b] - 1 are its prefix, computed once for the
    // rows that share it (a preference pair's common dialogue), as in trainGrpo.
    const { B, T, tokens, froms, order, prefix } = this.packPrefixBatch(sequences, options.from);
    const last = Int32Array.from(order, (b) => sequences[b].length - froms[b]);
    const packed = await this.run(() => this.handle.valueForward({ tokens, last, w: head.w, batch: B, seq: T, prefix }, true));
    this.valueOrder = order;
    const r = new Float32Array(B);
    order.forEach((b, k) => (r[b] = packed[k]));
    return r;
  }

  /** The row order of the last prefixed valueForward (packed row k is the caller's row order[k]). */
  private valueOrder: number[] | null = null;

  /** Accumulates the gradient of a loss with dL/dr = dr (one per sequence of the last valueForward). */
  async valueBackward(dr: Float32Array): Promise<void> {
    const head = this.needHead();
    const order = this.valueOrder;
    const packed = order && order.length === dr.length ? Float32Array.from(order, (b) => dr[b]) : dr;
    const dw = await this.run(() => this.handle.valueBackward({ dr: packed, w: head.w }, true));
    for (let i = 0; i < dw.length; i++) head.g[i] += dw[i];
  }

  /** Reward models: scores of many sequences, in batches. */
  async reward(sequences: readonly (readonly number[])[], options: { batchSize?: number } = {}): Promise<Float32Array> {
    const bs = options.batchSize ?? 16, out = new Float32Array(sequences.length);
    for (let i = 0; i < sequences.length; i += bs) out.set(await this.valueForward(sequences.slice(i, i + bs)), i);
    return out;
  }

  get step(): number {
    return this.handle.getStep();
  }

  /** All parameters by Hugging Face name (copies). */
  tensors(): Map<string, { shape: number[]; data: Float32Array }> {
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const t of this.tensorNames()) out.set(t.name, { shape: t.shape, data: this.getTensor(t.name) });
    if (this.head) out.set('score.weight', { shape: [1, this.head.w.length], data: this.head.w.slice() });
    return out;
  }

  /**
   * Saves a Hugging Face folder atomically: config.json, model.safetensors, tokenizer files; with
   * `training`, also optimizer.safetensors (AdamW m, v) and trainer_state.json (step + caller state).
   */
  async save(dir: string, options: { training?: Record<string, unknown> } = {}): Promise<void> {
    const tensors = this.tensors();
    const optimizer = options.training ? await this.run(() => this.handle.getOptimizerState()) : null;
    await writeDirAtomic(dir, async (tmp) => {
      await writeFileAtomic(path.join(tmp, 'config.json'), JSON.stringify(configToHf(this.config), null, 2) + '\n');
      await writeSafetensors(path.join(tmp, 'model.safetensors'), tensors);
      if (this.tokenizer) await this.tokenizer.save(tmp);
      if (options.training) {
        if (optimizer)
          await writeSafetensors(path.join(tmp, 'optimizer.safetensors'), {
            m: { shape: [optimizer.m.length], data: optimizer.m },
            v: { shape: [optimizer.v.length], data: optimizer.v },
          });
        await writeFileAtomic(path.join(tmp, 'trainer_state.json'),
          JSON.stringify({ step: this.step, hasOptimizer: optimizer !== null, ...options.training }, null, 2) + '\n');
      }
    });
  }

  /** Restores step and AdamW state saved by save(dir, { training }). Returns the caller's state. */
  async loadTrainingState(dir: string): Promise<Record<string, unknown>> {
    const state = JSON.parse(await readFile(path.join(dir, 'trainer_state.json'), 'utf8')) as Record<string, unknown>;
    if (state.hasOptimizer) {
      const opt = await readSafetensors(path.join(dir, 'optimizer.safetensors'));
      const m = opt.get('m'), v = opt.get('v');
      if (!m || !v) throw new Error(`${dir}/optimizer.safetensors must hold tensors m and v`);
      this.handle.setOptimizerState({ m: m.data, v: v.data });
    }
    this.handle.setStep(Number(state.step ?? 0));
    return state;
  }
}

export async function loadModel(dir: string, options: { device?: Device; dtype?: Dtype } = {}): Promise<Model> {
  return Model.load(dir, options);
}
