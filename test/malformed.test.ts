// 10,000 calls with malformed arguments: every one must throw a clear TypeError/RangeError (or,
// when the random arguments happen to be valid, succeed) and the process must stay alive.
import { describe, expect, it } from 'vitest';
import { kernels } from '../src/index.js';
import { native } from '../src/native.js';
import { rng } from './helpers.js';

const r = rng(20261126);
const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
const SIZES = [-1, 0, 1, 2, 3, 4, 7, 8, NaN, Infinity, 1.5, 2 ** 31, 1e12, '3', undefined, null] as const;
const KEYS = ['m', 'k', 'n', 'transA', 'transB', 'batch', 'heads', 'kvHeads', 'seqQ', 'seqK', 'headDim', 'causal', 'rows', 'vocab',
  'dim', 'tokens', 'temperature', 'topK', 'topP', 'minP', 'seed', 'counter', 'eps', 'theta', 'seqs', 'clipLow', 'clipHigh', 'beta',
  'filterThreshold', 'lossType', 'normalizer', 'lr', 'beta1', 'beta2', 'weightDecay', 'step', 'maxSeq', 'q', 'k', 'v', 'logits',
  'ids', 'logprobs', 'oldLogprobs', 'refLogprobs', 'advantages', 'mask', 'dout', 'inp', 'weight', 'rstd', 'param', 'grad', 'out',
  'lse', 'kCache', 'vCache', 'lengths', 'gate', 'up', 'positions', 'table', 'dlogprobs', 'targets', 'dlosses', 'entropy',
  // the raw binding's own field names
  'a', 'b', 'c', 'alpha', 'probs', 'dq', 'dk', 'dv', 'seqQ', 'maxSeq', 'seconds', 'threads', 'bytes', 'x', 's', 'key', 'keys',
  'counters', 'seeds', 'dgate', 'dup', 'dinp', 'dweight', 'dtable', 'da', 'db', 'dlogits', 'dlogprob', 'dentropy', 'losses', 'logprob'];

function junk(depth = 0): unknown {
  switch (Math.floor(r() * (depth > 1 ? 8 : 10))) {
    case 0: return new Float32Array(Math.floor(r() * 12));
    case 1: return new Int32Array(Math.floor(r() * 12)).map(() => Math.floor(r() * 20) - 5);
    case 2: return new Float64Array(Math.floor(r() * 6));
    case 3: return pick(SIZES);
    case 4: return pick(['grpo', 'bnpo', 'nope', '', 'dapo']);
    case 5: return r() < 0.5;
    case 6: return new Float32Array(Math.floor(r() * 12)).map(() => (r() < 0.1 ? NaN : r() * 4 - 2));
    case 7: return [1, 2, 3];
    default: {
      const o: Record<string, unknown> = {};
      const n = Math.floor(r() * 12);
      for (let i = 0; i < n; i++) o[pick(KEYS)] = junk(depth + 1);
      return o;
    }
  }
}

function junkOptions(): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  const n = 4 + Math.floor(r() * 20);
  for (let i = 0; i < n; i++) o[pick(KEYS)] = junk(1);
  return o;
}

function isClearError(e: unknown): boolean {
  return (e instanceof TypeError || e instanceof RangeError || (e instanceof Error && e.constructor.name === 'Error')) &&
    (e as Error).message.length > 5;
}

describe('malformed arguments', () => {
  it('10,000 calls across the kernel API and the raw binding throw clear errors and never crash', async () => {
    const ops = Object.entries(kernels.ops) as [string, (...a: unknown[]) => unknown][];
    const rawFns = Object.entries(native).filter(([k, v]) => typeof v === 'function' && !/^[A-Z]/.test(k) &&
      !['setThreads', 'getThreads', 'openblasSgemm'].includes(k)) as [string, (...a: unknown[]) => unknown][];
    let thrown = 0, ok = 0;
    const unclear: string[] = [];
    for (let i = 0; i < 10_000; i++) {
      const useRaw = i % 4 === 3;
      const [name, fn] = useRaw ? pick(rawFns) : pick(ops);
      // The raw binding takes one options object (mostly a junk one, sometimes junk of any kind),
      // never async here: every call returns or throws.
      const args = useRaw ? [r() < 0.9 ? junkOptions() : junk(), false] : Array.from({ length: Math.floor(r() * 4) + 1 }, () => junk());
      try {
        const out = fn(...args);
        if (out instanceof Promise) await out;
        ok++;
      } catch (e) {
        thrown++;
        if (!isClearError(e) && unclear.length < 5) unclear.push(`${name}: ${String(e)}`);
      }
    }
    expect(unclear).toEqual([]);
    expect(thrown).toBeGreaterThan(9000);
    expect(ok + thrown).toBe(10_000);
    // The process is alive and the kernels still compute correctly afterwards.
    const c = kernels.matmul(new Float32Array([1, 2, 3, 4]), new Float32Array([5, 6, 7, 8]), { m: 2, k: 2, n: 2 });
    expect(Array.from(c)).toEqual([19, 22, 43, 50]);
  });

  it('async forms reject (never crash) on malformed arguments', async () => {
    const ops = Object.entries(kernels.async) as [string, (...a: unknown[]) => Promise<unknown>][];
    for (let i = 0; i < 500; i++) {
      const [, fn] = pick(ops);
      await fn(junk(), junk(), junk()).then(() => undefined, (e) => expect(isClearError(e)).toBe(true));
    }
  });
});
