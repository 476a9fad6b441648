// Issue 18's real-shape measurements at the tiny shape: `bench scale` end to end (ours, and the
// PyTorch peer when $WST_DASH_PYTHON or python3 imports torch) and `bench dash --shape`.
import { describe, expect, it } from 'vitest';
import { probeTorch, scaleConfig, torchPython, type ScaleResult } from '../src/bench/scale.js';
import { lowerHalfEnvironment, runScaleRace, syntheticTokenizer } from '../src/rl/scale-race.js';
import { runCli } from './run-cli.js';

const probe = probeTorch(torchPython(), 'cpu');
const torchNote = 'skipped' in probe ? `skipped: ${probe.skipped}` : `torch ${probe.version}`;

describe('bench scale (tiny shape, CPU)', () => {
  let result: ScaleResult | undefined;
  const run = async () => {
    if (result) return result;
    const r = await runCli(['bench', 'scale', '--shape', 'tiny', '--device', 'cpu', '--reps', '1', '--json'], { WST_DASH_PYTHON: torchPython() });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.length).toBe(1);
    result = JSON.parse(lines[0]) as ScaleResult;
    return result;
  };

  it('measures our train step and fixed-length generation at the shape, with peak memory', async () => {
    const r = await run();
    expect(r.shape).toBe('tiny');
    expect(r.config.architecture).toBe('qwen2');
    expect(r.config.attentionBias).toBe(true);
    expect(r.config.eosTokenId).toBeNull();
    expect(r.dtype).toBe('fp32'); // the CPU's default
    expect(r.ours.map((o) => o.phase)).toEqual(['generate', 'train']);
    for (const o of r.ours) {
      expect(o.tokensPerSecond).toBeGreaterThan(0);
      expect(o.maxRssMB).toBeGreaterThan(0);
    }
    expect(r.ours[0].fixedLength).toBe(true);
    expect(Number.isFinite(r.ours[1].loss)).toBe(true);
    // ln(512) ≈ 6.24: a random model's loss over a 512-token vocabulary.
    expect(r.ours[1].loss).toBeGreaterThan(5.5);
    expect(r.ours[1].loss).toBeLessThan(7);
  }, 60_000);

  it(`the PyTorch peer in the same call (${torchNote})`, async () => {
    const r = await run();
    if ('skipped' in probe) {
      // No torch here: the result says why, and no ratio is invented.
      expect(r.torch.skipped).toMatch(/^torch peer skipped: .*(torch|WST_DASH_PYTHON)/);
      expect(r.torch.rows).toEqual([]);
      expect(r.ratios).toEqual({});
      console.warn(`bench scale test: the torch part is skipped (${probe.skipped})`);
      return;
    }
    const eager = r.torch.rows.filter((t) => t.mode === 'eager');
    expect(eager.map((t) => t.phase)).toEqual(['generate', 'train']);
    for (const t of eager) expect(t.tokensPerSecond).toBeGreaterThan(0);
    expect(r.torch.rows.some((t) => t.mode === 'compile')).toBe(false); // off on the CPU by default
    expect(r.ratios.train_vs_eager).toBeCloseTo(r.ours[1].tokensPerSecond / eager[1].tokensPerSecond!, 6);
    expect(r.ratios.generate_vs_eager).toBeGreaterThan(0);
  }, 60_000);

  it('--device cuda: measured where a GPU is, else the table still prints and the exit status says why', async () => {
    // Without nvidia-smi the memory poller must not take the process down (a child that failed to
    // spawn, killed, signals the whole process group), and a missing Python is a reason, not a crash.
    const r = await runCli(['bench', 'scale', '--shape', 'tiny', '--device', 'cuda', '--reps', '1', '--json'], { WST_DASH_PYTHON: '/nonexistent/python' });
    const result = JSON.parse(r.stdout.trim().split('\n').pop()!) as ScaleResult;
    expect(result.torch.skipped).toMatch(/^torch peer skipped: \/nonexistent\/python could not be run/);
    if (r.code === 0) {
      for (const o of result.ours) expect(o.tokensPerSecond).toBeGreaterThan(0);
    } else {
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split('\n').pop()).toMatch(/^wst-dash bench scale: the model could not be created: /);
      expect(result.ours.map((o) => o.error)).toEqual([expect.stringMatching(/could not be created/), expect.stringMatching(/could not be created/)]);
    }
  }, 60_000);

  it('bad options are one-line errors naming the option', async () => {
    for (const [args, msg] of [
      [['bench', 'scale', '--shape', 'qwen3'], /^wst-dash bench scale: --shape must be one of qwen2.5-0.5b, tiny, got "qwen3"$/],
      [['bench', 'scale', '--shape', 'tiny', '--new-tokens', '0'], /^wst-dash bench scale: --new-tokens must be an integer >= 1, got "0"$/],
      [['bench', 'scale', '--shape', 'tiny', '--torch', 'yes'], /^wst-dash bench scale: --torch must be auto or off, got "yes"$/],
      [['bench', 'dash', '--new-tokens', '64'], /^wst-dash bench dash: --new-tokens needs --shape/],
      [['bench', 'dash', '--shape', 'tiny', '--seeds', '2'], /^wst-dash bench dash: --seeds is for the built-in race/],
    ] as const) {
      const r = await runCli([...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim(), args.join(' ')).toMatch(msg);
    }
  }, 60_000);
});

describe('bench dash --shape (tiny)', () => {
  it('synthetic text: one character per token id, and a reward with signal', async () => {
    const tok = syntheticTokenizer(scaleConfig('qwen2.5-0.5b').vocabSize);
    expect(tok.vocabSize).toBe(151936);
    const ids = [4, 100, 75000, 151935];
    expect(tok.encode(tok.decode(ids))).toEqual(ids);
    const env = lowerHalfEnvironment(tok);
    const ex = { id: 'x', question: '', answer: '', solution: '' };
    const r = await env.score([
      { example: ex, prompt: '', completion: tok.decode([5, 6, 151000]), group: 0 },
      { example: ex, prompt: '', completion: tok.decode([5, 150000, 151000]), group: 0 },
    ], { step: 0, seed: 0 });
    expect(r.rewards).toEqual([1, 0]);
  });

  it('races per-micro-batch GRPO and DASH on a random model, fixed-length completions, wall time only', async () => {
    const lines: string[] = [];
    const r = await runScaleRace({ shape: 'tiny', steps: 1, promptsPerStep: 2, promptLen: 8, maxNewTokens: 12, log: (l) => lines.push(l) });
    expect(r.note).toMatch(/accuracy .* mean nothing/);
    expect(r.dtype).toBe('fp32');
    expect(lines.join('\n')).toMatch(/accuracy .* mean nothing/);
    expect(Object.keys(r.arms)).toEqual(['dash', 'grpo']); // DASH first: a run cut by a timeout still has it
    const { grpo, dash } = r.arms;
    expect(grpo!.generateCalls).toBe(2); // one per micro-batch of 8 = one prompt's group
    expect(dash!.generateCalls).toBe(1);
    for (const a of [grpo!, dash!]) {
      expect(a.fixedLength).toBe(true);
      expect(a.tokensGenerated).toBe(2 * 8 * 12);
      expect(a.seconds).toBeGreaterThan(0);
    }
    expect(grpo!.keptFraction).toBe(1);
    expect(grpo!.phases.score).toBeGreaterThan(0); // the reference forward (β 0.04)
    expect(r.time_reduction_vs_grpo).toBeCloseTo(1 - dash!.seconds / grpo!.seconds, 9);
  }, 30_000);
});
