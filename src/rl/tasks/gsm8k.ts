// GSM8K: grade-school word problems; the reference answer text ends with `#### <number>`.
import { extractGsm8k, numberEqual } from '../answers.js';
import { dataFile, needString, readJsonl, selectExamples, type Example, type ExampleOptions, type Split, type Task } from './common.js';

export interface Gsm8kExample extends Example {
  /** 1-based line in the source file. */
  line: number;
}

/** The number after the last `####` of a GSM8K answer text, commas and `$` stripped; null when absent. */
export function gsm8kFinalAnswer(answerText: string): string | null {
  const k = answerText.lastIndexOf('####');
  if (k < 0) return null;
  const tail = answerText.slice(k + 4).trim().replace(/[,$\s]/g, '').replace(/\.$/, '');
  return /^-?(?:\d+(?:\.\d+)?|\.\d+)$/.test(tail) ? tail : null;
}

/** Load a GSM8K JSONL file (`{"question", "answer"}`, answer ending `#### N`); bad lines raise file:line errors. */
export function loadGsm8k(file: string, idPrefix = 'gsm8k'): Gsm8kExample[] {
  return readJsonl<Gsm8kExample>(file, (rec, line) => {
    const bad = needString(rec, 'question') ?? needString(rec, 'answer');
    if (bad) return bad;
    const question = (rec.question as string).trim();
    const solution = (rec.answer as string).trim();
    if (!question) return 'empty "question"';
    const answer = gsm8kFinalAnswer(solution);
    if (answer === null) return `"answer" must end with "#### <number>", got ${JSON.stringify(solution.slice(-40))}`;
    return { id: `${idPrefix}:${line}`, question, answer, solution, line };
  });
}

/** Remove GSM8K calculator annotations: "9 * 2 = $<<9*2=18>>18" → "9 * 2 = $18". */
export function stripCalculatorAnnotations(text: string): string {
  return text.replace(/<<[^<>]*>>/g, '');
}

export interface Gsm8kTaskOptions {
  /** Directory holding gsm8k.train.jsonl / gsm8k.test.jsonl (default: $WST_DASH_DATA or ../shared/data). */
  dataDir?: string;
  /** Keep the `<<a*b=c>>` calculator annotations in reference solutions (default false). */
  keepCalculatorAnnotations?: boolean;
  prompt?: (example: Gsm8kExample) => string;
}

export function createGsm8kTask(options: Gsm8kTaskOptions = {}): Task<Gsm8kExample> {
  return {
    name: 'gsm8k',
    stop: ['\n\nQuestion:'],
    examples(split: Split, opts: ExampleOptions = {}) {
      if (split !== 'train' && split !== 'test') throw new RangeError(`split must be 'train' or 'test', got ${String(split)}`);
      const file = opts.file ?? dataFile(`gsm8k.${split}.jsonl`, options.dataDir);
      return selectExamples(loadGsm8k(file, `gsm8k-${split}`), opts);
    },
    prompt: options.prompt ?? ((ex) => `Question: ${ex.question}\nAnswer: `),
    reference: (ex) => (options.keepCalculatorAnnotations ? ex.solution : stripCalculatorAnnotations(ex.solution)),
    answer: (ex) => ex.answer,
    extract: (completion) => extractGsm8k(completion),
    isCorrect(completion, ex) {
      const got = extractGsm8k(completion);
      return got !== null && numberEqual(got, ex.answer);
    },
  };
}

export const gsm8k: Task<Gsm8kExample> = createGsm8kTask();
