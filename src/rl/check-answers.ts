// `wst-dash check-answers`: run the answer checker over a data set's own reference solutions.
//   gsm8k:   extractGsm8k(answer text) vs the number after its "####"      (numberEqual)
//   math500: extractBoxed(solution)    vs the "answer" field                (mathEqual)
// Disagreeing rows go to stderr so the checker can be improved against them.
import { extractBoxed, extractGsm8k, mathEqual, numberEqual } from './answers.js';
import { loadGsm8k } from './tasks/gsm8k.js';
import { loadMath500 } from './tasks/math500.js';

export interface CheckAnswersOptions {
  task: 'gsm8k' | 'math500';
  file: string;
  /** Print one JSON line ({"n","agree"}) instead of a sentence. */
  json?: boolean;
  /** Where to print (defaults: process.stdout / process.stderr). */
  out?: (line: string) => void;
  err?: (line: string) => void;
}

export interface CheckAnswersResult {
  n: number;
  agree: number;
}

export function runCheckAnswers(opts: CheckAnswersOptions): CheckAnswersResult {
  const out = opts.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const err = opts.err ?? ((l: string) => process.stderr.write(l + '\n'));
  let n = 0, agree = 0;
  if (opts.task === 'gsm8k') {
    for (const ex of loadGsm8k(opts.file)) {
      n++;
      const got = extractGsm8k(ex.solution);
      if (got !== null && numberEqual(got, ex.answer)) agree++;
      else err(`disagree ${ex.id}: extracted ${JSON.stringify(got)}, answer ${JSON.stringify(ex.answer)}`);
    }
  } else if (opts.task === 'math500') {
    for (const ex of loadMath500(opts.file)) {
      n++;
      const got = extractBoxed(ex.solution);
      if (got !== null && mathEqual(got, ex.answer)) agree++;
      else err(`disagree ${ex.uniqueId}: extracted ${JSON.stringify(got)}, answer ${JSON.stringify(ex.answer)}`);
    }
  } else {
    throw new RangeError(`task must be 'gsm8k' or 'math500', got ${JSON.stringify(opts.task)}`);
  }
  const result = { n, agree };
  out(opts.json ? JSON.stringify(result) : `${opts.task}: ${agree}/${n} reference solutions agree with their answer field`);
  return result;
}
