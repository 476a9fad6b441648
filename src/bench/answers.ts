// `wst-dash bench answers`: how fast answers are checked (per check, and per DASH step of 128
// completions), on the built-in arith task, GSM8K and MATH-500 reference solutions, and — given the
// cases of Hugging Face Math-Verify's regression suite (`scripts/math-verify-cases.py`) — how often
// our verdict agrees with theirs, with the false "yes" counted apart.
import { readFileSync } from 'node:fs';
import { extractMath, verifyMath, type ExtractOptions, type VerifyOptions } from '../rl/math-verify.js';
import { mathEqual } from '../rl/answers.js';
import { builtinTask } from '../rl/builtin.js';
import { gsm8k } from '../rl/tasks/gsm8k.js';
import { math500 } from '../rl/tasks/math500.js';
import type { Example, Task } from '../rl/tasks/common.js';

export interface CheckTiming {
  name: string;
  checks: number;
  agree: number;
  /** Microseconds per check (median of 3 passes). */
  us_per_check: number;
  checks_per_second: number;
  /** Milliseconds to check one DASH step's 128 completions (16 prompts × 8). */
  ms_per_128: number;
}

export interface MathVerifyAgreement {
  cases: number;
  agree: number;
  agreement: number;
  /** We said yes where Math-Verify expects no. */
  false_yes: number;
  /** We said no where Math-Verify expects yes. */
  false_no: number;
  us_per_check: number;
  misses: { test: string; line: number; gold: string; pred: string; expected: boolean }[];
}

function timeChecks(name: string, task: Task<Example>, examples: readonly Example[], completion: (e: Example) => string): CheckTiming {
  const runs: number[] = [];
  let agree = 0;
  for (let pass = 0; pass < 3; pass++) {
    agree = 0;
    const t0 = performance.now();
    for (const e of examples) agree += task.isCorrect(completion(e), e) ? 1 : 0;
    runs.push((performance.now() - t0) / examples.length);
  }
  const ms = runs.sort((a, b) => a - b)[1];
  return { name, checks: examples.length, agree, us_per_check: 1000 * ms, checks_per_second: 1000 / ms, ms_per_128: 128 * ms };
}

/** Agreement with Math-Verify's expected verdicts (cases as scripts/math-verify-cases.py writes them). */
export function mathVerifyAgreement(file: string): MathVerifyAgreement {
  const cases = JSON.parse(readFileSync(file, 'utf8')) as { test: string; line: number; gold: string; pred: string; expected: boolean | number; options?: ExtractOptions & VerifyOptions }[];
  if (!Array.isArray(cases) || cases.length === 0) throw new Error(`${file}: expected a non-empty JSON array of cases`);
  let agree = 0, falseYes = 0, falseNo = 0;
  const misses: MathVerifyAgreement['misses'] = [];
  const t0 = performance.now();
  for (const c of cases) {
    const o = c.options ?? {};
    const g = extractMath(c.gold, o), p = extractMath(c.pred, o);
    const yes = g !== null && p !== null && mathEqual(g, p, o);
    const expected = Boolean(c.expected);
    if (yes === expected) agree++;
    else {
      if (yes) falseYes++;
      else falseNo++;
      misses.push({ test: c.test, line: c.line, gold: c.gold.slice(0, 200), pred: c.pred.slice(-200), expected });
    }
  }
  return { cases: cases.length, agree, agreement: agree / cases.length, false_yes: falseYes, false_no: falseNo, us_per_check: (1000 * (performance.now() - t0)) / cases.length, misses };
}

export interface AnswerBenchReport {
  timings: CheckTiming[];
  /** A pathological answer (2^{1000000}, 10k nested brackets, 100 kB): ms to the verdict, and its reason. */
  pathological: { name: string; ms: number; equal: boolean; reason: string }[];
  math_verify?: MathVerifyAgreement;
}

export function runAnswerBench(opts: { cases?: string }): AnswerBenchReport {
  verifyMath('1', '1'); // load the parser outside the timings
  const timings: CheckTiming[] = [];
  // The demo's task: completions as the SFT model writes them.
  const arith = builtinTask as Task<Example>;
  const arithExamples = arith.examples('test', { limit: 500, seed: 12345 });
  timings.push(timeChecks('arith (the demo): reference solutions', arith, arithExamples, (e) => arith.reference(e)));
  try {
    const g = gsm8k.examples('test');
    timings.push(timeChecks('gsm8k: reference solutions', gsm8k as Task<Example>, g, (e) => e.solution));
  } catch { /* no data folder: skipped */ }
  try {
    const m = math500.examples('test') as Example[];
    timings.push(timeChecks('math500: reference solutions (extractMath + mathEqual)', math500 as Task<Example>, m, (e) => e.solution));
    timings.push(timeChecks('math500: "The answer is X." (free-form)', math500 as Task<Example>, m, (e) => `The answer is ${e.answer}.`));
  } catch { /* no data folder: skipped */ }
  const pathological = [
    ['a huge power', '2^{1000000}', '3'],
    ['10,000 nested brackets', '('.repeat(10_000) + '1' + ')'.repeat(10_000), '1'],
    ['a 100 kB answer', 'x+'.repeat(50_000) + '1', '1'],
    ['a long symbolic sum', Array.from({ length: 100 }, (_, i) => `\\frac{x^{${i}}}{${i + 1}}`).join('+'), 'x'],
  ].map(([name, a, b]) => {
    const t0 = performance.now();
    const v = verifyMath(a, b);
    return { name, ms: performance.now() - t0, equal: v.equal, reason: v.reason };
  });
  return { timings, pathological, ...(opts.cases ? { math_verify: mathVerifyAgreement(opts.cases) } : {}) };
}

export function answerBenchTable(r: AnswerBenchReport): string {
  const lines = ['| checker | checks | agree | µs / check | checks / s | ms per DASH step (128) |', '| --- | ---: | ---: | ---: | ---: | ---: |'];
  for (const t of r.timings) lines.push(`| ${t.name} | ${t.checks} | ${t.agree} | ${t.us_per_check.toFixed(1)} | ${Math.round(t.checks_per_second)} | ${t.ms_per_128.toFixed(2)} |`);
  lines.push('', '| pathological input | ms | verdict |', '| --- | ---: | --- |');
  for (const p of r.pathological) lines.push(`| ${p.name} | ${p.ms.toFixed(1)} | ${p.equal ? 'yes' : `no (${p.reason})`} |`);
  if (r.math_verify) {
    const m = r.math_verify;
    lines.push('', `Math-Verify's cases: ${m.agree}/${m.cases} agree (${(100 * m.agreement).toFixed(1)} %), false yes ${m.false_yes}, false no ${m.false_no}, ${(m.us_per_check / 1000).toFixed(2)} ms per case.`);
  }
  return lines.join('\n');
}
