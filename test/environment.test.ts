// The trainer split: rollout → the environment scores the step's completions at once → update;
// mapLimit's bounded concurrency; PPO-style reuse (iterations); one "no filtering" convention.
import { describe, expect, it, vi } from 'vitest';
import { kernels } from '../src/index.js';
import { Model } from '../src/models/model.js';
import { mapLimit, taskEnvironment, type Environment } from '../src/rl/environment.js';
import { PRESETS } from '../src/rl/presets.js';
import { createArithTask } from '../src/rl/tasks/arith.js';
import { evaluate, trainRl, type RlOptions } from '../src/rl/trainer.js';
import { tinyArithModel } from './tiny-models.js';

const task = createArithTask({ difficulty: 1 });
const train = task.examples('train', { seed: 5, limit: 64 });

const tinyModel = tinyArithModel;

/** A toy environment: the reward is the number of '1' characters in the completion; it records its calls. */
function countingEnvironment() {
  const calls: { n: number; groups: number[] }[] = [];
  const env: Environment = {
    name: 'ones', stop: ['\n'], prompt: (ex) => `Q: ${ex.question}\nA: `,
    async score(rollouts) {
      calls.push({ n: rollouts.length, groups: rollouts.map((r) => r.group) });
      const rewards = rollouts.map((r) => [...r.completion].filter((c) => c === '1').length);
      return { rewards, correct: rewards.map((r) => r > 0), metrics: { calls: 1, chars: rollouts.reduce((a, r) => a + r.completion.length, 0) } };
    },
  };
  return { env, calls };
}

const base = (policy: Model, over: Partial<RlOptions> = {}): RlOptions => ({
  policy, steps: 2, promptsPerStep: 4, groupSize: 4, generation: 'preemptive', microBatch: 4,
  filterThreshold: 0, beta: 0, lr: 1e-2, maxNewTokens: 6, seed: 1, trainExamples: train, ...over,
});

describe('mapLimit', () => {
  it('keeps at most `limit` calls in flight and the results in input order', async () => {
    let inFlight = 0, most = 0;
    const out = await mapLimit([5, 1, 4, 2, 3, 0, 6], 3, async (x) => {
      most = Math.max(most, ++inFlight);
      await new Promise((r) => setTimeout(r, x));
      inFlight--;
      return x * 10;
    });
    expect(out).toEqual([50, 10, 40, 20, 30, 0, 60]);
    expect(most).toBe(3);
  });
  it('rejects when one call fails (no silently missing result) and checks the limit', async () => {
    await expect(mapLimit([1, 2, 3], 2, async (x) => { if (x === 2) throw new Error('boom'); return x; })).rejects.toThrow('boom');
    await expect(mapLimit([1], 0, (x) => x)).rejects.toThrow(/concurrency must be a positive integer/);
  });
});

describe('the trainer with an environment', () => {
  it('hands the environment a whole step at once (DASH and decoupled), a micro-batch at a time (per-micro-batch GRPO)', async () => {
    for (const [generation, perStep] of [['preemptive', 1], ['decoupled', 1], ['per-microbatch', 4]] as const) {
      const { env, calls } = countingEnvironment();
      const r = await trainRl(base(tinyModel(), { environment: env, generation, filterThreshold: generation === 'preemptive' ? 0 : null }));
      expect(calls.length).toBe(2 * perStep);
      expect(calls.every((c) => c.n === 16 / perStep)).toBe(true);
      if (perStep === 1) expect(calls[0].groups).toEqual([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
      // the environment's metrics reach the step metrics, summed over its calls
      expect(r.steps[0].env?.calls).toBe(perStep);
      expect(r.steps[0].env?.chars).toBeGreaterThan(0);
    }
  });
  it('a reward the environment gives really rises, and evaluate scores through the environment', async () => {
    const { env } = countingEnvironment();
    const policy = tinyModel(7);
    const before = await evaluate(policy, env, train.slice(0, 32), { maxNewTokens: 6 });
    const r = await trainRl(base(policy, { environment: env, steps: 25, promptsPerStep: 8, groupSize: 8, microBatch: 8, temperature: 1 }));
    const after = await evaluate(policy, env, train.slice(0, 32), { maxNewTokens: 6 });
    const early = r.steps.slice(0, 5).reduce((a, s) => a + s.reward, 0) / 5, late = r.steps.slice(-5).reduce((a, s) => a + s.reward, 0) / 5;
    expect(late).toBeGreaterThan(early + 0.5);
    expect(after.reward).toBeGreaterThan(before.reward);
  });
  it('rejects an environment that returns the wrong number of rewards or a non-finite one', async () => {
    const bad = (rewards: (n: number) => number[]): Environment => ({ name: 'bad', stop: [], prompt: (e) => e.question, score: async (rs) => ({ rewards: rewards(rs.length) }) });
    await expect(trainRl(base(tinyModel(), { environment: bad((n) => new Array(n - 1).fill(0)) }))).rejects.toThrow(/returned 15 rewards for 16 completions/);
    await expect(trainRl(base(tinyModel(), { environment: bad((n) => new Array(n).fill(NaN)) }))).rejects.toThrow(/not a finite number/);
    await expect(trainRl(base(tinyModel(), { environment: undefined }))).rejects.toThrow(/needs an environment or a task/);
  });
  it('taskEnvironment calls the reward with bounded concurrency and checks its values', async () => {
    let inFlight = 0, most = 0;
    const env = taskEnvironment(task, { concurrency: 2, reward: async () => { most = Math.max(most, ++inFlight); await new Promise((r) => setTimeout(r, 2)); inFlight--; return 1; } });
    const rs = train.slice(0, 6).map((e, i) => ({ example: e, prompt: task.prompt(e), completion: e.solution, group: i }));
    const out = await env.score(rs, { step: 0, seed: 0 });
    expect(out.rewards).toEqual([1, 1, 1, 1, 1, 1]);
    expect(out.correct).toEqual([true, true, true, true, true, true]);
    expect(most).toBe(2);
    const nan = taskEnvironment(task, { reward: () => Number.NaN });
    await expect(nan.score(rs, { step: 0, seed: 0 })).rejects.toThrow(/must be a finite number/);
  });
});

describe('evaluation scores with the answer checker, never the training reward', () => {
  it('a task run with a custom reward: evaluations do not call it, so a stateful reward is not consumed by them', async () => {
    let calls = 0;
    const reward = () => { calls++; return 1; };
    const policy = tinyModel(4);
    const evalExamples = train.slice(0, 10);
    await trainRl({ ...base(policy), environment: undefined, task, reward, steps: 2, evalExamples, evalEvery: 1 });
    expect(calls).toBe(2 * 16); // the two steps' completions, none of the three evaluations'
  });
});

describe('iterations (PPO-style reuse of a generated batch)', () => {
  it('μ = 2 takes two optimizer steps per batch, the second with the clipped ratio against the first log-probs', async () => {
    const env: Environment = { name: 'parity', stop: ['\n'], prompt: (ex) => ex.question, score: async (rs) => ({ rewards: rs.map((r) => r.completion.length % 2) }) };
    const one = tinyModel(5), two = tinyModel(5);
    const seen: { sequences: number; old?: readonly ArrayLike<number>[] }[] = [];
    const many = two.trainGrpoMany.bind(two);
    vi.spyOn(two, 'trainGrpoMany').mockImplementation(async (list) => {
      for (const c of list) seen.push({ sequences: c.batch.sequences.length, old: c.options.oldLogprobs });
      return many(list);
    });
    await trainRl(base(one, { environment: env, steps: 1, microBatch: 2, groupSize: 2 }));
    await trainRl(base(two, { environment: env, steps: 1, microBatch: 2, groupSize: 2, iterations: 2 }));
    expect(one.step).toBe(1);
    expect(two.step).toBe(2);
    expect(seen.length % 2).toBe(0);
    expect(seen.length).toBeGreaterThan(0);
    for (const c of seen) expect(c.old?.length).toBe(c.sequences);
    // the old log-probs are the same arrays in both updates (taken once, before the first)
    const half = seen.length / 2;
    expect(seen[0].old![0]).toBe(seen[half].old![0]);
    expect(one.getTensor('model.norm.weight')).not.toEqual(two.getTensor('model.norm.weight'));
    await expect(trainRl(base(tinyModel(), { environment: env, iterations: 2, generation: 'per-microbatch' }))).rejects.toThrow(/iterations > 1 needs/);
  });
});

describe('one "no filtering" convention', () => {
  it('null or omitted keeps every sequence in kernels.grpo and Model.trainGrpo; a negative τ is refused in both', async () => {
    const seqs = 3, tokens = 2;
    const args = {
      logprobs: new Float32Array([-1, -2, -1, -1, -3, -1]), oldLogprobs: new Float32Array([-1, -2, -1, -1, -3, -1]),
      advantages: new Float32Array([0, 1, -1]), mask: new Float32Array(6).fill(1), seqs, tokens,
    };
    expect(kernels.grpo(args).kept).toBe(3);
    expect(kernels.grpo({ ...args, filterThreshold: null }).kept).toBe(3);
    expect(kernels.grpo({ ...args, filterThreshold: 0 }).kept).toBe(2);
    expect(() => kernels.grpo({ ...args, filterThreshold: -1 })).toThrow(/filterThreshold/);
    const m = tinyModel();
    const batch = { sequences: [[1, 5, 6, 7], [1, 5, 8, 9], [1, 5, 6, 9]], from: 2 };
    expect((await m.trainGrpo(batch, { advantages: [0, 1, -1] })).kept).toBe(3);
    expect((await m.trainGrpo(batch, { advantages: [0, 1, -1], filterThreshold: 0 })).kept).toBe(2);
    await expect(m.trainGrpo(batch, { advantages: [0, 1, -1], filterThreshold: -1 })).rejects.toThrow(/filterThreshold must be a number >= 0/);
    expect(PRESETS.grpo.filterThreshold).toBeNull();
    expect(PRESETS.dash.filterThreshold).toBeGreaterThan(0);
  });
});

describe('the package entry', () => {
  it('exports the trainer, environments, presets and WST', async () => {
    const pkg = await import('../src/index.js');
    for (const name of ['trainRl', 'evaluate', 'taskEnvironment', 'mapLimit', 'trainSft', 'groupAdvantages'] as const) expect(typeof pkg[name]).toBe('function');
    expect(pkg.PRESETS.dash.generation).toBe('preemptive');
    for (const name of ['wstEnvironment', 'localStudent', 'evaluateWst', 'runWstDemo', 'builtinStudent'] as const) expect(typeof pkg.wst[name]).toBe('function');
  });
});
