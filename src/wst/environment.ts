// WST as an environment of the trainer: the teacher's completion is an instruction; the frozen
// student answers the query under it; the reward is the student's outcome. The whole step's
// requests go to the student at once (one batched generate for a local student, a concurrent
// pool for a remote one).
import type { Environment, EnvironmentResult, Rollout } from '../rl/environment.js';
import type { Example, Task } from '../rl/tasks/common.js';
import type { Student } from './student.js';
import { checkTemplates, parseInstruction, teacherPrompt, type WstTemplates } from './templates.js';

export interface WstEnvironmentOptions<E extends Example> {
  /** Whose answers are checked (its examples' questions are the queries). */
  task: Task<E>;
  student: Student;
  templates: WstTemplates;
  /** Student answers per instruction (K); the reward is their mean correctness. Default 1. */
  samples?: number;
  /** Student sampling temperature (default 0: greedy; K > 1 needs > 0 to differ). */
  temperature?: number;
  /** Most tokens of a student answer. */
  maxStudentTokens?: number;
  /** Longest instruction kept, in characters (default 200). */
  maxInstructionChars?: number;
  /**
   * The reward of one student answer (default: 1 when the task's checker accepts it, else 0):
   * reward models and judges plug in here.
   */
  scorer?: (answer: string, example: E, instruction: string) => number | Promise<number>;
  /** A scorer of many answers at once (a reward model's batched forward, a judge pool); wins over `scorer`. */
  batchScorer?: BatchScorer<E>;
}

/** Scores each (query example, student answer, instruction); one number per item, in order. */
export type BatchScorer<E extends Example = Example> = (items: readonly { answer: string; example: E; instruction: string }[]) => Promise<number[]>;

/** A scorer's scores, checked: one finite number per item (a missing or broken score fails the caller). */
export async function scoreChecked<E extends Example>(scorer: BatchScorer<E>, items: Parameters<BatchScorer<E>>[0]): Promise<number[]> {
  const scores = await scorer(items);
  if (scores.length !== items.length || scores.some((x) => !Number.isFinite(x)))
    throw new Error(`the scorer returned ${scores.length} finite scores for ${items.length} answers`);
  return scores;
}

/** The environment in which a teacher's instructions are scored by a frozen student's outcome. */
export function wstEnvironment<E extends Example>(o: WstEnvironmentOptions<E>): Environment<E> {
  const templates = checkTemplates(o.templates);
  const samples = o.samples ?? 1;
  return {
    name: `wst:${o.task.name}`,
    stop: ['\n'],
    prompt: (example) => teacherPrompt(templates, example.question),
    async score(rollouts: readonly Rollout<E>[], context): Promise<EnvironmentResult> {
      const instructions = rollouts.map((r) => parseInstruction(r.completion, o.maxInstructionChars));
      const before = { ...o.student.stats };
      const answers = await o.student.answer(
        rollouts.map((r, i) => ({ instruction: instructions[i] || null, query: r.example.question })),
        { samples, temperature: o.temperature ?? 0, seed: context.seed, maxTokens: o.maxStudentTokens },
      );
      const rewards: number[] = [], correct: boolean[] = [];
      let right = 0;
      // Batched scorer: every answer of the step in one call.
      let batchScores: number[] | null = null;
      if (o.batchScorer) {
        const items = rollouts.flatMap((r, i) => answers[i].map((a) => ({ answer: a.text, example: r.example, instruction: instructions[i] })));
        batchScores = await scoreChecked(o.batchScorer, items);
      }
      let at = 0;
      for (let i = 0; i < rollouts.length; i++) {
        let sum = 0, ok = 0;
        for (const a of answers[i]) {
          const c = o.task.isCorrect(a.text, rollouts[i].example);
          ok += c ? 1 : 0;
          sum += batchScores ? batchScores[at++] : o.scorer ? await o.scorer(a.text, rollouts[i].example, instructions[i]) : c ? 1 : 0;
        }
        rewards.push(sum / answers[i].length);
        correct.push(ok * 2 > answers[i].length); // a strict majority of the K answers
        right += ok;
      }
      const s = o.student.stats;
      // Students behind servers also count retries and cache hits (HttpStudentStats): per step too.
      const extra: Record<string, number> = {};
      for (const k of ['retries', 'cacheHits', 'cacheMisses', 'failures'] as const) {
        const now = (s as unknown as Record<string, number | undefined>)[k], was = (before as unknown as Record<string, number | undefined>)[k];
        if (typeof now === 'number') extra[`student_${k.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase())}`] = now - (was ?? 0);
      }
      return {
        // With a scorer the reward is the outcome (evaluations report its mean); else the checker's verdicts.
        rewards, ...(o.scorer || o.batchScorer ? {} : { correct }),
        metrics: {
          student_answers: rollouts.length * samples,
          student_correct: right,
          student_prompt_tokens: s.promptTokens - before.promptTokens,
          student_completion_tokens: s.completionTokens - before.completionTokens,
          student_deduplicated: s.deduplicated - before.deduplicated,
          student_seconds: s.seconds - before.seconds,
          instruction_chars: instructions.reduce((a, x) => a + x.length, 0),
          ...extra,
        },
      };
    },
  };
}
