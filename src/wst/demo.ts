// `wst-dash demo wst`: the embedded WST default, side by side in one run. The built-in student and
// teacher are warmed up (cached by content); the student is evaluated alone, under each fixed
// instruction of the repertoire, under the untrained teacher and under a strong teacher (the
// student writing its own instructions); the teacher is trained by DASH and, for the time
// comparison, by per-micro-batch GRPO on the same steps; then everything is evaluated again.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../models/atomic.js';
import { Model, type Device } from '../models/model.js';
import { accuracySvg, escapeXml } from '../rl/plot.js';
import { PRESETS, type Algorithm } from '../rl/presets.js';
import { phasesOf, trainRl, type RlResult } from '../rl/trainer.js';
import { builtinStudent, builtinTeacher, generateOps, opsTask, OPS_KINDS, REPERTOIRE, REPERTOIRE_LIST, type OpsExample, type OpsKind, type WarmupOptions } from './builtin.js';
import { wstEnvironment } from './environment.js';
import { checkedTeachers, evaluateWst, wstTable, type TeacherScore, type TeacherSpec, type WstEvalResult } from './evaluate.js';
import { localStudent } from './student.js';
import { BUILTIN_TEMPLATES } from './templates.js';

export interface WstDemoOptions {
  outDir: string;
  steps: number;
  promptsPerStep: number;
  groupSize: number;
  evalQueries: number;
  /** Queries of the curve's intermediate evaluations. */
  curveQueries: number;
  evalEvery: number;
  /** Teacher trainings to run: DASH always; per-micro-batch GRPO for the time comparison. */
  arms: ('dash' | 'grpo')[];
  seed: number;
  device?: Device;
  refresh?: boolean;
  /** Overrides of the built-in warm-ups (tests use a few steps). */
  warmups?: { student?: Partial<WarmupOptions>; teacher?: Partial<WarmupOptions> };
  log: (line: string) => void;
  progress?: (text: string) => void;
}

export const DEFAULT_WST_DEMO: Omit<WstDemoOptions, 'outDir' | 'log'> = {
  steps: 160, promptsPerStep: PRESETS.dash.promptsPerStep, groupSize: PRESETS.dash.groupSize,
  evalQueries: 500, curveQueries: 200, evalEvery: 40, arms: ['dash', 'grpo'], seed: 1,
};

/** Instructions are at most 21 characters ("Give the last number.") + the line end. */
const MAX_INSTRUCTION_TOKENS = 24;
/** Student answers are at most 16 characters ("9*5=45. #### 45") + EOS. */
const MAX_STUDENT_TOKENS = 24;

export interface WstArm {
  name: 'dash' | 'grpo';
  description: string;
  seconds: number;
  phases: { generate: number; score: number; train: number };
  /** Student accuracy under the arm's teacher (greedy instructions) on the held-out queries. */
  accuracy: number;
  keptFraction: number;
  curve: { step: number; seconds: number; accuracy: number }[];
  studentTokens: number;
}

export interface WstDemoResult {
  task: string;
  settings: Record<string, unknown>;
  models: { student: { params: number; dir: string; cached: boolean; seconds: number }; teacher: { params: number; dir: string; cached: boolean; seconds: number } };
  teachers: Record<'none' | 'fixed_best' | 'untrained' | 'strong' | 'trained', TeacherScore>;
  fixed: Record<string, number>;
  fixed_best_instruction: string;
  relative_gain: number | null;
  gain_over_fixed_best: number;
  arms: Partial<Record<'dash' | 'grpo', WstArm>>;
  time_reduction_vs_grpo?: number;
  accuracy_dash?: number;
  accuracy_grpo?: number;
  /** Per kind of query: the trained teacher's most common instruction and the student's accuracy under it. */
  by_kind: Record<OpsKind, { n: number; none: number; untrained: number; strong: number; trained: number; instructions: Record<string, number> }>;
  seconds: number;
  files: Record<string, string>;
}

export async function runWstDemo(o: WstDemoOptions): Promise<WstDemoResult> {
  const t0 = performance.now();
  await mkdir(o.outDir, { recursive: true });
  const student = await builtinStudent({ device: o.device, refresh: o.refresh, log: o.log, warmup: o.warmups?.student });
  o.log(student.cached ? `using the cached student ${student.dir}` : `student warm-up took ${student.seconds.toFixed(1)} s`);
  const teacher = await builtinTeacher({ device: o.device, refresh: o.refresh, log: o.log, warmup: o.warmups?.teacher });
  o.log(teacher.cached ? `using the cached teacher ${teacher.dir}` : `teacher warm-up took ${teacher.seconds.toFixed(1)} s`);
  const frozen = localStudent(student.model, { templates: BUILTIN_TEMPLATES, stop: ['\n'], maxTokens: MAX_STUDENT_TOKENS });
  const evalExamples = generateOps({ seed: 12345, count: o.evalQueries, split: 'test' });
  const curveExamples = evalExamples.slice(0, o.curveQueries);
  const trainExamples = generateOps({ seed: 777, count: 20000, split: 'train' });
  const common = { task: opsTask, student: frozen, templates: BUILTIN_TEMPLATES, maxStudentTokens: MAX_STUDENT_TOKENS, maxInstructionTokens: MAX_INSTRUCTION_TOKENS };

  // Before training: alone, each fixed instruction, the untrained teacher, the strong teacher.
  const fixedSpecs: Record<string, TeacherSpec> = {};
  REPERTOIRE_LIST.forEach((text) => (fixedSpecs[text] = { kind: 'fixed', instruction: text }));
  const beforeRun = await evaluateWst({ ...common, examples: evalExamples, teachers: { ...fixedSpecs, untrained: { kind: 'model', model: teacher.model }, strong: { kind: 'model', model: student.model } } });
  const before = { ...beforeRun, teachers: checkedTeachers(beforeRun) };
  const fixed = Object.fromEntries(REPERTOIRE_LIST.map((t) => [t, before.teachers[t].accuracy]));
  const bestFixed = REPERTOIRE_LIST.reduce((a, b) => (fixed[b] > fixed[a] ? b : a));
  o.log(`student alone: ${(100 * before.teachers.none.accuracy).toFixed(1)}%; best fixed instruction "${bestFixed}": ${(100 * fixed[bestFixed]).toFixed(1)}%; ` +
    `untrained teacher: ${(100 * before.teachers.untrained.accuracy).toFixed(1)}%; strong teacher: ${(100 * before.teachers.strong.accuracy).toFixed(1)}%`);

  const env = wstEnvironment({ task: opsTask, student: frozen, templates: BUILTIN_TEMPLATES, maxStudentTokens: MAX_STUDENT_TOKENS });
  const arms: WstDemoResult['arms'] = {};
  const policies: Partial<Record<'dash' | 'grpo', Model>> = {};
  for (const name of o.arms) {
    const preset = PRESETS[name as Algorithm];
    const policy = await Model.load(teacher.dir, { device: o.device });
    const reference = preset.beta > 0 ? await Model.load(teacher.dir, { device: o.device }) : undefined;
    o.log(`\n[${name}] teacher training: ${preset.description}`);
    const run: RlResult = await trainRl({
      environment: env, policy, reference, steps: o.steps, promptsPerStep: o.promptsPerStep, groupSize: o.groupSize,
      microBatch: preset.microBatch, generation: preset.generation, filterThreshold: preset.filterThreshold, beta: preset.beta,
      sharePrefix: preset.sharePrefix, lr: preset.lr, temperature: preset.temperature, maxNewTokens: MAX_INSTRUCTION_TOKENS,
      seed: o.seed, trainExamples, evalExamples: curveExamples, evalEvery: o.evalEvery,
      metricsFile: path.join(o.outDir, `metrics-${name}.jsonl`),
      onStep: (m) => o.progress?.(`[${name}] step ${m.step}/${o.steps}  reward ${m.reward.toFixed(2)}  kept ${(100 * m.keptFraction).toFixed(0)}%  ${m.elapsed.toFixed(1)} s`),
      onEval: (e) => o.log(`[${name}] step ${e.step}: student accuracy ${(100 * e.accuracy).toFixed(1)}% (${e.n} queries) after ${e.trainSeconds.toFixed(1)} s of teacher training`),
    });
    const phases = phasesOf(run);
    arms[name] = {
      name, description: preset.description, seconds: run.seconds, phases, accuracy: 0,
      keptFraction: run.steps.reduce((a, s) => a + s.keptFraction, 0) / Math.max(1, run.steps.length),
      curve: run.evals.map((e) => ({ step: e.step, seconds: e.trainSeconds, accuracy: e.accuracy })),
      studentTokens: run.steps.reduce((a, s) => a + (s.env?.student_prompt_tokens ?? 0) + (s.env?.student_completion_tokens ?? 0), 0),
    };
    policies[name] = policy;
    await policy.save(path.join(o.outDir, `teacher-${name}`));
    o.log(`[${name}] ${run.seconds.toFixed(1)} s (teacher generate ${phases.generate.toFixed(1)}, student ${phases.score.toFixed(1)}, train ${phases.train.toFixed(1)})`);
  }

  const trainedSpecs: Record<string, TeacherSpec> = {};
  for (const [name, m] of Object.entries(policies)) trainedSpecs[`trained_${name}`] = { kind: 'model', model: m! };
  const afterRun = await evaluateWst({ ...common, examples: evalExamples, teachers: trainedSpecs });
  const after = { ...afterRun, teachers: checkedTeachers(afterRun) };
  for (const name of Object.keys(policies) as ('dash' | 'grpo')[]) arms[name]!.accuracy = after.teachers[`trained_${name}`].accuracy;
  const trainedName = policies.dash ? 'trained_dash' : Object.keys(trainedSpecs)[0];
  const teachers = {
    none: before.teachers.none, fixed_best: before.teachers[bestFixed], untrained: before.teachers.untrained,
    strong: before.teachers.strong, trained: after.teachers[trainedName],
  };
  const byKind = kindTable(evalExamples, before, after, trainedName);
  const result: WstDemoResult = {
    task: 'ops: one-step word problems of three kinds (add / subtract / multiply), the student told the method by the teacher',
    settings: { steps: o.steps, promptsPerStep: o.promptsPerStep, groupSize: o.groupSize, evalQueries: o.evalQueries, seed: o.seed, studentSamples: 1, studentTemperature: 0, teacherEval: 'greedy' },
    models: {
      student: { params: student.model.numParams, dir: student.dir, cached: student.cached, seconds: student.seconds },
      teacher: { params: teacher.model.numParams, dir: teacher.dir, cached: teacher.cached, seconds: teacher.seconds },
    },
    teachers, fixed, fixed_best_instruction: bestFixed,
    relative_gain: teachers.trained.relative_gain,
    gain_over_fixed_best: teachers.trained.accuracy - teachers.fixed_best.accuracy,
    arms, by_kind: byKind, seconds: 0, files: {},
  };
  if (arms.dash && arms.grpo) result.time_reduction_vs_grpo = 1 - arms.dash.seconds / arms.grpo.seconds;
  if (arms.dash) result.accuracy_dash = arms.dash.accuracy;
  if (arms.grpo) result.accuracy_grpo = arms.grpo.accuracy;

  const files = { json: path.join(o.outDir, 'wst-demo.json'), queries: path.join(o.outDir, 'queries.jsonl'), curve: path.join(o.outDir, 'accuracy-vs-time.svg'), bars: path.join(o.outDir, 'misleading-helped.svg'), report: path.join(o.outDir, 'report.md') };
  result.files = files;
  await writeFileAtomic(files.queries, [...before.queries, ...after.queries.filter((q) => q.teacher !== 'none')].map((q) => JSON.stringify(q)).join('\n') + '\n');
  const maxX = Math.max(1, ...Object.values(arms).flatMap((a) => a!.curve.map((c) => c.seconds)));
  const flat = (name: string, y: number) => ({ name, points: [{ x: 0, y }, { x: maxX, y }] });
  await writeFileAtomic(files.curve, accuracySvg([
    ...Object.values(arms).map((a) => ({ name: `teacher by ${a!.name}`, points: a!.curve.map((c) => ({ x: c.seconds, y: c.accuracy })) })),
    flat('no instruction', teachers.none.accuracy), flat('best fixed', teachers.fixed_best.accuracy), flat('strong teacher', teachers.strong.accuracy),
  ], { title: 'Student accuracy vs teacher training time', xLabel: 'teacher training wall time (s)', yLabel: `student accuracy (${o.curveQueries} held-out queries)` }));
  await writeFileAtomic(files.bars, barsSvg(teachers));
  result.seconds = (performance.now() - t0) / 1000;
  await writeFileAtomic(files.report, wstReport(result));
  await writeFileAtomic(files.json, JSON.stringify(result, null, 2) + '\n');
  return result;
}

function kindTable(examples: OpsExample[], before: WstEvalResult, after: WstEvalResult, trained: string): WstDemoResult['by_kind'] {
  const out = {} as WstDemoResult['by_kind'];
  const index = new Map(examples.map((e, i) => [e.id, i]));
  const of = (r: WstEvalResult, teacher: string) => r.queries.filter((q) => q.teacher === teacher);
  for (const kind of OPS_KINDS) {
    const mine = (qs: WstEvalResult['queries']) => qs.filter((q) => examples[index.get(q.id)!].kind === kind);
    const acc = (qs: WstEvalResult['queries']) => qs.filter((q) => q.correct).length / Math.max(1, qs.length);
    const instructions: Record<string, number> = {};
    for (const q of mine(of(after, trained))) instructions[q.instruction ?? '(none)'] = (instructions[q.instruction ?? '(none)'] ?? 0) + 1;
    out[kind] = { n: mine(of(before, 'none')).length, none: acc(mine(of(before, 'none'))), untrained: acc(mine(of(before, 'untrained'))), strong: acc(mine(of(before, 'strong'))), trained: acc(mine(of(after, trained))), instructions };
  }
  return out;
}

/** Grouped bars: misleading and helped fractions per teacher. */
export function barsSvg(teachers: Record<string, TeacherScore>): string {
  const names = Object.keys(teachers);
  const W = 720, H = 380, L = 60, B = 60, T = 40, R = 20;
  const max = Math.max(0.05, ...names.flatMap((n) => [teachers[n].misleading, teachers[n].helped])) * 1.1;
  const bw = (W - L - R) / names.length;
  const y = (v: number) => T + (1 - v / max) * (H - T - B);
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`, '<rect width="100%" height="100%" fill="white"/>',
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">Misleading and helped fractions per teacher</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`, `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`];
  for (let i = 0; i <= 4; i++) out.push(`<text x="${L - 6}" y="${y((max * i) / 4) + 4}" text-anchor="end">${((100 * max * i) / 4).toFixed(0)}%</text>`);
  names.forEach((n, i) => {
    const x = L + i * bw;
    for (const [k, [key, color]] of [['misleading', '#d62728'], ['helped', '#2ca02c']].entries()) {
      const v = teachers[n][key as 'misleading' | 'helped'];
      out.push(`<rect x="${(x + bw * 0.15 + k * bw * 0.35).toFixed(1)}" y="${y(v).toFixed(1)}" width="${(bw * 0.33).toFixed(1)}" height="${(H - B - y(v)).toFixed(1)}" fill="${color}"/>`);
      out.push(`<text x="${(x + bw * 0.31 + k * bw * 0.35).toFixed(1)}" y="${(y(v) - 4).toFixed(1)}" text-anchor="middle" font-size="10">${(100 * v).toFixed(1)}</text>`);
    }
    out.push(`<text x="${(x + bw / 2).toFixed(1)}" y="${H - B + 18}" text-anchor="middle">${escapeXml(n)}</text>`);
  });
  out.push(`<rect x="${W - 200}" y="${T}" width="12" height="12" fill="#d62728"/><text x="${W - 182}" y="${T + 10}">misleading</text>`);
  out.push(`<rect x="${W - 110}" y="${T}" width="12" height="12" fill="#2ca02c"/><text x="${W - 92}" y="${T + 10}">helped</text>`);
  out.push('</svg>');
  return out.join('\n');
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export function wstDemoTable(r: WstDemoResult): string {
  const table = wstTable(r, (name) => (name === 'fixed_best' ? `${name} ("${r.fixed_best_instruction}")` : name));
  const lines = [table, ''];
  if (r.relative_gain !== null) lines.push(`Trained teacher over no instruction: ${r.relative_gain >= 0 ? '+' : ''}${(100 * r.relative_gain).toFixed(0)}% relative; over the best fixed instruction: ${(100 * r.gain_over_fixed_best).toFixed(1)} points`);
  if (r.arms.dash) lines.push(`Teacher training by DASH: ${r.arms.dash.seconds.toFixed(1)} s, student accuracy ${pct(r.arms.dash.accuracy)}`);
  if (r.arms.grpo) lines.push(`Teacher training by per-micro-batch GRPO: ${r.arms.grpo.seconds.toFixed(1)} s, student accuracy ${pct(r.arms.grpo.accuracy)}`);
  if (r.time_reduction_vs_grpo !== undefined) lines.push(`DASH time reduction vs per-micro-batch GRPO: ${(100 * r.time_reduction_vs_grpo).toFixed(1)}%`);
  return lines.join('\n');
}

function wstReport(r: WstDemoResult): string {
  const kinds = OPS_KINDS.map((k) => {
    const b = r.by_kind[k];
    const top = Object.entries(b.instructions).sort((x, y) => y[1] - x[1]).slice(0, 2).map(([t, c]) => `"${t}" (${c})`).join(', ');
    return `| ${k} (${b.n}) | ${pct(b.none)} | ${pct(b.untrained)} | ${pct(b.strong)} | ${pct(b.trained)} | ${top} |`;
  });
  const arms = Object.values(r.arms).map((a) => `| ${a!.name} | ${a!.seconds.toFixed(1)} | ${a!.phases.generate.toFixed(1)} | ${a!.phases.score.toFixed(1)} | ${a!.phases.train.toFixed(1)} | ${(100 * a!.keptFraction).toFixed(0)}% | ${a!.studentTokens} | ${pct(a!.accuracy)} |`);
  return [
    '# wst-dash demo wst: a small teacher, trained by DASH, lifts a larger frozen student', '',
    `Student: ${(r.models.student.params / 1e6).toFixed(2)}M parameters (frozen); teacher: ${(r.models.teacher.params / 1e6).toFixed(2)}M ` +
      `(1/${(r.models.student.params / r.models.teacher.params).toFixed(1)} of the student). Held-out queries: ${r.settings.evalQueries}. ` +
      `Whole run: ${r.seconds.toFixed(0)} s (warm-ups ${(r.models.student.seconds + r.models.teacher.seconds).toFixed(0)} s${r.models.student.cached ? ', cached' : ''}).`, '',
    'What is built in and what is learned: see the README, "WST". The student obeys a method instruction and adds when told nothing; ' +
      'it never learned which words mean which operation. The teacher must learn that from the student\'s correctness alone.', '',
    '## The student under each teacher', '', wstDemoTable(r), '',
    'misleading: right alone, wrong under the instruction; helped: wrong alone, right with it (fractions of all queries).', '',
    `Fixed instructions: ${Object.entries(r.fixed).map(([t, a]) => `"${t}" ${pct(a)}`).join('; ')}.`, '',
    '## Per kind of query', '', '| kind (queries) | alone | untrained | strong | trained | trained teacher\'s instructions (count) |', '| --- | ---: | ---: | ---: | ---: | --- |', ...kinds, '',
    '## Teacher training', '', '| arm | wall s | teacher generate | student | train | kept | student tokens | student accuracy |', '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |', ...arms, '',
    '![accuracy vs time](accuracy-vs-time.svg)', '', '![misleading and helped](misleading-helped.svg)', '',
    'Files: wst-demo.json (everything above), queries.jsonl (every query, teacher, instruction and student answer), metrics-*.jsonl (per training step), teacher-dash/ and teacher-grpo/ (the trained teachers: `wst-dash eval wst --task ops --teacher teacher-dash --json`).', '',
  ].join('\n');
}

export { REPERTOIRE };
