// The CLI, run as a user runs it (a child process), on the real fixtures when present.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readGguf } from '../src/models/gguf.js';
import { loadCheckpoint } from '../src/models/safetensors.js';
import { referenceLogits } from './reference/llama.js';
import { runCli, sharedDir } from './run-cli.js';
import { tinyTextModelFolder } from './tiny-models.js';

const shared = sharedDir;
const stories = path.join(shared, 'models/stories260K');
const gsm8k = path.join(shared, 'data/gsm8k.test.jsonl');

const cli = (...args: string[]) => runCli(args);

describe('cli', () => {
  it('prints usage and rejects unknown commands and bad options with exit code 2', async () => {
    const unknown = await cli('frobnicate');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command/);
    const bad = await cli('logits', '--model', '/nonexistent', '--ids', 'a,b');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--ids must hold non-negative integers/);
    const missing = await cli('generate', '--ids', '1');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--model DIR is required/);
    const help = await cli('bench', 'dash', '--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--control/);
    const device = await cli('generate', '--model', '/nonexistent', '--ids', '1', '--device', 'gpu');
    expect(device.code).toBe(2);
    expect(device.stderr).toMatch(/--device must be cpu or cuda/);
  });

  it('help on every command: each option on one line with what it does, only the options the command reads', async () => {
    const usage = await cli('--help');
    const names = [...usage.stdout.matchAll(/^  (\S+(?: [a-z]+)?)\s{2,}/gm)].map((m) => m[1]);
    expect(names.length).toBeGreaterThan(15);
    for (const name of names) {
      const h = await cli(...name.split(' '), '--help');
      expect(h.code, name).toBe(0);
      const lines = h.stdout.split('\n').filter((l) => l.startsWith('  --'));
      expect(lines.length, name).toBeGreaterThan(0);
      for (const l of lines) expect(l, `${name}: ${l}`).toMatch(/^  --[a-z-]+(?: \S+)?(?: \.\.\.)?\s+\S.{8,}/);
    }
    const dash = await cli('train', 'dash', '--help');
    expect(dash.stdout).toMatch(/--tau T\s+gradient filter.*\(default 0\.4/);
    expect(dash.stdout).toMatch(/--checkpoint-every N\s+.*\(default 10/);
    expect(dash.stdout).not.toMatch(/--generation|--batch-size/);
    const sft = await cli('train', 'sft', '--help');
    expect(sft.stdout).toMatch(/--batch-size N\s+examples per step \(default 16\)/);
    expect(sft.stdout).not.toMatch(/--tau|--group|--prompts|--resume/);
    const refused = await cli('train', 'sft', '--tau', '0.3', '--out', '/tmp/never');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/Unknown option '--tau'/);
  });

  it('meaningless input is a one-line error: an empty data file, a generation past the context, a missing data folder', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'wst-cli-empty-'));
    try {
      const empty = path.join(dir, 'empty.jsonl');
      writeFileSync(empty, '\n');
      const e = await cli('eval', '--task', 'gsm8k', '--file', empty, '--model', dir);
      expect(e.code).toBe(1);
      expect(e.stderr.trim()).toBe(`wst-dash eval: ${empty}: no records (the file is empty)`);
      const c = await cli('check-answers', '--task', 'math500', '--file', empty);
      expect(c.code).toBe(1);
      expect(c.stderr).toMatch(/no records/);
      const model = await tinyTextModelFolder(dir, 'm', 16, 1); // max_position_embeddings 2048
      const long = await cli('generate', '--model', model, '--ids', '1,2', '--max-new-tokens', '100000');
      expect(long.code).toBe(2);
      expect(long.stderr.trim()).toBe("wst-dash generate: --max-new-tokens 100000 does not fit the model's context of 2048 positions (prompt + new tokens); use at most 2047");
      const data = await cli('eval', '--task', 'gsm8k', '--model', model, '--data-dir', path.join(dir, 'nope'));
      expect(data.code).toBe(2);
      expect(data.stderr).toMatch(/--data-dir .*nope: not a folder/);
      const missing = await runCli(['eval', '--task', 'gsm8k', '--model', model, '--data-dir', dir], { WST_DASH_CACHE: path.join(dir, 'cache'), WST_DASH_RAW_URL: 'http://127.0.0.1:9' });
      expect(missing.code).toBe(1);
      expect(missing.stderr.trim().split("\n").pop()).toMatch(/^wst-dash eval: data file gsm8k\.train\.jsonl: not in .* and the download failed \(.*\); point at a folder holding it with --data-dir or give --file$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('negative and out-of-range numbers name the option and its range (the cases users hit)', async () => {
    const cases: [string[], RegExp][] = [
      [['train', 'dash', '--steps', '-5', '--out', '/tmp/never'], /--steps must be an integer >= 1, got "-5"/],
      [['train', 'grpo', '--temperature', '-1', '--out', '/tmp/never'], /--temperature must be >= 0, got -1/],
      [['generate', '--model', '/nonexistent', '--ids', '1', '--temperature', '-1'], /--temperature must be >= 0, got -1/],
      [['train', 'dash', '--seed', '-1', '--out', '/tmp/never'], /--seed must be an integer >= 0, got "-1"/],
      [['generate', '--model', '/nonexistent', '--ids', '1', '--top-k', '-1'], /--top-k must be an integer >= 0, got "-1"/],
      [['train', 'dash', '--tau', '-1', '--out', '/tmp/never'], /--tau must be >= 0, got -1/],
      [['generate', '--model', '/nonexistent', '--ids', '1', '--max-new-tokens', '-3'], /--max-new-tokens must be an integer >= 1, got "-3"/],
      [['demo', '--eval-problems', '-2', '--out', '/tmp/never'], /--eval-problems must be an integer >= 1, got "-2"/],
      [['train', 'dash', '--group', '1', '--out', '/tmp/never'], /--group must be an integer >= 2, got "1"/],
    ];
    for (const [args, message] of cases) {
      const r = await cli(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(message);
      expect(r.stderr.trim().split('\n').filter((l) => !l.startsWith('wst-dash demo: writing to')).length, args.join(' ')).toBe(1);
    }
  });

  it('demo says where it writes in its first line (and --out moves it)', async () => {
    const out = path.join(tmpdir(), 'wst-demo-out-never-written');
    const r = await cli('demo', '--out', out, '--eval-problems', '0');
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')[0]).toBe(`wst-dash demo: writing to ${out}`);
    const w = await cli('demo', 'wst', '--out', out, '--steps', '0');
    expect(w.stderr.split('\n')[0]).toBe(`wst-dash demo wst: writing to ${out}`);
    expect(existsSync(out)).toBe(false);
  });

  describe.skipIf(!existsSync(stories))('on stories260K', () => {
    it('logits --json matches the float64 reference (<= 1e-4 abs)', async () => {
      const { stdout, code } = await cli('logits', '--model', stories, '--ids', '1,461,401,13', '--json');
      expect(code).toBe(0);
      const { logits } = JSON.parse(stdout) as { logits: number[] };
      const { config, tensors } = await loadCheckpoint(stories);
      const ref = referenceLogits(config, new Map([...tensors].map(([k, t]) => [k, t.data])), [1, 461, 401, 13]);
      expect(logits.length).toBe(config.vocabSize);
      for (let v = 0; v < logits.length; v++) expect(Math.abs(logits[v] - ref[3][v])).toBeLessThan(1e-4);
    });

    it('generate --json is greedy by default and reproduces the reference ids', async () => {
      const { stdout, code } = await cli('generate', '--model', stories, '--ids', '1', '--max-new-tokens', '8', '--json');
      expect(code).toBe(0);
      expect(JSON.parse(stdout).ids).toEqual([461, 461, 401, 401, 401, 461, 378, 455]);
    });

    it('export gguf writes a file llama.cpp can read (f16)', async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'wst-gguf-'));
      try {
        const out = path.join(dir, 'stories.gguf');
        const { code } = await cli('export', 'gguf', '--model', stories, '--out', out, '--dtype', 'f16');
        expect(code).toBe(0);
        const g = await readGguf(out);
        expect(g.tensors.size ?? (g.tensors as unknown as unknown[]).length).toBeGreaterThan(0);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  it.skipIf(!existsSync(gsm8k))('check-answers agrees on every GSM8K test row', async () => {
    const { stdout, code } = await cli('check-answers', '--task', 'gsm8k', '--file', gsm8k, '--json');
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual({ n: 1319, agree: 1319 });
  });
});
