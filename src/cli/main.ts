// wst-dash CLI. Results go to stdout (JSON with --json); progress and logs go to stderr.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';

import { UsageError, parseDevice, parseIntArg } from './args.js';
import { exportGgufCommand, generateCommand, logitsCommand } from './model-commands.js';
import { benchDashCommand, evalCommand, trainCommand } from './rl-commands.js';
import { demoWstCommand, evalWstCommand, trainWstCommand } from './wst-commands.js';

interface Command {
  summary: string;
  options: NonNullable<ParseArgsConfig['options']>;
  run(values: Record<string, unknown>, positionals: string[]): Promise<void>;
}

const trainOptions: Command['options'] = {
  task: { type: 'string' }, model: { type: 'string' }, out: { type: 'string' }, steps: { type: 'string' }, seed: { type: 'string' },
  lr: { type: 'string' }, 'batch-size': { type: 'string' }, prompts: { type: 'string' }, group: { type: 'string' },
  'micro-batch': { type: 'string' }, generation: { type: 'string' }, beta: { type: 'string' }, tau: { type: 'string' },
  'max-new-tokens': { type: 'string' }, temperature: { type: 'string' }, 'eval-problems': { type: 'string' }, 'eval-every': { type: 'string' },
  'checkpoint-every': { type: 'string' }, resume: { type: 'boolean' }, device: { type: 'string' }, 'share-prefix': { type: 'string' },
  iterations: { type: 'string' }, force: { type: 'boolean' },
};

/** A student behind OpenAI-compatible servers (train wst, eval wst). */
const STUDENT_URL_OPTIONS: Command['options'] = {
  'student-url': { type: 'string' }, 'student-model': { type: 'string' }, 'student-api': { type: 'string' }, 'student-key-env': { type: 'string' },
  'student-cache': { type: 'string' }, 'student-concurrency': { type: 'string' }, 'student-timeout': { type: 'string' },
};

const commands: Record<string, Command> = {
  demo: {
    summary: 'the main job: SFT warm-up (cached), DASH vs GRPO race over RL seeds, report folder [--out DIR] [--seeds N (default 3)] [--device cpu|cuda] [--refresh: rebuild the cached warm-up]',
    options: { out: { type: 'string' }, steps: { type: 'string' }, 'eval-problems': { type: 'string' }, device: { type: 'string' }, refresh: { type: 'boolean' }, seeds: { type: 'string' } },
    run: (values) => benchDashCommand(values, true),
  },
  'bench dash': {
    summary: 'GRPO per-micro-batch vs GRPO decoupled vs DASH on the built-in task [--json] [--out DIR] [--device cpu|cuda] [--control: + a random-reward DASH arm] [--ablation: + DASH without shared prompts, + DASH at τ 0] [--tau T] [--repeat N: N interleaved runs of every arm, median wall times; default 3, 1 with --seeds] [--seeds N: RL seeds per arm, accuracy mean ± sd and DASH − GRPO with a 95% interval] [--refresh: rebuild the cached warm-up]',
    options: { json: { type: 'boolean' }, out: { type: 'string' }, steps: { type: 'string' }, 'eval-problems': { type: 'string' }, device: { type: 'string' }, control: { type: 'boolean' }, ablation: { type: 'boolean' }, tau: { type: 'string' }, repeat: { type: 'string' }, refresh: { type: 'boolean' }, seeds: { type: 'string' } },
    run: (values) => benchDashCommand(values),
  },
  'demo wst': {
    summary: 'the embedded WST default: built-in student and teacher (cached warm-ups), the teacher trained by DASH (and per-micro-batch GRPO for time), every teacher evaluated, report folder [--out DIR] [--json] [--steps N] [--eval-queries N] [--seed S] [--device cpu|cuda] [--refresh]',
    options: { out: { type: 'string' }, json: { type: 'boolean' }, steps: { type: 'string' }, 'eval-queries': { type: 'string' }, seed: { type: 'string' }, device: { type: 'string' }, refresh: { type: 'boolean' } },
    run: (values) => demoWstCommand(values),
  },
  'train wst': {
    summary: 'train a teacher on a frozen student\'s outcome: --out DIR [--task ops|arith|gsm8k|math500] [--teacher DIR] [--student DIR] [--algo dash|grpo|grpo_decoupled] [--steps N] [--samples K] [--student-temperature T] [--iterations μ] [--checkpoint-every N (default 10)] [--resume [--force]] [--device cpu|cuda] (ops: the built-in models by default)',
    options: {
      task: { type: 'string' }, teacher: { type: 'string' }, student: { type: 'string' }, out: { type: 'string' }, algo: { type: 'string' }, steps: { type: 'string' },
      seed: { type: 'string' }, prompts: { type: 'string' }, group: { type: 'string' }, 'micro-batch': { type: 'string' }, samples: { type: 'string' },
      'student-temperature': { type: 'string' }, iterations: { type: 'string' }, lr: { type: 'string' }, temperature: { type: 'string' },
      'max-student-tokens': { type: 'string' }, 'max-instruction-tokens': { type: 'string' }, 'eval-queries': { type: 'string' }, 'eval-every': { type: 'string' },
      'train-queries': { type: 'string' }, 'checkpoint-every': { type: 'string' }, resume: { type: 'boolean' }, force: { type: 'boolean' }, device: { type: 'string' },
      ...STUDENT_URL_OPTIONS,
    },
    run: (values) => trainWstCommand(values),
  },
  'eval wst': {
    summary: 'the student\'s accuracy alone and under each teacher, with misleading / helped fractions: [--task ops|arith|gsm8k|math500] [--student DIR] [--teacher DIR (trained)] [--untrained DIR] [--strong DIR] [--fixed TEXT]... [--limit N] [--file PATH] [--queries OUT.jsonl] [--json] [--device cpu|cuda]',
    options: {
      task: { type: 'string' }, student: { type: 'string' }, teacher: { type: 'string' }, untrained: { type: 'string' }, strong: { type: 'string' },
      fixed: { type: 'string', multiple: true }, limit: { type: 'string' }, file: { type: 'string' }, queries: { type: 'string' }, json: { type: 'boolean' },
      'max-student-tokens': { type: 'string' }, 'max-instruction-tokens': { type: 'string' }, device: { type: 'string' },
      ...STUDENT_URL_OPTIONS,
    },
    run: (values) => evalWstCommand(values),
  },
  'train sft': { summary: 'supervised warm-up: --task arith|gsm8k|math500 [--model DIR] --out DIR [--device cpu|cuda]', options: trainOptions, run: (v) => trainCommand('sft', v) },
  'train grpo': { summary: 'GRPO (per-micro-batch or --generation decoupled) --out DIR [--device cpu|cuda]', options: trainOptions, run: (v) => trainCommand('grpo', v) },
  'train dash': { summary: 'DASH: preemptive sampling + gradient filtering + shared prompts in training --out DIR [--device cpu|cuda] [--tau T (default 0.4; 0: exact)] [--share-prefix on|off]', options: trainOptions, run: (v) => trainCommand('dash', v) },
  eval: {
    summary: 'held-out accuracy: --model DIR --task arith|gsm8k|math500 [--file PATH] [--limit N] [--json] [--device cpu|cuda]',
    options: { model: { type: 'string' }, task: { type: 'string' }, file: { type: 'string' }, limit: { type: 'string' }, json: { type: 'boolean' }, 'max-new-tokens': { type: 'string' }, device: { type: 'string' } },
    run: (values) => evalCommand(values),
  },
  generate: {
    summary: 'generate from a model folder: --model DIR (--prompt TEXT | --ids 1,2,3) [--json] [--device cpu|cuda]',
    options: {
      model: { type: 'string' }, prompt: { type: 'string' }, ids: { type: 'string' },
      'max-new-tokens': { type: 'string' }, temperature: { type: 'string' }, 'top-k': { type: 'string' },
      'top-p': { type: 'string' }, 'min-p': { type: 'string' }, seed: { type: 'string' }, json: { type: 'boolean' },
      device: { type: 'string' },
    },
    run: (values) => generateCommand(values),
  },
  logits: {
    summary: 'logits at the last position: --model DIR --ids 1,2,3 [--json] [--device cpu|cuda]',
    options: { model: { type: 'string' }, ids: { type: 'string' }, json: { type: 'boolean' }, device: { type: 'string' } },
    run: (values) => logitsCommand(values),
  },
  'export gguf': {
    summary: 'export a llama model folder to GGUF: --model DIR --out FILE [--dtype f32|f16]',
    options: { model: { type: 'string' }, out: { type: 'string' }, dtype: { type: 'string' } },
    run: (values) => exportGgufCommand(values),
  },
  'check-answers': {
    summary: 'answer-checker self-agreement on a data file: --task gsm8k|math500 --file PATH [--json]',
    options: { task: { type: 'string' }, file: { type: 'string' }, json: { type: 'boolean' } },
    run: async (values) => {
      const { runCheckAnswers } = await import('../rl/check-answers.js');
      const task = values.task as string | undefined;
      if (task !== 'gsm8k' && task !== 'math500') throw new UsageError('--task must be gsm8k or math500');
      if (!values.file) throw new UsageError('--file PATH is required');
      runCheckAnswers({ task, file: values.file as string, json: values.json as boolean | undefined });
    },
  },
  'bench decode': {
    summary: 'prefill/decode tokens/s at batch 1, 8, 64: [--model DIR] [--batch B] [--seq T] [--threads N] [--json] [--device cpu|cuda]',
    options: { model: { type: 'string' }, batch: { type: 'string' }, seq: { type: 'string' }, threads: { type: 'string' }, json: { type: 'boolean' }, reps: { type: 'string' }, device: { type: 'string' } },
    run: (values) => modelBench('decode', values),
  },
  'bench train': {
    summary: 'training tokens/s, ms/step and peak RSS: [--model DIR] [--batch B] [--seq T] [--threads N] [--json] [--device cpu|cuda]',
    options: { model: { type: 'string' }, batch: { type: 'string' }, seq: { type: 'string' }, threads: { type: 'string' }, json: { type: 'boolean' }, reps: { type: 'string' }, device: { type: 'string' } },
    run: (values) => modelBench('train', values),
  },
  serve: {
    summary: 'an OpenAI-compatible server over a model folder (GET /v1/models, POST /v1/chat/completions and /v1/completions, SSE): --model DIR [--host 127.0.0.1] [--port 8080] [--name NAME] [--api-key-env VAR] [--max-batch 64] [--max-queue 1024] [--device cpu|cuda]',
    options: { model: { type: 'string' }, host: { type: 'string' }, port: { type: 'string' }, name: { type: 'string' }, 'api-key-env': { type: 'string' }, 'max-batch': { type: 'string' }, 'max-queue': { type: 'string' }, device: { type: 'string' } },
    run: async (values) => (await import('./serve-command.js')).serveCommand(values),
  },
  'bench kernels': {
    summary: 'GFLOP/s of GEMM and attention, tokens/s of sampling, vs the machine FMA peak and OpenBLAS',
    options: {
      json: { type: 'boolean', default: false },
      quick: { type: 'boolean', default: false },
      threads: { type: 'string' },
      out: { type: 'string' },
    },
    run: async (values) => {
      const { runKernelBench } = await import('../bench/kernels.js');
      await runKernelBench({
        json: values.json as boolean,
        quick: values.quick as boolean,
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
export function joinNegativeValues(args: readonly string[], options: Command['options']): string[] {
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
    const opts = Object.entries(command.options).map(([k, o]) => `--${k}${o.type === 'string' ? ' VALUE' : ''}`);
    console.log(`wst-dash ${name}: ${command.summary}\n\noptions: ${opts.join(' ') || '(none)'}`);
    return 0;
  }
  try {
    const { values, positionals } = parseArgs({ args: joinNegativeValues(rest, command.options), options: command.options, allowPositionals: true, strict: true });
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}" (options start with --; see wst-dash ${name} --help)`);
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
