// WST end to end: `train wst` / `eval wst` on GSM8K with tiny local HF-folder models (a child
// process, as a user runs it), and the embedded `demo wst` on shortened warm-ups.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tinyTextModelFolder } from './tiny-models.js';
import { repoRoot, runCli, sharedDir, withCacheDir } from './run-cli.js';

const root = repoRoot, shared = sharedDir;
const gsm8kTrain = path.join(shared, 'data/gsm8k.train.jsonl');
const tmp = mkdtempSync(path.join(tmpdir(), 'wst-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const cli = (...args: string[]) => runCli(args, { WST_DASH_DATA: path.join(shared, 'data') });

const tinyFolder = (name: string, hidden: number, seed: number) => tinyTextModelFolder(tmp, name, hidden, seed);

describe('train wst / eval wst with local HF-folder models', () => {
  it('rejects a missing student or teacher with a one-line usage error', async () => {
    const r = await cli('train', 'wst', '--task', 'gsm8k', '--out', path.join(tmp, 'x'));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--student DIR \(a local model\) or --student-url URL \(a server\) is required with --task gsm8k/);
    const t = await cli('train', 'wst', '--task', 'nope', '--out', path.join(tmp, 'x'));
    expect(t.code).toBe(2);
    expect(t.stderr).toMatch(/--task must be ops, arith, gsm8k, math500 or hh-rlhf/);
    const a = await cli('train', 'wst', '--algo', 'ppo', '--out', path.join(tmp, 'x'));
    expect(a.code).toBe(2);
    expect(a.stderr).toMatch(/--algo must be dash, grpo or grpo_decoupled/);
    const steps = await cli('demo', 'wst', '--steps', '0');
    expect(steps.code).toBe(2);
    expect(steps.stderr).toMatch(/--steps must be an integer >= 1/);
    const seeds = await cli('bench', 'dash', '--seeds', 'x');
    expect(seeds.code).toBe(2);
    expect(seeds.stderr).toMatch(/--seeds must be an integer >= 1/);
    const help = await cli('eval', 'wst', '--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/misleading/);
  });

  it('help per command group, --version, negative numbers range-checked, stray arguments and --group 1 refused', async () => {
    const help = await cli('train', '--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/train dash/);
    expect(help.stdout).toMatch(/train wst/);
    const v = await cli('--version');
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toBe(JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version);
    const neg = await cli('train', 'dash', '--steps', '-5', '--out', path.join(tmp, 'n'));
    expect(neg.code).toBe(2);
    expect(neg.stderr).toMatch(/--steps must be an integer >= 1, got "-5"/);
    const stray = await cli('eval', 'wst', 'extra');
    expect(stray.code).toBe(2);
    expect(stray.stderr).toMatch(/unexpected argument "extra"/);
    const teacher = await tinyFolder('g-teacher', 16, 1), student = await tinyFolder('g-student', 16, 2);
    const g1 = await cli('train', 'wst', '--task', 'gsm8k', '--teacher', teacher, '--student', student, '--group', '1', '--out', path.join(tmp, 'g'));
    expect(g1.code).toBe(2);
    expect(g1.stderr).toMatch(/--group must be an integer >= 2/);
  });

  it('one run per --out: a live lock refuses, a stale one (dead pid) is taken over', async () => {
    const { mkdirSync, writeFileSync } = await import('node:fs');
    const out = path.join(tmp, 'locked');
    mkdirSync(out, { recursive: true });
    writeFileSync(path.join(out, '.wst-dash.lock'), String(process.pid));
    const teacher = await tinyFolder('l-teacher', 16, 1), student = await tinyFolder('l-student', 16, 2);
    const busy = await cli('train', 'wst', '--task', 'gsm8k', '--teacher', teacher, '--student', student, '--out', out, '--steps', '1');
    expect(busy.code).toBe(2);
    expect(busy.stderr).toMatch(new RegExp(`in use by another run \\(pid ${process.pid}\\)`));
    const { lockOutDir } = await import('../src/cli/lock.js');
    writeFileSync(path.join(out, '.wst-dash.lock'), '999999999');
    const release = lockOutDir(out);
    expect(readFileSync(path.join(out, '.wst-dash.lock'), 'utf8')).toBe(String(process.pid));
    release();
    expect(existsSync(path.join(out, '.wst-dash.lock'))).toBe(false);
  });

  it.skipIf(!existsSync(gsm8kTrain))('train wst --task gsm8k runs end to end, checkpoints, resumes; eval wst prints the table (skips without ../shared/data)', async () => {
    const teacher = await tinyFolder('teacher', 16, 1), student = await tinyFolder('student', 32, 2);
    const out = path.join(tmp, 'run');
    const args = ['train', 'wst', '--task', 'gsm8k', '--teacher', teacher, '--student', student, '--out', out, '--prompts', '2', '--group', '2',
      '--micro-batch', '2', '--max-student-tokens', '6', '--max-instruction-tokens', '6', '--eval-queries', '2', '--checkpoint-every', '1', '--train-queries', '50'];
    const r = await cli(...args, '--steps', '2');
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(res.algo).toBe('dash');
    expect(existsSync(path.join(res.teacher, 'model.safetensors'))).toBe(true);
    const steps = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((x) => x.type === 'step');
    expect(steps.length).toBe(2);
    for (const s of steps) {
      expect(s.env.student_answers).toBe(4);
      expect(s.env.student_prompt_tokens).toBeGreaterThan(0);
      expect(s.seconds.score).toBeGreaterThan(0);
    }
    const resumed = await cli(...args, '--steps', '3', '--resume');
    expect(resumed.code, resumed.stderr).toBe(0);
    const all = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((x) => x.type === 'step');
    expect(all.map((s) => s.step)).toEqual([1, 2, 3]);
    const e = await cli('eval', 'wst', '--task', 'gsm8k', '--student', student, '--untrained', teacher, '--teacher', res.teacher, '--fixed', "Let's think step by step.", '--limit', '3', '--max-student-tokens', '4', '--max-instruction-tokens', '4', '--json');
    expect(e.code, e.stderr).toBe(0);
    const table = JSON.parse(e.stdout);
    expect(Object.keys(table.teachers)).toEqual(['none', "fixed: Let's think step by step.", 'untrained', 'trained']);
    for (const t of Object.values(table.teachers) as { accuracy: number; misleading: number; helped: number }[])
      for (const k of ['accuracy', 'misleading', 'helped'] as const) expect(t[k]).toBeGreaterThanOrEqual(0);
  }, 120_000);
});

describe('demo wst (shortened warm-ups)', () => {
  it('writes the report, plots, per-query JSONL and a JSON with every teacher, the gain and both trainings', async () => {
    await withCacheDir(path.join(tmp, 'cache'), async () => {
      const { runWstDemo, wstDemoTable } = await import('../src/wst/demo.js');
      const outDir = path.join(tmp, 'demo');
      const r = await runWstDemo({
        outDir, steps: 2, promptsPerStep: 2, groupSize: 4, evalQueries: 12, curveQueries: 6, evalEvery: 1, arms: ['dash', 'grpo'], seed: 1,
        warmups: { student: { steps: 3 }, teacher: { steps: 3 } }, log: () => undefined,
      });
      for (const k of ['none', 'fixed_best', 'untrained', 'strong', 'trained'] as const) {
        expect(r.teachers[k].accuracy).toBeGreaterThanOrEqual(0);
        expect(r.teachers[k].n).toBe(12);
      }
      expect(r.time_reduction_vs_grpo).toBeCloseTo(1 - r.arms.dash!.seconds / r.arms.grpo!.seconds, 12);
      expect(r.accuracy_dash).toBe(r.teachers.trained.accuracy);
      expect(typeof r.accuracy_grpo).toBe('number');
      expect(r.arms.dash!.curve.map((c) => c.step)).toEqual([0, 1, 2]);
      for (const f of Object.values(r.files)) expect(existsSync(f), f).toBe(true);
      expect(readFileSync(r.files.bars, 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>$/);
      expect(readFileSync(r.files.queries, 'utf8').trim().split('\n').length).toBe(12 * (1 + 5 + 2 + 2));
      expect(wstDemoTable(r)).toMatch(/DASH time reduction vs per-micro-batch GRPO/);
      expect(existsSync(path.join(outDir, 'teacher-dash', 'model.safetensors'))).toBe(true);
    });
  }, 120_000);
});
