import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { extractGsm8k } from '../src/rl/answers.js';
import {
  ARITH_LEVELS, ARITH_VOCAB, arith, createGsm8kTask, createMath500Task, generateArith, getTask, gsm8k, loadGsm8k, loadMath500,
  math500, stripCalculatorAnnotations,
} from '../src/rl/tasks/index.js';

const DATA = process.env.WST_DASH_DATA ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared/data');
const HAVE_DATA = existsSync(DATA);
if (!HAVE_DATA) console.warn(`tasks.test: real-data checks skipped, ${DATA} not found (set WST_DASH_DATA)`);

function tmpFile(name: string, text: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'wst-dash-tasks-'));
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** Independent re-computation of an arith reference solution: every "a op b=c." step and the chain. */
function checkSolution(solution: string): number {
  const m = /^(.*) #### (\d+)$/.exec(solution);
  expect(m, solution).not.toBeNull();
  const steps = m![1].split(' ');
  let prev: number | null = null;
  for (const step of steps) {
    const s = /^(\d+)([-+*/])(\d+)=(\d+)\.$/.exec(step);
    expect(s, `step ${step} in ${solution}`).not.toBeNull();
    const [a, op, b, c] = [Number(s![1]), s![2], Number(s![3]), Number(s![4])];
    if (prev !== null) expect(a, `chain in ${solution}`).toBe(prev);
    const v = op === '+' ? a + b : op === '-' ? a - b : op === '*' ? a * b : a / b;
    expect(v, step).toBe(c);
    prev = c;
  }
  expect(Number(m![2])).toBe(prev);
  return steps.length;
}

describe('arith', () => {
  it('is deterministic for a seed, and a smaller count is a prefix', () => {
    const a = generateArith({ seed: 7, count: 200 });
    const b = generateArith({ seed: 7, count: 200 });
    expect(b).toEqual(a);
    expect(generateArith({ seed: 7, count: 50 })).toEqual(a.slice(0, 50));
  });

  it('different seeds give different problems', () => {
    const a = generateArith({ seed: 1, count: 100 }).map((e) => e.question);
    const b = generateArith({ seed: 2, count: 100 }).map((e) => e.question);
    const same = a.filter((q, i) => q === b[i]).length;
    expect(same).toBeLessThan(5);
    expect(new Set(a).size).toBeGreaterThan(90);
  });

  for (const difficulty of [1, 2, 3, 4, 5])
    it(`difficulty ${difficulty}: integer answers in range, solutions recompute, extraction agrees`, () => {
      const lv = ARITH_LEVELS[difficulty];
      for (const ex of generateArith({ seed: 100 + difficulty, count: 500, difficulty })) {
        expect(ex.answer).toMatch(/^\d+$/);
        const v = Number(ex.answer);
        expect(Number.isInteger(v) && v >= 0 && v <= lv.cap, `${ex.answer} within 0..${lv.cap}`).toBe(true);
        const steps = checkSolution(ex.solution);
        expect(steps).toBe(ex.steps);
        expect(steps).toBeGreaterThanOrEqual(lv.minSteps);
        expect(steps).toBeLessThanOrEqual(lv.maxSteps);
        expect(extractGsm8k(ex.solution)).toBe(ex.answer);
        expect(arith.isCorrect(arith.reference(ex), ex)).toBe(true);
        expect(arith.isCorrect(`${arith.reference(ex).replace(/#### \d+$/, `#### ${v + 1}`)}`, ex)).toBe(false);
        // every character is in the published vocabulary
        const outside = [...(arith.prompt(ex) + arith.reference(ex))].filter((c) => !ARITH_VOCAB.includes(c));
        expect(outside, ex.question).toEqual([]);
        // intermediate values stay within the range too
        expect(Math.max(...ex.solution.match(/\d+/g)!.map(Number))).toBeLessThanOrEqual(lv.cap);
      }
    });

  it('difficulty changes the number of steps and the size of numbers', () => {
    const mean = (d: number, f: (e: ReturnType<typeof generateArith>[number]) => number) => {
      const xs = generateArith({ seed: 3, count: 1000, difficulty: d }).map(f);
      return xs.reduce((s, x) => s + x, 0) / xs.length;
    };
    const steps = [1, 2, 3, 4, 5].map((d) => mean(d, (e) => e.steps));
    expect(steps[0]).toBe(1);
    for (let d = 1; d < 5; d++) expect(steps[d], `mean steps at difficulty ${d + 1} vs ${d}`).toBeGreaterThan(steps[d - 1]);
    const answers = [1, 3, 5].map((d) => mean(d, (e) => Number(e.answer)));
    expect(answers[1]).toBeGreaterThan(answers[0]);
    expect(answers[2]).toBeGreaterThan(answers[1]);
    const ops = new Set(generateArith({ seed: 3, count: 1000, difficulty: 3 }).flatMap((e) => e.solution.match(/[-+*/]/g)!));
    expect([...ops].sort()).toEqual(['*', '+', '-', '/']);
  });

  it('problems are short', () => {
    for (const ex of generateArith({ seed: 9, count: 300, difficulty: 3 })) {
      expect(ex.question.length).toBeLessThan(260);
      expect(ex.solution.length).toBeLessThan(60);
    }
    expect(ARITH_VOCAB.length).toBeLessThan(60);
    expect(ARITH_VOCAB).toBe([...new Set(ARITH_VOCAB)].sort().join(''));
  });

  it('flawedRate: same problems and answers, a seeded fraction of solutions from the keyword-confusing solver', () => {
    const clean = generateArith({ seed: 4, count: 2000, difficulty: 1, split: 'train' });
    expect(generateArith({ seed: 4, count: 2000, difficulty: 1, split: 'train', flawedRate: 0 })).toEqual(clean);
    const half = generateArith({ seed: 4, count: 2000, difficulty: 1, split: 'train', flawedRate: 0.5 });
    expect(generateArith({ seed: 4, count: 2000, difficulty: 1, split: 'train', flawedRate: 0.5 })).toEqual(half);
    expect(half.map((e) => [e.question, e.answer])).toEqual(clean.map((e) => [e.question, e.answer]));
    const flawed = half.filter((e) => e.flawed);
    // 0.5 of the problems, less those where the opposite operation leaves 0..20
    expect(flawed.length / half.length).toBeGreaterThan(0.3);
    expect(flawed.length / half.length).toBeLessThan(0.5);
    for (const [i, ex] of half.entries()) {
      expect(checkSolution(ex.solution)).toBe(1); // the flawed working is consistent arithmetic
      if (!ex.flawed) {
        expect(ex.solution).toBe(clean[i].solution);
        continue;
      }
      const [, a, op, b, c] = /^(\d+)([-+])(\d+)=(\d+)\. #### (\d+)$/.exec(ex.solution)!;
      const [, a0, op0, b0] = /^(\d+)([-+])(\d+)=/.exec(clean[i].solution)!;
      expect([a, b]).toEqual([a0, b0]);
      expect(op).not.toBe(op0);
      expect(Number(c)).toBeGreaterThanOrEqual(0);
      expect(Number(c)).toBeLessThanOrEqual(20);
      expect(arith.isCorrect(ex.solution, ex)).toBe(false); // rewards and evaluation use the true answer
    }
    expect(() => generateArith({ count: 1, flawedRate: 1.5 })).toThrow(RangeError);
  });

  it("flawedKind 'operand': correct working, the last amount mentioned as the final answer", () => {
    const clean = generateArith({ seed: 5, count: 1000, difficulty: 2, split: 'train' });
    const all = generateArith({ seed: 5, count: 1000, difficulty: 2, split: 'train', flawedRate: 1, flawedKind: 'operand' });
    expect(all.map((e) => [e.question, e.answer])).toEqual(clean.map((e) => [e.question, e.answer]));
    expect(all.filter((e) => e.flawed).length).toBeGreaterThan(900);
    for (const [i, ex] of all.entries()) {
      if (!ex.flawed) {
        expect(ex.solution).toBe(clean[i].solution);
        continue;
      }
      const work = clean[i].solution.split(' #### ')[0];
      const last = /(\d+)=\d+\.$/.exec(work)![1];
      expect(ex.solution).toBe(`${work} #### ${last}`);
      expect(arith.isCorrect(ex.solution, ex)).toBe(false);
    }
    expect(() => generateArith({ count: 1, flawedRate: 0.5, flawedKind: 'x' as never })).toThrow(RangeError);
  });

  it('train and test splits never share a question', () => {
    const train = arith.examples('train', { limit: 3000, difficulty: 1 });
    const test = arith.examples('test', { limit: 300, difficulty: 1 });
    expect(train).toHaveLength(3000);
    expect(test).toHaveLength(300);
    const seen = new Set(train.map((e) => e.question));
    expect(test.filter((e) => seen.has(e.question))).toEqual([]);
  });

  it('task interface: prompt, reference, answer, extract, isCorrect', () => {
    const [ex] = arith.examples('test', { limit: 1 });
    expect(arith.prompt(ex)).toBe(`Q: ${ex.question}\nA: `);
    expect(arith.answer(ex)).toBe(ex.answer);
    expect(arith.extract(`blah #### ${ex.answer}`)).toBe(ex.answer);
    expect(arith.isCorrect('', ex)).toBe(false);
    expect(arith.isCorrect('#### banana', ex)).toBe(false);
    expect(getTask('arith')).toBe(arith);
    expect(() => getTask('nope')).toThrow(/unknown task/);
  });

  it('rejects bad options', () => {
    expect(() => generateArith({ difficulty: 0 })).toThrow(RangeError);
    expect(() => generateArith({ difficulty: 2.5 })).toThrow(RangeError);
    expect(() => generateArith({ count: -1 })).toThrow(RangeError);
    expect(() => arith.examples('dev' as 'train')).toThrow(RangeError);
  });

  it('the example in the docs has the documented shape', () => {
    const ex = generateArith({ seed: 0, count: 1, difficulty: 3 })[0];
    expect(ex.question).toMatch(/^(Tom|Sam|Ben|Ann|Mia|Eva) has \d+ \w+\. .* How many \w+ does (he|she) have\?$/);
  });
});

describe('loaders validate lines', () => {
  it('gsm8k: good file loads; blank lines and CRLF are fine', () => {
    const f = tmpFile('g.jsonl', '{"question":"Q1?","answer":"1+1=<<1+1=2>>2\\n#### 2"}\r\n\r\n{"question":"Q2?","answer":"#### 1,000"}\n');
    const rows = loadGsm8k(f);
    expect(rows.map((r) => r.answer)).toEqual(['2', '1000']);
    expect(rows[1].line).toBe(3);
    expect(stripCalculatorAnnotations(rows[0].solution)).toBe('1+1=2\n#### 2');
    const task = createGsm8kTask();
    expect(task.examples('test', { file: f })).toHaveLength(2);
    expect(task.reference(rows[0])).toBe('1+1=2\n#### 2');
    expect(task.isCorrect('so #### 2', rows[0])).toBe(true);
    expect(task.isCorrect('The answer is 1,000.', rows[1])).toBe(true);
    expect(task.isCorrect('The answer is 100.', rows[1])).toBe(false);
  });

  const badGsm: [string, RegExp][] = [
    ['{"question":"Q","answer":"#### 2"}\n{not json}\n', /g\.jsonl:2: invalid JSON/],
    ['{"question":"Q","answer":"no marker"}\n', /g\.jsonl:1: "answer" must end with "#### <number>"/],
    ['{"question":"Q"}\n', /g\.jsonl:1: missing field "answer"/],
    ['\n\n{"question":5,"answer":"#### 1"}\n', /g\.jsonl:3: field "question" must be a string/],
    ['[1,2]\n', /g\.jsonl:1: expected a JSON object/],
    ['{"question":"Q","answer":"#### abc"}\n', /g\.jsonl:1: "answer" must end/],
  ];
  for (const [text, re] of badGsm)
    it(`gsm8k: bad line → ${re}`, () => expect(() => loadGsm8k(tmpFile('g.jsonl', text))).toThrow(re));

  it('math500: good and bad lines', () => {
    const good = { problem: 'P', solution: 'so $\\boxed{\\frac12}$', answer: '\\frac{1}{2}', subject: 'Algebra', level: 3, unique_id: 'test/a/1.json' };
    const f = tmpFile('m.jsonl', JSON.stringify(good) + '\n');
    const [row] = loadMath500(f);
    expect(row).toMatchObject({ id: 'test/a/1.json', question: 'P', answer: '\\frac{1}{2}', level: 3, subject: 'Algebra' });
    expect(math500.isCorrect(row.solution, row)).toBe(true);
    expect(math500.isCorrect('\\boxed{0.5}', row)).toBe(true);
    expect(math500.isCorrect('\\boxed{0.6}', row)).toBe(false);
    // Free-form answers count (answers.extractMath): a bare answer, "the answer is", the last math.
    expect(math500.isCorrect('0.5', row)).toBe(true);
    expect(math500.isCorrect('So the answer is $\\frac{1}{2}$.', row)).toBe(true);
    expect(math500.isCorrect('I do not know.', row)).toBe(false);
    expect(createMath500Task().examples('train', { file: f })).toHaveLength(1);
    expect(() => math500.examples('train')).toThrow(/only a 'test' split/);
    const bad: [object, RegExp][] = [
      [{ ...good, level: 9 }, /m\.jsonl:2: field "level" must be an integer 1\.\.5/],
      [{ ...good, answer: undefined }, /m\.jsonl:2: missing field "answer"/],
      [{ ...good, unique_id: 3 }, /m\.jsonl:2: field "unique_id" must be a string/],
      [{ ...good, answer: '  ' }, /m\.jsonl:2: empty "answer"/],
    ];
    for (const [rec, re] of bad) expect(() => loadMath500(tmpFile('m.jsonl', JSON.stringify(good) + '\n' + JSON.stringify(rec) + '\n'))).toThrow(re);
  });

  it('missing file names the file', () => {
    expect(() => loadGsm8k('/nonexistent/x.jsonl')).toThrow(/\/nonexistent\/x\.jsonl: cannot read/);
    expect(() => createGsm8kTask({ dataDir: '/nonexistent' }).examples('test')).toThrow(/\/nonexistent\/gsm8k\.test\.jsonl not found/);
  });
});

describe.skipIf(!HAVE_DATA)(`real data tasks (${DATA}; skipped when absent)`, () => {
  const g = createGsm8kTask({ dataDir: DATA });
  const m = createMath500Task({ dataDir: DATA });
  it('gsm8k splits load with the documented sizes; every reference solution is judged correct', () => {
    const test = g.examples('test');
    expect(test).toHaveLength(1319);
    expect(g.examples('train')).toHaveLength(7473);
    for (const ex of test) {
      expect(g.isCorrect(g.reference(ex), ex), ex.id).toBe(true);
      expect(g.prompt(ex)).toContain(ex.question);
    }
    const wrong = test.filter((ex) => g.isCorrect(`#### ${Number(ex.answer) + 1}`, ex));
    expect(wrong).toEqual([]);
  });
  it('gsm8k shuffle and limit are seeded', () => {
    const a = g.examples('train', { shuffle: true, seed: 5, limit: 10 });
    expect(g.examples('train', { shuffle: true, seed: 5, limit: 10 })).toEqual(a);
    expect(g.examples('train', { shuffle: true, seed: 6, limit: 10 })).not.toEqual(a);
    expect(gsm8k.name).toBe('gsm8k');
  });
  it('math500 loads 500 problems; reference solutions are judged correct for >= 495', () => {
    const rows = m.examples('test');
    expect(rows).toHaveLength(500);
    expect(new Set(rows.map((r) => r.subject)).size).toBe(7);
    const ok = rows.filter((ex) => m.isCorrect(m.reference(ex), ex)).length;
    expect(ok).toBeGreaterThanOrEqual(495);
    // a boxed answer from another problem is (almost always) wrong
    const crossed = rows.filter((ex, i) => m.isCorrect(`\\boxed{${rows[(i + 1) % rows.length].answer}}`, ex)).length;
    expect(crossed).toBeLessThan(15);
  });
});
