// CLI commands for WST: demo wst, train wst, eval wst.
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../models/atomic.js';
import type { Model } from '../models/model.js';
import type { Example, Task } from '../rl/tasks/common.js';
import { UsageError, intOption, parseDevice } from './args.js';
import { parseFloatArg } from './model-commands.js';
import { progressLine } from './rl-commands.js';

const int = intOption;

export async function demoWstCommand(values: Record<string, unknown>): Promise<void> {
  const { runWstDemo, wstDemoTable, DEFAULT_WST_DEMO } = await import('../wst/demo.js');
  const bar = progressLine();
  const outDir = (values.out as string | undefined) ?? 'wst-dash-demo-wst';
  console.error(`wst-dash demo wst: writing to ${path.resolve(outDir)}`);
  const r = await runWstDemo({
    ...DEFAULT_WST_DEMO, outDir, device: parseDevice(values), refresh: Boolean(values.refresh),
    steps: int(values, 'steps', DEFAULT_WST_DEMO.steps),
    evalQueries: int(values, 'eval-queries', DEFAULT_WST_DEMO.evalQueries),
    seed: int(values, 'seed', DEFAULT_WST_DEMO.seed, 0),
    log: (l) => { bar.done(); console.error(l); },
    progress: (t) => bar.update(t),
  });
  bar.done();
  if (values.json) console.log(JSON.stringify(r));
  else console.log(`${wstDemoTable(r)}\n\nreport: ${r.files.report}`);
}

interface WstSetup {
  task: Task<Example>;
  /** Scored tasks (hh-rlhf): the reward model's batched scorer. */
  scorer?: import('../wst/environment.js').BatchScorer;
  templates: import('../wst/templates.js').WstTemplates;
  /** The local student (absent with --student-url). */
  student?: Model;
  teacherDir: string;
  maxStudentTokens: number;
  maxInstructionTokens: number;
}

/** The task, templates, student and teacher of train wst / eval wst (built-ins for --task ops). */
async function wstSetup(values: Record<string, unknown>, teacherKey: 'teacher' | 'untrained'): Promise<WstSetup> {
  const { Model } = await import('../models/model.js');
  const device = parseDevice(values);
  const name = (values.task as string | undefined) ?? 'ops';
  if (name === 'ops') {
    const { opsTask, builtinStudent, builtinTeacher } = await import('../wst/builtin.js');
    const { BUILTIN_TEMPLATES } = await import('../wst/templates.js');
    const log = (l: string) => console.error(l);
    const student = values['student-url'] ? undefined : values.student ? await Model.load(values.student as string, { device }) : (await builtinStudent({ device, log })).model;
    const teacherDir = (values[teacherKey] as string | undefined) ?? (await builtinTeacher({ device, log })).dir;
    return { task: opsTask as Task<Example>, templates: BUILTIN_TEMPLATES, student, teacherDir, maxStudentTokens: int(values, 'max-student-tokens', 24), maxInstructionTokens: int(values, 'max-instruction-tokens', 32) };
  }
  if (name === 'hh-rlhf') return hhSetup(values, teacherKey);
  if (name !== 'arith' && name !== 'gsm8k' && name !== 'math500') throw new UsageError(`--task must be ops, arith, gsm8k, math500 or hh-rlhf, got "${name}"`);
  if (!values.student && !values['student-url']) throw new UsageError(`--student DIR (a local model) or --student-url URL (a server) is required with --task ${name}`);
  if (!values[teacherKey] && teacherKey === 'teacher') throw new UsageError(`--teacher DIR is required with --task ${name}`);
  const { getTask } = await import('../rl/tasks/index.js');
  const { builtinTask } = await import('../rl/builtin.js');
  const { TEXT_TEMPLATES } = await import('../wst/templates.js');
  const student = values['student-url'] ? undefined : await Model.load(values.student as string, { device });
  // arith: the built-in difficulty, as `train` and `eval` use it.
  return { task: name === 'arith' ? builtinTask : getTask(name), templates: TEXT_TEMPLATES, student, teacherDir: (values[teacherKey] as string | undefined) ?? '', maxStudentTokens: int(values, 'max-student-tokens', 256), maxInstructionTokens: int(values, 'max-instruction-tokens', 48) };
}

/**
 * --task hh-rlhf: dialogues scored by a reward model (--reward-model, e.g. train rm's). Student and
 * teacher default to the built-in ones (character-level, 256 positions: the query is cut to its
 * last 160 characters), which cannot chat: they prove the path, not a gain.
 */
async function hhSetup(values: Record<string, unknown>, teacherKey: 'teacher' | 'untrained'): Promise<WstSetup> {
  const { Model } = await import('../models/model.js');
  const { createHhTask, HH_SHORT_TEMPLATES, HH_TEMPLATES } = await import('../wst/hh.js');
  const device = parseDevice(values);
  const scorer = await hhScorer(values, device);
  const builtin = !values.student && !values['student-url'];
  const log = (l: string) => console.error(l);
  const { builtinStudent, builtinTeacher } = await import('../wst/builtin.js');
  const student = values['student-url'] ? undefined : values.student ? await Model.load(values.student as string, { device }) : (await builtinStudent({ device, log })).model;
  const teacherDir = (values[teacherKey] as string | undefined) ?? (builtin ? (await builtinTeacher({ device, log })).dir : '');
  if (!teacherDir && teacherKey === 'teacher') throw new UsageError('--teacher DIR is required with --task hh-rlhf and a student of your own');
  return {
    task: createHhTask({ maxQueryChars: int(values, 'max-query-chars', builtin ? 160 : 0, 0) }) as unknown as Task<Example>,
    templates: builtin ? HH_SHORT_TEMPLATES : HH_TEMPLATES, student, teacherDir, scorer,
    maxStudentTokens: int(values, 'max-student-tokens', builtin ? 24 : 128), maxInstructionTokens: int(values, 'max-instruction-tokens', 32),
  };
}

/** The scorer of --task hh-rlhf: exactly one of --reward-model, --scorer-url, --judge-url. */
async function hhScorer(values: Record<string, unknown>, device: 'cpu' | 'cuda'): Promise<import('../wst/environment.js').BatchScorer> {
  const given = ['reward-model', 'scorer-url', 'judge-url'].filter((k) => values[k] !== undefined);
  if (given.length !== 1)
    throw new UsageError(given.length ? `give one scorer, not ${given.map((k) => `--${k}`).join(' and ')}` : '--reward-model DIR is required with --task hh-rlhf (train one with wst-dash train rm), or --scorer-url URL (a reward server), or --judge-url URL --judge-model NAME (an LLM judge)');
  const urls = (k: string) => (values[k] as string).split(',').map((u) => u.trim()).filter(Boolean);
  const remote = { cacheDir: values['scorer-cache'] as string | undefined, timeoutMs: 1000 * int(values, 'student-timeout', 60), maxAttempts: int(values, 'student-attempts', 6) };
  const { httpScorer, llmJudge } = await import('../wst/scorers.js');
  const { rewardModelScorer } = await import('../wst/hh.js');
  try {
    if (values['scorer-url']) return httpScorer({ endpoints: urls('scorer-url'), apiKeyEnv: values['scorer-key-env'] as string | undefined, ...remote });
    if (values['judge-url']) {
      if (!values['judge-model']) throw new UsageError('--judge-model NAME is required with --judge-url');
      return llmJudge({ endpoints: urls('judge-url'), model: values['judge-model'] as string, apiKeyEnv: values['judge-key-env'] as string | undefined, ...remote });
    }
  } catch (e) {
    throw e instanceof UsageError ? e : new UsageError((e as Error).message);
  }
  const { Model } = await import('../models/model.js');
  const rm = await Model.load(values['reward-model'] as string, { device });
  if (!rm.config.scoreHead) throw new UsageError(`--reward-model ${values['reward-model'] as string} is not a reward model (its config names no *ForSequenceClassification class)`);
  return rewardModelScorer(rm) as import('../wst/environment.js').BatchScorer;
}

/** The student backend: a local frozen model, or OpenAI-compatible servers (--student-url). */
async function makeStudent(values: Record<string, unknown>, s: WstSetup): Promise<import('../wst/student.js').Student> {
  const url = values['student-url'] as string | undefined;
  if (!url) {
    const { localStudent } = await import('../wst/student.js');
    return localStudent(s.student!, { templates: s.templates, maxTokens: s.maxStudentTokens, stop: s.task.stop });
  }
  const model = values['student-model'] as string | undefined;
  if (!model) throw new UsageError('--student-model NAME is required with --student-url');
  const api = (values['student-api'] as string | undefined) ?? 'chat';
  if (api !== 'chat' && api !== 'completions') throw new UsageError(`--student-api must be chat or completions, got "${api}"`);
  const { httpStudent } = await import('../wst/http-student.js');
  try {
    return httpStudent({
      endpoints: url.split(',').map((u) => u.trim()).filter(Boolean), model, api, templates: s.templates, maxTokens: s.maxStudentTokens,
      stop: s.task.stop, apiKeyEnv: values['student-key-env'] as string | undefined, cacheDir: values['student-cache'] as string | undefined,
      concurrency: int(values, 'student-concurrency', 8), timeoutMs: 1000 * int(values, 'student-timeout', 60), maxAttempts: int(values, 'student-attempts', 6),
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export async function trainWstCommand(values: Record<string, unknown>): Promise<void> {
  const { Model } = await import('../models/model.js');
  const { trainRl } = await import('../rl/trainer.js');
  const { PRESETS } = await import('../rl/presets.js');
  const { wstEnvironment } = await import('../wst/environment.js');
  const out = values.out as string | undefined;
  if (!out) throw new UsageError('--out DIR is required');
  const algo = (values.algo as string | undefined) ?? 'dash';
  if (algo !== 'dash' && algo !== 'grpo' && algo !== 'grpo_decoupled') throw new UsageError(`--algo must be dash, grpo or grpo_decoupled, got "${algo}"`);
  const preset = PRESETS[algo];
  const device = parseDevice(values);
  const resume = Boolean(values.resume);
  const checkpointDir = path.join(out, 'checkpoint');
  if (resume && !existsSync(path.join(checkpointDir, 'trainer_state.json'))) throw new UsageError(`--resume: ${checkpointDir} holds no checkpoint (trainer_state.json)`);
  // Options checked before any model is loaded or warmed up.
  const early = {
    samples: int(values, 'samples', 1), group: int(values, 'group', preset.groupSize, 2), prompts: int(values, 'prompts', preset.promptsPerStep),
    microBatch: int(values, 'micro-batch', preset.microBatch), iterations: int(values, 'iterations', 1), steps: int(values, 'steps', 20), seed: int(values, 'seed', 0, 0),
    evalQueries: int(values, 'eval-queries', 100, 0), evalEvery: int(values, 'eval-every', 0, 0), checkpointEvery: int(values, 'checkpoint-every', 10, 0),
    trainQueries: values['train-queries'] === undefined ? undefined : int(values, 'train-queries', 0),
    lr: parseFloatArg(values.lr as string | undefined, '--lr', preset.lr), temperature: parseFloatArg(values.temperature as string | undefined, '--temperature', preset.temperature),
  };
  const studentTemperature = parseFloatArg(values['student-temperature'] as string | undefined, '--student-temperature', early.samples > 1 ? 0.7 : 0);
  if (studentTemperature < 0) throw new UsageError(`--student-temperature must be >= 0, got ${studentTemperature}`);
  if (early.iterations > 1 && preset.generation === 'per-microbatch') throw new UsageError('--iterations > 1 needs --algo dash or grpo_decoupled');
  if (early.temperature < 0) throw new UsageError(`--temperature must be >= 0, got ${early.temperature}`);
  // One run per --out, taken before any model is loaded or warmed up.
  await mkdir(out, { recursive: true });
  const { lockOutDir } = await import('./lock.js');
  const release = lockOutDir(out);
  const s = await wstSetup(values, 'teacher');
  const policy = await Model.load(resume ? checkpointDir : s.teacherDir, { device });
  const reference = preset.beta > 0 ? await Model.load(s.teacherDir, { device }) : undefined;
  const samples = early.samples;
  const student = await makeStudent(values, s);
  const env = wstEnvironment({ task: s.task, student, templates: s.templates, samples, temperature: studentTemperature, maxStudentTokens: s.maxStudentTokens, batchScorer: s.scorer });
  // Evaluation: the student's greedy answer (K = 1), comparable with eval wst (scored tasks: the mean score).
  const evalEnv = wstEnvironment({ task: s.task, student, templates: s.templates, maxStudentTokens: s.maxStudentTokens, batchScorer: s.scorer });
  const { steps, seed } = early;
  const metricsFile = path.join(out, 'metrics.jsonl');
  if (!resume) await writeFileAtomic(metricsFile, '');
  const evalLimit = early.evalQueries;
  const bar = progressLine();
  const res = await trainRl({
    environment: env, evalEnvironment: evalEnv, policy, reference, steps, seed,
    promptsPerStep: early.prompts, groupSize: early.group,
    microBatch: early.microBatch, generation: preset.generation, beta: preset.beta,
    sharePrefix: preset.sharePrefix, filterThreshold: preset.filterThreshold, iterations: early.iterations,
    lr: early.lr, temperature: early.temperature,
    maxNewTokens: s.maxInstructionTokens,
    trainExamples: s.task.examples('train', { seed, limit: early.trainQueries }),
    evalExamples: evalLimit > 0 ? s.task.examples('test', { seed: 12345, limit: evalLimit }) : [],
    evalEvery: early.evalEvery, metricsFile, checkpointDir, checkpointEvery: early.checkpointEvery, resume, resumeForce: Boolean(values.force),
    onStep: (m) => bar.update(`wst ${algo} step ${m.step}/${steps}  reward ${m.reward.toFixed(3)}  kept ${(100 * m.keptFraction).toFixed(0)}%  ${m.elapsed.toFixed(1)} s`),
    onEval: (e) => {
      bar.done();
      console.error(s.scorer ? `step ${e.step}: mean score of the student's answers under the teacher ${e.reward.toFixed(3)} (${e.n} queries)`
        : `step ${e.step}: student accuracy under the teacher ${(100 * e.accuracy).toFixed(1)}% (${e.n} queries)`);
    },
  });
  bar.done();
  const modelDir = path.join(out, 'teacher');
  await policy.save(modelDir);
  release();
  const last = res.evals[res.evals.length - 1];
  const outcome = s.scorer ? { student_mean_score: last?.reward ?? null } : { student_accuracy: last?.accuracy ?? null };
  console.log(JSON.stringify({ algo, steps, seconds: res.seconds, ...outcome, teacher: modelDir, metrics: metricsFile }));
}

export async function evalWstCommand(values: Record<string, unknown>): Promise<void> {
  const { Model } = await import('../models/model.js');
  const { evaluateWst, wstTable } = await import('../wst/evaluate.js');
  const limit = int(values, 'limit', 500);
  const s = await wstSetup(values, 'untrained');
  const device = parseDevice(values);
  const teachers: Record<string, import('../wst/evaluate.js').TeacherSpec> = {};
  for (const text of (values.fixed as string[] | undefined) ?? []) {
    if (!text.trim()) throw new UsageError('--fixed needs a non-empty instruction');
    teachers[`fixed: ${text}`] = { kind: 'fixed', instruction: text };
  }
  if (s.teacherDir) teachers.untrained = { kind: 'model', model: await Model.load(s.teacherDir, { device }) };
  // The strong teacher: any model reachable as a student backend; by default the student itself.
  if (values.strong !== undefined || ((values.task ?? 'ops') === 'ops' && s.student)) teachers.strong = { kind: 'model', model: values.strong ? await Model.load(values.strong as string, { device }) : s.student! };
  if (values.teacher) teachers.trained = { kind: 'model', model: await Model.load(values.teacher as string, { device }) };
  const examples = s.task.examples('test', { seed: 12345, limit, file: values.file as string | undefined });
  const student = await makeStudent(values, s);
  const r = await evaluateWst({ task: s.task, student, templates: s.templates, examples, teachers, maxStudentTokens: s.maxStudentTokens, maxInstructionTokens: s.maxInstructionTokens, scorer: s.scorer });
  if (values.queries) await writeFileAtomic(values.queries as string, r.queries.map((q) => JSON.stringify(q)).join('\n') + '\n');
  if (values.json) console.log(JSON.stringify({ task: s.task.name, n: examples.length, teachers: r.teachers, ...(r.margin !== undefined ? { margin: r.margin } : {}), seconds: r.seconds }));
  else console.log(wstTable(r));
}
