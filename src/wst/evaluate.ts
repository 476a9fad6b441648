// `eval wst`: the student's accuracy on held-out queries under each teacher, beside its accuracy
// alone. Per teacher: accuracy; misleading = the fraction of queries the student gets right alone
// and wrong under the teacher's instruction; helped = wrong alone, right with it (our definitions,
// README "WST"); relative gain (acc − acc_none) / acc_none, as the paper reports it.
import type { Model } from '../models/model.js';
import type { Example, Task } from '../rl/tasks/common.js';
import type { Student } from './student.js';
import { parseInstruction, teacherPrompt, type WstTemplates } from './templates.js';

export type TeacherSpec =
  | { kind: 'none' }
  | { kind: 'fixed'; instruction: string }
  /** A model writing instructions through the teacher template: greedy unless temperature > 0. */
  | { kind: 'model'; model: Model; temperature?: number; seed?: number };

export interface TeacherScore {
  accuracy: number;
  misleading: number;
  helped: number;
  /** (accuracy − none's) / none's. */
  relative_gain: number | null;
  n: number;
}

export interface QueryRecord {
  id: string;
  teacher: string;
  instruction: string | null;
  answer: string;
  correct: boolean;
  correct_alone: boolean;
}

export interface WstEvalResult {
  teachers: Record<string, TeacherScore>;
  queries: QueryRecord[];
  seconds: number;
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

/** A markdown table of an evaluation (teachers in the given order; `label` names a row). */
export function wstTable(r: Pick<WstEvalResult, 'teachers'>, label: (name: string) => string = (name) => name): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const rows = ['| teacher | student accuracy | relative gain | misleading | helped |', '| --- | ---: | ---: | ---: | ---: |'];
  for (const [name, s] of Object.entries(r.teachers))
    rows.push(`| ${label(name)} | ${pct(s.accuracy)} | ${s.relative_gain === null ? '—' : `${s.relative_gain >= 0 ? '+' : ''}${(100 * s.relative_gain).toFixed(0)}%`} | ${pct(s.misleading)} | ${pct(s.helped)} |`);
  return rows.join('\n');
}
