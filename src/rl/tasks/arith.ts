// The built-in task: short GSM8K-format arithmetic word problems from a small vocabulary, seeded and
// deterministic, so a tiny character-level model can learn them in minutes on a CPU.
//
//   Q: Tom has 3 apples. He buys 5 more. Then he gives away 2. How many apples does he have?
//   A: 3+5=8. 8-2=6. #### 6
import { extractGsm8k, numberEqual } from '../answers.js';
import { fnv1a, makeRng, type Example, type ExampleOptions, type Split, type Task } from './common.js';

export interface ArithExample extends Example {
  /** Number of arithmetic steps (1..4). */
  steps: number;
  difficulty: number;
  /** The solution comes from the flawed solver (generateArith's flawedRate); `answer` is still the true one. */
  flawed?: boolean;
}

type Op = '+' | '-' | '*' | '/';

interface Level {
  minSteps: number;
  maxSteps: number;
  /** Every intermediate and final value lies in 0..cap. */
  cap: number;
  startMax: number;
  /** Largest added / removed amount. */
  deltaMax: number;
  /** Largest multiplier / divisor. */
  factorMax: number;
  ops: Op[];
}

/** Difficulty 1..5: more steps, larger numbers, more operations. The default is 3 (results 0..99). */
export const ARITH_LEVELS: Readonly<Record<number, Level>> = {
  1: { minSteps: 1, maxSteps: 1, cap: 20, startMax: 10, deltaMax: 9, factorMax: 2, ops: ['+', '-'] },
  2: { minSteps: 1, maxSteps: 2, cap: 50, startMax: 20, deltaMax: 20, factorMax: 3, ops: ['+', '-', '*'] },
  3: { minSteps: 1, maxSteps: 3, cap: 99, startMax: 30, deltaMax: 30, factorMax: 5, ops: ['+', '-', '*', '/'] },
  4: { minSteps: 2, maxSteps: 4, cap: 99, startMax: 50, deltaMax: 50, factorMax: 9, ops: ['+', '-', '*', '/'] },
  5: { minSteps: 3, maxSteps: 4, cap: 999, startMax: 200, deltaMax: 300, factorMax: 9, ops: ['+', '-', '*', '/'] },
};
export const ARITH_DEFAULT_DIFFICULTY = 3;

const NAMES: readonly [string, 'he' | 'she'][] = [['Tom', 'he'], ['Sam', 'he'], ['Ben', 'he'], ['Ann', 'she'], ['Mia', 'she'], ['Eva', 'she']];
const ITEMS = ['apples', 'pens', 'cards', 'coins', 'eggs', 'books', 'cups', 'balls'];
const PHRASES: Record<Op, string[]> = {
  '+': ['{p} buys {n} more.', '{p} gets {n} more.', '{p} finds {n} more.'],
  '-': ['{p} gives away {n}.', '{p} loses {n}.', '{p} sells {n}.'],
  '*': ['{p} now has {n} times as many.'],
  '/': ['{p} splits them into {n} equal piles and keeps one.'],
};
const OPENING = '{N} has {n} {items}.';
const THEN = 'Then ';
const QUESTION = 'How many {items} does {p} have?';
const PROMPT_PREFIX = 'Q: ';
const PROMPT_SUFFIX = '\nA: ';
const ANSWER_MARK = ' #### ';

function capitalise(w: string): string {
  return w[0].toUpperCase() + w.slice(1);
}

/**
 * Every character that can appear in an arith prompt or reference solution, sorted (for building a
 * character-level tokenizer). Derived from the templates above, so it stays in sync with the generator.
 */
export const ARITH_VOCAB: string = (() => {
  const parts = [
    ...NAMES.flat(), ...NAMES.map(([, p]) => capitalise(p)), ...ITEMS, ...Object.values(PHRASES).flat(),
    OPENING, THEN, QUESTION, PROMPT_PREFIX, PROMPT_SUFFIX, ANSWER_MARK, '0123456789', '+-*/=. ',
  ];
  const chars = new Set<string>();
  for (const part of parts) for (const c of part.replace(/\{[A-Za-z]+\}/g, '')) chars.add(c);
  return [...chars].sort().join('');
})();

function level(difficulty: number): Level {
  const lv = ARITH_LEVELS[difficulty];
  if (!Number.isInteger(difficulty) || !lv) throw new RangeError(`difficulty must be an integer 1..5, got ${difficulty}`);
  return lv;
}

function int(r: () => number, lo: number, hi: number): number {
  return lo + Math.floor(r() * (hi - lo + 1));
}

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)];
}

function fill(template: string, vars: Record<string, string | number>): string {
  return template.replace(/\{([A-Za-z]+)\}/g, (_, k: string) => String(vars[k]));
}

interface WorkStep {
  v: number;
  op: Op;
  n: number;
}

/** One problem drawn from the stream `r`. */
function drawProblem(r: () => number, lv: Level): { question: string; solution: string; answer: number; steps: number; work: WorkStep[]; item: number } {
  const [name, pronoun] = pick(r, NAMES);
  const items = pick(r, ITEMS);
  const item = ITEMS.indexOf(items);
  const steps = int(r, lv.minSteps, lv.maxSteps);
  let v = int(r, 1, lv.startMax);
  const sentences = [fill(OPENING, { N: name, n: v, items })];
  const work: string[] = [];
  const trace: WorkStep[] = [];
  for (let s = 0; s < steps; s++) {
    const choices: [Op, number[]][] = [];
    for (const op of lv.ops) {
      const ns: number[] = [];
      if (op === '+') for (let n = 1; n <= Math.min(lv.deltaMax, lv.cap - v); n++) ns.push(n);
      if (op === '-') for (let n = 1; n <= Math.min(lv.deltaMax, v); n++) ns.push(n);
      if (op === '*' && v >= 1) for (let n = 2; n <= Math.min(lv.factorMax, Math.floor(lv.cap / v)); n++) ns.push(n);
      if (op === '/' && v >= 2) for (let n = 2; n <= Math.min(lv.factorMax, v); n++) if (v % n === 0) ns.push(n);
      if (ns.length) choices.push([op, ns]);
    }
    const [op, ns] = pick(r, choices); // + or - is always possible: 0 <= v <= cap and cap >= 1
    const n = pick(r, ns);
    const next = op === '+' ? v + n : op === '-' ? v - n : op === '*' ? v * n : v / n;
    const phrase = pick(r, PHRASES[op]);
    sentences.push(s === 0 ? fill(phrase, { p: capitalise(pronoun), n }) : THEN + fill(phrase, { p: pronoun, n }));
    work.push(`${v}${op}${n}=${next}.`);
    trace.push({ v, op, n });
    v = next;
  }
  sentences.push(fill(QUESTION, { items, p: pronoun }));
  return { question: sentences.join(' '), solution: work.join(' ') + ANSWER_MARK + v, answer: v, steps, work: trace, item };
}

const OPPOSITE: Record<Op, Op> = { '+': '-', '-': '+', '*': '/', '/': '*' };

function apply(v: number, op: Op, n: number): number {
  return op === '+' ? v + n : op === '-' ? v - n : op === '*' ? v * n : v / n;
}

/**
 * The worked solution of a flawed solver that confuses the keywords of + and - (or * and /): it applies
 * the opposite operation wherever that keeps the running value a whole number in 0..cap (otherwise the
 * right one), and carries its value forward. Null when it would make no mistake on this problem.
 */
function flawedSolution(work: readonly WorkStep[], lv: Level): string | null {
  let v = work[0].v;
  let wrong = false;
  const out: string[] = [];
  for (const { op, n } of work) {
    let use = op;
    const alt = apply(v, OPPOSITE[op], n);
    if (Number.isInteger(alt) && alt >= 0 && alt <= lv.cap) use = OPPOSITE[op];
    if (use !== op) wrong = true;
    const next = apply(v, use, n);
    out.push(`${v}${use}${n}=${next}.`);
    v = next;
  }
  return wrong ? out.join(' ') + ANSWER_MARK + v : null;
}

/**
 * The worked solution of a flawed solver that works correctly but answers with the last amount the
 * problem mentions (the operand of the last step) instead of the result. Null when those coincide.
 */
function operandSolution(work: readonly WorkStep[], solution: string): string | null {
  const last = work[work.length - 1];
  const answer = apply(last.v, last.op, last.n);
  return last.n === answer ? null : solution.slice(0, solution.lastIndexOf(ANSWER_MARK)) + ANSWER_MARK + last.n;
}

/** The flawed solvers of ArithOptions.flawedKind. */
export type ArithFlaw = 'opposite' | 'operand';

export interface ArithOptions {
  seed?: number;
  count?: number;
  /** 1..5 (default 3): steps 1 | 1-2 | 1-3 | 2-4 | 3-4; results within 0..20 | 50 | 99 | 99 | 999. */
  difficulty?: number;
  /**
   * 'train' and 'test' partition the problem space by a hash of the question text (10% test), so the two
   * splits never share a question; 'all' (default) keeps every drawn problem.
   */
  split?: Split | 'all';
  /**
   * Fraction (0..1, default 0) of problems whose `solution` comes from the flawed solver of
   * `flawedKind` (when it would make a mistake on that problem; otherwise the true solution is kept);
   * `answer` stays the true answer. For an imperfect SFT corpus only: the problems drawn are the same
   * as with 0 (a separate seeded stream decides which solutions are flawed), so evaluation and
   * rewards, which use `answer`, are unaffected.
   */
  flawedRate?: number;
  /**
   * Which flawed solver (default 'opposite'): 'opposite' confuses the keywords of opposite operations;
   * 'operand' works correctly but answers with the last amount mentioned instead of the result. At
   * rate 0.5, 'opposite' leaves the keyword no signal about the operation (the model learns a coin
   * flip, which RL did not fix in 128 steps), while 'operand' teaches one global choice after "####"
   * that DASH selects within 64 steps (bench/archive/NOTES-2026-11.md).
   */
  flawedKind?: ArithFlaw;
  /**
   * Skews the flawed rate by item (default 0): problems about the even-numbered items (apples,
   * cards, eggs, cups) use flawedRate + flawedSkew, the others flawedRate − flawedSkew. A solver
   * careless in some contexts more than others: the model learns a preference per context with a
   * margin, instead of one global coin flip that rounding can tip either way.
   */
  flawedSkew?: number;
}

function isTestQuestion(question: string): boolean {
  return fnv1a(question) % 10 === 0;
}

/**
 * Generate `count` problems, deterministic for (seed, difficulty, split); a smaller count gives a prefix
 * of a larger one.
 */
export function generateArith(opts: ArithOptions = {}): ArithExample[] {
  const seed = opts.seed ?? 0;
  const count = opts.count ?? 1000;
  const difficulty = opts.difficulty ?? ARITH_DEFAULT_DIFFICULTY;
  const split = opts.split ?? 'all';
  if (!Number.isFinite(seed)) throw new RangeError(`seed must be a finite number, got ${seed}`);
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`count must be a non-negative integer, got ${count}`);
  if (split !== 'all' && split !== 'train' && split !== 'test') throw new RangeError(`split must be 'train', 'test' or 'all', got ${String(split)}`);
  const lv = level(difficulty);
  const streamSeed = (Math.floor(seed) * 0x2545f491 + difficulty * 0x3c6ef372 + (split === 'test' ? 0x68e31da4 : split === 'train' ? 0x1b873593 : 0)) >>> 0;
  const flawedRate = opts.flawedRate ?? 0, skew = opts.flawedSkew ?? 0;
  if (!(flawedRate >= 0 && flawedRate <= 1)) throw new RangeError(`flawedRate must be within 0..1, got ${flawedRate}`);
  if (!(flawedRate - Math.abs(skew) >= 0 && flawedRate + Math.abs(skew) <= 1)) throw new RangeError(`flawedRate ± flawedSkew must stay within 0..1, got ${flawedRate} ± ${skew}`);
  if (opts.flawedKind !== undefined && opts.flawedKind !== 'opposite' && opts.flawedKind !== 'operand')
    throw new RangeError(`flawedKind must be 'opposite' or 'operand', got ${String(opts.flawedKind)}`);
  const r = makeRng(streamSeed);
  const rf = makeRng((streamSeed ^ 0x5bd1e995) >>> 0);
  const out: ArithExample[] = [];
  for (let tries = 0; out.length < count; tries++) {
    if (tries > 100 * count + 1000) throw new Error(`arith: could not draw ${count} ${split} problems at difficulty ${difficulty}`);
    const p = drawProblem(r, lv);
    if (split !== 'all' && isTestQuestion(p.question) !== (split === 'test')) continue;
    const flawed = flawedRate > 0 && rf() < flawedRate + (p.item % 2 === 0 ? skew : -skew)
      ? (opts.flawedKind ?? 'opposite') === 'operand' ? operandSolution(p.work, p.solution) : flawedSolution(p.work, lv)
      : null;
    out.push({
      id: `arith-d${difficulty}-s${seed}-${split}-${out.length}`,
      question: p.question,
      answer: String(p.answer),
      solution: flawed ?? p.solution,
      steps: p.steps,
      difficulty,
      ...(flawed ? { flawed: true } : {}),
    });
  }
  return out;
}

export interface ArithExampleOptions extends ExampleOptions {
  difficulty?: number;
  /** generateArith's flawedRate / flawedKind / flawedSkew (an imperfect SFT corpus; answers stay true). */
  flawedRate?: number;
  flawedSkew?: number;
  flawedKind?: ArithFlaw;
}

export interface ArithTaskOptions {
  difficulty?: number;
  /** Default number of examples per split when opts.limit is not given. */
  trainCount?: number;
  testCount?: number;
}

export function createArithTask(options: ArithTaskOptions = {}): Task<ArithExample, ArithExampleOptions> {
  return {
    name: 'arith',
    stop: ['\n'],
    examples(split: Split, opts: ArithExampleOptions = {}) {
      if (split !== 'train' && split !== 'test') throw new RangeError(`split must be 'train' or 'test', got ${String(split)}`);
      const count = opts.limit ?? (split === 'train' ? options.trainCount ?? 5000 : options.testCount ?? 500);
      return generateArith({ seed: opts.seed ?? 0, count, difficulty: opts.difficulty ?? options.difficulty ?? ARITH_DEFAULT_DIFFICULTY, split,
        flawedRate: opts.flawedRate, flawedKind: opts.flawedKind, flawedSkew: opts.flawedSkew });
    },
    prompt: (ex) => PROMPT_PREFIX + ex.question + PROMPT_SUFFIX,
    reference: (ex) => ex.solution,
    answer: (ex) => ex.answer,
    extract: (completion) => extractGsm8k(completion),
    isCorrect(completion, ex) {
      const got = extractGsm8k(completion);
      return got !== null && numberEqual(got, ex.answer);
    },
  };
}

export const arith: Task<ArithExample, ArithExampleOptions> = createArithTask();
