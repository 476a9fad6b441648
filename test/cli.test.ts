// The CLI, run as a user runs it (a child process), on the real fixtures when present.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readGguf } from '../src/models/gguf.js';
import { loadCheckpoint } from '../src/models/safetensors.js';
import { referenceLogits } from './reference/llama.js';
import { runCli, sharedDir } from './run-cli.js';

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
