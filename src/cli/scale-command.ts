// CLI for issue 18's real-shape measurements: `bench scale` (ours vs PyTorch at a model shape) and
// `bench dash --shape NAME` (the DASH race on a random-init model of that shape).
import path from 'node:path';
import { UsageError, intOption, parseDevice } from './args.js';
import { parseFloatArg } from './model-commands.js';
import { DEVICE, JSON_OUT, flag, str, type OptionSpecs } from './options.js';
import { progressLine } from './rl-commands.js';

const SHAPE = str('qwen2.5-0.5b|tiny', 'the model shape: Qwen2.5-0.5B\'s published config with random seeded weights, or a tiny one of the same architecture');

export const SCALE_BENCH_OPTIONS: OptionSpecs = {
  shape: { ...SHAPE, help: `${SHAPE.help} (default qwen2.5-0.5b)` },
  device: DEVICE,
  what: str('train,generate', 'the phases to measure (default both)'),
  batch: str('B', 'train: sequences per step (default 8 at 0.5B, 4 tiny)'),
  seq: str('T', 'train: tokens per sequence (default 1024 at 0.5B, 64 tiny)'),
  'micro-batch': str('N', 'train: sequences per forward/backward call, gradients accumulated (default all of --batch)'),
  prompts: str('P', 'generate: prompts (default 64 at 0.5B, 8 tiny)'),
  'prompt-len': str('L', 'generate: tokens per prompt (default 64 at 0.5B, 16 tiny)'),
  'new-tokens': str('N', 'generate: new tokens per prompt, exactly: no EOS (default 512 at 0.5B, 32 tiny)'),
  temperature: str('T', 'generate: 0 greedy (default), > 0 sampled'),
  reps: str('N', 'timed repetitions after one warm-up, median (default 3)'),
  threads: str('N', 'CPU threads (default: all cores)'),
  torch: str('auto|off', 'the PyTorch peer (bench/torch_scale.py under $WST_DASH_PYTHON, default python3): auto runs it when torch imports (default auto)'),
  'torch-compile': str('on|off', 'also the torch.compile rows (default on with --device cuda, off on the CPU)'),
  'torch-timeout': str('S', 'kill the torch peer after S seconds, keeping its finished rows (default 600)'),
  out: str('FILE', 'also write the JSON result here'),
  json: JSON_OUT,
};

/** Added to `bench dash`: with --shape it races on a random-init model of that shape instead of the built-in task. */
export const SCALE_RACE_OPTIONS: OptionSpecs = {
  shape: { ...SHAPE, help: `${SHAPE.help}: race GRPO (per-micro-batch) and DASH on it for wall time, fixed-length completions; --steps defaults to 2 and --repeat to 1 (default: the built-in task)` },
  'prompt-len': str('L', 'with --shape: tokens per prompt (default 64)'),
  'new-tokens': str('N', 'with --shape: new tokens per completion, exactly (default 256)'),
  'prompts-per-step': str('N', 'with --shape: prompts per step (default 16; G 8)'),
  decoupled: flag('with --shape: also the decoupled GRPO arm'),
  'no-warmup': flag('with --shape: no untimed warm-up step'),
};

const onOff = (v: unknown, name: string): boolean | undefined => {
  if (v === undefined) return undefined;
  if (v !== 'on' && v !== 'off') throw new UsageError(`${name} must be on or off, got "${String(v)}"`);
  return v === 'on';
};

async function shapeOf(values: Record<string, unknown>, fallback?: 'qwen2.5-0.5b') {
  const { SCALE_SHAPES } = await import('../bench/scale.js');
  const shape = (values.shape as string | undefined) ?? fallback;
  if (!SCALE_SHAPES.includes(shape as (typeof SCALE_SHAPES)[number])) throw new UsageError(`--shape must be one of ${SCALE_SHAPES.join(', ')}, got "${shape}"`);
  return shape as (typeof SCALE_SHAPES)[number];
}

const optInt = (values: Record<string, unknown>, key: string) => (values[key] === undefined ? undefined : intOption(values, key, 0));

export async function scaleBenchCommand(values: Record<string, unknown>): Promise<void> {
  const { runScaleBench } = await import('../bench/scale.js');
  const shape = await shapeOf(values, 'qwen2.5-0.5b');
  const what = values.what === undefined ? undefined : (values.what as string).split(',').filter(Boolean);
  if (what && (what.length === 0 || what.some((w) => w !== 'train' && w !== 'generate'))) throw new UsageError(`--what must list train and/or generate, got "${String(values.what)}"`);
  const torch = values.torch as string | undefined;
  if (torch !== undefined && torch !== 'auto' && torch !== 'off') throw new UsageError(`--torch must be auto or off, got "${torch}"`);
  const temperature = parseFloatArg(values.temperature as string | undefined, '--temperature', 0);
  if (temperature < 0) throw new UsageError(`--temperature must be >= 0, got ${temperature}`);
  await runScaleBench({
    shape, device: parseDevice(values), what: what as ('train' | 'generate')[] | undefined,
    batch: optInt(values, 'batch'), seq: optInt(values, 'seq'), microBatch: optInt(values, 'micro-batch'), prompts: optInt(values, 'prompts'),
    promptLen: optInt(values, 'prompt-len'), newTokens: optInt(values, 'new-tokens'), temperature, reps: optInt(values, 'reps'), threads: optInt(values, 'threads'),
    torch: torch as 'auto' | 'off' | undefined, torchCompile: onOff(values['torch-compile'], '--torch-compile'), torchTimeoutS: optInt(values, 'torch-timeout'),
    out: values.out as string | undefined, json: Boolean(values.json),
  });
}

/** Options of the built-in race that mean nothing on a random-init model. */
const BUILTIN_ONLY = ['seeds', 'control', 'ablation', 'eval-problems', 'refresh'];

/** `bench dash`: the built-in race, or with --shape the race at that model shape. */
export async function benchDashOrScaleCommand(values: Record<string, unknown>): Promise<void> {
  if (values.shape !== undefined) return scaleRaceCommand(values);
  const stray = Object.keys(SCALE_RACE_OPTIONS).find((k) => values[k] !== undefined);
  if (stray) throw new UsageError(`--${stray} needs --shape (the built-in race sets its own prompts and lengths)`);
  const { benchDashCommand } = await import('./rl-commands.js');
  return benchDashCommand(values);
}

async function scaleRaceCommand(values: Record<string, unknown>): Promise<void> {
  const { runScaleRace, scaleRaceTable } = await import('../rl/scale-race.js');
  const shape = await shapeOf(values);
  const bad = BUILTIN_ONLY.find((k) => values[k] !== undefined);
  if (bad) throw new UsageError(`--${bad} is for the built-in race; with --shape the model is random and only wall time is measured`);
  const tau = parseFloatArg(values.tau as string | undefined, '--tau', 0.4);
  if (tau < 0) throw new UsageError(`--tau must be >= 0, got ${tau}`);
  const outDir = (values.out as string | undefined) ?? path.join('bench', 'results', 'dash');
  const bar = progressLine();
  const r = await runScaleRace({
    shape, device: parseDevice(values), arms: values.decoupled ? ['dash', 'grpo_decoupled', 'grpo'] : ['dash', 'grpo'],
    steps: optInt(values, 'steps'), promptsPerStep: optInt(values, 'prompts-per-step'), promptLen: optInt(values, 'prompt-len'),
    maxNewTokens: optInt(values, 'new-tokens'), repeat: optInt(values, 'repeat'), tau, warmup: !values['no-warmup'], outDir,
    log: (l) => { bar.done(); console.error(l); },
    progress: (t) => bar.update(t),
  });
  bar.done();
  console.log(values.json ? JSON.stringify(r) : scaleRaceTable(r));
}
