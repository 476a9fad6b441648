// `wst-dash bench decode|train`: model-level speed on the native engine.
//   decode: prefill and decode tokens/s at batch 1, 8, 64 (aggregate over the batch), greedy,
//           through the public Model.generate; batch-64 / batch-1 scaling.
//   train:  one SFT micro-batch (forward + backward) + AdamW step: ms/step, tokens/s, achieved
//           GFLOP/s against the measured FMA peak, peak RSS, saved-activation bytes per token.
// Side-by-side comparisons with llama.cpp and PyTorch: bench/model_compare.ts (see bench/archive/NOTES-2026-11.md).
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { native, packageRoot } from '../native.js';
import { Model, type Device } from '../models/model.js';
import { writeFileAtomic } from '../models/atomic.js';
import { parameterCount, type ModelConfig } from '../models/config.js';

export type ModelBenchKind = 'decode' | 'train';

export interface ModelBenchOptions {
  /** A Hugging Face folder; default: a seeded random ~31M-parameter F32 Llama (benchConfig()). */
  model?: string;
  /** decode: one batch size instead of 1, 8, 64 (batch 1 is always measured for the ratio). train: sequences per step (4). */
  batch?: number;
  /** decode: prompt tokens (32). train: tokens per sequence (128). */
  seq?: number;
  /** decode: new tokens per row (64). */
  newTokens?: number;
  /** Repetitions (decode: interleaved over the batch sizes; train: timed steps). Default 3 / 5. */
  reps?: number;
  json: boolean;
  threads?: number;
  /** Where the JSON goes; default bench/results/model-<kind>.json. '' = do not write. */
  out?: string;
  /** Where the model lives (default cpu; cuda: resident on the GPU). */
  device?: Device;
}

/** Default bench model: hidden 512, 8 layers, 8 heads (8 kv heads), intermediate 1536, vocab 8192, tied. */
export function benchConfig(shape: '30m' | 'stories260k' = '30m', overrides: Partial<ModelConfig> = {}): ModelConfig {
  const base = shape === '30m'
    ? { vocabSize: 8192, hiddenSize: 512, intermediateSize: 1536, numLayers: 8, numHeads: 8, numKvHeads: 8 }
    : { vocabSize: 512, hiddenSize: 64, intermediateSize: 172, numLayers: 5, numHeads: 8, numKvHeads: 4 };
  const c: ModelConfig = {
    architecture: 'llama',
    ...base,
    headDim: base.hiddenSize / base.numHeads,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    tieWordEmbeddings: true,
    maxPositionEmbeddings: 2048,
    attentionBias: false,
    qkNorm: false,
    // No BOS/EOS: random weights must not stop early, so every row decodes exactly newTokens.
    bosTokenId: null,
    eosTokenId: null,
    torchDtype: 'float32',
    ...overrides,
  };
  return c;
}

export async function loadBenchModel(dir: string | undefined, seed = 1234, device: Device = 'cpu'): Promise<Model> {
  return dir ? Model.load(dir, { device }) : Model.create(benchConfig(), { seed, std: 0.02, device });
}

/**
 * Matmul FLOPs per token of one forward at context length `ctx` (attention averaged over a causal
 * sequence of ctx tokens: (ctx+1)/2 keys per query). A training step costs 3x (forward, 2x backward).
 */
export function forwardFlopsPerToken(c: ModelConfig, ctx: number, withLogits = true): number {
  const Hq = c.numHeads * c.headDim, Hk = c.numKvHeads * c.headDim;
  const linear = c.hiddenSize * (2 * Hq + 2 * Hk) + 3 * c.hiddenSize * c.intermediateSize;
  const attn = 4 * Hq * ((ctx + 1) / 2); // QK^T and PV
  return c.numLayers * (2 * linear + attn) + (withLogits ? 2 * c.hiddenSize * c.vocabSize : 0);
}

/** Deterministic prompts of `len` token ids in [lo, vocab). */
export function benchPrompts(n: number, len: number, vocab: number, seed: number): number[][] {
  let s = (seed >>> 0) || 1;
  const next = () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s;
  };
  const lo = Math.min(3, vocab - 1);
  return Array.from({ length: n }, () => Array.from({ length: len }, () => lo + (next() % (vocab - lo))));
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const now = () => Number(process.hrtime.bigint()) / 1e9;
/** CPU seconds of this process (all threads): at 1 thread, time spent descheduled by other jobs does not count. */
export const cpuNow = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

export interface DecodeSample {
  prefillSeconds: number;
  decodeSeconds: number;
  /** The same two intervals in process CPU seconds. */
  prefillCpuSeconds: number;
  decodeCpuSeconds: number;
  decodeTokens: number;
  ids0: number[];
}

/**
 * One measurement at batch B: greedy generate with maxNewTokens = 1 (prefill + one sample) and with
 * 1 + newTokens; the decode time is the difference (newTokens decode steps of the whole batch).
 */
export async function measureDecode(model: Model, prompts: number[][], newTokens: number): Promise<DecodeSample> {
  const opts = { temperature: 0, batchSize: prompts.length, stepsPerCall: 1 << 20 };
  let t0 = now(), c0 = cpuNow();
  const g1 = await model.generate(prompts, { ...opts, maxNewTokens: 1 });
  const t1 = now() - t0, c1 = cpuNow() - c0;
  t0 = now();
  c0 = cpuNow();
  const gN = await model.generate(prompts, { ...opts, maxNewTokens: 1 + newTokens });
  const tN = now() - t0, cN = cpuNow() - c0;
  const count = (g: { ids: number[] }[]) => g.reduce((a, r) => a + r.ids.length, 0);
  return {
    prefillSeconds: t1, decodeSeconds: Math.max(1e-9, tN - t1),
    prefillCpuSeconds: c1, decodeCpuSeconds: Math.max(1e-9, cN - c1),
    decodeTokens: count(gN) - count(g1), ids0: gN[0].ids,
  };
}

/** Times `steps` SFT steps (forward + backward + AdamW) after `warmup` untimed ones; seconds per step. */
export async function measureTrain(model: Model, batch: number, seq: number, steps: number, warmup = 1, seed = 7): Promise<{ times: number[]; cpuTimes: number[]; loss: number }> {
  const sequences = benchPrompts(batch, seq, model.config.vocabSize, seed);
  const times: number[] = [], cpuTimes: number[] = [];
  let loss = NaN;
  for (let i = 0; i < warmup + steps; i++) {
    const t0 = now(), c0 = cpuNow();
    const r = await model.trainSft({ sequences, from: 1 });
    await model.optimizerStep({ lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 1 });
    const dt = now() - t0, dc = cpuNow() - c0;
    loss = r.loss;
    if (i >= warmup) {
      times.push(dt);
      cpuTimes.push(dc);
    }
  }
  return { times, cpuTimes, loss };
}

function describeModel(model: Model, source: string) {
  const c = model.config;
  return {
    source,
    params: parameterCount(c),
    hiddenSize: c.hiddenSize, numLayers: c.numLayers, numHeads: c.numHeads, numKvHeads: c.numKvHeads,
    intermediateSize: c.intermediateSize, vocabSize: c.vocabSize, tied: c.tieWordEmbeddings,
  };
}

function progress(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

async function writeResult(kind: ModelBenchKind, result: object, out: string | undefined): Promise<string | undefined> {
  if (out === '') return undefined;
  const file = out ?? path.join(packageRoot, 'bench', 'results', `model-${kind}.json`);
  mkdirSync(path.dirname(file), { recursive: true });
  await writeFileAtomic(file, JSON.stringify(result, null, 2) + '\n');
  return file;
}

const fmt = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : String(x));

export async function runModelBench(kind: ModelBenchKind, opts: ModelBenchOptions): Promise<Record<string, unknown>> {
  if (kind !== 'decode' && kind !== 'train') throw new RangeError(`bench kind must be "decode" or "train", got ${String(kind)}`);
  const posInt = (v: number | undefined, name: string) => {
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new RangeError(`${name} must be an integer >= 1, got ${v}`);
    return v;
  };
  posInt(opts.batch, 'batch');
  posInt(opts.seq, 'seq');
  posInt(opts.newTokens, 'newTokens');
  posInt(opts.reps, 'reps');
  if (posInt(opts.threads, 'threads') !== undefined) native.setThreads(opts.threads!);
  const threads: number = native.getThreads();
  progress(`loading ${opts.model ?? 'a random ~31M-parameter Llama'} (threads ${threads}, isa ${native.isa})`);
  const model = await loadBenchModel(opts.model, 1234, opts.device ?? 'cpu');
  const info = describeModel(model, opts.model ?? 'random');
  const peak = native.measureFmaPeak({ seconds: 0.2, threads });
  const base = { kind, device: model.device, threads, isa: native.isa as string, fmaPeakGflops: peak, model: info };
  let result: Record<string, unknown>;

  if (kind === 'decode') {
    const seq = opts.seq ?? 32, newTokens = opts.newTokens ?? 64, reps = opts.reps ?? 3;
    const batches = opts.batch ? [...new Set([1, opts.batch])] : [1, 8, 64];
    const samples = new Map<number, DecodeSample[]>(batches.map((b) => [b, []]));
    const prompts = new Map(batches.map((b) => [b, benchPrompts(b, seq, model.config.vocabSize, 100 + b)]));
    progress('warm-up');
    for (const b of batches) await measureDecode(model, prompts.get(b)!, 4);
    for (let r = 0; r < reps; r++)
      for (const b of batches) {
        const s = await measureDecode(model, prompts.get(b)!, newTokens);
        samples.get(b)!.push(s);
        progress(`rep ${r + 1}/${reps} batch ${b}: prefill ${fmt((b * seq) / s.prefillSeconds)} tok/s, decode ${fmt(s.decodeTokens / s.decodeSeconds)} tok/s`);
      }
    const rows = batches.map((b) => {
      const ss = samples.get(b)!;
      const prefill = median(ss.map((s) => (b * seq) / s.prefillSeconds));
      const decode = median(ss.map((s) => s.decodeTokens / s.decodeSeconds));
      return {
        batch: b,
        prefillTokensPerSecond: prefill,
        decodeTokensPerSecond: decode,
        decodeMsPerStep: (1000 * b) / decode,
        decodeGflops: (decode * forwardFlopsPerToken(model.config, 2 * (seq + newTokens / 2) - 1)) / 1e9,
      };
    });
    const d1 = rows.find((r) => r.batch === 1)!.decodeTokensPerSecond;
    const bmax = rows[rows.length - 1];
    result = {
      ...base, promptTokens: seq, newTokens, reps, rows,
      scaling: { batch: bmax.batch, ratio: bmax.decodeTokensPerSecond / d1 },
      weightBytes: info.params * 4,
      maxRssMB: process.resourceUsage().maxRSS / 1024,
    };
    if (!opts.json) {
      console.log(`decode: ${info.params / 1e6 | 0}M params, prompt ${seq}, ${newTokens} new tokens, greedy, ${threads} thread(s), SIMD path ${native.isa}, median of ${reps}`);
      console.log('batch  prefill tok/s  decode tok/s  ms/step  GFLOP/s');
      for (const r of rows)
        console.log(`${String(r.batch).padStart(5)}  ${fmt(r.prefillTokensPerSecond).padStart(13)}  ${fmt(r.decodeTokensPerSecond).padStart(12)}  ${fmt(r.decodeMsPerStep, 2).padStart(7)}  ${fmt(r.decodeGflops).padStart(7)}`);
      console.log(`batch ${bmax.batch} aggregate / batch 1: ${fmt(bmax.decodeTokensPerSecond / d1, 2)}x`);
    }
  } else {
    const batch = opts.batch ?? 4, seq = opts.seq ?? 128, reps = opts.reps ?? 5;
    progress(`training steps at ${batch} x ${seq}`);
    const { times, loss } = await measureTrain(model, batch, seq, reps);
    const s = median(times);
    const tokens = batch * seq;
    const flops = 3 * forwardFlopsPerToken(model.config, seq) * tokens;
    const act = model.activationFloatsPerToken;
    result = {
      ...base, batch, seq, reps,
      msPerStep: s * 1000,
      tokensPerSecond: tokens / s,
      timesMs: times.map((t) => +(t * 1000).toFixed(3)),
      gflopsPerStep: flops / 1e9,
      achievedGflops: flops / s / 1e9,
      fractionOfPeak: flops / s / 1e9 / peak,
      loss,
      activationFloatsPerToken: act,
      activationBytesPerToken: act * 4,
      activationMBForBatch: (act * 4 * tokens) / 2 ** 20,
      // weights + gradients + AdamW m, v: 4 floats per parameter.
      parameterStateMB: (info.params * 16) / 2 ** 20,
      maxRssMB: process.resourceUsage().maxRSS / 1024,
    };
    if (!opts.json) {
      const r = result as Record<string, number>;
      console.log(`train: ${info.params / 1e6 | 0}M params, ${batch} x ${seq} tokens, forward + backward + AdamW, ${threads} thread(s), SIMD path ${native.isa}, median of ${reps}`);
      console.log(`  ${fmt(r.msPerStep)} ms/step   ${fmt(r.tokensPerSecond)} tokens/s   ${fmt(r.achievedGflops)} GFLOP/s (${fmt(100 * r.fractionOfPeak)}% of ${fmt(peak)} FMA peak)`);
      console.log(`  activations ${fmt(act * 4 / 1024)} KiB/token (${fmt(r.activationMBForBatch)} MiB for the batch), parameter state ${fmt(r.parameterStateMB)} MiB, peak RSS ${fmt(r.maxRssMB)} MiB`);
    }
  }
  const file = await writeResult(kind, result, opts.out);
  if (file) progress(`wrote ${path.relative(process.cwd(), file)}`);
  if (opts.json) console.log(JSON.stringify(result));
  return result;
}
