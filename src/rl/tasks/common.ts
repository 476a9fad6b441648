// Shared task types and helpers: the Task contract used by the RL trainers, seeded PRNG, JSONL reading.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

export type Split = 'train' | 'test';

/** One problem. `answer` is the final answer as a string; `solution` the reference worked solution. */
export interface Example {
  id: string;
  question: string;
  answer: string;
  solution: string;
}

export interface ExampleOptions {
  /** At most this many examples (generated tasks: exactly this many). */
  limit?: number;
  /** Shuffle (file tasks) or generation seed (generated tasks). */
  seed?: number;
  /** File tasks: shuffle with `seed` before applying `limit`. */
  shuffle?: boolean;
  /** File tasks: read this JSONL file instead of the default one in the data directory. */
  file?: string;
}

/** A task as an RL trainer sees it: examples, prompts, reference completions and a binary verifier. */
export interface Task<E extends Example = Example, O extends ExampleOptions = ExampleOptions> {
  readonly name: string;
  /** Sequences at which a sampled completion may be cut (a hint for samplers; EOS always ends one). */
  readonly stop: readonly string[];
  examples(split: Split, opts?: O): E[];
  /** The text the model continues. */
  prompt(example: E): string;
  /** A reference completion for `prompt(example)` (for SFT warm-up or logging). */
  reference(example: E): string;
  /** The final answer. */
  answer(example: E): string;
  /** The answer a completion gives, or null when it gives none. */
  extract(completion: string): string | null;
  /** Whether the completion's final answer is correct. Never throws. */
  isCorrect(completion: string, example: E): boolean;
}

export { defaultDataDir } from '../../paths.js';
import { cacheDir, defaultDataDir } from '../../paths.js';

/**
 * A data set file: in `dataDir` when given; else in the data folder (defaultDataDir), else in the
 * cache's data folder (where the CLI, or tasks.ensureTaskData, downloads public data sets).
 */
export function dataFile(name: string, dataDir?: string): string {
  const file = path.join(dataDir ?? defaultDataDir(), name);
  if (existsSync(file)) return file;
  const cached = path.join(cacheDir(), 'data', name);
  if (!dataDir && existsSync(cached)) return cached;
  throw new Error(`data file ${file} not found (point at the data directory with --data-dir DIR or $WST_DASH_DATA, or give the file with --file)`);
}

/** A small seeded PRNG (SplitMix32 variant): uniform floats in [0, 1). */
export function makeRng(seed: number): () => number {
  let s = (Math.floor(seed) ^ 0x9e3779b9) >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16)) >>> 0;
    return z / 4294967296;
  };
}

/** 32-bit FNV-1a hash of a string. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

export function shuffleInPlace<T>(xs: T[], seed: number): T[] {
  const r = makeRng(seed);
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}

export function selectExamples<E>(rows: E[], opts: ExampleOptions = {}): E[] {
  let out = rows;
  if (opts.shuffle) out = shuffleInPlace(out.slice(), opts.seed ?? 0);
  if (opts.limit !== undefined) {
    if (!Number.isInteger(opts.limit) || opts.limit < 0) throw new RangeError(`limit must be a non-negative integer, got ${opts.limit}`);
    out = out.slice(0, opts.limit);
  }
  return out;
}

/**
 * Read a JSONL file; `parse` turns each record into a row or returns an error message for it.
 * Any bad line raises an Error naming the file and the 1-based line number. Blank lines are skipped;
 * a file without a record is an error (an evaluation over nothing is meaningless).
 */
export function readJsonl<T>(file: string, parse: (record: Record<string, unknown>, line: number) => T | string): T[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read: ${(e as Error).message}`);
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const lines = text.split(/\r?\n/);
  const rows: T[] = [];
  for (let k = 0; k < lines.length; k++) {
    const line = lines[k];
    if (line.trim() === '') continue;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      throw new Error(`${file}:${k + 1}: invalid JSON (${(e as Error).message})`);
    }
    if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) throw new Error(`${file}:${k + 1}: expected a JSON object`);
    const row = parse(rec as Record<string, unknown>, k + 1);
    if (typeof row === 'string') throw new Error(`${file}:${k + 1}: ${row}`);
    rows.push(row);
  }
  if (rows.length === 0) throw new Error(`${file}: no records (the file is empty)`);
  return rows;
}

/** Error message when `rec[key]` is not a string, else null. */
export function needString(rec: Record<string, unknown>, key: string): string | null {
  const v = rec[key];
  if (v === undefined) return `missing field "${key}"`;
  if (typeof v !== 'string') return `field "${key}" must be a string, got ${v === null ? 'null' : typeof v}`;
  return null;
}
