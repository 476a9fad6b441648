// The CLI's options, each with one line of help and its default: `wst-dash <command> --help` prints
// only the options its command reads. node:util parseArgs parses them (no dependency: it handles
// everything these commands need; the help text is ours).
import type { ParseArgsConfig } from 'node:util';

export interface OptionSpec {
  type: 'string' | 'boolean';
  multiple?: boolean;
  /** What the value looks like in help (`N`, `DIR`, `cpu|cuda`); absent for flags. */
  value?: string;
  /** One line: what it does and its default. */
  help: string;
}
export type OptionSpecs = Record<string, OptionSpec>;

export const str = (value: string, help: string): OptionSpec => ({ type: 'string', value, help });
export const flag = (help: string): OptionSpec => ({ type: 'boolean', help });

/** The parseArgs view of a command's options (help text dropped). */
export function parseArgsOptions(specs: OptionSpecs): NonNullable<ParseArgsConfig['options']> {
  return Object.fromEntries(Object.entries(specs).map(([k, o]) => [k, o.multiple ? { type: o.type, multiple: true } : { type: o.type }]));
}

/** `  --steps N            RL steps (default 20)`, one line per option. */
export function optionHelp(specs: OptionSpecs): string {
  const rows = Object.entries(specs).map(([k, o]) => [`--${k}${o.value ? ` ${o.value}` : ''}${o.multiple ? ' ...' : ''}`, o.help] as const);
  if (rows.length === 0) return '  (none)';
  const width = Math.min(30, Math.max(...rows.map(([l]) => l.length)) + 2);
  return rows.map(([l, h]) => `  ${l.padEnd(width)}${l.length >= width ? ' ' : ''}${h}`).join('\n');
}

// Options several commands share.
export const DEVICE = str('cpu|cuda', 'where the models live (default cpu; cuda: resident on the GPU)');
export const JSON_OUT = flag('print the result as one JSON object on stdout');
export const REFRESH = flag('rebuild the cached warm-up model(s) even when the cache holds them');

export const DATA_DIR = str('DIR', 'folder holding the data sets (default $WST_DASH_DATA, else ../shared/data in a checkout, else <cache>/data)');

const RL_TASK = str('arith|gsm8k|math500', 'the task (default arith: the built-in one)');

/** train sft */
export const SFT_OPTIONS: OptionSpecs = {
  task: RL_TASK,
  model: str('DIR', 'starting model folder (default: a fresh built-in model)'),
  out: str('DIR', 'where the trained model is written (required)'),
  steps: str('N', 'optimizer steps (default 300)'),
  seed: str('N', 'seed of initialisation and data order (default 0)'),
  lr: str('X', 'learning rate, cosine schedule (default 0.003)'),
  'batch-size': str('N', 'examples per step (default 16)'),
  'data-dir': DATA_DIR,
  device: DEVICE,
};

/** train grpo / train dash (the presets of src/rl/presets.ts, each overridable). */
function rlOptions(dash: boolean): OptionSpecs {
  return {
    task: RL_TASK,
    model: str('DIR', 'policy to train (default: the built-in SFT model, cached)'),
    out: str('DIR', 'run folder: metrics.jsonl, checkpoint/, model/ (required)'),
    steps: str('N', 'optimizer steps (default 20)'),
    seed: str('N', 'seed of sampling and prompt order (default 0)'),
    lr: str('X', 'learning rate (default 0.0003)'),
    prompts: str('N', 'prompts per step (default 16)'),
    group: str('G', 'completions per prompt, >= 2 (default 8)'),
    'micro-batch': str('N', 'sequences per backward pass (default 8)'),
    ...(dash ? {} : { generation: str('per-microbatch|decoupled', 'when completions are sampled (default per-microbatch, TRL 0.16)') }),
    beta: str('X', `KL weight against the starting model (default ${dash ? 0 : 0.04})`),
    ...(dash ? { tau: str('T', 'gradient filter: |advantage| <= T never reaches backprop (default 0.4; 0 drops only uniform groups)') } : {}),
    iterations: str('μ', `optimizer passes per sampled batch (default 1${dash ? '' : '; > 1 needs --generation decoupled'})`),
    'share-prefix': str('on|off', `compute each prompt once per group in the training forward (default ${dash ? 'on' : 'off'})`),
    'max-new-tokens': str('N', 'most tokens per completion (default by task: arith 24, gsm8k 256, math500 384)'),
    temperature: str('T', 'sampling temperature (default 0.7)'),
    'eval-problems': str('N', 'held-out problems per evaluation (default 200)'),
    'eval-every': str('N', 'evaluate every N steps (default 0: at the end only)'),
    'checkpoint-every': str('N', 'resumable checkpoint every N steps and at the end (default 10; 0: off)'),
    resume: flag('continue from --out/checkpoint (refused if its settings differ)'),
    force: flag('with --resume: continue even though the settings differ from the checkpoint\'s'),
    'data-dir': DATA_DIR,
    device: DEVICE,
  };
}
export const GRPO_OPTIONS = rlOptions(false);
export const DASH_OPTIONS = rlOptions(true);

/** train wst / eval wst: a student behind OpenAI-compatible servers. */
export const STUDENT_URL_OPTIONS: OptionSpecs = {
  'student-url': str('URL[,URL...]', 'the student behind OpenAI-compatible servers (e.g. http://127.0.0.1:8000/v1); several spread the load'),
  'student-model': str('NAME', 'the model name the servers know the student by (required with --student-url)'),
  'student-api': str('chat|completions', 'which endpoint the student is asked through (default chat)'),
  'student-key-env': str('VAR', 'environment variable holding the API key (never printed or stored)'),
  'student-cache': str('DIR', 'on-disk cache of student answers (default: none)'),
  'student-concurrency': str('N', 'requests in flight per endpoint (default 8)'),
  'student-timeout': str('S', 'seconds per request before it is retried (default 60)'),
  'student-attempts': str('N', 'tries per request (backoff 0.5 s doubling, jitter) before the step fails (default 6)'),
};

const WST_TASK = str('ops|arith|gsm8k|math500|hh-rlhf', 'the task (default ops: the built-in WST world; hh-rlhf: dialogues scored by --reward-model)');
const REWARD_MODEL = str('DIR', 'the reward model that scores the student\'s answers (--task hh-rlhf; e.g. train rm\'s out/model)');
/** --task hh-rlhf: the other scorers (one of --reward-model, --scorer-url, --judge-url). */
const SCORER_OPTIONS: OptionSpecs = {
  'scorer-url': str('URL[,URL...]', 'a reward server: POST {"prompt","response"} -> {"score"} (wst-dash serve of a reward model: http://HOST:PORT/v1/score)'),
  'scorer-key-env': str('VAR', 'environment variable holding the reward server\'s API key'),
  'judge-url': str('URL[,URL...]', 'an LLM judge behind OpenAI-compatible servers (rubric prompt, score 1-10 parsed, normalised to [0, 1])'),
  'judge-model': str('NAME', 'the judge\'s model name (required with --judge-url)'),
  'judge-key-env': str('VAR', 'environment variable holding the judge\'s API key'),
  'scorer-cache': str('DIR', 'on-disk cache of scores from --scorer-url / --judge-url (default: none)'),
};
const MAX_QUERY_CHARS = str('N', '--task hh-rlhf: keep the last N characters of each dialogue (default 160 with the built-in models, else all)');
const STUDENT_TOKENS = str('N', 'most tokens per student answer (default ops 24, others 256)');
const INSTRUCTION_TOKENS = str('N', 'most tokens per teacher instruction (default ops 32, others 48)');
const STUDENT_DIR = str('DIR', 'the frozen student model folder (ops: the built-in student by default)');

export const TRAIN_WST_OPTIONS: OptionSpecs = {
  task: WST_TASK,
  teacher: str('DIR', 'the teacher to train (ops: the built-in teacher by default)'),
  student: STUDENT_DIR,
  out: str('DIR', 'run folder: metrics.jsonl, checkpoint/, teacher/ (required)'),
  algo: str('dash|grpo|grpo_decoupled', 'the RL algorithm (default dash)'),
  steps: str('N', 'optimizer steps (default 20)'),
  seed: str('N', 'seed of sampling and query order (default 0)'),
  prompts: str('N', 'queries per step (default 16)'),
  group: str('G', 'instructions per query, >= 2 (default 8)'),
  'micro-batch': str('N', 'sequences per backward pass (default 8)'),
  samples: str('K', 'student answers per instruction; reward = strict majority correct (default 1)'),
  'student-temperature': str('T', 'student sampling temperature (default 0 with K = 1, else 0.7)'),
  iterations: str('μ', 'optimizer passes per sampled batch (default 1)'),
  lr: str('X', 'learning rate (default 0.0003)'),
  temperature: str('T', 'teacher sampling temperature (default 0.7)'),
  'max-student-tokens': STUDENT_TOKENS,
  'max-instruction-tokens': INSTRUCTION_TOKENS,
  'reward-model': REWARD_MODEL,
  ...SCORER_OPTIONS,
  'max-query-chars': MAX_QUERY_CHARS,
  'eval-queries': str('N', 'held-out queries per evaluation (default 100; 0: none)'),
  'eval-every': str('N', 'evaluate every N steps (default 0: at the end only)'),
  'train-queries': str('N', 'train on the first N training queries (default: all)'),
  'checkpoint-every': str('N', 'resumable checkpoint every N steps and at the end (default 10; 0: off)'),
  resume: flag('continue from --out/checkpoint (refused if its settings differ)'),
  force: flag('with --resume: continue even though the settings differ from the checkpoint\'s'),
  'data-dir': DATA_DIR,
  device: DEVICE,
  ...STUDENT_URL_OPTIONS,
};

export const EVAL_WST_OPTIONS: OptionSpecs = {
  task: WST_TASK,
  student: STUDENT_DIR,
  teacher: str('DIR', 'a trained teacher (row "trained")'),
  untrained: str('DIR', 'the teacher before training (ops: the built-in teacher by default)'),
  strong: str('DIR', 'a strong teacher (ops: the student itself by default)'),
  fixed: { ...str('TEXT', 'a fixed instruction for every query (repeatable)'), multiple: true },
  limit: str('N', 'held-out queries (default 500)'),
  file: str('PATH', 'held-out queries from this JSONL file instead of the task\'s test split'),
  queries: str('OUT.jsonl', 'write every query\'s instructions, answers and verdicts here'),
  json: JSON_OUT,
  'max-student-tokens': STUDENT_TOKENS,
  'max-instruction-tokens': INSTRUCTION_TOKENS,
  'reward-model': REWARD_MODEL,
  ...SCORER_OPTIONS,
  'max-query-chars': MAX_QUERY_CHARS,
  'data-dir': DATA_DIR,
  device: DEVICE,
  ...STUDENT_URL_OPTIONS,
};

const BENCH_COMMON: OptionSpecs = {
  out: str('DIR', 'report folder'),
  steps: str('N', 'RL steps per run (default 64)'),
  'eval-problems': str('N', 'problems per held-out set (default 500)'),
  seeds: str('N', 'RL seeds per arm: accuracy mean ± sd and DASH − GRPO with a 95% interval'),
  device: DEVICE,
  refresh: REFRESH,
};

export const DEMO_OPTIONS: OptionSpecs = {
  ...BENCH_COMMON,
  out: str('DIR', 'report folder (default ./wst-dash-demo)'),
  seeds: str('N', 'RL seeds per arm (default 3)'),
};

export const BENCH_DASH_OPTIONS: OptionSpecs = {
  ...BENCH_COMMON,
  out: str('DIR', 'report folder (default bench/results/dash)'),
  seeds: str('N', 'RL seeds per arm: accuracy mean ± sd and DASH − GRPO with a 95% interval (default 1)'),
  json: JSON_OUT,
  control: flag('add a random-reward DASH arm'),
  ablation: flag('add DASH without shared prompts and DASH at τ 0'),
  tau: str('T', 'DASH\'s filter threshold (default 0.4)'),
  repeat: str('N', 'interleaved runs of every arm, median wall times (default 3; 1 with --seeds)'),
};

export const DEMO_WST_OPTIONS: OptionSpecs = {
  out: str('DIR', 'report folder (default ./wst-dash-demo-wst)'),
  json: JSON_OUT,
  steps: str('N', 'teacher training steps (default 160)'),
  'eval-queries': str('N', 'held-out queries (default 500)'),
  seed: str('N', 'RL seed (default 1)'),
  device: DEVICE,
  refresh: REFRESH,
};

export const EVAL_OPTIONS: OptionSpecs = {
  model: str('DIR', 'the model folder (required)'),
  task: RL_TASK,
  file: str('PATH', 'problems from this JSONL file instead of the task\'s test split'),
  limit: str('N', 'problems (default 500)'),
  json: JSON_OUT,
  'max-new-tokens': str('N', 'most tokens per answer (default 64)'),
  'data-dir': DATA_DIR,
  device: DEVICE,
};

export const GENERATE_OPTIONS: OptionSpecs = {
  model: str('DIR', 'the model folder (required)'),
  prompt: str('TEXT', 'the prompt as text (needs the folder\'s tokenizer)'),
  ids: str('1,2,3', 'the prompt as token ids'),
  'max-new-tokens': str('N', 'most new tokens, at most the model\'s context (default 64)'),
  temperature: str('T', 'sampling temperature (default 0: greedy)'),
  'top-k': str('K', 'sample from the K most likely tokens (default 0: all)'),
  'top-p': str('P', 'nucleus sampling (default 1: off)'),
  'min-p': str('P', 'drop tokens below P × the top probability (default 0: off)'),
  seed: str('N', 'sampling seed (default 0)'),
  json: JSON_OUT,
  device: DEVICE,
};

export const MODEL_BENCH_OPTIONS: OptionSpecs = {
  model: str('DIR', 'the model folder (default: the built-in one)'),
  batch: str('B', 'rows per batch (default: a sweep)'),
  seq: str('T', 'tokens per row'),
  threads: str('N', 'CPU threads (default: all cores)'),
  reps: str('N', 'timed repetitions'),
  json: JSON_OUT,
  device: DEVICE,
};

export const SERVE_OPTIONS: OptionSpecs = {
  model: str('DIR', 'the model folder to serve (required)'),
  host: str('HOST', 'address to bind (default 127.0.0.1: loopback only)'),
  port: str('N', 'port (default 8080; 0: any free port)'),
  name: str('NAME', 'the model name clients ask for (default wst-dash); a reward model folder is served at POST /v1/score'),
  'api-key-env': str('VAR', 'require a bearer key, read from this environment variable'),
  'max-batch': str('N', 'requests decoded together (default 64)'),
  'max-queue': str('N', 'waiting requests before 429 + Retry-After (default 1024)'),
  device: DEVICE,
};

const PREFERENCE_DATA = str('FILE', 'preference pairs, JSONL or .jsonl.gz: {"chosen","rejected"} (HH-RLHF) or {"prompt","chosen","rejected"} (default: HH-RLHF harmless-base)');

export const TRAIN_RM_OPTIONS: OptionSpecs = {
  data: PREFERENCE_DATA,
  model: str('DIR', 'start from this model: a reward model, or a causal LM whose backbone gets a new score head (default: the built-in character-level Llama)'),
  out: str('DIR', 'run folder: model/ (a Hugging Face *ForSequenceClassification folder), metrics.jsonl, result.json (required)'),
  'train-pairs': str('N', 'pairs in the training split; the rest are held out (default 2000)'),
  'split-seed': str('N', 'seed of the split (default 1234)'),
  seed: str('N', 'seed of initialisation and order (default 1)'),
  epochs: str('N', 'Bradley-Terry epochs (default 3)'),
  'lm-epochs': str('N', 'language-model warm-up epochs of the backbone first (default 0)'),
  'pairs-per-step': str('N', 'pairs per optimizer step (default 8)'),
  lr: str('X', 'peak learning rate, warm-up then cosine (default 0.001)'),
  'max-chars': str('N', 'score the last N characters of each text (default 256; 0: all)'),
  hidden: str('N', 'built-in model width (default 64)'),
  layers: str('N', 'built-in model layers (default 2)'),
  'data-dir': DATA_DIR,
  device: DEVICE,
};

export const SCORE_RM_OPTIONS: OptionSpecs = {
  model: str('DIR', 'the reward model folder (required)'),
  data: PREFERENCE_DATA,
  limit: str('N', 'the first N pairs (default: all)'),
  'max-chars': str('N', 'score the last N characters of each text (default 256; 0: all)'),
  json: JSON_OUT,
  'data-dir': DATA_DIR,
  device: DEVICE,
};
