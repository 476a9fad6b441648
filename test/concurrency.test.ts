// Many Promise-form calls in flight at once (several libuv workers sharing one thread pool) give
// the same results as the same calls made one by one, and the event loop stays free meanwhile.
import { describe, expect, it } from 'vitest';
import { kernels } from '../src/index.js';
import { parseConfig } from '../src/models/config.js';
import { Model } from '../src/models/model.js';
import { randomF32 } from './helpers.js';

describe('concurrency', () => {
  it('native kernels flush subnormals in their own tasks only: JavaScript on the same thread keeps them', () => {
    // The CPU tasks run with FTZ/DAZ (native/cpu/threadpool.h); a sync call runs on this thread and
    // must hand back its floating-point mode, or double arithmetic here would flush too.
    const values = new Float64Array([2.2250738585072014e-308, 2]);  // read at run time, not folded
    // Inside the native call a subnormal input counts as zero (DAZ): 1e-39 * 1 -> 0 ...
    const tiny = new Float32Array([1e-39, 3e-39]);
    expect(tiny[0]).toBeGreaterThan(0);
    // (The CUDA backend runs matmul on the device, whose fp32 GEMM keeps subnormals: there only the
    // JavaScript half of this check applies. Seen on an H200, 2026-11-27.)
    const flushed = kernels.matmul(tiny, new Float32Array([1, 1]), { m: 1, k: 2, n: 1 });
    if (kernels.backend === 'cpu') expect(flushed[0]).toBe(0);
    else expect(flushed[0]).toBeCloseTo(4e-39, 44);
    // ... and a pooled GEMM as well.
    const a = randomF32(128 * 128, 1), b = randomF32(128 * 128, 2);
    kernels.matmul(a, b, { m: 128, k: 128, n: 128 });
    // Back in JavaScript on the same thread, doubles keep their subnormals.
    const half = values[0] / values[1];
    expect(half).toBeGreaterThan(0);
    expect(half * values[1]).toBe(values[0]);
  });

  it('concurrent async kernels equal sequential sync ones', async () => {
    const jobs = Array.from({ length: 24 }, (_, i) => {
      const m = 40 + i, k = 70, n = 33 + (i % 5);
      return { a: randomF32(m * k, i), b: randomF32(k * n, 100 + i), opts: { m, k, n } };
    });
    const expected = jobs.map((j) => kernels.matmul(j.a, j.b, j.opts));
    const q = randomF32(2 * 50 * 4 * 16, 7), kv = randomF32(2 * 50 * 2 * 16, 8);
    const attArgs = { q, k: kv, v: kv, batch: 2, heads: 4, kvHeads: 2, seqQ: 50, seqK: 50, headDim: 16, causal: true };
    const attExpected = kernels.attention(attArgs);
    const [mats, att] = await Promise.all([
      Promise.all(jobs.map((j) => kernels.async.matmul(j.a, j.b, j.opts))),
      Promise.all(Array.from({ length: 8 }, () => kernels.async.attention(attArgs))),
    ]);
    mats.forEach((c, i) => expect(Buffer.from(c.buffer).equals(Buffer.from(expected[i].buffer))).toBe(true));
    att.forEach((o) => expect(Buffer.from(o.buffer).equals(Buffer.from(attExpected.buffer))).toBe(true));
  });

  it('thousands of back-to-back parallel regions of varying task counts stay exact (thread-pool stress)', async () => {
    // A worker waking late from one parallel region must never run or count a task of the next:
    // alternate regions with few and many tasks, sync and async at once, and check every result.
    const shapes = [[97, 120, 96], [300, 64, 200], [130, 200, 97], [64, 700, 130]] as const;
    const inputs = shapes.map(([m, k, n], i) => ({ a: randomF32(m * k, 50 + i), b: randomF32(k * n, 60 + i), o: { m, k, n } }));
    const want = inputs.map((x) => kernels.matmul(x.a, x.b, x.o));
    const same = (c: Float32Array, i: number) => Buffer.from(c.buffer).equals(Buffer.from(want[i].buffer));
    let bad = 0;
    for (let round = 0; round < 150; round++) {
      const asyncs = inputs.map((x) => kernels.async.matmul(x.a, x.b, x.o));
      for (let i = 0; i < inputs.length; i++) if (!same(kernels.matmul(inputs[i].a, inputs[i].b, inputs[i].o), i)) bad++;
      (await Promise.all(asyncs)).forEach((c, i) => { if (!same(c, i)) bad++; });
    }
    expect(bad).toBe(0);
  });

  it('a long async kernel leaves the event loop free', async () => {
    const n = 1200;
    const a = randomF32(n * n, 1), b = randomF32(n * n, 2);
    let timerFiredFirst: boolean | undefined;
    const timer = new Promise<void>((resolve) => setTimeout(() => { timerFiredFirst ??= true; resolve(); }, 0));
    const work = kernels.async.matmul(a, b, { m: n, k: n, n }).then(() => { timerFiredFirst ??= false; });
    await Promise.all([timer, work]);
    expect(timerFiredFirst).toBe(true);
  });

  it('two models generating and training at the same time do not disturb each other', async () => {
    const cfg = parseConfig({ model_type: 'llama', vocab_size: 50, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2,
      num_attention_heads: 4, num_key_value_heads: 2, bos_token_id: 1, eos_token_id: 2 });
    const prompts = [[3, 4, 5], [6, 7], [8, 9, 10, 11]];
    const solo = Model.create(cfg, { seed: 9, std: 0.4 });
    const ref = await solo.generate(prompts, { maxNewTokens: 16, temperature: 1, seed: 4 });
    const a = Model.create(cfg, { seed: 9, std: 0.4 });
    const b = Model.create(cfg, { seed: 10, std: 0.4 });
    const [ga] = await Promise.all([
      a.generate(prompts, { maxNewTokens: 16, temperature: 1, seed: 4 }),
      (async () => {
        for (let i = 0; i < 3; i++) {
          await b.trainSft({ sequences: prompts, from: 1 });
          await b.optimizerStep({ lr: 1e-2 });
        }
      })(),
      b.generate(prompts, { maxNewTokens: 16, temperature: 1, seed: 4 }),
    ]);
    expect(ga.map((g) => g.ids)).toEqual(ref.map((g) => g.ids));
  });
});
