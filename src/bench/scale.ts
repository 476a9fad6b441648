// `wst-dash bench scale`: the engine at a real model shape against a plain PyTorch implementation of
// the same model in the same call (issue 18). Shapes: the published Qwen2.5-0.5B config with random,
// seeded weights, and a tiny shape of the same architecture for CPU smoke tests.
//   train     forward + backward + AdamW over batch × seq tokens (8 × 1024 at 0.5B): tokens/s.
//   generate  prompts × newTokens (64 × 512 at 0.5B), every row exactly newTokens long (the config
//             has no EOS id and no stop is given), greedy unless --temperature > 0: new tokens/s
//             (prefill included), from the first prompt token to the last new one.
// The PyTorch peer is bench/torch_scale.py (eager, then torch.compile), run first as a child process
// with $WST_DASH_PYTHON (default python3) when that Python imports torch; otherwise the table says why not.
// Peak memory: on the CPU each process's peak RSS; on CUDA, ours is the device's memory.used (from
// nvidia-smi, polled every 100 ms) above what was in use before the model was created, torch's is its
// allocator's max_memory_allocated (and max_memory_reserved), per phase.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { native, packageRoot } from '../native.js';
import { Model, checkDtype, type Device, type Dtype } from '../models/model.js';
import { writeFileAtomic } from '../models/atomic.js';
import { parameterCount, type ModelConfig } from '../models/config.js';
import type { Tokenizer } from '../models/tokenizer.js';
import { benchConfig, benchPrompts, median } from './model.js';

export const SCALE_SHAPES = ['qwen2.5-0.5b', 'tiny'] as const;
export type ScaleShape = (typeof SCALE_SHAPES)[number];

/** A shape's model and its default measurement sizes (bench/torch_scale.py has the same table). */
interface ShapeSpec {
  model: Pick<ModelConfig, 'vocabSize' | 'hiddenSize' | 'intermediateSize' | 'numLayers' | 'numHeads' | 'numKvHeads'>;
  batch: number;
  seq: number;
  prompts: number;
  promptLen: number;
  newTokens: number;
}

const SHAPES: Record<ScaleShape, ShapeSpec> = {
  // huggingface.co/Qwen/Qwen2.5-0.5B config.json: hidden 896, 24 layers, 14 heads, 2 KV heads,
  // MLP 4864, vocab 151,936, q/k/v biases, tied embeddings, rope_theta 1e6, rms_norm_eps 1e-6.
  'qwen2.5-0.5b': {
    model: { vocabSize: 151936, hiddenSize: 896, intermediateSize: 4864, numLayers: 24, numHeads: 14, numKvHeads: 2 },
    batch: 8, seq: 1024, prompts: 64, promptLen: 64, newTokens: 512,
  },
  tiny: {
    model: { vocabSize: 512, hiddenSize: 64, intermediateSize: 172, numLayers: 2, numHeads: 4, numKvHeads: 2 },
    batch: 4, seq: 64, prompts: 8, promptLen: 16, newTokens: 32,
  },
};

export function checkShape(shape: unknown, name = 'shape'): ScaleShape {
  if (!SCALE_SHAPES.includes(shape as ScaleShape)) throw new RangeError(`${name} must be one of ${SCALE_SHAPES.join(', ')}, got ${JSON.stringify(shape)}`);
  return shape as ScaleShape;
}

/** The Qwen2-architecture config of a shape: random weights need no BOS and must not stop (no EOS). */
export function scaleConfig(shape: ScaleShape): ModelConfig {
  const m = SHAPES[checkShape(shape)].model;
  return benchConfig('30m', {
    ...m, architecture: 'qwen2', headDim: m.hiddenSize / m.numHeads, ropeTheta: 1e6, rmsNormEps: 1e-6, tieWordEmbeddings: true,
    attentionBias: true, maxPositionEmbeddings: 32768, torchDtype: 'bfloat16',
  });
}

export function scaleDefaults(shape: ScaleShape): Omit<ShapeSpec, 'model'> {
  const { model: _, ...d } = SHAPES[checkShape(shape)];
  return d;
}

/** A model of the shape with seeded random weights (normal(0, 0.02)). */
export function createScaleModel(shape: ScaleShape, options: { seed?: number; device?: Device; tokenizer?: Tokenizer } = {}): Model {
  return Model.create(scaleConfig(shape), { seed: options.seed ?? 1234, std: 0.02, device: options.device, tokenizer: options.tokenizer });
}

export type ScalePhase = 'train' | 'generate';

export interface ScaleBenchOptions {
  shape: ScaleShape;
  device?: Device;
  /** Phases to measure (default both). */
  what?: ScalePhase[];
  batch?: number;
  seq?: number;
  /** train: sequences per forward/backward call (gradients accumulate; default all of batch). */
  microBatch?: number;
  prompts?: number;
  promptLen?: number;
  newTokens?: number;
  /** 0 (default) greedy; > 0 sampled. */
  temperature?: number;
  /** Timed repetitions, median (default 3). */
  reps?: number;
  threads?: number;
  /** 'auto' (default): run bench/torch_scale.py when the Python imports torch; 'off': do not. */
  torch?: 'auto' | 'off';
  /** The torch.compile rows (default: on with cuda, off on the CPU, where compiling takes minutes). */
  torchCompile?: boolean;
  /** Kill the torch peer after this many seconds, keeping the rows it printed (default 600). */
  torchTimeoutS?: number;
  /** Where the JSON goes as well as stdout (default: nowhere). */
  out?: string;
  json: boolean;
  log?: (line: string) => void;
}

export interface OurRow {
  phase: ScalePhase;
  tokensPerSecond: number;
  seconds: number;
  secondsRuns: number[];
  warmupSeconds: number;
  /** CPU: the process's peak RSS so far (monotone). */
  maxRssMB?: number;
  /** CUDA: the device's peak memory.used during the phase minus the use before the model existed. */
  peakDeviceMB?: number | null;
  loss?: number;
  /** generate: whether every row got exactly newTokens tokens. */
  fixedLength?: boolean;
  ids0?: number[];
  /** Why the phase has no numbers. */
  error?: string;
}

export interface TorchRow {
  phase: ScalePhase;
  mode: 'eager' | 'compile';
  tokensPerSecond?: number;
  seconds?: number;
  peakAllocatedMB?: number;
  peakReservedMB?: number;
  maxRssMB?: number;
  error?: string;
  [k: string]: unknown;
}

export interface ScaleResult {
  shape: ScaleShape;
  device: Device;
  gpu?: string | null;
  isa: string;
  threads: number;
  /** Our model's linear-layer precision (Model.dtype: --dtype / $WST_DASH_DTYPE, default bf16 on CUDA, fp32 on the CPU). */
  dtype: Dtype;
  params: number;
  config: ModelConfig;
  settings: { batch: number; seq: number; microBatch: number; prompts: number; promptLen: number; newTokens: number; temperature: number; reps: number };
  ours: OurRow[];
  torch: { ran: boolean; python?: string; version?: string; skipped?: string; rows: TorchRow[] };
  /** ours / torch tokens/s, per phase and torch mode (absent when that row is missing or failed). */
  ratios: Partial<Record<`${ScalePhase}_vs_${'eager' | 'compile'}`, number>>;
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

/**
 * Polls the GPU's memory.used (MiB) with nvidia-smi; `peak()` is the largest reading since start.
 * Without nvidia-smi every reading is null.
 */
class DeviceMemory {
  private proc: ChildProcess | undefined;
  private max = -1;

  static used(): number | null {
    try {
      const out = execFileSync('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits', '--id=0'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 });
      const v = Number(out.trim().split('\n')[0]);
      return Number.isFinite(v) ? v : null;
    } catch {
      return null;
    }
  }

  start(): void {
    this.max = -1;
    try {
      const proc = spawn('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits', '--id=0', '-lms', '100'], { stdio: ['ignore', 'pipe', 'ignore'] });
      proc.on('error', () => undefined);
      // No nvidia-smi: no pid. Never kill() such a child: it would signal pid 0, our own process group.
      if (proc.pid === undefined) return;
      this.proc = proc;
      createInterface({ input: this.proc.stdout! }).on('line', (l) => {
        const v = Number(l.trim());
        if (Number.isFinite(v)) this.max = Math.max(this.max, v);
      });
    } catch {
      this.proc = undefined;
    }
  }

  /** Stops polling (after one more reading) and returns the peak, or null when nothing was read. */
  async stop(): Promise<number | null> {
    const last = DeviceMemory.used();
    if (last !== null) this.max = Math.max(this.max, last);
    this.proc?.kill();
    this.proc = undefined;
    return this.max >= 0 ? this.max : null;
  }
}

const posInt = (v: number | undefined, name: string): number | undefined => {
  if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new RangeError(`${name} must be an integer >= 1, got ${v}`);
  return v;
};

async function measureOurGenerate(model: Model, s: ScaleResult['settings'], reps: number): Promise<Omit<OurRow, 'maxRssMB' | 'peakDeviceMB'>> {
  const prompts = benchPrompts(s.prompts, s.promptLen, model.config.vocabSize, 100 + s.prompts);
  const opts = { temperature: s.temperature, maxNewTokens: s.newTokens, batchSize: s.prompts, stepsPerCall: 1 << 20, seed: 3 };
  let t0 = now();
  await model.generate(prompts, opts);
  const warmupSeconds = now() - t0;
  const runs: number[] = [];
  let gens: Awaited<ReturnType<Model['generate']>> = [];
  for (let r = 0; r < reps; r++) {
    t0 = now();
    gens = await model.generate(prompts, opts);
    runs.push(now() - t0);
  }
  const seconds = median(runs);
  return {
    phase: 'generate', seconds, secondsRuns: runs.map((x) => +x.toFixed(4)), warmupSeconds,
    tokensPerSecond: (s.prompts * s.newTokens) / seconds, fixedLength: gens.every((g) => g.ids.length === s.newTokens), ids0: gens[0]?.ids.slice(0, 8),
  };
}

/** One step: forward + backward over every micro-batch (the loss normalised over the whole batch), then AdamW. */
async function measureOurTrain(model: Model, s: ScaleResult['settings'], reps: number): Promise<Omit<OurRow, 'maxRssMB' | 'peakDeviceMB'>> {
  // seq + 1 tokens per sequence, loss from position 1: seq predicted tokens, as torch_scale.py's step.
  const sequences = benchPrompts(s.batch, s.seq + 1, model.config.vocabSize, 7);
  const normalizer = s.batch * s.seq;
  let loss = NaN;
  const step = async () => {
    loss = 0;
    for (let i = 0; i < s.batch; i += s.microBatch) {
      const r = await model.trainSft({ sequences: sequences.slice(i, i + s.microBatch), from: 1 }, { normalizer });
      loss += r.loss;
    }
    await model.optimizerStep({ lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 1 });
  };
  let t0 = now();
  await step();
  const warmupSeconds = now() - t0;
  const runs: number[] = [];
  for (let r = 0; r < reps; r++) {
    t0 = now();
    await step();
    runs.push(now() - t0);
  }
  const seconds = median(runs);
  return { phase: 'train', seconds, secondsRuns: runs.map((x) => +x.toFixed(4)), warmupSeconds, tokensPerSecond: normalizer / seconds, loss };
}

/** The Python that runs the torch peer: $WST_DASH_PYTHON, else python3. */
export function torchPython(): string {
  return process.env.WST_DASH_PYTHON || 'python3';
}

/** torch's version when `python` imports it (and, with cuda, sees a device); else why not. */
export function probeTorch(python: string, device: Device): { version: string } | { skipped: string } {
  const r = spawnSync(python, ['-c', 'import torch, sys; print(torch.__version__, torch.cuda.is_available())'], { encoding: 'utf8', timeout: 120_000 });
  if (r.error) return { skipped: `${python} could not be run (${(r.error as NodeJS.ErrnoException).code ?? r.error.message}); set WST_DASH_PYTHON to a Python with torch` };
  if (r.status !== 0) return { skipped: `${python} cannot import torch (set WST_DASH_PYTHON to a Python with torch)` };
  const [version, cuda] = r.stdout.trim().split(/\s+/);
  if (device === 'cuda' && cuda !== 'True') return { skipped: `torch ${version} under ${python} sees no CUDA device` };
  return { version };
}

function runTorchPeer(python: string, args: string[], timeoutS: number, log: (l: string) => void): Promise<{ rows: TorchRow[]; note?: string }> {
  return new Promise((resolve) => {
    const rows: TorchRow[] = [];
    const proc = spawn(python, [path.join(packageRoot, 'bench', 'torch_scale.py'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let timedOut = false;
    // A `timeout` around this process must not leave the peer holding the GPU for the next step.
    const kill = () => { if (proc.pid !== undefined && proc.exitCode === null) proc.kill('SIGKILL'); };
    const timer = setTimeout(() => { timedOut = true; kill(); }, timeoutS * 1000);
    const onSignal = () => { kill(); process.exit(143); };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    const settle = () => { clearTimeout(timer); process.off('SIGTERM', onSignal); process.off('SIGINT', onSignal); };
    createInterface({ input: proc.stdout }).on('line', (l) => {
      if (!l.startsWith('{')) return;
      try {
        rows.push(JSON.parse(l) as TorchRow);
      } catch {
        log(`[torch] unreadable line: ${l.slice(0, 200)}`);
      }
    });
    let tail = '';
    createInterface({ input: proc.stderr }).on('line', (l) => {
      if (l.startsWith('[torch_scale]')) log(l);
      tail = (tail + '\n' + l).slice(-600);
    });
    proc.on('error', (e) => { settle(); resolve({ rows, note: `torch peer could not start: ${e.message}` }); });
    proc.on('close', (code) => {
      settle();
      const note = timedOut ? `torch peer killed after ${timeoutS} s (--torch-timeout)` : code !== 0 ? `torch peer exited with ${code}: ${tail.trim().split('\n').pop()}` : undefined;
      resolve({ rows, note });
    });
  });
}

const fmt = (x: number | undefined | null, d = 1) => (x === undefined || x === null || !Number.isFinite(x) ? '-' : x.toFixed(d));

export function scaleTable(r: ScaleResult): string {
  const s = r.settings;
  const lines = [
    `bench scale: ${r.shape} (${(r.params / 1e6).toFixed(1)}M parameters, random seeded weights) on ${r.device}${r.gpu ? ` (${r.gpu})` : ` (${r.threads} thread(s), ${r.isa})`}; ours ${r.dtype === 'bf16' ? 'bf16 mixed precision' : 'fp32'}, torch ${r.device === 'cuda' ? 'bf16 autocast (train), bf16 weights (generate)' : 'fp32'}`,
    `  train: ${s.batch} x ${s.seq} tokens per step (micro-batches of ${s.microBatch}), forward + backward + AdamW; generate: ${s.prompts} prompts of ${s.promptLen} tokens x ${s.newTokens} new tokens, ${s.temperature > 0 ? `sampled at T ${s.temperature}` : 'greedy'}, no EOS; median of ${s.reps}`,
    '',
    'phase     implementation   tokens/s    s/run   peak memory MiB          ours / it',
  ];
  const mem = (row: OurRow | TorchRow) => ('peakDeviceMB' in row ? `${fmt(row.peakDeviceMB as number | null, 0)} (device)`
    : 'peakAllocatedMB' in row ? `${fmt(row.peakAllocatedMB, 0)} alloc / ${fmt(row.peakReservedMB, 0)} res` : `${fmt(row.maxRssMB, 0)} (RSS)`);
  for (const phase of ['train', 'generate'] as const) {
    const ours = r.ours.find((o) => o.phase === phase);
    if (!ours) continue;
    if (ours.error) lines.push(`${phase.padEnd(9)} ${'wst-dash'.padEnd(16)} failed: ${ours.error.slice(0, 120)}`);
    else lines.push(`${phase.padEnd(9)} ${'wst-dash'.padEnd(16)} ${fmt(ours.tokensPerSecond).padStart(9)} ${fmt(ours.seconds, 3).padStart(8)}   ${mem(ours).padEnd(24)}`);
    for (const t of r.torch.rows.filter((x) => x.phase === phase)) {
      const name = `torch ${t.mode}`;
      if (t.error) lines.push(`${phase.padEnd(9)} ${name.padEnd(16)} failed: ${t.error.slice(0, 120)}`);
      else lines.push(`${phase.padEnd(9)} ${name.padEnd(16)} ${fmt(t.tokensPerSecond).padStart(9)} ${fmt(t.seconds, 3).padStart(8)}   ${mem(t).padEnd(24)} ${fmt(r.ratios[`${phase}_vs_${t.mode}`], 2)}x`);
    }
  }
  if (r.ratios.train_vs_eager !== undefined || r.ratios.generate_vs_eager !== undefined)
    lines.push('', `ours / torch eager: train ${fmt(r.ratios.train_vs_eager, 2)}x, generate ${fmt(r.ratios.generate_vs_eager, 2)}x (issue 18's target: >= 1.0x on both; the torch.compile rows as they are)`);
  if (!r.torch.ran || r.torch.skipped) lines.push('', `torch: ${r.torch.skipped ?? 'not run'}`);
  if (r.ours.some((o) => o.fixedLength === false)) lines.push('', 'warning: some generations stopped before newTokens (the lengths differ from torch\'s)');
  return lines.join('\n');
}

export async function runScaleBench(o: ScaleBenchOptions): Promise<ScaleResult> {
  const log = o.log ?? ((l: string) => process.stderr.write(`[scale] ${l}\n`));
  const shape = checkShape(o.shape, '--shape');
  const device = o.device ?? 'cpu';
  const d = scaleDefaults(shape);
  const what = o.what ?? ['train', 'generate'];
  for (const w of what) if (w !== 'train' && w !== 'generate') throw new RangeError(`--what must list train and/or generate, got "${String(w)}"`);
  const batch = posInt(o.batch, '--batch') ?? d.batch;
  const settings: ScaleResult['settings'] = {
    batch, seq: posInt(o.seq, '--seq') ?? d.seq, microBatch: Math.min(batch, posInt(o.microBatch, '--micro-batch') ?? batch),
    prompts: posInt(o.prompts, '--prompts') ?? d.prompts, promptLen: posInt(o.promptLen, '--prompt-len') ?? d.promptLen,
    newTokens: posInt(o.newTokens, '--new-tokens') ?? d.newTokens, temperature: o.temperature ?? 0, reps: posInt(o.reps, '--reps') ?? 3,
  };
  if (!(settings.temperature >= 0 && Number.isFinite(settings.temperature))) throw new RangeError(`--temperature must be a number >= 0, got ${o.temperature}`);
  if (posInt(o.threads, '--threads') !== undefined) native.setThreads(o.threads!);
  const config = scaleConfig(shape);
  const result: ScaleResult = {
    shape, device, isa: native.isa as string, threads: native.getThreads(), dtype: checkDtype(undefined, device, 'WST_DASH_DTYPE'), params: parameterCount(config), config, settings, ours: [],
    torch: { ran: false, rows: [] }, ratios: {},
  };

  if (o.torch !== 'off') {
    const python = torchPython();
    const script = path.join(packageRoot, 'bench', 'torch_scale.py');
    const probe = existsSync(script) ? probeTorch(python, device) : { skipped: `${script} is not in this install (it ships with the repository)` };
    result.torch.python = python;
    if ('skipped' in probe) {
      result.torch.skipped = `torch peer skipped: ${probe.skipped}`;
      log(result.torch.skipped);
    } else {
      result.torch.version = probe.version;
      const compile = o.torchCompile ?? device === 'cuda';
      const args = ['--shape', shape, '--device', device, '--what', what.join(','), '--compile', compile ? 'on' : 'off',
        '--batch', String(settings.batch), '--seq', String(settings.seq), '--prompts', String(settings.prompts), '--prompt-len', String(settings.promptLen),
        '--new-tokens', String(settings.newTokens), '--temperature', String(settings.temperature), '--reps', String(settings.reps),
        ...(device === 'cpu' ? ['--threads', String(result.threads)] : [])];
      log(`torch ${probe.version}: ${python} bench/torch_scale.py ${args.join(' ')}`);
      const peer = await runTorchPeer(python, args, o.torchTimeoutS ?? 600, log);
      result.torch.ran = true;
      result.torch.rows = peer.rows;
      if (peer.note) {
        result.torch.skipped = peer.note;
        log(peer.note);
      }
    }
  }

  // Ours after the torch peer: its process has exited and freed its GPU memory before our model
  // exists (ours is freed only when this process exits), and --torch-timeout bounds what a slow
  // torch.compile can cost. Generation first: its peak is the weights + KV cache, before the
  // training state exists.
  const baseMB = device === 'cuda' ? DeviceMemory.used() : null;
  if (device === 'cuda') result.gpu = gpuName();
  log(`creating the ${shape} model (${(result.params / 1e6).toFixed(1)}M parameters) on ${device}`);
  let model: Model | undefined, failed: string | undefined;
  try {
    model = createScaleModel(shape, { device });
    result.dtype = model.dtype;
  } catch (e) {
    failed = `the model could not be created: ${(e as Error).message ?? String(e)}`;
  }
  const poll = new DeviceMemory();
  for (const phase of (['generate', 'train'] as const).filter((p) => what.includes(p))) {
    log(`ours: ${phase}`);
    if (device === 'cuda') poll.start();
    let row: OurRow;
    try {
      if (!model) throw new Error(failed);
      row = phase === 'generate' ? await measureOurGenerate(model, settings, settings.reps) : await measureOurTrain(model, settings, settings.reps);
    } catch (e) {
      // Reported in its row (out of memory at this shape, say); the other phase still runs.
      if (device === 'cuda') await poll.stop();
      const error = ((e as Error).message ?? String(e)).split('\n')[0].slice(0, 400);
      log(`ours: ${phase} failed: ${error}`);
      result.ours.push({ phase, tokensPerSecond: NaN, seconds: NaN, secondsRuns: [], warmupSeconds: NaN, error });
      continue;
    }
    if (device === 'cuda') {
      const peak = await poll.stop();
      row.peakDeviceMB = peak !== null && baseMB !== null ? peak - baseMB : null;
    } else row.maxRssMB = process.resourceUsage().maxRSS / 1024;
    log(`ours: ${phase} ${fmt(row.tokensPerSecond)} tokens/s`);
    result.ours.push(row);
  }

  for (const t of result.torch.rows) {
    const ours = result.ours.find((x) => x.phase === t.phase);
    if (ours && !ours.error && !t.error && typeof t.tokensPerSecond === 'number' && t.tokensPerSecond > 0) result.ratios[`${t.phase}_vs_${t.mode}`] = ours.tokensPerSecond / t.tokensPerSecond;
  }

  if (o.out) {
    mkdirSync(path.dirname(path.resolve(o.out)), { recursive: true });
    await writeFileAtomic(o.out, JSON.stringify(result, null, 2) + '\n');
    log(`wrote ${o.out}`);
  }
  console.log(o.json ? JSON.stringify(result) : scaleTable(result));
  // The table (with the torch rows) is out; the exit status still says our side failed.
  if (failed) throw new Error(failed);
  return result;
}

function gpuName(): string | null {
  try {
    return execFileSync('nvidia-smi', ['--query-gpu=name', '--format=csv,noheader', '--id=0'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 }).trim() || null;
  } catch {
    return null;
  }
}
