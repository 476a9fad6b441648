// wst-dash CLI. Results go to stdout (JSON with --json); progress and logs go to stderr.
import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { UsageError, parseDevice, parseIntArg } from './args.js';
import { exportGgufCommand, generateCommand, logitsCommand } from './model-commands.js';
import { benchDashCommand, evalCommand, trainCommand } from './rl-commands.js';
import { SCALE_BENCH_OPTIONS, SCALE_RACE_OPTIONS, benchDashOrScaleCommand, scaleBenchCommand } from './scale-command.js';
import { demoWstCommand, evalWstCommand, trainWstCommand } from './wst-commands.js';
import {
  BENCH_DASH_OPTIONS, DASH_OPTIONS, DEMO_OPTIONS, DEMO_WST_OPTIONS, DEVICE, EVAL_OPTIONS, EVAL_WST_OPTIONS, GENERATE_OPTIONS, GRPO_OPTIONS, JSON_OUT,
  MODEL_BENCH_OPTIONS, SCORE_RM_OPTIONS, SERVE_OPTIONS, SFT_OPTIONS, TRAIN_RM_OPTIONS, TRAIN_WST_OPTIONS, flag, optionHelp, parseArgsOptions, str, type OptionSpecs,
} from './options.js';

interface Command {
  summary: string;
  options: OptionSpecs;
  run(values: Record<string, unknown>, positionals: string[]): Promise<void>;
}

const commands: Record<string, Command> = {
  demo: {
    summary: 'the main job: SFT warm-up (cached), DASH vs GRPO race over RL seeds, report folder',
    options: DEMO_OPTIONS,
    run: (values) => benchDashCommand(values, true),
  },
  'bench dash': {
    summary: 'GRPO per-micro-batch vs GRPO decoupled vs DASH on the built-in task: time and accuracy side by side (--shape: wall time at a real model shape)',
    options: { ...BENCH_DASH_OPTIONS, ...SCALE_RACE_OPTIONS },
    run: (values) => benchDashOrScaleCommand(values),
  },
  'bench scale': {
    summary: 'a real model shape (Qwen2.5-0.5B, random weights): training step and generation tokens/s and peak memory, ours vs PyTorch in the same call',
    options: SCALE_BENCH_OPTIONS,
    run: (values) => scaleBenchCommand(values),
  },
  'demo wst': {
    summary: 'the embedded WST default: built-in student and teacher (cached), the teacher trained by DASH and GRPO, every teacher evaluated, report folder',
    options: DEMO_WST_OPTIONS,
    run: (values) => demoWstCommand(values),
  },
  'train wst': { summary: 'train a teacher on a frozen student\'s outcome (WST)', options: TRAIN_WST_OPTIONS, run: (values) => trainWstCommand(values) },
  'eval wst': { summary: 'the student\'s accuracy alone and under each teacher, with misleading / helped fractions', options: EVAL_WST_OPTIONS, run: (values) => evalWstCommand(values) },
  'train sft': { summary: 'supervised warm-up on a task\'s reference solutions', options: SFT_OPTIONS, run: (v) => trainCommand('sft', v) },
  'train grpo': { summary: 'GRPO (per-micro-batch or decoupled generation), resumable', options: GRPO_OPTIONS, run: (v) => trainCommand('grpo', v) },
  'train dash': { summary: 'DASH: preemptive sampling + gradient filtering + shared prompts in training, resumable', options: DASH_OPTIONS, run: (v) => trainCommand('dash', v) },
  eval: { summary: 'held-out accuracy of a model on a task', options: EVAL_OPTIONS, run: (values) => evalCommand(values) },
  'train rm': {
    summary: 'a reward model (Bradley-Terry on preference pairs), with the length and bag-of-words baselines and held-out pairwise accuracy per epoch',
    options: TRAIN_RM_OPTIONS,
    run: async (values) => (await import('./rm-commands.js')).trainRmCommand(values),
  },
  'score rm': {
    summary: 'a reward model\'s pairwise accuracy and score statistics on preference pairs',
    options: SCORE_RM_OPTIONS,
    run: async (values) => (await import('./rm-commands.js')).scoreRmCommand(values),
  },
  generate: { summary: 'generate from a model folder', options: GENERATE_OPTIONS, run: (values) => generateCommand(values) },
  logits: {
    summary: 'logits at the last position',
    options: { model: str('DIR', 'the model folder (required)'), ids: str('1,2,3', 'the token ids (required)'), json: JSON_OUT, device: DEVICE },
    run: (values) => logitsCommand(values),
  },
  'export gguf': {
    summary: 'export a llama model folder to GGUF',
    options: { model: str('DIR', 'the model folder (required)'), out: str('FILE', 'the .gguf file to write (required)'), dtype: str('f32|f16', 'weight type (default f32)') },
    run: (values) => exportGgufCommand(values),
  },
  'check-answers': {
    summary: 'answer-checker self-agreement on a data file (every reference solution must check as correct)',
    options: { task: str('gsm8k|math500', 'the task (required)'), file: str('PATH', 'the JSONL data file (required)'), json: JSON_OUT },
    run: async (values) => {
      const { runCheckAnswers } = await import('../rl/check-answers.js');
      const task = values.task as string | undefined;
      if (task !== 'gsm8k' && task !== 'math500') throw new UsageError('--task must be gsm8k or math500');
      if (!values.file) throw new UsageError('--file PATH is required');
      runCheckAnswers({ task, file: values.file as string, json: values.json as boolean | undefined });
    },
  },
  'bench answers': {
    summary: 'answer checking: µs per check and per DASH step (arith, GSM8K, MATH-500), pathological inputs, agreement with Math-Verify\'s cases',
    options: {
      cases: str('FILE', 'Math-Verify\'s regression cases as JSON (python3 scripts/math-verify-cases.py PATH/TO/Math-Verify > FILE)'),
      json: JSON_OUT,
      'data-dir': str('DIR', 'folder holding the data sets (GSM8K and MATH-500 rows are skipped without it)'),
    },
    run: async (values) => {
      const { runAnswerBench, answerBenchTable } = await import('../bench/answers.js');
      const r = runAnswerBench({ cases: values.cases as string | undefined });
      console.log(values.json ? JSON.stringify(r) : answerBenchTable(r));
    },
  },
  'bench decode': { summary: 'prefill/decode tokens/s at batch 1, 8, 64', options: MODEL_BENCH_OPTIONS, run: (values) => modelBench('decode', values) },
  'bench train': { summary: 'training tokens/s, ms/step and peak RSS', options: MODEL_BENCH_OPTIONS, run: (values) => modelBench('train', values) },
  serve: {
    summary: 'an OpenAI-compatible server over a model folder (GET /v1/models, POST /v1/chat/completions and /v1/completions, SSE)',
    options: SERVE_OPTIONS,
    run: async (values) => (await import('./serve-command.js')).serveCommand(values),
  },
  'bench kernels': {
    summary: 'GFLOP/s of GEMM and attention, tokens/s of sampling, vs the machine FMA peak and OpenBLAS',
    options: {
      json: JSON_OUT,
      quick: flag('fewer sizes and repetitions'),
      threads: str('N', 'CPU threads (default: 1 and all cores)'),
      out: str('DIR', 'where the JSON and SVG go (default bench/results)'),
    },
    run: async (values) => {
      const { runKernelBench } = await import('../bench/kernels.js');
      await runKernelBench({
        json: Boolean(values.json),
        quick: Boolean(values.quick),
        threads: values.threads === undefined ? undefined : parseIntArg(values.threads as string, '--threads'),
        out: values.out as string | undefined,
      });
    },
  },
};

async function modelBench(kind: 'decode' | 'train', values: Record<string, unknown>): Promise<void> {
  const { runModelBench } = await import('../bench/model.js');
  const int = (k: string) => (values[k] === undefined ? undefined : parseIntArg(values[k] as string, `--${k}`));
  await runModelBench(kind, { model: values.model as string | undefined, batch: int('batch'), seq: int('seq'), threads: int('threads'), reps: int('reps'), json: Boolean(values.json), device: parseDevice(values) });
}

function usage(): string {
  const lines = ['usage: wst-dash <command> [options]', '', 'commands:'];
  for (const [name, c] of Object.entries(commands)) lines.push(`  ${name.padEnd(18)} ${c.summary}`);
  return lines.join('\n');
}

/** The package version (package.json beside src/ or dist/). */
function version(): string {
  const file = fileURLToPath(new URL('../../package.json', import.meta.url));
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
}

/**
 * `--steps -5` would be read by parseArgs as an unknown option "-5" ("ambiguous"): a value that
 * looks like a negative number after a string option is joined to it (`--steps=-5`), so that the
 * range check names the option and what it expects.
 */
export function joinNegativeValues(args: readonly string[], options: OptionSpecs): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i], next = args[i + 1];
    const opt = a.startsWith('--') && !a.includes('=') ? options[a.slice(2)] : undefined;
    if (opt?.type === 'string' && next !== undefined && /^-\d|^-\.\d|^-Infinity$/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

/** Options that name a model: a local folder, or a hub id (`org/name`, with --revision). */
const MODEL_OPTIONS = ['model', 'teacher', 'student', 'untrained', 'strong', 'reward-model'] as const;
for (const c of Object.values(commands))
  if (MODEL_OPTIONS.some((k) => k in c.options)) c.options.revision = str('REV', 'for hub model ids (org/name): branch, tag or commit (default main)');

// Commands that place models (--device) also take their GEMM precision.
for (const c of Object.values(commands))
  if ('device' in c.options) c.options.dtype = str('fp32|bf16', 'the linear layers\' GEMM inputs (default bf16 with --device cuda, else fp32; bf16: mixed precision, fp32 master weights)');

/**
 * Hub model ids are downloaded once into the hub cache (progress on stderr; $HF_TOKEN, $HF_ENDPOINT,
 * $HF_HUB_OFFLINE as Hugging Face tools read them) and replaced by their local folder; a task's
 * public data set is fetched into the cache when neither --file nor the data folder has it.
 */
async function fetchNamedInputs(values: Record<string, unknown>): Promise<void> {
  const wanted = MODEL_OPTIONS.filter((k) => typeof values[k] === 'string');
  if (wanted.length > 0) {
    const { isHubId, resolveModelPath } = await import('../models/hub.js');
    for (const k of wanted)
      if (isHubId(values[k] as string)) values[k] = await resolveModelPath(values[k] as string, { revision: values.revision as string | undefined, log: (l) => console.error(l) });
  }
  if ((values.task === 'gsm8k' || values.task === 'math500' || values.task === 'hh-rlhf') && values.file === undefined) {
    const { ensureTaskData } = await import('../rl/tasks/fetch-data.js');
    await ensureTaskData(values.task, { log: (l) => console.error(l) });
  }
}

export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    console.log(usage());
    return argv.length === 0 ? 1 : 0;
  }
  if (argv[0] === '--version' || argv[0] === '-v') {
    console.log(version());
    return 0;
  }
  const name = [argv.slice(0, 2).join(' '), argv[0]].find((n) => n in commands);
  if (!name) {
    // A command group with --help or nothing after it (`wst-dash train --help`): its sub-commands.
    const group = Object.keys(commands).filter((c) => c.startsWith(argv[0] + ' '));
    if (group.length > 0 && (argv.length === 1 || argv[1] === '--help' || argv[1] === '-h')) {
      console.log(`wst-dash ${argv[0]} <sub-command>:\n\n${group.map((c) => `  ${c.padEnd(18)} ${commands[c].summary}`).join('\n')}`);
      return argv.length === 1 ? 2 : 0;
    }
    console.error(`wst-dash: unknown command "${argv.slice(0, 2).join(' ')}"\n\n${usage()}`);
    return 2;
  }
  const command = commands[name];
  const rest = argv.slice(name.split(' ').length);
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(`usage: wst-dash ${name} [options]\n\n${command.summary}\n\noptions:\n${optionHelp(command.options)}`);
    return 0;
  }
  try {
    const { values, positionals } = parseArgs({ args: joinNegativeValues(rest, command.options), options: parseArgsOptions(command.options), allowPositionals: true, strict: true });
    // --data-dir: where every task of this process reads its data (tasks read $WST_DASH_DATA).
    if (typeof values['data-dir'] === 'string') {
      if (!statSync(values['data-dir'], { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`--data-dir ${values['data-dir']}: not a folder`);
      process.env.WST_DASH_DATA = values['data-dir'];
    }
    // --dtype: the precision of every model this process creates (models read $WST_DASH_DTYPE).
    if ('device' in command.options && values.dtype !== undefined) {
      if (values.dtype !== 'fp32' && values.dtype !== 'bf16') throw new UsageError(`--dtype must be fp32 or bf16, got "${values.dtype}"`);
      process.env.WST_DASH_DTYPE = values.dtype;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}" (options start with --; see wst-dash ${name} --help)`);
    await fetchNamedInputs(values);
    await command.run(values, positionals);
    return 0;
  } catch (err) {
    const e = err as Error & { code?: string };
    if (err instanceof UsageError || e.code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`wst-dash ${name}: ${e.message}`);
      return 2;
    }
    // Stack traces only on request: users get the message, which names what was wrong.
    console.error(`wst-dash ${name}: ${process.env.WST_DASH_DEBUG ? e.stack ?? e.message : e.message}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
