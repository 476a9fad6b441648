// Answer extraction from free-form text and equivalence of math answers, in the manner of Hugging
// Face's Math-Verify (what TRL and open-r1 reward with): extract → parse → compare structurally,
// numerically and symbolically. The LaTeX parser and the symbolic engine are @cortex-js/compute-
// engine's (LaTeX → MathJSON, canonical forms, numeric evaluation); ours are the extraction rules,
// the answer conventions (assignments "x = 5", chains "= 7 = 11", "\approx", lists of answers,
// decimal commas, percentages, units), the structural comparison (sets unordered, tuples and
// matrices elementwise, intervals with their ends, relations up to a flip or a positive factor,
// equations up to a factor) and the budget: size limits and a deadline, a "no" with a reason
// instead of a hang.
import { createRequire } from 'node:module';

type Json = number | string | Json[] | { [k: string]: Json };
type Engine = { parse(latex: string): { json: Json }; number(x: number): unknown };

let engine: Engine | null = null;
/** The compute engine, loaded on first use (~0.4 s; answer checks that need no parsing never load it). */
function ce(): Engine {
  if (!engine) {
    const { ComputeEngine } = createRequire(import.meta.url)('@cortex-js/compute-engine') as { ComputeEngine: new () => Engine };
    engine = new ComputeEngine();
  }
  return engine;
}

// ---------------------------------------------------------------------------------------------------
// Extraction

/** Index just past the group that opens at `open` (text[open] === '{'), or -1 when the braces never balance. */
export function matchBrace(text: string, open: number): number {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (c === '\\') { i++; continue; } // \{ and \} are literal braces, not grouping
    if (c === '{') depth++;
    else if (c === '}' && --depth === 0) return i + 1;
  }
  return -1;
}

/** Math blocks ($$…$$, \[…\], \(…\), $…$; an escaped \$ is a currency sign), in order. */
export function mathBlocks(text: string): string[] {
  const out: { at: number; body: string }[] = [];
  const patterns = [/\$\$([\s\S]+?)\$\$/g, /\\\[([\s\S]+?)\\\]/g, /\\\(([^\n]+?)\\\)/g, /(?<![\\$])\$((?:\\\$|[^$\n])+?)\$(?!\$)/g];
  const taken: [number, number][] = [];
  for (const re of patterns)
    for (let m = re.exec(text); m; m = re.exec(text)) {
      if (taken.some(([a, b]) => m!.index < b && m!.index + m![0].length > a)) continue;
      taken.push([m.index, m.index + m[0].length]);
      if (m[1].trim()) out.push({ at: m.index, body: m[1].trim() });
    }
  return out.sort((a, b) => a.at - b.at).map((x) => x.body);
}

const NUMBER_IN_TEXT = /(?<![A-Za-z\d])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:[.,]\d+)?(?:\s*\/\s*\d+(?:\.\d+)?)?(?!\d)/g;

/** The last number (or a/b) of a text, or null. */
function lastNumber(text: string): string | null {
  const numbers = text.match(NUMBER_IN_TEXT);
  return numbers ? numbers[numbers.length - 1].replace(/\s+/g, '') : null;
}

/**
 * Boxed answers: several boxes close together ("\boxed{1} and \boxed{2}", "\boxed{2}, \boxed{3}")
 * are one answer, a list; boxes apart (prose between) leave the last one. Repeated boxes count once.
 */
function boxedAnswer(text: string): string | null {
  const found: { body: string; start: number; end: number }[] = [];
  const re = /\\(?:boxed|fbox)\s*\{/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const open = m.index + m[0].length - 1, end = matchBrace(text, open);
    if (end < 0) continue;
    found.push({ body: text.slice(open + 1, end - 1).trim(), start: m.index, end });
    re.lastIndex = end;
  }
  if (!found.length) return null;
  let first = found.length - 1;
  while (first > 0) {
    const between = text.slice(found[first - 1].end, found[first].start).replace(/\\[()[\]]|\$|\\quad|\\text\{[^}]*\}/g, ' ');
    if ((between.match(/[A-Za-z]+/g) ?? []).length > 3) break;
    first--;
  }
  return [...new Set(found.slice(first).map((b) => b.body))].join(', ');
}

/**
 * The answer a free-form text gives, or null: the last \boxed{} (several boxes: all of them, as a
 * list), else what follows the last "answer is" / "Final Answer:", else the last display or inline
 * math, else the last number. A text that is already a bare answer (short, no prose) is itself.
 */
export interface ExtractOptions {
  /** LaTeX answers: boxes, math blocks (default true). */
  latex?: boolean;
  /** Plain expressions: the last number of a text (default true). */
  expr?: boolean;
}

export function extractMath(text: string, options: ExtractOptions = {}): string | null {
  if (typeof text !== 'string') return null;
  const latex = options.latex ?? true, expr = options.expr ?? true;
  if (!latex) {
    const bare = text.trim();
    return plainNumber(bare) !== null ? bare : lastNumber(bare);
  }
  const t = text.length > 100_000 ? text.slice(-100_000) : text;
  const boxes = boxedAnswer(t);
  if (boxes) return boxes;
  const said = /(?:final answer|the answer|answer)\s*(?:is|:)\s*([\s\S]{1,300})$/i.exec(t);
  if (said) {
    const blocks = mathBlocks(said[1]);
    const phrase = said[1].split(/\n|<\||\.\s|\.$/)[0].replace(/[.\s]+$/, '').trim();
    // The phrase's last math block, unless a plain number comes after it ("the largest $n$ is 34").
    const afterBlocks = phrase.slice(phrase.lastIndexOf('$') + 1);
    const number = expr ? lastNumber(blocks.length ? afterBlocks : phrase) : null;
    const prose = (t: string) => (t.replace(/\\[A-Za-z]+(?:\{[^{}]*\})?/g, '').match(/[A-Za-z]{3,}/g) ?? []).length > 0;
    const tail = blocks.length ? (number && !prose(afterBlocks.replace(number, '')) ? number : blocks[blocks.length - 1])
      : prose(phrase) ? number : phrase;
    if (tail) return tail;
  }
  const blocks = mathBlocks(t);
  // Blocks joined by nothing but "and" / "or" / commas are one answer: "$21,16$ or $11$".
  if (blocks.length > 1 && /^[\s,;.]*(?:(?:and|or)[\s,;.]*)*$/i.test(t.replace(/\$\$[\s\S]+?\$\$|\\\[[\s\S]+?\\\]|\\\([\s\S]+?\\\)|\$[^$]+\$/g, ' ')))
    return blocks.join(', ');
  if (blocks.length) return blocks[blocks.length - 1];
  const bare = t.trim();
  const prose = bare.replace(/\\[A-Za-z]+/g, '').match(/[A-Za-z]{3,}/g) ?? [];
  if (bare && bare.length <= 60 && prose.every((w) => /^(?:pct|percent|percentage|and|or|cm|mm|km|kg|inf|sqrt|frac|pi)$/i.test(w))) return bare;
  return expr ? lastNumber(bare) : null;
}

// ---------------------------------------------------------------------------------------------------
// Conventions before parsing

/** Answer text as LaTeX the parser takes: spacing, sizing, \text units, percent, degrees removed. */
function clean(s: string): string {
  let x = s.replace(/[\t\f\r\n]/g, ' ').trim();
  x = x.replace(/^\$+|\$+$/g, '').replace(/^\\\[|\\\]$/g, '').replace(/^\\\(|\\\)$/g, '').trim();
  x = x.replace(/\\\\(?=[A-Za-z])/g, '\\'); // doubly escaped commands: \\frac → \frac
  x = x.replace(/\{,\}/g, ',').replace(/,\\!\s*/g, ',').replace(/\\!/g, '').replace(/\\\$/g, '');
  x = x.replace(/\\begin\{array\}\{[^}]*\}/g, '\\begin{pmatrix}').replace(/\\end\{array\}/g, '\\end{pmatrix}');
  x = x.replace(/\\(begin|end)\{[bBvV]matrix\}/g, '\\$1{pmatrix}');
  x = x.replace(/\\[dt]frac/g, '\\frac').replace(/\\(?:left|right)(?![A-Za-z])\s*\.?/g, '').replace(/\\(?:displaystyle|!|,|;|:|quad|qquad)(?![A-Za-z])/g, ' ');
  x = x.replace(/^\s*[[(]\s*(\\begin\{pmatrix\}[\s\S]*\\end\{pmatrix\})\s*[\])]\s*$/, '$1');
  x = x.replace(/\\(?:text|textbf|mathrm|mbox|operatorname)\s*\{\s*([^{}]*)\}/g, ' $1 ');
  x = x.replace(/\^\s*\{?\s*\\circ\s*\}?|°/g, '');
  x = x.replace(/\\?%|\s*\b(?:pct|percent(?:age)?)\b/g, '');
  x = x.replace(/\\le(?![A-Za-z])|<=|≤/g, '\\leq ').replace(/\\ge(?![A-Za-z])|>=|≥/g, '\\geq ').replace(/!=|≠|\\ne(?![A-Za-z])/g, '\\neq ');
  x = x.replace(/\\lt(?![A-Za-z])/g, '<').replace(/\\gt(?![A-Za-z])/g, '>');
  x = x.replace(/\\\\(?![A-Za-z])/g, (m, at: number) => (/\\begin\{[pbvBV]?matrix|array/.test(x.slice(0, at)) ? m : '\\'));
  // units after a number: "35 cm", "1,000.99m²", "20 \text{ dollars}"
  // (a unit is a word of 2+ letters, a currency sign, or a letter with ² / ³: "5x" keeps its x)
  x = x.replace(/^(-?[\d.,]+)\s*(?:(?:[a-zA-Zµ]{2,}[²³]?|[a-zA-Z][²³]|[€$£])\.?\s*)+$/, '$1');
  return x.replace(/\s+/g, ' ').trim();
}

/** Decimal commas and thousands separators of a plain number ("1,22" → 1.22, "1,000.99" → 1000.99). */
function plainNumber(s: string): number | null {
  const t = s.trim().replace(/^\$|\$$/g, '');
  if (/^-?0,\d+$/.test(t) || /^-?\d+,\d{1,2}$/.test(t)) return Number(t.replace(',', '.'));
  if (/^-?\d{1,3}(,\d{3})+(\.\d+)?$/.test(t) || /^-?\d{1,3}( \d{3})+(\.\d+)?$/.test(t)) return Number(t.replace(/[, ]/g, ''));
  if (/^-?(\d+\.?\d*|\.\d+)$/.test(t)) return Number(t);
  return null;
}

const RELATION = /\\leq|\\geq|\\neq|<|>/;
const VARIABLE_SIDE = /^(?:[A-Za-z](?:_\{?[\w]+\}?)?|\\[A-Za-z]+|\([A-Za-z, ]+\)|[A-Za-z]\([A-Za-z]\)|\|[A-Za-z]+\||[A-Za-z_{}\d]+:[A-Za-z_{}\d]+|\\frac\{[A-Za-z]+\}\{[A-Za-z]+\}|[A-Z]{1,3}(?:_\{?\w+\}?)?)$/;

/**
 * The value an answer states: "x = 5" → "5"; "x = 5+5+1 = 7 = 11" → "11" (the last); "1/3 \approx
 * 0.33" → "1/3"; "x \approx 11" → "11". Equations whose left side is an expression stay whole.
 */
function statedValue(s: string): string {
  let x = s;
  const approx = x.split(/\\approx|≈/);
  if (approx.length > 1) {
    const before = approx[0].trim();
    x = VARIABLE_SIDE.test(before) ? approx[approx.length - 1] : before;
  }
  if (RELATION.test(x)) return x.trim();
  const parts = x.split('=');
  if (parts.length >= 2 && VARIABLE_SIDE.test(parts[0].trim())) return parts[parts.length - 1].trim();
  // "\frac{1}{2} \$ = \frac{10}{9}": both sides numbers, the stated value is the last
  if (parts.length === 2 && !/[A-Za-z]/.test(parts[0].replace(/\\[A-Za-z]+/g, '')) && !/[A-Za-z]/.test(parts[1].replace(/\\[A-Za-z]+/g, ''))) return parts[1].trim();
  if (parts.length >= 3) return parts[parts.length - 1].trim();
  return x.trim();
}

/** Top-level pieces of a list of answers: split at ", " / ";" / " and " / " or " outside brackets. */
function splitTop(s: string): string[] {
  const out: string[] = [];
  let depth = 0, start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if ('([{'.includes(c)) depth++;
    else if (')]}'.includes(c)) depth--;
    else if (depth === 0) {
      const word = /^\s*(?:\\text\{\s*)?(?:and|or)(?:\s*\})?\s+|^\s*(?:and|or)(?=[(\\$-\d])/.exec(s.slice(i));
      if (c === ';' || (c === ',' && !/^\d{3}(?!\d)/.test(s.slice(i + 1)) || (c === ',' && s[i + 1] === ' '))) {
        out.push(s.slice(start, i));
        start = i + 1;
      } else if (word && i > 0 && /[\s)}\d]/.test(s[i - 1] ?? '')) {
        out.push(s.slice(start, i));
        start = i + word[0].length;
        i = start - 1;
      }
    }
  }
  out.push(s.slice(start));
  return out.map((p) => p.trim()).filter(Boolean);
}

// ---------------------------------------------------------------------------------------------------
// Comparison

export interface VerifyOptions {
  /** Numbers agree when equal after rounding to this many decimals, or within 1e-9 relative (default 6). */
  precision?: number;
  /** Budget for one check (default 200 ms): past it the answer is "no" (reason "time budget"). */
  timeMs?: number;
  /** A set gold ("x ∈ [-2, 7]") is met by the same relation ("-2 ≤ x ≤ 7") too (default false, as Math-Verify). */
  allowSetRelation?: boolean;
}

export interface Verdict {
  equal: boolean;
  reason: string;
}

class Budget {
  readonly deadline: number;
  constructor(ms: number) { this.deadline = performance.now() + ms; }
  check(): void { if (performance.now() > this.deadline) throw new BudgetError('time budget'); }
}
class BudgetError extends Error {}

const MAX_CHARS = 2000;

function numbersEqual(a: number, b: number, precision: number): boolean {
  if (!Number.isFinite(a) || !Number.isFinite(b)) return a === b;
  if (a === b || Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b))) return true;
  const f = 10 ** precision;
  return Math.round(a * f) === Math.round(b * f) && Math.abs(a - b) < 10 ** -(precision - 1);
}

/** Free variables of a MathJSON expression. */
function symbolsOf(e: Json, out = new Set<string>()): Set<string> {
  if (typeof e === 'string') {
    if (/^[A-Za-z]\w*$/.test(e) && !CONSTANTS.has(e) && !/^[A-Z][a-z]+$/.test(e)) out.add(e);
  } else if (Array.isArray(e)) e.slice(1).forEach((x) => symbolsOf(x, out));
  return out;
}
const CONSTANTS = new Set(['Pi', 'ExponentialE', 'ImaginaryUnit', 'PositiveInfinity', 'NegativeInfinity', 'Nothing', 'True', 'False', 'Half']);

/** Numeric value of a MathJSON expression at a point (null when it has none or is not real). */
function valueAt(e: Json, at: Record<string, number>, budget: Budget): number | null {
  budget.check();
  if (typeof e === 'number') return e;
  if (typeof e === 'string') {
    if (e in at) return at[e];
    return ({ Pi: Math.PI, ExponentialE: Math.E, Half: 0.5, PositiveInfinity: Infinity, NegativeInfinity: -Infinity } as Record<string, number>)[e] ?? null;
  }
  if (!Array.isArray(e)) {
    const num = (e as { num?: string }).num;
    return num !== undefined ? Number(num) : null;
  }
  const [head, ...args] = e as [string, ...Json[]];
  const v = (i: number) => valueAt(args[i], at, budget);
  const all = () => {
    const xs = args.map((a) => valueAt(a, at, budget));
    return xs.some((x) => x === null) ? null : (xs as number[]);
  };
  const f1 = (fn: (x: number) => number) => { const x = v(0); return x === null ? null : fn(x); };
  switch (head) {
    case 'Add': { const xs = all(); return xs && xs.reduce((a, b) => a + b, 0); }
    case 'Subtract': { const xs = all(); return xs && xs[0] - xs[1]; }
    case 'Multiply': { const xs = all(); return xs && xs.reduce((a, b) => a * b, 1); }
    case 'Divide': case 'Rational': { const xs = all(); return xs && xs[0] / xs[1]; }
    case 'Negate': return f1((x) => -x);
    case 'Power': {
      const xs = all();
      if (!xs) return null;
      if (Math.abs(xs[1]) > 1e4 && Math.abs(xs[0]) > 1) return Infinity; // 2^{1000000}: no exact arithmetic
      return xs[0] ** xs[1];
    }
    case 'Sqrt': return f1(Math.sqrt);
    case 'Root': { const xs = all(); return xs && (xs[0] < 0 && xs[1] % 2 === 1 ? -((-xs[0]) ** (1 / xs[1])) : xs[0] ** (1 / xs[1])); }
    case 'Exp': return f1(Math.exp);
    case 'Ln': return f1(Math.log);
    case 'Log': { const xs = all(); return xs && (xs.length > 1 ? Math.log(xs[0]) / Math.log(xs[1]) : Math.log10(xs[0])); }
    case 'Lb': return f1(Math.log2);
    case 'Abs': return f1(Math.abs);
    case 'Sin': return f1(Math.sin);
    case 'Cos': return f1(Math.cos);
    case 'Tan': return f1(Math.tan);
    case 'Sec': return f1((x) => 1 / Math.cos(x));
    case 'Csc': return f1((x) => 1 / Math.sin(x));
    case 'Cot': return f1((x) => 1 / Math.tan(x));
    case 'Arcsin': return f1(Math.asin);
    case 'Arccos': return f1(Math.acos);
    case 'Arctan': return f1(Math.atan);
    case 'Sinh': return f1(Math.sinh);
    case 'Cosh': return f1(Math.cosh);
    case 'Tanh': return f1(Math.tanh);
    case 'Factorial': return f1((x) => (Number.isInteger(x) && x >= 0 && x <= 170 ? Array.from({ length: x }, (_, i) => i + 1).reduce((a, b) => a * b, 1) : NaN));
    case 'Degrees': return f1((x) => (x * Math.PI) / 180);
    case 'Delimiter': return args.length === 1 ? v(0) : null;
    default: return null;
  }
}

/** Random points for the free variables (deterministic: the same check gives the same answer). */
function points(vars: string[], n: number): Record<string, number>[] {
  let s = 12345;
  const r = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
  return Array.from({ length: n }, () => Object.fromEntries(vars.map((v) => [v, 0.3 + 1.7 * r()])));
}

/** a and b agree as functions of their free variables (at several points; exactly when constant). */
function expressionsEqual(a: Json, b: Json, precision: number, budget: Budget, factor: 'none' | 'positive' | 'any' = 'none'): boolean {
  const vars = [...new Set([...symbolsOf(a), ...symbolsOf(b)])].sort();
  const pts = vars.length ? points(vars, 5) : [{}];
  let ratio: number | null = null, compared = 0;
  for (const at of pts) {
    const x = valueAt(a, at, budget), y = valueAt(b, at, budget);
    if (x === null || y === null) return false;
    if (Number.isNaN(x) || Number.isNaN(y)) continue;
    compared++;
    if (factor === 'none') {
      if (vars.length ? Math.abs(x - y) > 1e-7 * Math.max(1, Math.abs(x), Math.abs(y)) : !numbersEqual(x, y, precision)) return false;
    } else {
      if (Math.abs(y) < 1e-12 || Math.abs(x) < 1e-12) { if (Math.abs(x - y) > 1e-9) return false; continue; }
      const r = x / y;
      if (ratio === null) ratio = r;
      else if (Math.abs(r - ratio) > 1e-7 * Math.max(1, Math.abs(ratio))) return false;
    }
  }
  if (compared === 0) return false;
  return factor !== 'positive' || ratio === null || ratio > 0;
}

const FLIP: Record<string, string> = { Less: 'Greater', Greater: 'Less', LessEqual: 'GreaterEqual', GreaterEqual: 'LessEqual', Equal: 'Equal', NotEqual: 'NotEqual' };
const UNORDERED = new Set(['Set', 'List', 'Sequence']);

function structEqual(a: Json, b: Json, precision: number, budget: Budget): boolean {
  budget.check();
  const head = (e: Json) => (Array.isArray(e) ? (e[0] as string) : null);
  let ha = head(a), hb = head(b);
  // A parenthesised single value is the value.
  if (ha === 'Delimiter' && (a as Json[]).length === 2) return structEqual((a as Json[])[1], b, precision, budget);
  if (hb === 'Delimiter' && (b as Json[]).length === 2) return structEqual(a, (b as Json[])[1], precision, budget);
  // Tuples written as (..) or {..} or lists: containers of the same length compare elementwise
  // (sets and bare lists in any order).
  const items = (e: Json): Json[] | null => {
    const h = head(e);
    if (h === 'Tuple' || h === 'List' || h === 'Set' || h === 'Sequence' || h === 'Pair' || h === 'Triple') return (e as Json[]).slice(1);
    if (h === 'Delimiter' && Array.isArray((e as Json[])[1]) && ['Sequence', 'List'].includes(head((e as Json[])[1]) ?? '')) return ((e as Json[])[1] as Json[]).slice(1);
    return null;
  };
  const ia = items(a), ib = items(b);
  if (ia && ib) {
    // (1,2) and [1,2] differ: brackets are a list or a closed interval; bare lists go with any.
    const kind = (h: string | null) => (h === 'List' ? 'list' : h === 'Set' ? 'set' : h === 'Sequence' || h === 'Delimiter' ? 'bare' : 'tuple');
    const ka = kind(ha), kb = kind(hb);
    if (ka !== kb && ka !== 'bare' && kb !== 'bare' && !(ka === 'set' && kb === 'tuple') && !(ka === 'tuple' && kb === 'set')) return false;
    if (ia.length !== ib.length) return false;
    const unordered = UNORDERED.has(ha ?? '') || UNORDERED.has(hb ?? '');
    if (!unordered) return ia.every((x, i) => structEqual(x, ib[i], precision, budget));
    const used = new Array<boolean>(ib.length).fill(false);
    return ia.every((x) => {
      const k = ib.findIndex((y, j) => !used[j] && structEqual(x, y, precision, budget));
      if (k < 0) return false;
      used[k] = true;
      return true;
    });
  }
  if (ha === 'Matrix' || hb === 'Matrix') {
    const rows = (e: Json): Json[] | null => (head(e) === 'Matrix' ? (((e as Json[])[1] as Json[]).slice(1)) : items(e));
    const ra = rows(a), rb = rows(b);
    return !!ra && !!rb && ra.length === rb.length && ra.every((r, i) => structEqual(r, rb[i], precision, budget));
  }
  if (ha === 'Interval' || hb === 'Interval') {
    // "(-793, 10)" reads as a pair; against an open interval it is that interval
    const asOpen = (e: Json): Json => (head(e) === 'Tuple' && (e as Json[]).length === 3 ? ['Interval', ['Open', (e as Json[])[1]], ['Open', (e as Json[])[2]]] : e);
    // (checked before recursing: anything else against an interval is no, not another round here)
    if (ha !== 'Interval') return head(asOpen(a)) === 'Interval' && structEqual(asOpen(a), b, precision, budget);
    if (hb !== 'Interval') return head(asOpen(b)) === 'Interval' && structEqual(a, asOpen(b), precision, budget);
    const ends = (e: Json) => (e as Json[]).slice(1).map((x) => (head(x) === 'Open' ? { open: true, v: (x as Json[])[1] } : { open: false, v: x }));
    const ea = ends(a), eb = ends(b);
    return ea.length === 2 && eb.length === 2 && ea.every((x, i) => x.open === eb[i].open && structEqual(x.v, eb[i].v, precision, budget));
  }
  if (ha && hb && ha in FLIP && hb in FLIP) {
    // L op R as L − R op 0: the same relation up to a positive factor, or flipped by a negative one.
    const [la, ra] = (a as Json[]).slice(1), [lb, rb] = (b as Json[]).slice(1);
    if ((a as Json[]).length !== 3 || (b as Json[]).length !== 3) return false;
    const da: Json = ['Subtract', la, ra], db: Json = ['Subtract', lb, rb];
    if (ha === 'Equal' || ha === 'NotEqual') return ha === hb && expressionsEqual(da, db, precision, budget, 'any');
    if (ha === hb) return expressionsEqual(da, db, precision, budget, 'positive');
    if (FLIP[ha] === hb) return expressionsEqual(da, ['Negate', db], precision, budget, 'positive');
    return false;
  }
  if (Boolean(ha && ha in FLIP) !== Boolean(hb && hb in FLIP)) return false;
  if (typeof a === 'string' && typeof b === 'string' && a === b) return true;
  return expressionsEqual(a, b, precision, budget);
}

const isRelation = (e: Json) => Array.isArray(e) && typeof e[0] === 'string' && e[0] in FLIP;
const isSetLike = (e: Json) => Array.isArray(e) && ['Interval', 'Set', 'Element', 'Union'].includes(e[0] as string) && !isRelation(e);

/** "x \in S" → S; "a < x < b" (one variable between two values) → the interval. */
function canonical(e: Json): Json {
  if (!Array.isArray(e)) return e;
  const [h, ...args] = e as [string, ...Json[]];
  if (h === 'Element' && args.length === 2 && typeof args[0] === 'string') return args[1];
  if ((h === 'Less' || h === 'LessEqual') && args.length === 3 && typeof args[1] === 'string' && symbolsOf(args[0]).size === 0 && symbolsOf(args[2]).size === 0)
    return h === 'Less' ? ['Interval', ['Open', args[0]], ['Open', args[2]]] : ['Interval', args[0], args[2]];
  if ((h === 'Less' || h === 'LessEqual') && args.length === 3 && Array.isArray(args[1]) && symbolsOf(args[0]).size === 0 && symbolsOf(args[2]).size === 0)
    return h === 'Less' ? ['Interval', ['Open', args[0]], ['Open', args[2]]] : ['Interval', args[0], args[2]];
  return e;
}

function parseAnswer(s: string): Json | null {
  if (s.length > MAX_CHARS) return null;
  const n = plainNumber(s);
  if (n !== null) return n;
  const json = ce().parse(s).json as Json;
  const bad = JSON.stringify(json).includes('"Error"');
  return bad ? null : json;
}

/** One answer (a value, or several separated by commas / "and") against another. */
function pieces(s: string): string[] {
  const seen = new Set<string>();
  const c = clean(s);
  if (plainNumber(c) !== null) return [c];
  // "p=5,q=2; p=7,q=2": groups of assignments are tuples
  const groups = c.includes(';') ? splitSemicolons(c).map((g) => {
    const items = splitTop(g);
    return items.length > 1 && items.every((it) => /=/.test(it)) ? `(${items.map(statedValue).join(', ')})` : g;
  }) : [c];
  return groups.flatMap((g) => splitTop(g)).map(statedValue).map(mixedNumber).filter((x) => {
    const k = x.replace(/\s+/g, '');
    if (!k || seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** A mixed number "15\frac{39}{40}" (a whole answer) as the fraction it means, "\frac{639}{40}". */
function mixedNumber(s: string): string {
  const m = /^(-?)(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}$/.exec(s.trim());
  return m && Number(m[3]) < Number(m[4]) ? `${m[1]}\\frac{${Number(m[2]) * Number(m[4]) + Number(m[3])}}{${m[4]}}` : s;
}

/** Top-level ";"-separated groups; ";" inside brackets separates coordinates: "(0;-2;6)" → "(0,-2,6)". */
function splitSemicolons(s: string): string[] {
  const out: string[] = [];
  let depth = 0, start = 0, cur = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if ('([{'.includes(c)) depth++;
    else if (')]}'.includes(c)) depth--;
    if (c === ';' && depth === 0) {
      out.push(cur + s.slice(start, i));
      cur = '';
      start = i + 1;
    } else if (c === ';') {
      cur += s.slice(start, i) + ',';
      start = i + 1;
    }
  }
  out.push(cur + s.slice(start));
  return out;
}

/** "(5,2)" → ["5", "2"]; anything else → null. */
function tupleItems(s: string): string[] | null {
  const t = s.trim();
  if (!(t.startsWith('(') && t.endsWith(')'))) return null;
  let depth = 0;
  for (let i = 0; i < t.length - 1; i++) {
    if ('([{'.includes(t[i])) depth++;
    else if (')]}'.includes(t[i])) depth--;
    if (depth === 0) return null;
  }
  const inner = splitTop(t.slice(1, -1));
  return inner.length > 1 ? inner : null;
}

/** Both answers equations with variables ("2x+4y-3=0", "y = -x/2 + 3/4"): the same up to a factor? */
function equationsEqual(gold: string, pred: string, precision: number, budget: Budget): boolean {
  const g = clean(gold), p = clean(pred);
  if (g.split('=').length !== 2 || p.split('=').length !== 2 || /[,;]/.test(g + p)) return false;
  const a = parseAnswer(g), b = parseAnswer(p);
  if (!Array.isArray(a) || !Array.isArray(b) || a[0] !== 'Equal' || b[0] !== 'Equal') return false;
  if (symbolsOf(a).size === 0 || symbolsOf(b).size === 0) return false;
  return structEqual(a, b, precision, budget);
}

function verifyOne(gold: string, pred: string, precision: number, budget: Budget, allowSetRelation = false): boolean {
  if (equationsEqual(gold, pred, precision, budget)) return true;
  let gp = pieces(gold), pp = pieces(pred);
  if (!gp.length || !pp.length) return false;
  // Several forms of one value ("15\frac{39}{40}, \frac{639}{40}") are that value.
  if (gp.length === 1 && pp.length > 1 && pp.every((x) => verifyOne(gp[0], x, precision, budget, allowSetRelation))) return true;
  if (pp.length === 1 && gp.length > 1 && gp.every((x) => verifyOne(x, pp[0], precision, budget, allowSetRelation))) return true;
  // "p=5, q=2" against "(5,2)": a lone tuple stands for its items
  if (gp.length > 1 && pp.length === 1) pp = tupleItems(pp[0]) ?? pp;
  if (pp.length > 1 && gp.length === 1) gp = tupleItems(gp[0]) ?? gp;
  const g = gp.join(', '), p = pp.join(', ');
  if (g.replace(/\s+/g, '') === p.replace(/\s+/g, '')) return true;
  if ((gp.length > 1 || pp.length > 1)) {
    if (gp.length === pp.length) {
      const used = new Array<boolean>(pp.length).fill(false);
      const ok = gp.every((x) => {
        const k = pp.findIndex((y, j) => !used[j] && verifyOne(x, y, precision, budget, allowSetRelation));
        if (k < 0) return false;
        used[k] = true;
        return true;
      });
      if (ok) return true;
    }
    // "{1,2,3}" against "1, 2, 3" and the like: the parser's containers decide.
  }
  if (gp.length > 1 && pp.length > 1) return false;
  const a = parseAnswer(gp.length === 1 ? gp[0] : g), b = parseAnswer(pp.length === 1 ? pp[0] : p);
  if (a === null || b === null) return false;
  // A relation answered by a set counts ("-2 ≤ x ≤ 7" vs "x ∈ [-2, 7]"), not the other way round
  // (Math-Verify's default: a set gold is not met by a relation).
  const ca = canonical(a), goldIsSet = ca !== a || isSetLike(a);
  const cb = goldIsSet && isRelation(b) && !allowSetRelation ? b : canonical(b);
  return structEqual(ca, cb, precision, budget);
}

/** Whether `pred` gives the answer `gold` gives (both already extracted, or short answers). */
export function verifyMath(gold: unknown, pred: unknown, options: VerifyOptions = {}): Verdict {
  if (typeof gold !== 'string' || typeof pred !== 'string') return { equal: false, reason: 'not text' };
  if (gold.length > MAX_CHARS || pred.length > MAX_CHARS) return { equal: false, reason: `over ${MAX_CHARS} characters` };
  if (!gold.trim() || !pred.trim()) return { equal: false, reason: 'empty' };
  ce(); // loaded once, outside any check's budget
  const budget = new Budget(options.timeMs ?? 200);
  try {
    return verifyOne(gold, pred, options.precision ?? 6, budget, options.allowSetRelation) ? { equal: true, reason: 'equal' } : { equal: false, reason: 'different' };
  } catch (e) {
    return { equal: false, reason: e instanceof BudgetError ? e.message : `unparseable (${(e as Error).message.slice(0, 80)})` };
  }
}
