// Answer extraction from free-form text and symbolic equivalence (src/rl/math-verify.ts, used by
// answers.mathEqual after the string normaliser). Our own cases, one per convention; none says
// "yes" where the answers differ; pathological inputs come back within their budget.
import { describe, expect, it } from 'vitest';
import { answers } from '../src/rl/answers.js';
import { extractMath, verifyMath } from '../src/rl/math-verify.js';

const eq = (a: string, b: string, o = {}) => answers.mathEqual(extractMath(a, o), extractMath(b, o), o);

describe('extractMath', () => {
  it.each([
    ['the last box', 'First \\boxed{3}, then finally \\boxed{7}.', '3, 7'],
    ['boxes close together are one list', '\\boxed{1} and \\boxed{2}', '1, 2'],
    ['boxes apart: the last', '\\boxed{1} is wrong because of many things here \\boxed{2}', '2'],
    ['a repeated box counts once', '\\boxed{4} so \\boxed{4}', '4'],
    ['"the answer is" with math', 'We compute things. The answer is $\\frac{3}{4}$.', '\\frac{3}{4}'],
    ['"Final Answer:" with prose after the math', 'Final Answer: The largest $n$ is 34.', '34'],
    ['"the answer is" in prose', 'Final answer: he waited 3 hours. I hope it is correct.', '3'],
    ['the last display math', 'So \\[ x = 5 \\] and then \\[ y = 7 \\]', 'y = 7'],
    ['inline math stops at a line end', 'Answer $ \n 9 \n $', '9'],
    ['blocks joined by "or" are one answer', '$21,16$ or $11$', '21,16, 11'],
    ['the last number of prose', 'so she pays 1,250.50 dollars in all', '1,250.50'],
    ['a number inside a word is no number', 'AZYUK2A', null],
    ['a fraction in prose', 'the probability is 2/3 overall', '2/3'],
    ['a bare answer is itself', '\\frac{1}{2}', '\\frac{1}{2}'],
  ])('%s', (_, text, want) => {
    expect(extractMath(text)).toBe(want);
  });

  it('latex-only extraction takes no bare numbers; expr-only reads numbers with decimal commas', () => {
    expect(extractMath('Answer $ \n 9 \n $', { expr: false })).toBeNull();
    expect(extractMath('1000,99', { latex: false })).toBe('1000,99');
    expect(extractMath('it costs 2,74 $ today', { latex: false })).toBe('2,74');
  });
});

describe('mathEqual: equal', () => {
  it.each([
    ['a sum of fractions and one fraction', '\\frac{y}{5}+\\frac{3}{5}', '\\frac{y+3}{5}'],
    ['a trigonometric identity', '\\cos^2(t)+\\sin^2(t)', '1'],
    ['sec and tan', '1+\\tan^2 u', '\\sec^2 u'],
    ['a relation and its flip', 'x \\geq 3', '3 \\leq x'],
    ['a relation times -1', 't < 2', '-t > -2'],
    ['equations up to a factor', '3x-6y+9=0', '-x+2y-3=0'],
    ['a line in two forms', 'x-2y+4=0', 'y=\\frac{1}{2}x+2'],
    ['an assignment and its value', 'k = 12', '12'],
    ['a chain: the last value', 'm = 2+3 = 5', '5'],
    ['approximately: the exact value', 'x = 2/7 \\approx 0.29', '\\frac{2}{7}'],
    ['thousands separators', '1,234,567', '1234567'],
    ['thin-space thousands', '12{,}345', '12345'],
    ['a decimal comma', '3,75', '3.75'],
    ['percent forms', '45\\%', '45 percent'],
    ['units after the number', '12 \\text{ cm}', '12'],
    ['sets in any order', '\\{4,-1,2\\}', '\\{2,4,-1\\}'],
    ['answers listed in any order', '(1,2), (3,4)', '(3,4), (1,2)'],
    ['named tuples', '(a,b)=(5,-1)', '(5,-1)'],
    ['groups of assignments', 'u=1,v=2; u=3,v=4', '(3,4), (1,2)'],
    ['a closed interval, ends computed', '[\\frac{1}{4}, \\sqrt{2}]', '[0.25, \\sqrt{2}]'],
    ['a chained inequality and its interval', '-3 < t < 5', '(-3, 5)'],
    ['matrices with bracket styles', '\\begin{bmatrix}1 & 2\\\\ 3 & 4\\end{bmatrix}', '\\begin{pmatrix}1 & 2\\\\ 3 & 4\\end{pmatrix}'],
    ['a mixed number', '2\\frac{1}{4}', '\\frac{9}{4}'],
    ['a radical simplified', '\\sqrt{50}', '5\\sqrt{2}'],
  ])('%s: %s ≡ %s', (_, a, b) => {
    expect(eq(a, b)).toBe(true);
    expect(eq(b, a)).toBe(true);
  });

  it('precision: rounded decimals meet exact values at the asked precision only', () => {
    expect(eq('(\\frac{1}{3}, \\frac{5}{3}]', '(0.33, 1.67]', { precision: 2 })).toBe(true);
    expect(eq('(\\frac{1}{3}, \\frac{5}{3}]', '(0.33, 1.67]')).toBe(false);
  });

  it('a set gold is met by a relation only when allowed', () => {
    expect(eq('x \\in [0, 4]', '0 \\leq x \\leq 4')).toBe(false);
    expect(eq('x \\in [0, 4]', '0 \\leq x \\leq 4', { allowSetRelation: true })).toBe(true);
    expect(eq('0 \\leq x \\leq 4', 'x \\in [0, 4]')).toBe(true);
  });
});

describe('mathEqual: never a false yes', () => {
  it.each([
    ['two numbers, not a thousands group', '45678', '45, 678'],
    ['a tuple and a closed interval', '(1,2)', '[1,2]'],
    ['a number and a term', '5', '5y'],
    ['different identities', '\\sin^2(t)', '\\cos^2(t)'],
    ['a relation and the wrong flip', 'x \\geq 3', 'x \\leq 3'],
    ['a strict and a loose relation', 'x < 3', 'x \\leq 3'],
    ['equations not proportional', 'x+y=1', 'x-y=1'],
    ['an open and a closed end', '(0, 1]', '[0, 1]'],
    ['sets of different sizes', '\\{1,2\\}', '\\{1,2,3\\}'],
    ['tuples in another order', '(1,2)', '(2,1)'],
    ['close but not at precision 6', '3.14159', '\\pi'],
    ['a percentage and its fraction are not the same answer', '50\\%', '0.6'],
    ['matrices differing in one entry', '\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}', '\\begin{pmatrix}1&0\\\\0&2\\end{pmatrix}'],
  ])('%s: %s ≢ %s', (_, a, b) => {
    expect(eq(a, b)).toBe(false);
    expect(eq(b, a)).toBe(false);
  });
});

describe('bounded cost', () => {
  it.each([
    ['a huge power', '2^{1000000}', '3'],
    ['a deep nesting', '('.repeat(5000) + '1' + ')'.repeat(5000), '1'],
    ['a 100 kB answer', 'y+'.repeat(50_000) + '1', '1'],
    ['a long symbolic sum', Array.from({ length: 100 }, (_, i) => `\\frac{x^{${i}}}{${i + 1}}`).join('+'), 'x'],
    ['a tower of powers', '2^{2^{2^{2^{2^{2}}}}}', '5'],
  ])('%s: "no" within the budget, with a reason', (_, a, b) => {
    const t0 = performance.now();
    const v = verifyMath(a, b, { timeMs: 200 });
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(v.equal).toBe(false);
    expect(v.reason.length).toBeGreaterThan(0);
    expect(answers.mathEqual(a, b)).toBe(false);
  });

  it('free text of any size is extracted quickly', () => {
    const text = 'blah '.repeat(40_000) + 'The answer is $42$.';
    const t0 = performance.now();
    expect(extractMath(text)).toBe('42');
    expect(performance.now() - t0).toBeLessThan(1000);
  });
});

describe('bench answers', () => {
  it('counts agreement, false yes and false no on a cases file as scripts/math-verify-cases.py writes it', async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const path = (await import('node:path')).default;
    const { mathVerifyAgreement } = await import('../src/bench/answers.js');
    const dir = mkdtempSync(path.join(tmpdir(), 'wst-mv-'));
    try {
      const file = path.join(dir, 'cases.json');
      const options = { latex: true, expr: true, precision: 6, allowSetRelation: false };
      writeFileSync(file, JSON.stringify([
        { test: 't', line: 1, gold: '$\\frac{1}{2}$', pred: 'so it is $0.5$', expected: true, options },
        { test: 't', line: 2, gold: '$3$', pred: '$4$', expected: false, options },
        { test: 't', line: 3, gold: '$3$', pred: '$3$', expected: false, options }, // we say yes: a false yes
        { test: 't', line: 4, gold: '$x$', pred: 'no idea', expected: true, options }, // we say no: a false no
      ]));
      const r = mathVerifyAgreement(file);
      expect(r).toMatchObject({ cases: 4, agree: 2, false_yes: 1, false_no: 1 });
      expect(r.misses.map((m) => m.line)).toEqual([3, 4]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
