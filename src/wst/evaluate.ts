// `eval wst`: the student's accuracy on held-out queries under each teacher, beside its accuracy
// alone. Per teacher: accuracy; misleading = the fraction of queries the student gets right alone
// and wrong under the teacher's instruction; helped = wrong alone, right with it (our definitions,
// README "WST"); relative gain (acc − acc_none) / acc_none, as the paper reports it.
import type { Model } from '../models/model.js';
import type { Example, Task } from '../rl/tasks/common.js';
import { scoreChecked, type BatchScorer } from './environment.js';
import type { Student } from './student.js';
import { parseInstruction, teacherPrompt, type WstTemplates } from './templates.js';

export type TeacherSpec =
  | { kind: 'none' }
  | { kind: 'fixed'; instruction: string }
  /** A model writing instructions through the teacher template: greedy unless temperature > 0. */
  | { kind: 'model'; model: Model; temperature?: number; seed?: number };

export interface TeacherScore {
  /** Checked tasks: the student's accuracy. Scored tasks (a reward model, a judge): null. */
  accuracy: number | null;
  /** Checked: right alone, wrong under the instruction. Scored: the score drops by more than the margin. */
  misleading: number;
  /** Checked: wrong alone, right with it. Scored: the score rises by more than the margin. */
  helped: number;
  /**
   * Checked: (accuracy − none's) / none's. Scored: (mean − none's mean) / |none's mean| — a reward
   * model's score has no natural zero, so this depends on its offset: win_rate is the primary figure.
   */
  relative_gain: number | null;
  n: number;
  /** Scored tasks: the mean score of the student's answers. */
  mean_score?: number;
  /** Scored tasks: the fraction of queries whose answer scores above the no-instruction one (ties half). */
  win_rate?: number;
}

export interface QueryRecord {
  id: string;
  teacher: string;
  instruction: string | null;
  answer: string;
  correct: boolean;
  correct_alone: boolean;
  /** Scored tasks: this answer's score and the no-instruction answer's. */
  score?: number;
  score_alone?: number;
}

export interface WstEvalResult {
  teachers: Record<string, TeacherScore>;
  queries: QueryRecord[];
  seconds: number;
  /** Scored tasks: the score change beyond which an instruction misleads or helps. */
  margin?: number;
}

export interface WstEvalOptions<E extends Example> {
  task: Task<E>;
  student: Student;
  templates: WstTemplates;
  examples: readonly E[];
  /** By name; 'none' is always evaluated (the reference of misleading / helped). */
  teachers: Record<string, TeacherSpec>;
  maxInstructionTokens?: number;
  maxStudentTokens?: number;
  maxInstructionChars?: number;
  /** Scored tasks: the answers' scores (e.g. rewardModelScorer) instead of the task's checker. */
  scorer?: BatchScorer<E>;
  /** Scored tasks: a score change counts as misleading / helped beyond this (default 0.25 × the sd of the no-instruction scores). */
  margin?: number;
}

/** The instruction each teacher writes for each example. */
export async function writeInstructions<E extends Example>(spec: TeacherSpec, examples: readonly E[], o: Pick<WstEvalOptions<E>, 'templates' | 'maxInstructionTokens' | 'maxInstructionChars'>): Promise<(string | null)[]> {
  if (spec.kind === 'none') return examples.map(() => null);
  if (spec.kind === 'fixed') return examples.map(() => spec.instruction);
  const gens = await spec.model.generate(examples.map((e) => teacherPrompt(o.templates, e.question)), {
    temperature: spec.temperature ?? 0, seed: spec.seed ?? 0, maxNewTokens: o.maxInstructionTokens ?? 48, stop: ['\n'], batchSize: 256, stepsPerCall: 64,
  });
  return gens.map((g) => parseInstruction(g.text ?? '', o.maxInstructionChars) || null);
}

export async function evaluateWst<E extends Example>(o: WstEvalOptions<E>): Promise<WstEvalResult> {
  const t0 = performance.now();
  const names = ['none', ...Object.keys(o.teachers).filter((n) => n !== 'none')];
  const specs: Record<string, TeacherSpec> = { ...o.teachers, none: { kind: 'none' } };
  const instructions: Record<string, (string | null)[]> = {};
  for (const name of names) instructions[name] = await writeInstructions(specs[name], o.examples, o);
  // Every teacher's requests in one batch to the student.
  const requests = names.flatMap((name) => o.examples.map((e, i) => ({ instruction: instructions[name][i], query: e.question })));
  const answers = await o.student.answer(requests, { maxTokens: o.maxStudentTokens });
  const n = o.examples.length;
  if (o.scorer) return scoredResult(o, names, instructions, answers.map((a) => a[0].text), t0);
  const correct: Record<string, boolean[]> = {};
  names.forEach((name, t) => (correct[name] = o.examples.map((e, i) => o.task.isCorrect(answers[t * n + i][0].text, e))));
  const alone = correct.none;
  const teachers: Record<string, TeacherScore> = {};
  const queries: QueryRecord[] = [];
  const accNone = alone.filter(Boolean).length / Math.max(1, n);
  names.forEach((name, t) => {
    let right = 0, misleading = 0, helped = 0;
    o.examples.forEach((e, i) => {
      const c = correct[name][i];
      right += c ? 1 : 0;
      if (alone[i] && !c) misleading++;
      if (!alone[i] && c) helped++;
      queries.push({ id: e.id, teacher: name, instruction: instructions[name][i], answer: answers[t * n + i][0].text, correct: c, correct_alone: alone[i] });
    });
    const accuracy = right / Math.max(1, n);
    teachers[name] = { accuracy, misleading: misleading / Math.max(1, n), helped: helped / Math.max(1, n), relative_gain: accNone > 0 ? (accuracy - accNone) / accNone : null, n };
  });
  return { teachers, queries, seconds: (performance.now() - t0) / 1000 };
}

export type CheckedTeacherScore = TeacherScore & { accuracy: number };

/** The teachers of a checked evaluation (accuracy is a number; a scored one throws). */
export function checkedTeachers(r: Pick<WstEvalResult, 'teachers'>): Record<string, CheckedTeacherScore> {
  for (const [name, t] of Object.entries(r.teachers)) if (t.accuracy === null) throw new Error(`teacher ${name}: a scored evaluation has no accuracy`);
  return r.teachers as Record<string, CheckedTeacherScore>;
}

/** evaluateWst for scored tasks: mean score, win rate against no instruction, misleading / helped beyond a margin. */
async function scoredResult<E extends Example>(o: WstEvalOptions<E>, names: string[], instructions: Record<string, (string | null)[]>, answers: string[], t0: number): Promise<WstEvalResult> {
  const n = o.examples.length;
  const items = names.flatMap((name, t) => o.examples.map((e, i) => ({ answer: answers[t * n + i], example: e, instruction: instructions[name][i] ?? '' })));
  const all = await scoreChecked(o.scorer!, items);
  const scores = (t: number) => all.slice(t * n, (t + 1) * n);
  const none = scores(0);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const meanNone = mean(none);
  const sdNone = Math.sqrt(none.reduce((a, x) => a + (x - meanNone) ** 2, 0) / Math.max(1, n - 1));
  const margin = o.margin ?? 0.25 * sdNone;
  const teachers: Record<string, TeacherScore> = {};
  const queries: QueryRecord[] = [];
  names.forEach((name, t) => {
    const s = scores(t);
    let win = 0, misleading = 0, helped = 0;
    s.forEach((x, i) => {
      win += x > none[i] ? 1 : x === none[i] ? 0.5 : 0;
      if (x < none[i] - margin) misleading++;
      if (x > none[i] + margin) helped++;
      queries.push({ id: o.examples[i].id, teacher: name, instruction: instructions[name][i], answer: answers[t * n + i], correct: false, correct_alone: false, score: x, score_alone: none[i] });
    });
    const m = mean(s);
    teachers[name] = {
      accuracy: null, misleading: misleading / Math.max(1, n), helped: helped / Math.max(1, n),
      relative_gain: meanNone !== 0 ? (m - meanNone) / Math.abs(meanNone) : null, n, mean_score: m, win_rate: win / Math.max(1, n),
    };
  });
  return { teachers, queries, seconds: (performance.now() - t0) / 1000, margin };
}

/** A markdown table of an evaluation (teachers in the given order; `label` names a row). */
export function wstTable(r: Pick<WstEvalResult, 'teachers'>, label: (name: string) => string = (name) => name): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const gain = (g: number | null) => (g === null ? '—' : `${g >= 0 ? '+' : ''}${(100 * g).toFixed(0)}%`);
  const scored = Object.values(r.teachers).some((s) => s.mean_score !== undefined);
  const rows = scored
    ? ['| teacher | mean score | win rate vs none | relative gain* | misleading | helped |', '| --- | ---: | ---: | ---: | ---: | ---: |']
    : ['| teacher | student accuracy | relative gain | misleading | helped |', '| --- | ---: | ---: | ---: | ---: |'];
  for (const [name, s] of Object.entries(r.teachers))
    rows.push(scored
      ? `| ${label(name)} | ${s.mean_score!.toFixed(3)} | ${pct(s.win_rate!)} | ${gain(s.relative_gain)} | ${pct(s.misleading)} | ${pct(s.helped)} |`
      : `| ${label(name)} | ${pct(s.accuracy ?? 0)} | ${gain(s.relative_gain)} | ${pct(s.misleading)} | ${pct(s.helped)} |`);
  if (scored) rows.push('', '*(mean − none\'s) / |none\'s|: a reward model\'s score has no natural zero, so this depends on its offset; the win rate is the primary figure.');
  return rows.join('\n');
}
