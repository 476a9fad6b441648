// Token sampling: temperature, top-k, top-p, min-p, drawn with Philox4x32-10.
import { native } from '../native.js';
import { defineOp } from './define.js';
import * as v from './validate.js';

/** A Philox key or counter per row: one number for every row, numbers, or a BigUint64Array. */
export type RowWords = number | readonly number[] | BigUint64Array;

export interface SampleOptions {
  rows: number;
  vocab: number;
  /** 0 = greedy (argmax, lowest index on ties). Otherwise p = softmax(logits / temperature). */
  temperature: number;
  /** Keep the k most likely tokens (0 or omitted: off). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose mass reaches topP (1 or omitted: off). */
  topP?: number;
  /** Keep tokens with p >= minP * pmax (0 or omitted: off). */
  minP?: number;
  /**
   * Philox key. One number (integer in [0, 2^53)): every row uses this key and row r uses counter
   * `counter * 2^32 + r`, so a row's draw depends on its position in the batch. For draws that do
   * not depend on batch composition, give one seed per row (array or BigUint64Array): row r then
   * uses key seed[r] and counter `counter` (default 0) or counter[r].
   */
  seed: RowWords;
  /** Philox counter, e.g. the decoding step: a number for every row, or one per row. */
  counter?: RowWords;
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

function word(value: unknown, name: string, max = MAX_SAFE): bigint {
  if (typeof value !== 'number') throw new TypeError(`${name} must be a number, got ${typeof value}`);
  if (!Number.isInteger(value) || value < 0 || value > max)
    throw new RangeError(`${name} must be an integer in [0, ${max}], got ${value}`);
  return BigInt(value);
}

/** Per-row 64-bit words from an array form, or undefined for a scalar. */
function rowWords(value: unknown, name: string, rows: number): BigUint64Array | undefined {
  if (value instanceof BigUint64Array) {
    if (value.length !== rows) throw new RangeError(`${name} must have length ${rows}, got ${value.length}`);
    return value;
  }
  if (Array.isArray(value)) {
    if (value.length !== rows) throw new RangeError(`${name} must have length ${rows}, got ${value.length}`);
    const out = new BigUint64Array(rows);
    for (let r = 0; r < rows; r++) out[r] = word(value[r], `${name}[${r}]`);
    return out;
  }
  return undefined;
}

/** The Philox (key, counter) of every row, following the rules documented on SampleOptions.seed. */
export function philoxWords(seed: unknown, counter: unknown, rows: number): { seeds: BigUint64Array; counters: BigUint64Array } {
  if (seed === undefined) throw new TypeError('seed is required (a number, an array of numbers or a BigUint64Array)');
  const perRowSeeds = rowWords(seed, 'seed', rows);
  const perRowCounters = counter === undefined ? undefined : rowWords(counter, 'counter', rows);
  const seeds = perRowSeeds ?? new BigUint64Array(rows).fill(word(seed, 'seed'));
  let counters: BigUint64Array;
  if (perRowCounters) counters = perRowCounters;
  else if (perRowSeeds) counters = new BigUint64Array(rows).fill(counter === undefined ? 0n : word(counter, 'counter'));
  else {
    const base = counter === undefined ? 0n : word(counter, 'counter', 2 ** 32 - 1) << 32n;
    counters = new BigUint64Array(rows);
    for (let r = 0; r < rows; r++) counters[r] = base + BigInt(r);
  }
  return { seeds, counters };
}

function prepareSample(logits: Float32Array, opts: SampleOptions, withLogprobs: boolean) {
  const o = v.options(opts);
  const rows = v.size(o.rows, 'rows'), vocab = v.size(o.vocab, 'vocab');
  const temperature = v.finite(o.temperature, 'temperature', 0);
  const topK = o.topK === undefined ? 0 : v.size(o.topK, 'topK', 0, vocab);
  const topP = v.optionalFinite(o.topP, 'topP', 1, 0, 1);
  if (!(topP > 0)) throw new RangeError(`topP must be in (0, 1], got ${topP}`);
  const minP = v.optionalFinite(o.minP, 'minP', 0, 0, 1);
  if (!(minP < 1)) throw new RangeError(`minP must be in [0, 1), got ${minP}`);
  v.f32(logits, 'logits', v.elements('logits', rows, vocab));
  const { seeds, counters } = philoxWords(o.seed, o.counter, rows);
  const ids = new Int32Array(rows);
  const logprobs = withLogprobs ? new Float32Array(rows) : null;
  return {
    ids,
    logprobs,
    run: (async: boolean) =>
      native.sampleTokens({ logits, ids, logprobs, rows, vocab, temperature, topK, topP, minP, seeds, counters }, async),
  };
}

/**
 * Samples one token per row of logits (rows, vocab) → Int32Array(rows).
 * Filters apply in the order top-k, top-p (over the renormalised survivors), min-p; the draw
 * walks the kept tokens in descending probability (ties: lower index). NaN logits count as
 * -inf; a row with no logit above -inf gives token 0.
 */
export const sample = defineOp((logits: Float32Array, opts: SampleOptions) => {
  const p = prepareSample(logits, opts, false);
  return { run: p.run, result: () => p.ids };
});

export interface SampledTokens {
  ids: Int32Array;
  /**
   * Log-probability of each drawn token under the filtered, renormalised distribution it was
   * drawn from; 0 at temperature 0 (a point mass); NaN for a row with no logit above -inf.
   */
  logprobs: Float32Array;
}

/** `sample` that also returns the log-probability of each drawn token. */
export const sampleWithLogprobs = defineOp((logits: Float32Array, opts: SampleOptions) => {
  const p = prepareSample(logits, opts, true);
  return { run: p.run, result: (): SampledTokens => ({ ids: p.ids, logprobs: p.logprobs as Float32Array }) };
});

/** Raw Philox4x32-10 block: counter (4 words), key (2 words) → 4 words. For tests and twins. */
export function philox4x32(counter: Uint32Array, key: Uint32Array): Uint32Array {
  if (!(counter instanceof Uint32Array) || counter.length !== 4) throw new TypeError('counter must be a Uint32Array of length 4');
  if (!(key instanceof Uint32Array) || key.length !== 2) throw new TypeError('key must be a Uint32Array of length 2');
  return native.philox4x32({ counter, key });
}

/** The uniform in [0, 1) that the sampler draws for each (key, counter): top 24 bits of word 0. */
export function philoxUniform(keys: BigUint64Array, counters: BigUint64Array): Float32Array {
  if (!(keys instanceof BigUint64Array)) throw new TypeError(`keys must be a BigUint64Array, got ${v.describe(keys)}`);
  if (!(counters instanceof BigUint64Array) || counters.length !== keys.length)
    throw new TypeError(`counters must be a BigUint64Array of length ${keys.length}`);
  const out = new Float32Array(keys.length);
  native.philoxUniform({ keys, counters, out });
  return out;
}
