// Answer extraction and equivalence for RL rewards and evaluation.
//
// extractBoxed / mathEqual follow the spirit of the Hendrycks MATH normaliser (strip_string / is_equiv):
// LaTeX noise is normalised away, then answers are compared as strings, structurally (tuples, intervals,
// sets, unions, matrices, lists) and numerically (a small evaluator for numbers, \frac, \sqrt, \pi, + - * / ^).
// extractGsm8k / numberEqual implement the GSM8K convention (`#### N`, else the last number).
// No function here throws on odd input: anything unparseable falls back to a normalised string comparison.

import { extractMath, matchBrace, verifyMath, type VerifyOptions } from './math-verify.js';

// ---------------------------------------------------------------------------------------------------------
// Extraction

const BOX_COMMANDS = ['\\boxed', '\\fbox'];

/**
 * Content of the last top-level `\boxed{...}` (nested braces allowed), `\boxed 5` (space form, up to `$`
 * or the end of the line) or `\fbox{...}`. An unterminated last box is skipped in favour of the previous
 * complete one. Returns null when there is none.
 */
export function extractBoxed(text: string): string | null {
  try {
    if (typeof text !== 'string') return null;
    let found: string | null = null;
    let i = 0;
    while (i < text.length) {
      let at = -1, cmd = '';
      for (const c of BOX_COMMANDS) {
        const j = text.indexOf(c, i);
        if (j >= 0 && (at < 0 || j < at)) { at = j; cmd = c; }
      }
      if (at < 0) break;
      let p = at + cmd.length;
      if (p < text.length && /[A-Za-z]/.test(text[p])) { i = p; continue; } // \boxedfoo is another command
      while (p < text.length && (text[p] === ' ' || text[p] === '\t')) p++;
      if (text[p] === '{') {
        const end = matchBrace(text, p);
        if (end < 0) { i = p + 1; continue; }
        found = text.slice(p + 1, end - 1).trim();
        i = end;
      } else if (p > at + cmd.length) {
        // space form: \boxed 5  (TeX would take one token; solutions in the wild mean "up to the $")
        let e = p;
        while (e < text.length && text[e] !== '$' && text[e] !== '\n') e++;
        const v = text.slice(p, e).trim();
        if (v) found = v;
        i = e;
      } else {
        i = p;
      }
    }
    return found;
  } catch {
    return null;
  }
}

// A number as written in prose: optional sign (not a hyphen between words/numbers), optional $, comma groups.
const PROSE_NUMBER = /(?<![\w)\]}.])(-)?\s?\$?\s?(-)?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)/g;

function cleanNumber(sign: string | undefined, sign2: string | undefined, digits: string): string {
  let s = digits.replace(/,/g, '');
  if (s.startsWith('.')) s = '0' + s;
  return (sign || sign2 ? '-' : '') + s;
}

function lastProseNumber(text: string): string | null {
  let last: string | null = null;
  PROSE_NUMBER.lastIndex = 0;
  for (let m = PROSE_NUMBER.exec(text); m; m = PROSE_NUMBER.exec(text)) last = cleanNumber(m[1], m[2], m[3]);
  return last;
}

function firstProseNumber(text: string): string | null {
  PROSE_NUMBER.lastIndex = 0;
  const m = PROSE_NUMBER.exec(text);
  PROSE_NUMBER.lastIndex = 0;
  return m ? cleanNumber(m[1], m[2], m[3]) : null;
}

/**
 * GSM8K answer: the first number after the last `####`, else the last number in the text. Commas, `$`
 * and a trailing `.` are stripped; negatives and decimals are kept ("-3", "2.5"). Null when no number.
 */
export function extractGsm8k(text: string): string | null {
  try {
    if (typeof text !== 'string') return null;
    const k = text.lastIndexOf('####');
    if (k >= 0) {
      const n = firstProseNumber(text.slice(k + 4));
      if (n !== null) return n;
    }
    return lastProseNumber(text);
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Numbers

const PLAIN_NUMBER = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

/** Parse a plain number ignoring commas, `$`, `\$`, `%`, whitespace and a trailing `.`; null otherwise. */
export function parseNumber(s: unknown): number | null {
  if (typeof s === 'number') return Number.isFinite(s) ? s : null;
  if (typeof s !== 'string') return null;
  let t = s.replace(/\\[$%]/g, '').replace(/[\s$%,]/g, '');
  t = t.replace(/\.$/, '');
  if (!PLAIN_NUMBER.test(t)) return null;
  const v = Number(t);
  return Number.isFinite(v) ? v : null;
}

function integerString(s: string): string | null {
  const t = s.replace(/\\[$%]/g, '').replace(/[\s$%,]/g, '').replace(/\.0*$/, '').replace(/^\+/, '');
  return /^-?\d+$/.test(t) ? t : null;
}

/**
 * Numeric equality of two written numbers: commas, `$`, `%`, whitespace and trailing `.0`/`.00` ignored;
 * integers compare exactly (any size), others with relative tolerance 1e-6. False for non-numbers.
 */
export function numberEqual(a: unknown, b: unknown): boolean {
  try {
    const x = parseNumber(a), y = parseNumber(b);
    if (x === null || y === null) return false;
    if (typeof a === 'string' && typeof b === 'string') {
      const ia = integerString(a), ib = integerString(b);
      if (ia !== null && ib !== null) return BigInt(ia) === BigInt(ib);
    }
    if (x === y) return true;
    return Math.abs(x - y) <= 1e-6 * Math.max(Math.abs(x), Math.abs(y));
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------------
// MATH normalisation

const UNIT_WORDS = [
  'square units', 'sq units', 'square feet', 'square inches', 'square meters', 'square centimeters', 'square yards',
  'cubic units', 'cubic feet', 'cubic inches', 'cubic meters', 'cubic centimeters',
  'units', 'unit', 'cm', 'mm', 'km', 'meters', 'meter', 'centimeters', 'centimeter', 'inches', 'inch', 'feet',
  'foot', 'ft', 'yards', 'yard', 'miles', 'mile', 'mph', 'cents', 'cent', 'dollars', 'dollar', 'degrees', 'degree',
  'hours', 'hour', 'minutes', 'minute', 'seconds', 'second', 'days', 'day', 'weeks', 'week', 'years', 'year',
  'pounds', 'pound', 'ounces', 'ounce', 'grams', 'gram', 'kg', 'liters', 'liter', 'gallons', 'gallon', 'cups', 'cup',
  'percent', 'people', 'students', 'ways', 'sq', 'm', 'in', 'g', 'lb', 'lbs', 'oz', 'mL', 'L',
];
const BARE_UNIT = new RegExp(`^(.*?[\\d}])\\s+(?:${UNIT_WORDS.map((w) => w.replace(/ /g, '\\s+')).join('|')})(?:\\^\\{?[23]\\}?)?$`);

/** Rewrite `\frac12`, `\frac 59`, `\frac{270}7` → `\frac{..}{..}` and `\sqrt3` → `\sqrt{3}` (one TeX token). */
function braceArgs(s: string): string {
  let out = '';
  let i = 0;
  const readArg = (p: number): [string, number] | null => {
    while (p < s.length && s[p] === ' ') p++;
    if (p >= s.length) return null;
    if (s[p] === '{') {
      const e = matchBrace(s, p);
      return e < 0 ? null : [s.slice(p, e), e];
    }
    if (s[p] === '\\') {
      const m = /^\\[A-Za-z]+/.exec(s.slice(p));
      if (m) return ['{' + m[0] + '}', p + m[0].length];
      return null;
    }
    if (s[p] === '}' || s[p] === '^' || s[p] === '_') return null;
    return ['{' + s[p] + '}', p + 1];
  };
  while (i < s.length) {
    if (s.startsWith('\\frac', i) && !/[A-Za-z]/.test(s[i + 5] ?? '')) {
      const a = readArg(i + 5);
      const b = a ? readArg(a[1]) : null;
      if (a && b) { out += '\\frac' + braceArgs(a[0]) + braceArgs(b[0]); i = b[1]; continue; }
    }
    if (s.startsWith('\\sqrt', i) && !/[A-Za-z]/.test(s[i + 5] ?? '')) {
      let p = i + 5, root = '';
      while (s[p] === ' ') p++;
      if (s[p] === '[') {
        const e = s.indexOf(']', p);
        if (e > 0) { root = s.slice(p, e + 1); p = e + 1; }
      }
      const a = readArg(p);
      if (a) { out += '\\sqrt' + root + braceArgs(a[0]); i = a[1]; continue; }
    }
    out += s[i];
    i++;
  }
  return out;
}

/** Remove `\cmd{...}` wrappers, keeping the content. */
function unwrap(s: string, cmds: string[]): string {
  for (const cmd of cmds) {
    let guard = 0;
    for (let k = s.indexOf(cmd + '{'); k >= 0 && guard++ < 1000; k = s.indexOf(cmd + '{', k)) {
      const open = k + cmd.length;
      const end = matchBrace(s, open);
      if (end < 0) { k = open; continue; }
      s = s.slice(0, k) + s.slice(open + 1, end - 1) + s.slice(end);
    }
  }
  return s;
}

const TEXT_CMDS = ['\\text', '\\textbf', '\\textit', '\\textrm', '\\mbox', '\\mathrm', '\\mathbf', '\\mathit', '\\boldsymbol', '\\textnormal', '\\operatorname'];

/** Drop a trailing `\text{...}` / `\mbox{...}` unit (with an optional ^2/^3) that follows other content. */
function removeTextUnits(s: string): string {
  for (let guard = 0; guard < 4; guard++) {
    const t = s.replace(/\^\{?[23]\}?\s*$/, '');
    let cut = -1;
    for (const cmd of TEXT_CMDS) {
      const k = t.lastIndexOf(cmd + '{');
      if (k > cut && matchBrace(t, k + cmd.length) === t.length) cut = k;
    }
    if (cut <= 0) return s;
    const before = t.slice(0, cut);
    const inner = t.slice(t.indexOf('{', cut) + 1, -1).trim();
    // only unit-like words after a value: letters and spaces (not "(A)", not an empty box)
    if (!/^[A-Za-z][A-Za-z .]*$/.test(inner) || !/[\w})\]]\s*$/.test(before)) return s;
    s = before.trimEnd();
  }
  return s;
}

/** Normalise a MATH answer string for comparison. Never throws for string input. */
export function normalizeMath(input: unknown): string {
  let s = typeof input === 'string' ? input : input == null ? '' : String(input);
  s = s.trim();
  if (s.includes('\\boxed') || s.includes('\\fbox')) s = extractBoxed(s) ?? s;
  s = s.replace(/[\r\n\t]/g, ' ');
  // math delimiters and dollars
  s = s.replace(/^\\\(|\\\)$/g, '').replace(/^\\\[|\\\]$/g, '');
  s = s.replace(/\\\$/g, '').replace(/\$/g, '');
  // spacing and sizing commands
  s = s.replace(/\\(\\|[!,;:> ])/g, (m, c: string) => (c === '\\' ? m : ' ')).replace(/\\q?quad(?![A-Za-z])/g, ' ');
  s = s.replace(/\\(?:displaystyle|textstyle|scriptstyle)(?![A-Za-z])/g, '');
  s = s.replace(/\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg)(?![A-Za-z])\s*/g, '');
  s = s.replace(/\\(?:left|right)\./g, '');
  s = s.replace(/\\[dtc]frac(?![A-Za-z])/g, '\\frac');
  // degrees and percent
  s = s.replace(/\^\s*\{\s*\\circ\s*\}/g, '').replace(/\^\s*\\circ(?![A-Za-z])/g, '').replace(/°/g, '');
  s = s.replace(/\\degree(?![A-Za-z])/g, '').replace(/\\circ\s*$/, '');
  s = s.replace(/\\%/g, '').replace(/%/g, '');
  s = s.replace(/[\s.]+$/, '').trim();
  // units, then remaining text wrappers
  s = removeTextUnits(s);
  s = unwrap(s, TEXT_CMDS).trim();
  const bare = BARE_UNIT.exec(s);
  if (bare && /^[\d\s.,+\-{}]*$/.test(bare[1].replace(/\\(?:frac|sqrt)(?![A-Za-z])/g, ''))) s = bare[1];
  s = s.replace(/\s+(?:and|or)\s+/g, ',');
  // a single-variable assignment or membership prefix: "x = 5", "y=2x+3", "\theta = 1", "x \in [0,1]"
  const eqs = s.split('=').length - 1;
  const pre = /^\s*(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w+\}?)?\s*(?:=|\\in(?![A-Za-z]))\s*/.exec(s);
  if (pre && (eqs === 1 || (eqs === 0 && pre[0].includes('\\in'))) && !/[<>]|\\[lg]eq?(?![A-Za-z])/.test(s)) {
    s = s.slice(pre[0].length);
  }
  s = braceArgs(s);
  s = s.replace(/\\infinity|∞/g, '\\infty');
  // "32, 349" is two numbers (a comma then a space), not 32349
  const spacedComma = /,\s/.test(s);
  s = s.replace(/\s+/g, '');
  s = s.replace(/\{,\}/g, ',');
  // single-character super/subscripts lose their braces: x^{2} → x^2, 52_{8} → 52_8
  s = s.replace(/([\^_])\{([A-Za-z0-9])\}/g, '$1$2');
  // .5 → 0.5 (also -.5, {.5, (.5)
  s = s.replace(/(^|[^\d])\.(\d)/g, '$10.$2');
  s = s.replace(/\.+$/, '');
  // whole answer wrapped in braces
  for (let g = 0; g < 8 && s.startsWith('{') && matchBrace(s, 0) === s.length; g++) s = s.slice(1, -1);
  // comma-grouped number: 10,080 → 10080
  if (!spacedComma && /^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$/.test(s)) s = s.replace(/,/g, '');
  // multiple choice: (A), \text{(A)} → A
  const mc = /^\(([A-Z])\)$/.exec(s);
  if (mc) s = mc[1];
  return s;
}

// ---------------------------------------------------------------------------------------------------------
// Numeric evaluation of simple LaTeX expressions (numbers, \frac, \sqrt, \pi, + - * / ^, implicit products)

class Evaluator {
  private i = 0;
  private depth = 0;
  constructor(private readonly s: string) {}

  run(): number | null {
    const v = this.expr();
    if (v === null || this.i !== this.s.length || !Number.isFinite(v)) return null;
    return v;
  }

  private peek(word: string): boolean {
    if (!this.s.startsWith(word, this.i)) return false;
    return !(word.startsWith('\\') && /[A-Za-z]/.test(this.s[this.i + word.length] ?? ''));
  }

  private eat(word: string): boolean {
    if (!this.peek(word)) return false;
    this.i += word.length;
    return true;
  }

  private expr(): number | null {
    if (++this.depth > 100) return null;
    try {
      let v = this.term();
      if (v === null) return null;
      for (;;) {
        if (this.eat('+')) { const r = this.term(); if (r === null) return null; v += r; }
        else if (this.eat('-')) { const r = this.term(); if (r === null) return null; v -= r; }
        else return v;
      }
    } finally {
      this.depth--;
    }
  }

  private startsFactor(): boolean {
    const c = this.s[this.i];
    return c !== undefined && (/[\d.({]/.test(c) || this.peek('\\frac') || this.peek('\\sqrt') || this.peek('\\pi'));
  }

  private term(): number | null {
    let v = this.unary();
    if (v === null) return null;
    for (;;) {
      if (this.eat('*') || this.eat('\\cdot') || this.eat('\\times')) { const r = this.unary(); if (r === null) return null; v *= r; }
      else if (this.eat('/') || this.eat('\\div')) { const r = this.unary(); if (r === null) return null; v /= r; }
      else if (this.startsFactor()) { const r = this.power(); if (r === null) return null; v *= r; }
      else return v;
    }
  }

  private unary(): number | null {
    if (this.eat('-')) { const v = this.unary(); return v === null ? null : -v; }
    if (this.eat('+')) return this.unary();
    return this.power();
  }

  private power(): number | null {
    const base = this.primary();
    if (base === null) return null;
    if (!this.eat('^')) return base;
    let e: number | null;
    if (this.s[this.i] === '{') e = this.group();
    else if (/\d/.test(this.s[this.i] ?? '')) { e = Number(this.s[this.i]); this.i++; }
    else e = this.primary();
    return e === null ? null : Math.pow(base, e);
  }

  private group(): number | null {
    if (!this.eat('{')) return null;
    const v = this.expr();
    return v !== null && this.eat('}') ? v : null;
  }

  private primary(): number | null {
    const m = /^(?:\d+(?:\.\d*)?|\.\d+)/.exec(this.s.slice(this.i, this.i + 400));
    if (m) { this.i += m[0].length; return Number(m[0]); }
    if (this.eat('(')) { const v = this.expr(); return v !== null && this.eat(')') ? v : null; }
    if (this.s[this.i] === '{') return this.group();
    if (this.eat('\\pi')) return Math.PI;
    if (this.eat('\\frac')) {
      const a = this.group(); if (a === null) return null;
      const b = this.group(); if (b === null) return null;
      return a / b;
    }
    if (this.eat('\\sqrt')) {
      let n = 2;
      if (this.eat('[')) { const r = this.expr(); if (r === null || !this.eat(']')) return null; n = r; }
      const a = this.group(); if (a === null || a < 0) return null;
      return n === 2 ? Math.sqrt(a) : n === 3 ? Math.cbrt(a) : Math.pow(a, 1 / n);
    }
    return null;
  }
}

/** Numeric value of a normalised answer, or null when it is not a closed-form number we can evaluate. */
export function evaluateMath(normalized: string): number | null {
  try {
    if (!normalized || normalized.length > 500) return null;
    // mixed number: 137\frac{1}{2} = 137.5
    const mixed = /^(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$/.exec(normalized);
    if (mixed && Number(mixed[3]) < Number(mixed[4])) {
      const v = Number(mixed[2]) + Number(mixed[3]) / Number(mixed[4]);
      return mixed[1] ? -v : v;
    }
    return new Evaluator(normalized).run();
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------------------
// MATH equivalence

/** Split on top-level occurrences of `sep` (outside (), [], {}). */
function splitTop(s: string, sep: string): string[] {
  const parts: string[] = [];
  let depth = 0, start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '\\' && s[i + 1] && '{}'.includes(s[i + 1])) { i++; continue; }
    if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') depth--;
    else if (depth === 0 && s.startsWith(sep, i)) {
      parts.push(s.slice(start, i));
      start = i + sep.length;
      i += sep.length - 1;
    }
  }
  parts.push(s.slice(start));
  return parts;
}

/** Does the bracket opening at 0 close exactly at the last character (intervals may mix ( and ])? */
function outerBracketed(s: string): boolean {
  if (s.length < 2 || !'(['.includes(s[0]) || !')]'.includes(s[s.length - 1])) return false;
  let depth = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '\\') { i++; continue; }
    if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') { depth--; if (depth === 0 && i < s.length - 1) return false; }
  }
  return depth === 0;
}

function unorderedMatch(xs: string[], ys: string[], depth: number): boolean {
  if (xs.length !== ys.length) return false;
  const used = new Array<boolean>(ys.length).fill(false);
  for (const x of xs) {
    let hit = -1;
    for (let j = 0; j < ys.length && hit < 0; j++) if (!used[j] && equivNormalized(x, ys[j], depth + 1)) hit = j;
    if (hit < 0) return false;
    used[hit] = true;
  }
  return true;
}

const MATRIX = /^\\begin\{([pbvBV]?matrix|array)\}(?:\{[^}]*\})?(.*)\\end\{\1\}$/;

function matrixCells(s: string): string[][] | null {
  const m = MATRIX.exec(s);
  if (!m) return null;
  return m[2].split('\\\\').filter((r, k, all) => r !== '' || k < all.length - 1).map((r) => r.split('&'));
}

function numbersClose(x: number, y: number): boolean {
  if (x === y) return true;
  return Math.abs(x - y) <= 1e-9 * Math.max(Math.abs(x), Math.abs(y)) + 1e-12;
}

function equivNormalized(a: string, b: string, depth: number): boolean {
  if (a === b) return true;
  if (depth > 12 || !a || !b) return false;
  const na = depth > 0 ? normalizeMath(a) : a, nb = depth > 0 ? normalizeMath(b) : b;
  if (na === nb) return true;
  if (!na || !nb) return false;

  // matrices / vectors: same shape, cells equivalent
  const ma = matrixCells(na), mb = matrixCells(nb);
  if (ma || mb) {
    if (!ma || !mb || ma.length !== mb.length) return false;
    return ma.every((row, r) => row.length === mb[r].length && row.every((c, k) => equivNormalized(c, mb[r][k], depth + 1)));
  }
  // unions of intervals: unordered pieces
  const ua = splitTop(na, '\\cup'), ub = splitTop(nb, '\\cup');
  if (ua.length > 1 || ub.length > 1) return unorderedMatch(ua, ub, depth);
  // sets \{...\}: unordered elements
  const ta = outerBracketed(na), tb = outerBracketed(nb);
  const setA = /^\\\{(.*)\\\}$/.exec(na), setB = /^\\\{(.*)\\\}$/.exec(nb);
  if (setA || setB) {
    const xs = setA ? splitTop(setA[1], ',') : ta ? [na] : splitTop(na, ',');
    const ys = setB ? splitTop(setB[1], ',') : tb ? [nb] : splitTop(nb, ',');
    return unorderedMatch(xs, ys, depth);
  }
  // tuples and intervals: same brackets, elements in order
  if (ta && tb) {
    const xa = splitTop(na.slice(1, -1), ','), xb = splitTop(nb.slice(1, -1), ',');
    if (xa.length > 1 || xb.length > 1) {
      if (na[0] !== nb[0] || na[na.length - 1] !== nb[nb.length - 1] || xa.length !== xb.length) return false;
      return xa.every((x, k) => equivNormalized(x, xb[k], depth + 1));
    }
  }
  // bare lists "1,-2" (all solutions): unordered
  const la = ta ? [na] : splitTop(na, ','), lb = tb ? [nb] : splitTop(nb, ',');
  if (la.length > 1 || lb.length > 1) return unorderedMatch(la, lb, depth);
  // numbers and closed forms
  const va = evaluateMath(na), vb = evaluateMath(nb);
  if (va !== null && vb !== null) return numbersClose(va, vb);
  return false;
}

/**
 * Equivalence of two MATH answers (e.g. a `\boxed{}` extraction against the reference answer).
 * Never throws; unknown shapes fall back to comparing normalised strings.
 */
export function mathEqual(a: unknown, b: unknown, options: VerifyOptions = {}): boolean {
  try {
    if (a == null || b == null) return false;
    const na = normalizeMath(a), nb = normalizeMath(b);
    if (!na || !nb) return false;
    // The normaliser first (fast, string-level); then parsing and symbolic comparison (math-verify.ts).
    return equivNormalized(na, nb, 0) || verifyMath(a, b, options).equal;
  } catch {
    try {
      return typeof a === 'string' && typeof b === 'string' && a.trim() !== '' && a.replace(/\s+/g, '') === b.replace(/\s+/g, '');
    } catch {
      return false;
    }
  }
}

/** The answer-checking API, exported publicly as `answers`. */
export const answers = {
  extractBoxed,
  extractMath,
  verifyMath,
  extractGsm8k,
  numberEqual,
  mathEqual,
  normalizeMath,
  parseNumber,
  evaluateMath,
};
