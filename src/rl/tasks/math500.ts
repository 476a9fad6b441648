// MATH-500: competition problems; solutions end in \boxed{answer}. Only a test split exists.
import { mathEqual } from '../answers.js';
import { extractMath } from '../math-verify.js';
import { dataFile, needString, readJsonl, selectExamples, type Example, type ExampleOptions, type Split, type Task } from './common.js';

export interface Math500Example extends Example {
  subject: string;
  level: number;
  uniqueId: string;
}

/** Load a MATH-500 JSONL file (`problem, solution, answer, subject, level, unique_id`); bad lines raise file:line errors. */
export function loadMath500(file: string): Math500Example[] {
  return readJsonl<Math500Example>(file, (rec) => {
    for (const k of ['problem', 'solution', 'answer', 'subject', 'unique_id']) {
      const bad = needString(rec, k);
      if (bad) return bad;
    }
    const level = typeof rec.level === 'string' ? Number(String(rec.level).replace(/^Level\s*/i, '')) : rec.level;
    if (typeof level !== 'number' || !Number.isInteger(level) || level < 1 || level > 5) {
      return `field "level" must be an integer 1..5, got ${JSON.stringify(rec.level)}`;
    }
    const problem = (rec.problem as string).trim();
    if (!problem) return 'empty "problem"';
    if (!(rec.answer as string).trim()) return 'empty "answer"';
    const uniqueId = rec.unique_id as string;
    return {
      id: uniqueId,
      question: problem,
      answer: (rec.answer as string).trim(),
      solution: (rec.solution as string).trim(),
      subject: rec.subject as string,
      level,
      uniqueId,
    };
  });
}

export interface Math500TaskOptions {
  /** Directory holding math500.test.jsonl (default: $WST_DASH_DATA or ../shared/data). */
  dataDir?: string;
  prompt?: (example: Math500Example) => string;
}

export function createMath500Task(options: Math500TaskOptions = {}): Task<Math500Example> {
  return {
    name: 'math500',
    stop: [],
    examples(split: Split, opts: ExampleOptions = {}) {
      if (split !== 'test' && !(split === 'train' && opts.file)) {
        throw new RangeError(`math500 has only a 'test' split, got ${String(split)} (pass opts.file to load another MATH-format file)`);
      }
      const file = opts.file ?? dataFile('math500.test.jsonl', options.dataDir);
      return selectExamples(loadMath500(file), opts);
    },
    prompt: options.prompt ?? ((ex) => `Problem: ${ex.question}\nGive the final answer as \\boxed{answer}.\nSolution: `),
    reference: (ex) => ex.solution,
    answer: (ex) => ex.answer,
    // Free-form completions as chat models write them: the last \boxed{} (several: all), else
    // "the answer is …", else the last math, else the last number (answers.extractMath).
    extract: (completion) => extractMath(completion),
    isCorrect(completion, ex) {
      const got = extractMath(completion);
      return got !== null && mathEqual(got, ex.answer);
    },
  };
}

export const math500: Task<Math500Example> = createMath500Task();
