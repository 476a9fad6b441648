// The RL/SFT trainer loop: advantages, schedules, the three generation modes, gradient filtering
// before the training forward, a reward that really rises, and the race's JSON record.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { Model, type GrpoStepOptions, type TrainBatch } from '../src/models/model.js';
import { groupAdvantages, learningRate, packGroups, trainRl, type RewardFn, type RlOptions } from '../src/rl/trainer.js';
import { createArithTask } from '../src/rl/tasks/arith.js';
import { tinyArithModel } from './tiny-models.js';
import { withCacheDir } from './run-cli.js';

const task = createArithTask({ difficulty: 1 });
const tmp = mkdtempSync(path.join(tmpdir(), 'wst-trainer-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Records every micro-batch the trainer hands to the policy (trainGrpo, or trainGrpoMany's list). */
function recordMicroBatches(policy: Model) {
  const calls: { batch: TrainBatch; options: GrpoStepOptions }[] = [];
  const one = policy.trainGrpo.bind(policy), many = policy.trainGrpoMany.bind(policy);
  const manySpy = vi.spyOn(policy, 'trainGrpoMany').mockImplementation(async (list) => {
    calls.push(...list);
    return many(list);
  });
  vi.spyOn(policy, 'trainGrpo').mockImplementation(async (batch, options) => {
    calls.push({ batch, options });
    return one(batch, options);
  });
  return { calls, manySpy };
}

const tinyModel = tinyArithModel;

const train = task.examples('train', { seed: 5, limit: 64 });

function base(policy: Model, over: Partial<RlOptions> = {}): RlOptions {
  return {
    task, policy, steps: 1, promptsPerStep: 4, groupSize: 2, generation: 'preemptive', microBatch: 2,
    filterThreshold: 0, beta: 0, lr: 1e-3, maxNewTokens: 6, seed: 1, trainExamples: train, ...over,
  };
}

describe('groupAdvantages', () => {
  it('normalises each group by its mean and unbiased std', () => {
    const a = groupAdvantages([1, 0, 0, 0, 2, 4, 6, 8], 4);
    const g1 = [1, 0, 0, 0], m1 = 0.25, s1 = Math.sqrt(g1.reduce((s, r) => s + (r - m1) ** 2, 0) / 3);
    const g2 = [2, 4, 6, 8], m2 = 5, s2 = Math.sqrt(g2.reduce((s, r) => s + (r - m2) ** 2, 0) / 3);
    const want = [...g1.map((r) => (r - m1) / (s1 + 1e-4)), ...g2.map((r) => (r - m2) / (s2 + 1e-4))];
    a.forEach((v, i) => expect(v).toBeCloseTo(want[i], 12));
    expect(a[0]).toBeCloseTo(0.75 / (0.5 + 1e-4), 12); // (1 - 0.25) / std, std = sqrt(0.75 / 3) = 0.5
  });
  it('gives exactly zero to uniform groups and r - mean without scaling', () => {
    expect(groupAdvantages([1, 1, 1, 0, 0, 0], 3)).toEqual([0, 0, 0, 0, 0, 0]);
    expect(groupAdvantages([3, 1, 2, 2], 2, false)).toEqual([1, -1, 0, 0]);
  });
});

describe('packGroups (DASH micro-batches of whole groups)', () => {
  const groupOf = (x: string) => Number(x.split('.')[0]);
  it('never splits a group that fits, keeps every item once, and fills first-fit largest first', () => {
    // Kept samples after filtering: groups of 8 (2-6 of 8 correct) and lone samples (1 or 7 of 8).
    const items = ['0.0', '1.0', '1.1', '1.2', '1.3', '1.4', '1.5', '1.6', '1.7', '2.0', '3.0', '3.1', '3.2', '4.0', '4.1', '4.2', '4.3', '4.4'];
    const mbs = packGroups(items, 8, groupOf);
    expect(mbs.flat().sort()).toEqual([...items].sort());
    for (const mb of mbs) expect(mb.length).toBeLessThanOrEqual(8);
    const binsOf = (g: number) => new Set(mbs.flatMap((mb, i) => (mb.some((x) => groupOf(x) === g) ? [i] : []))).size;
    for (const g of [0, 1, 2, 3, 4]) expect(binsOf(g)).toBe(1);
    expect(mbs).toEqual([
      ['1.0', '1.1', '1.2', '1.3', '1.4', '1.5', '1.6', '1.7'],
      ['4.0', '4.1', '4.2', '4.3', '4.4', '3.0', '3.1', '3.2'],
      ['0.0', '2.0'],
    ]);
    // Slicing in rollout order would have cut groups 1, 3 and 4 across micro-batches.
  });
  it('cuts groups larger than the micro-batch into full pieces and a rest', () => {
    const items = Array.from({ length: 11 }, (_, i) => `7.${i}`).concat(['9.0', '9.1']);
    const mbs = packGroups(items, 4, groupOf);
    expect(mbs.map((mb) => mb.length)).toEqual([4, 4, 3, 2]);
    expect(mbs[0]).toEqual(['7.0', '7.1', '7.2', '7.3']);
    expect(() => packGroups(items, 0, groupOf)).toThrow(/size must be a positive integer/);
  });
});

describe('learningRate', () => {
  it('warms up linearly, then follows the schedule', () => {
    const o = { lr: 1e-3, warmupSteps: 4, steps: 14 };
    expect(learningRate(o, 0)).toBeCloseTo(2.5e-4, 15);
    expect(learningRate(o, 3)).toBeCloseTo(1e-3, 15);
    expect(learningRate({ ...o, schedule: 'constant' }, 13)).toBe(1e-3);
    expect(learningRate({ ...o, schedule: 'linear' }, 9)).toBeCloseTo(5e-4, 15);
    expect(learningRate({ ...o, schedule: 'cosine' }, 4)).toBeCloseTo(1e-3, 15);
    expect(learningRate({ ...o, schedule: 'cosine' }, 9)).toBeCloseTo(5e-4, 15);
    expect(learningRate({ ...o, schedule: 'cosine', steps: 4 }, 4)).toBeCloseTo(1e-3, 15);
  });
});

describe('trainRl', () => {
  it('filters |A| <= τ before the training forward: uniform groups never reach trainGrpo', async () => {
    const policy = tinyModel();
    const { calls } = recordMicroBatches(policy);
    const r = await trainRl(base(policy, { steps: 2, reward: () => 1 }));
    expect(calls.length).toBe(0);
    expect(r.steps.map((s) => s.keptFraction)).toEqual([0, 0]);
  });

  it('DASH trains exactly the kept sequences; the baselines train all of them', async () => {
    // reward = parity of the completion's length: mixed groups are likely, uniform ones possible
    const reward: RewardFn = (_p, c) => c.length % 2;
    for (const [generation, tau] of [['preemptive', 0], ['decoupled', null]] as const) {
      const policy = tinyModel();
      const { calls } = recordMicroBatches(policy);
      const r = await trainRl(base(policy, { steps: 3, promptsPerStep: 4, groupSize: 4, microBatch: 4, generation, filterThreshold: tau, reward }));
      const trained = calls.flatMap((c) => [...c.options.advantages]);
      const total = r.steps.length * 16;
      if (tau !== null) {
        expect(trained.every((a) => Math.abs(a) > 0)).toBe(true);
        expect(trained.length).toBe(Math.round(r.steps.reduce((a, s) => a + s.keptFraction * 16, 0)));
      } else expect(trained.length).toBe(total);
    }
  });

  it('per-micro-batch generation calls generate once per micro-batch; decoupled and DASH once per step', async () => {
    const counts: Record<string, number> = {};
    for (const generation of ['per-microbatch', 'decoupled', 'preemptive'] as const) {
      const policy = tinyModel();
      const gen = vi.spyOn(policy, 'generate');
      const { calls, manySpy } = recordMicroBatches(policy);
      // 6 prompts × G 2 with micro-batch 4 (2 prompts each): 3 micro-batches per step
      await trainRl(base(policy, { steps: 2, promptsPerStep: 6, groupSize: 2, microBatch: 4, generation, filterThreshold: null, reward: (_p, c) => c.length % 2 }));
      counts[generation] = gen.mock.calls.length;
      for (const call of gen.mock.calls) expect(call[0].length).toBe(generation === 'per-microbatch' ? 4 : 12);
      expect(calls.length).toBe(2 * 3);
      // A step's micro-batches go to the engine together when they are known together.
      expect(manySpy.mock.calls.length).toBe(generation === 'per-microbatch' ? 0 : 2);
    }
    expect(counts).toEqual({ 'per-microbatch': 6, decoupled: 2, preemptive: 2 });
  });

  it('shared prompts in the training forward (sharePrefix) change the speed, not the training: same weights after 3 steps', async () => {
    const reward: RewardFn = (_p, c) => (c.length % 3) / 2;
    const run = async (sharePrefix: boolean) => {
      const policy = tinyModel(5);
      const reference = tinyModel(5);
      const { calls } = recordMicroBatches(policy);
      const r = await trainRl(base(policy, { steps: 3, promptsPerStep: 4, groupSize: 4, microBatch: 4, beta: 0.04, reference, reward, sharePrefix }));
      for (const call of calls) expect(call.options.sharePrefix).toBe(sharePrefix);
      return { r, weights: policy.tensorNames().map(({ name }) => policy.getTensor(name)) };
    };
    const a = await run(false), b = await run(true);
    expect(b.r.steps.map((s) => s.reward)).toEqual(a.r.steps.map((s) => s.reward));
    let maxDiff = 0;
    a.weights.forEach((w, t) => w.forEach((x, i) => (maxDiff = Math.max(maxDiff, Math.abs(x - b.weights[t][i])))));
    expect(maxDiff).toBeLessThan(1e-5);
    // The default: on for DASH, off for the GRPO baselines.
    for (const [generation, want] of [['preemptive', true], ['decoupled', false], ['per-microbatch', false]] as const) {
      const policy = tinyModel();
      const { calls } = recordMicroBatches(policy);
      await trainRl(base(policy, { generation, filterThreshold: null, reward: (_p, c) => c.length % 2 }));
      expect(calls.length).toBeGreaterThan(0);
      for (const call of calls) expect(call.options.sharePrefix).toBe(want);
    }
  });

  it('a threshold τ > 0 trains only completions with |A| > τ', async () => {
    const policy = tinyModel();
    const { calls } = recordMicroBatches(policy);
    const r = await trainRl(base(policy, { steps: 3, promptsPerStep: 4, groupSize: 8, microBatch: 8, filterThreshold: 0.6, reward: (_p, c) => c.length % 2 }));
    const seen = calls.flatMap((c) => [...c.options.advantages]);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((a) => Math.abs(a) > 0.6)).toBe(true);
    expect(seen.length).toBe(Math.round(r.steps.reduce((acc, s) => acc + s.keptFraction * 32, 0)));
  });

  it('per-micro-batch generation needs micro-batch to be a multiple of G; beta > 0 needs a reference', async () => {
    await expect(trainRl(base(tinyModel(), { generation: 'per-microbatch', microBatch: 3, groupSize: 2 }))).rejects.toThrow(/multiple of groupSize/);
    await expect(trainRl(base(tinyModel(), { beta: 0.04 }))).rejects.toThrow(/reference/);
  });

  it('a toy reward rises (the loop really optimises the reward) and metrics are logged per step', async () => {
    const policy = tinyModel(11);
    const metricsFile = path.join(tmp, 'toy.jsonl');
    // reward: how many of the first 4 completion characters are digits
    const reward: RewardFn = (_p, c) => [...c.slice(0, 4)].filter((ch) => ch >= '0' && ch <= '9').length / 4;
    const r = await trainRl(base(policy, { steps: 14, promptsPerStep: 8, groupSize: 8, microBatch: 16, lr: 1e-2, maxNewTokens: 4, reward, metricsFile }));
    const first = (r.steps[0].reward + r.steps[1].reward) / 2;
    const last = (r.steps[12].reward + r.steps[13].reward) / 2;
    expect(last).toBeGreaterThan(first + 0.2);
    const lines = readFileSync(metricsFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.type === 'step')).toHaveLength(14);
    const s = lines[0];
    for (const k of ['reward', 'accuracy', 'keptFraction', 'clipFraction', 'kl', 'entropy', 'completionLength', 'tokensGenerated', 'seconds', 'elapsed'])
      expect(s).toHaveProperty(k);
    expect(s.seconds.total).toBeGreaterThanOrEqual(s.seconds.generate + s.seconds.score + s.seconds.train - 1e-6);
  });
});

describe('randomReward (the control arm)', () => {
  it('is seeded, ignores its inputs, and pays with the asked rate', async () => {
    const { randomReward } = await import('../src/rl/race.js');
    const draw = async (seed: number, n: number) => {
      const f = randomReward(0.2, seed);
      const out: number[] = [];
      for (let i = 0; i < n; i++) out.push(await f(`p${i}`, i % 2 ? 'right' : 'wrong', {} as never));
      return out;
    };
    const a = await draw(5, 10000), b = await draw(5, 10000), c = await draw(6, 10000);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    expect(a.every((x) => x === 0 || x === 1)).toBe(true);
    const rate = a.reduce((x, y) => x + y, 0) / a.length;
    expect(Math.abs(rate - 0.2)).toBeLessThan(0.02);
  });
});

describe('meanInterval (the 95 % t-interval of a paired difference)', () => {
  it('matches a hand computation and degenerates to the mean for one sample', async () => {
    const { meanInterval, sampleSd } = await import('../src/rl/race.js');
    const xs = [0.02, -0.01, 0.04];
    const m = 0.05 / 3, sd = Math.sqrt(((0.02 - m) ** 2 + (-0.01 - m) ** 2 + (0.04 - m) ** 2) / 2);
    expect(sampleSd(xs)).toBeCloseTo(sd, 12);
    const r = meanInterval(xs);
    expect(r.mean).toBeCloseTo(m, 12);
    expect(r.high - r.mean).toBeCloseTo((4.303 * sd) / Math.sqrt(3), 12);
    expect(meanInterval([0.3])).toEqual({ mean: 0.3, low: 0.3, high: 0.3, n: 1 });
  });
});

describe('runRace', () => {
  it('writes the bench JSON (arms, time reductions), the SVG and per-arm metrics on a tiny run', async () => {
    await withCacheDir(path.join(tmp, 'cache'), async () => {
      const { runRace, raceTable } = await import('../src/rl/race.js');
      const outDir = path.join(tmp, 'race');
      const r = await runRace({
        arms: ['grpo', 'grpo_decoupled', 'dash', 'dash_control'], steps: 1, promptsPerStep: 2, groupSize: 2, microBatch: 2, evalProblems: 8,
        evalEvery: 0, lr: 1e-4, maxNewTokens: 8, seed: 1, sft: { steps: 2, batchSize: 2 }, outDir, log: () => undefined, repeat: 3, seeds: 2,
      });
      const json = JSON.parse(readFileSync(path.join(outDir, 'bench-dash.json'), 'utf8'));
      for (const name of ['grpo', 'grpo_decoupled', 'dash']) {
        expect(json.arms[name].seconds).toBeGreaterThan(0);
        expect(json.arms[name].accuracy).toBeGreaterThanOrEqual(0);
        expect(json.arms[name].accuracy).toBeLessThanOrEqual(1);
        expect(json.arms[name].phases).toHaveProperty('generate');
        // Three interleaved runs (same final accuracy, checked inside), the median reported.
        const runs = [...json.arms[name].secondsRuns].sort((a: number, b: number) => a - b);
        expect(runs.length).toBe(4); // 3 runs of seed 1, 1 of seed 2
        expect(json.arms[name].seconds).toBe((runs[1] + runs[2]) / 2);
      }
      expect(json.settings.repeat).toBe(3);
      // two RL seeds: per arm both seeds' accuracies on the two held-out sets, mean ± sd, the paired difference
      for (const name of ['grpo', 'dash']) {
        expect(json.arms[name].seeds.map((x: { seed: number }) => x.seed)).toEqual([1, 2]);
        const per = json.arms[name].seeds.map((x: { accuracy: number; accuracyB: number }) => (x.accuracy + x.accuracyB) / 2);
        expect(json.arms[name].accuracy_mean).toBeCloseTo((per[0] + per[1]) / 2, 12);
      }
      expect(json.accuracy_diff_vs_grpo.n).toBe(2);
      expect(json.accuracy_diff_vs_grpo.low).toBeLessThanOrEqual(json.accuracy_diff_vs_grpo.mean);
      expect(json.time_reduction_vs_grpo).toBeCloseTo(1 - json.arms.dash.seconds / json.arms.grpo.seconds, 12);
      expect(json.time_reduction_vs_decoupled).toBeCloseTo(1 - json.arms.dash.seconds / json.arms.grpo_decoupled.seconds, 12);
      expect(json.accuracy_gain_dash_vs_control).toBeCloseTo(json.arms.dash.accuracy - json.arms.dash_control.accuracy, 12);
      expect(raceTable(r)).toMatch(/random-reward control/);
      expect(readFileSync(path.join(outDir, 'accuracy-vs-time.svg'), 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>\n$/);
      for (const f of r.files.metrics) expect(existsSync(f)).toBe(true);
      expect(raceTable(r)).toMatch(/DASH time reduction vs per-micro-batch GRPO/);
      const { writeDemoReport } = await import('../src/rl/report.js');
      const md = readFileSync(await writeDemoReport(r, outDir), 'utf8');
      expect(md).toMatch(/## Where the time goes/);
    });
  });
});

describe('RL checkpoint and resume', () => {
  it('resuming from a mid-run checkpoint takes exactly the steps an uninterrupted run takes', async () => {
    const reward: RewardFn = (_p, c) => (c.includes('1') ? 1 : 0) + c.length * 0.01;
    const full = tinyModel(11);
    await trainRl(base(full, { steps: 4, reward }));
    const dir = path.join(tmp, 'rl-ckpt');
    const first = tinyModel(11);
    await trainRl(base(first, { steps: 2, reward, checkpointDir: dir, checkpointEvery: 2 }));
    const resumed = await Model.load(dir);
    expect(resumed.step).toBe(2);
    await trainRl(base(resumed, { steps: 4, reward, resume: true }));
    for (const { name } of full.tensorNames())
      expect(Buffer.from(resumed.getTensor(name).buffer).equals(Buffer.from(full.getTensor(name).buffer)), name).toBe(true);
    await expect(trainRl(base(tinyModel(), { steps: 1, reward, resume: true }))).rejects.toThrow(/not loaded from an RL checkpoint/);
  });

  it('resume rewrites the metrics after the checkpoint (no step twice) and refuses changed settings unless forced', async () => {
    const reward: RewardFn = (_p, c) => c.length % 2;
    const dir = path.join(tmp, 'rl-ckpt2'), metricsFile = path.join(tmp, 'rl-ckpt2.jsonl');
    await trainRl(base(tinyModel(12), { steps: 2, reward, checkpointDir: dir, checkpointEvery: 2, metricsFile }));
    // a run killed after logging step 3 (and half a line) but before its next checkpoint
    const { appendFileSync } = await import('node:fs');
    appendFileSync(metricsFile, JSON.stringify({ type: 'step', step: 3 }) + '\n{"type":"st');
    await expect(trainRl(base(await Model.load(dir), { steps: 4, reward, resume: true, metricsFile, lr: 5e-3 }))).rejects.toThrow(/settings differ from the checkpoint's \(lr 0.001 → 0.005\)/);
    await trainRl(base(await Model.load(dir), { steps: 4, reward, resume: true, metricsFile }));
    const steps = readFileSync(metricsFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.type === 'step').map((r) => r.step);
    expect(steps).toEqual([1, 2, 3, 4]);
    const forced = await trainRl(base(await Model.load(dir), { steps: 3, reward, resume: true, lr: 5e-3, resumeForce: true }));
    expect(forced.steps.map((m) => m.step)).toEqual([3]);
  });
});
