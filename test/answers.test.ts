import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { answers, extractBoxed, extractGsm8k, mathEqual, normalizeMath, numberEqual } from '../src/rl/answers.js';
import { runCheckAnswers } from '../src/rl/check-answers.js';
import { rng } from './helpers.js';

const DATA = process.env.WST_DASH_DATA ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared/data');
const HAVE_DATA = existsSync(DATA);
if (!HAVE_DATA) console.warn(`answers.test: real-data checks skipped, ${DATA} not found (set WST_DASH_DATA)`);

// [a, b, rule exercised]
const EQUIVALENT: [string, string, string][] = [
  ['\\dfrac{1}{2}', '\\frac{1}{2}', 'dfrac'],
  ['\\tfrac{3}{4}', '\\frac34', 'tfrac + unbraced frac'],
  ['\\frac12', '\\frac{1}{2}', 'unbraced frac'],
  ['\\frac 59', '\\frac{5}{9}', 'frac with a space'],
  ['\\frac{270}7', '\\frac{270}{7}', 'half-braced frac'],
  ['\\frac{1}{2}', '0.5', 'fraction vs decimal'],
  ['0.5', '.5', 'leading dot'],
  ['-.25', '-\\frac{1}{4}', 'negative leading dot'],
  ['1/2', '\\frac{1}{2}', 'a/b'],
  ['3/4', '0.75', 'a/b vs decimal'],
  ['\\left( 3, \\frac{\\pi}{2} \\right)', '(3,\\frac{\\pi}{2})', '\\left \\right'],
  ['10\\text{ cm}', '10', 'text unit'],
  ['15\\mbox{ cm}^2', '15', 'mbox unit with power'],
  ['864 \\mbox{ inches}^2', '864', 'mbox unit'],
  ['5.4 \\text{ cents}', '5.4', 'text unit after decimal'],
  ['10 cm', '10', 'bare unit'],
  ['\\text{Evelyn}', 'Evelyn', 'text wrapper'],
  ['\\text{(C)}', 'C', 'multiple choice'],
  ['(B)', 'B', 'multiple choice parens'],
  ['30^\\circ', '30', 'degrees ^\\circ'],
  ['30^{\\circ}', '30', 'degrees ^{\\circ}'],
  ['\\frac{270}7\\text{ degrees}', '\\frac{270}{7}', 'text degrees unit'],
  ['25\\%', '25', 'percent \\%'],
  ['25%', '25', 'percent %'],
  ['\\$18.90', '18.9', 'dollar and trailing zero'],
  ['\\$32,\\!348', '32348', 'dollar, \\! and comma groups'],
  ['11,\\! 111,\\! 111,\\! 100', '11111111100', 'comma groups with spaces'],
  ['10{,}080', '10080', '{,} grouping'],
  ['x = 5', '5', 'variable prefix'],
  ['y=2x+3', '2x + 3', 'variable prefix, spaces'],
  ['\\theta = \\frac{\\pi}{6}', '\\frac{\\pi}{6}', 'greek variable prefix'],
  ['x \\in [-2,7]', '[-2, 7]', '\\in prefix and interval'],
  ['(1,2)', '(1, 2)', 'tuple spaces'],
  ['(0.5, -3)', '(\\frac{1}{2}, -3)', 'tuple numeric elements'],
  ['[0,\\infty)', '[0, \\infty)', 'half-open interval'],
  ['(-\\infty, 2) \\cup (3, \\infty)', '(3,\\infty)\\cup(-\\infty,2)', 'union order'],
  ['\\sqrt3', '\\sqrt{3}', 'unbraced sqrt'],
  ['11\\sqrt2', '11\\sqrt{2}', 'coefficient and unbraced sqrt'],
  ['\\frac{\\sqrt{3}}{3}', '\\frac{1}{\\sqrt{3}}', 'closed form numeric'],
  ['2\\sqrt{5}', '\\sqrt{20}', 'closed form numeric 2'],
  ['3\\!000', '3000', '\\! removed'],
  ['1\\,000', '1000', '\\, removed'],
  ['2\\;\\pi', '2\\pi', '\\; removed'],
  ['5.', '5', 'trailing dot'],
  ['5.4 \\text{ cents}.', '5.4', 'unit then trailing dot'],
  ['\\$36', '36', '\\$'],
  ['$\\frac{14}{3}$', '\\frac{14}{3}', 'math delimiters'],
  ['\\boxed{12}', '12', 'boxed wrapper'],
  ['137 \\frac{1}{2}', '137.5', 'mixed number'],
  ['1\\frac{4}{5}', '\\frac{9}{5}', 'mixed number vs improper'],
  ['1,-2', '-2, 1', 'solution list order'],
  ['3, 5, 7', '7,5,3', 'solution list'],
  ['\\{1\\pm\\sqrt{5},-2\\}', '\\{-2, 1\\pm\\sqrt{5}\\}', 'set order'],
  ['\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}', '\\begin{pmatrix}\\frac{1}{5}\\\\-\\frac{18}{5}\\end{pmatrix}', 'matrix cells'],
  ['\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}', '\\begin{pmatrix}-1&0\\\\0&-1\\end{pmatrix}', 'matrix spaces'],
  ['x^{2}+1', 'x^2+1', 'single-char superscript braces'],
  ['52_{8}', '52_8', 'base subscript'],
  ['\\displaystyle\\frac{1}{2}', '\\frac12', 'displaystyle'],
  ['{5}', '5', 'outer braces'],
  ['\\pi', '\\pi', 'identical'],
  ['6+9i', '6 + 9i', 'complex spaces'],
  ['0.35625', '.35625', 'decimal forms'],
  ['2^{10}', '1024', 'power evaluation'],
  ['-\\frac{35}{9}', '\\frac{-35}{9}', 'sign placement'],
  ['\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]', '[\\frac{\\pi^2}{8},\\frac{5\\pi^2}{4}]', 'interval with \\left['],
];

const NOT_EQUIVALENT: [string, string, string][] = [
  ['\\frac{1}{2}', '\\frac{1}{3}', 'different fractions'],
  ['(1,2)', '(2,1)', 'tuple order'],
  ['[0,1)', '(0,1)', 'interval brackets'],
  ['(0,1]', '(0,1)', 'interval brackets 2'],
  ['10', '100', 'different integers'],
  ['x=2', '2.1', 'prefix but different value'],
  ['0.5', '0.55', 'close decimals'],
  ['\\frac{1}{3}', '0.333', 'rounded decimal'],
  ['\\pi', '3.14159', 'rounded pi'],
  ['\\sqrt{3}', '3', 'sqrt dropped'],
  ['\\sqrt{2}', '\\sqrt{3}', 'different sqrt'],
  ['2\\sqrt{5}', '5\\sqrt{2}', 'swapped radical'],
  ['-1', '1', 'sign'],
  ['-\\frac{3}{8}', '\\frac{3}{8}', 'sign of fraction'],
  ['(1,2,3)', '(1,2)', 'tuple length'],
  ['(1,2)', '1', 'tuple vs number'],
  ['(1,2)', '[1,2]', 'tuple vs closed interval'],
  ['1,2', '1,2,3', 'list length'],
  ['\\{1,2\\}', '\\{1,3\\}', 'different sets'],
  ['(-\\infty, 2) \\cup (3, \\infty)', '(-\\infty, 2) \\cup [3, \\infty)', 'union piece bracket'],
  ['\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}', '\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}', 'matrix order'],
  ['\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}', '\\begin{pmatrix} 1 & 2 \\end{pmatrix}', 'matrix shape'],
  ['\\text{Evelyn}', '\\text{Navin}', 'different names'],
  ['A', 'B', 'different choices'],
  ['\\text{(C)}', '\\text{(E)}', 'different choices text'],
  ['30^\\circ', '60^\\circ', 'different degrees'],
  ['25\\%', '0.26', 'percent vs other'],
  ['52_8', '52', 'base dropped'],
  ['52_8', '52_9', 'different base'],
  ['x^2+1', 'x^2-1', 'polynomial sign'],
  ['2x+3', '3x+2', 'polynomial coefficients'],
  ['y=2x+3', 'y=2x-3', 'equation'],
  ['6+9i', '6-9i', 'complex conjugate'],
  ['1000', '100', 'magnitude'],
  ['10,080', '1,080', 'comma groups differ'],
  ['\\frac{14}{3}', '\\frac{3}{14}', 'inverted fraction'],
  ['137 \\frac{1}{2}', '137', 'mixed number part'],
  ['2^{10}', '2^{11}', 'powers'],
  ['\\infty', '-\\infty', 'infinity sign'],
  ['', '0', 'empty string'],
  ['0', '', 'empty string 2'],
  ['\\boxed{}', '0', 'empty box'],
  ['5', '5x', 'number vs term'],
  ['\\frac{1}{2}', '\\frac{1}{2}x', 'extra variable'],
  ['0', '0.0001', 'near zero'],
  ['\\sqrt[3]{8}', '3', 'cube root'],
  ['1+2\\sqrt{3}', '1+3\\sqrt{2}', 'radical sum'],
  ['even', 'odd', 'words'],
];

describe('mathEqual', () => {
  it('has at least 40 hand-written pairs each way', () => {
    expect(EQUIVALENT.length).toBeGreaterThanOrEqual(40);
    expect(NOT_EQUIVALENT.length).toBeGreaterThanOrEqual(40);
  });

  for (const [a, b, rule] of EQUIVALENT) {
    it(`equal (${rule}): ${a}  ≡  ${b}`, () => {
      expect(mathEqual(a, b), `normalised: ${normalizeMath(a)} | ${normalizeMath(b)}`).toBe(true);
      expect(mathEqual(b, a), 'symmetric').toBe(true);
    });
  }
  for (const [a, b, rule] of NOT_EQUIVALENT) {
    it(`not equal (${rule}): ${a}  ≢  ${b}`, () => {
      expect(mathEqual(a, b), `normalised: ${normalizeMath(a)} | ${normalizeMath(b)}`).toBe(false);
      expect(mathEqual(b, a), 'symmetric').toBe(false);
    });
  }

  it('is false for null/undefined/non-string junk and does not throw', () => {
    expect(mathEqual(null, '1')).toBe(false);
    expect(mathEqual(undefined, undefined)).toBe(false);
    expect(mathEqual('1', 1)).toBe(true);
    expect(mathEqual({}, '1')).toBe(false);
  });
});

describe('numberEqual', () => {
  const yes: [string, string][] = [
    ['1,000', '1000'], ['$5', '5'], ['5.00', '5'], ['5.0', '5'], [' 42 ', '42'], ['50%', '50'],
    ['-3', '-3.0'], ['0.1', '.1'], ['3.', '3'], ['1234567890123456789', '1,234,567,890,123,456,789'], ['2.5', '2.5000001'],
  ];
  const no: [string, string][] = [
    ['10', '100'], ['5', '-5'], ['2.5', '2.51'], ['abc', 'abc'], ['', ''], ['5', 'five'], ['1234567890123456789', '1234567890123456788'],
    ['1/2', '0.5'], ['NaN', 'NaN'], ['Infinity', 'Infinity'],
  ];
  for (const [a, b] of yes) it(`${a} == ${b}`, () => expect(numberEqual(a, b)).toBe(true));
  for (const [a, b] of no) it(`${a} != ${b}`, () => expect(numberEqual(a, b)).toBe(false));
});

describe('extractBoxed', () => {
  const cases: [string, string | null][] = [
    ['so the answer is $\\boxed{5}$.', '5'],
    ['\\boxed{\\frac{1}{2}}', '\\frac{1}{2}'],
    ['nested \\boxed{\\left\\{ x : x^{2} \\right\\}} end', '\\left\\{ x : x^{2} \\right\\}'],
    ['first \\boxed{1} then \\boxed{2}', '2'],
    ['no box here, 42', null],
    ['', null],
    ['\\fbox{7}', '7'],
    ['\\boxed{3} and \\fbox{4}', '4'],
    ['the answer is $\\boxed 5$.', '5'],
    ['\\boxed{1} then a truncated \\boxed{2', '1'],
    ['\\boxed{}', ''],
    ['\\boxedfoo{3}', null],
    ['\\boxed{a{b}c} \\boxed{d}', 'd'],
    ['\\boxed{\\boxed{9}}', '\\boxed{9}'],
  ];
  for (const [text, want] of cases) it(JSON.stringify(text), () => expect(extractBoxed(text)).toBe(want));
});

describe('extractGsm8k', () => {
  const cases: [string, string | null][] = [
    ['3+5=8. 8-2=6. #### 6', '6'],
    ['blah\n#### 1,000', '1000'],
    ['#### -10', '-10'],
    ['#### $18.50.', '18.50'],
    ['#### 3 and later #### 4', '4'],
    ['The total is 12 apples, then 15.', '15'],
    ['no numbers', null],
    ['costs $1,234.5 in total.', '1234.5'],
    ['answer: -$5', '-5'],
    ['it went from 7-3 to 4', '4'],
    ['#### \n the answer is 9', '9'],
    ['#### .5', '0.5'],
    ['x is 10-3', '3'],
  ];
  for (const [text, want] of cases) it(JSON.stringify(text), () => expect(extractGsm8k(text)).toBe(want));
});

describe('odd input never throws', () => {
  it('fuzz: thousands of random strings of braces, backslashes and LaTeX fragments', () => {
    const r = rng(12345);
    const atoms = ['{', '}', '\\', '\\boxed', '\\fbox', '\\frac', '\\sqrt', '\\left', '\\right', '(', ')', '[', ']', ',', '=', '$', '\\$',
      '^', '_', '.', '-', '1', '2', '0', 'x', ' ', '\\text{', '\\cup', '\\{', '\\}', '#', '####', '%', '\\%', '\\\\', '&',
      '\\begin{pmatrix}', '\\end{pmatrix}', '\\pi', '\\infty', '\\circ', '/', '\n', 'cm'];
    for (let t = 0; t < 4000; t++) {
      const n = 1 + Math.floor(r() * 40);
      let a = '', b = '';
      for (let i = 0; i < n; i++) a += atoms[Math.floor(r() * atoms.length)];
      for (let i = 0; i < n; i++) b += atoms[Math.floor(r() * atoms.length)];
      expect(() => {
        answers.extractBoxed(a);
        answers.extractGsm8k(a);
        answers.numberEqual(a, b);
        answers.mathEqual(a, b);
        answers.mathEqual(a, a);
        answers.normalizeMath(a);
      }, JSON.stringify([a, b])).not.toThrow();
    }
  });

  it('deep nesting and long input stay fast and do not throw', () => {
    const deep = '('.repeat(5000) + '1' + ')'.repeat(5000);
    const braces = '{'.repeat(5000) + '\\boxed{' + '}'.repeat(3);
    const long = '1+'.repeat(20000) + '1';
    const t0 = Date.now();
    expect(() => [mathEqual(deep, '1'), mathEqual(braces, braces + 'x'), mathEqual(long, '20001'), extractBoxed(braces), extractGsm8k(long)]).not.toThrow();
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('a mathEqual string is equal to itself when non-empty after normalisation', () => {
    for (const [a] of EQUIVALENT) expect(mathEqual(a, a)).toBe(true);
  });
});

describe.skipIf(!HAVE_DATA)(`real data (${DATA}; skipped when absent)`, () => {
  const quiet = { out: () => {}, err: () => {} };
  it('GSM8K test: every reference answer agrees with its #### number (1319/1319)', () => {
    const r = runCheckAnswers({ task: 'gsm8k', file: path.join(DATA, 'gsm8k.test.jsonl'), json: true, ...quiet });
    expect(r).toEqual({ n: 1319, agree: 1319 });
  });
  it('GSM8K train: all 7473 agree', () => {
    const r = runCheckAnswers({ task: 'gsm8k', file: path.join(DATA, 'gsm8k.train.jsonl'), json: true, ...quiet });
    expect(r).toEqual({ n: 7473, agree: 7473 });
  });
  it('MATH-500: boxed answer of the reference solution agrees with the answer field for >= 495 of 500', () => {
    const bad: string[] = [];
    const r = runCheckAnswers({ task: 'math500', file: path.join(DATA, 'math500.test.jsonl'), json: true, out: () => {}, err: (l) => bad.push(l) });
    expect(r.n).toBe(500);
    expect(r.agree, bad.join('\n')).toBeGreaterThanOrEqual(495);
  });
  it('MATH-500 answers stay equal to themselves under LaTeX rewrites ($..$, \\dfrac, spaces, \\boxed{}., trailing .)', () => {
    const rows = readFileSync(path.join(DATA, 'math500.test.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { answer: string });
    const variants = [(a: string) => `$${a}$`, (a: string) => a.replace(/\\frac/g, '\\dfrac'), (a: string) => a.replace(/,/g, ', '),
      (a: string) => a.replace(/ /g, ''), (a: string) => `\\boxed{${a}}.`, (a: string) => a + '.'];
    const bad = rows.flatMap((r) => variants.map((v) => [r.answer, v(r.answer)]).filter(([a, b]) => !mathEqual(a, b)));
    expect(bad).toEqual([]);
  });
  it('check-answers prints {"n","agree"} as JSON', () => {
    const lines: string[] = [];
    runCheckAnswers({ task: 'math500', file: path.join(DATA, 'math500.test.jsonl'), json: true, out: (l) => lines.push(l), err: () => {} });
    expect(lines).toHaveLength(1);
    const o = JSON.parse(lines[0]);
    expect(Object.keys(o).sort()).toEqual(['agree', 'n']);
  });
});
