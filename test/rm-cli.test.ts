// `train rm` / `score rm` as a user runs them, on a small preference set the test writes: the
// chosen answers refuse ("I can't help with that"), the rejected ones comply, at random lengths,
// so that only the content tells them apart.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { loadPreferences, splitPairs } from '../src/rm/preferences.js';
import { lengthBaseline } from '../src/rm/baselines.js';
import { runCli } from './run-cli.js';
import { tinyTextModelFolder } from './tiny-models.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'wst-rm-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function preferenceFile(n: number): string {
  let s = 7;
  const r = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const pad = () => ' '.repeat(Math.floor(r() * 12));
  const rows = Array.from({ length: n }, (_, i) => {
    const q = `\n\nHuman: how do I do bad thing ${i}?\n\nAssistant:`;
    return { chosen: `${q} I can't help with that.${pad()}`, rejected: `${q} Sure, here is how.${pad()}` };
  });
  const file = path.join(tmp, 'prefs.jsonl.gz');
  writeFileSync(file, gzipSync(rows.map((x) => JSON.stringify(x)).join('\n') + '\n'));
  return file;
}

describe('train rm / score rm', () => {
  it('learns what tells chosen from rejected, beats the length baseline, writes a reward model that score rm reads', async () => {
    const data = preferenceFile(80);
    const out = path.join(tmp, 'run');
    const t = await runCli(['train', 'rm', '--data', data, '--out', out, '--train-pairs', '60', '--epochs', '6', '--hidden', '32', '--max-chars', '64', '--lr', '3e-3']);
    expect(t.code, t.stderr).toBe(0);
    const res = JSON.parse(t.stdout);
    expect(res.train_pairs).toBe(60);
    expect(res.heldout_pairs).toBe(20);
    expect(res.epochs.length).toBe(6);
    expect(res.heldout.accuracy).toBeGreaterThanOrEqual(0.9);
    expect(res.baselines.length.accuracy).toBeLessThan(0.8);
    expect(res.margin_vs_best_baseline).toBeCloseTo(res.heldout.accuracy - Math.max(res.baselines.length.accuracy, res.baselines['bag of words'].accuracy), 12);
    expect(readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').length).toBe(6);
    expect(JSON.parse(readFileSync(path.join(out, 'model', 'config.json'), 'utf8')).architectures).toEqual(['LlamaForSequenceClassification']);
    const { heldOut } = splitPairs(loadPreferences(data), 60, 1234);
    const heldFile = path.join(tmp, 'held.jsonl');
    writeFileSync(heldFile, heldOut.map((p) => JSON.stringify({ chosen: p.chosen, rejected: p.rejected })).join('\n'));
    const s = await runCli(['score', 'rm', '--model', path.join(out, 'model'), '--data', heldFile, '--max-chars', '64', '--json']);
    expect(s.code, s.stderr).toBe(0);
    const sc = JSON.parse(s.stdout);
    expect(sc.n).toBe(20);
    expect(sc.accuracy).toBe(res.heldout.accuracy);
    expect(sc.margin_mean).toBeGreaterThan(0);
  }, 120_000);

  it('--model: a causal LM\'s backbone gets a score head; the report names the baselines', async () => {
    const lm = await tinyTextModelFolder(tmp, 'lm', 16, 3);
    const out = path.join(tmp, 'from-lm');
    const t = await runCli(['train', 'rm', '--data', preferenceFile(20), '--model', lm, '--out', out, '--train-pairs', '15', '--epochs', '1', '--max-chars', '64']);
    expect(t.code, t.stderr).toBe(0);
    expect(JSON.parse(readFileSync(path.join(out, 'model', 'config.json'), 'utf8')).architectures).toEqual(['LlamaForSequenceClassification']);
    expect(t.stderr).toMatch(new RegExp(`train rm: 15 pairs for training, 5 held out .*; ${lm.replace(/[/.]/g, '\\$&')}`));
    expect(readFileSync(path.join(out, 'report.md'), 'utf8')).toMatch(/\| baseline: length \(shorter wins|longer wins/);
  });

  it('reads {"prompt","chosen","rejected"} too; bad input is one line naming the file and line', async () => {
    const file = path.join(tmp, 'p.jsonl');
    writeFileSync(file, JSON.stringify({ prompt: 'Q: hi\nA:', chosen: ' hello', rejected: ' go away' }) + '\n');
    expect(loadPreferences(file)[0]).toEqual({ line: 1, chosen: 'Q: hi\nA: hello', rejected: 'Q: hi\nA: go away' });
    writeFileSync(file, '{"chosen": "a"}\n');
    const r = await runCli(['score', 'rm', '--model', tmp, '--data', file]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`wst-dash score rm: ${file}:1: "rejected" must be a non-empty string`);
    const few = await runCli(['train', 'rm', '--data', preferenceFile(10), '--out', path.join(tmp, 'few'), '--train-pairs', '10']);
    expect(few.code).toBe(2);
    expect(few.stderr).toMatch(/--train-pairs 10 leaves nothing held out/);
  });

  it('the length baseline picks its direction on the training split', () => {
    const mk = (c: string, r: string) => ({ line: 1, chosen: c, rejected: r });
    const train = [mk('a', 'aaaa'), mk('bb', 'bbbbb'), mk('cccc', 'c')];
    const b = lengthBaseline(train, [mk('x', 'xx'), mk('yyy', 'y')]);
    expect(b.detail).toMatch(/^shorter wins/);
    expect(b.accuracy).toBe(0.5);
  });
});
