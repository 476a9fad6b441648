// WST on HH-RLHF: dialogues as queries, the student's next assistant turn scored by a reward
// model. The scored evaluation's definitions (mean, win rate with ties half, misleading / helped
// beyond a margin) on a scripted student, and `train wst` / `eval wst --task hh-rlhf` end to end
// with tiny local models and a reward model trained here.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import type { Example, Task } from '../src/rl/tasks/common.js';
import { evaluateWst, wstTable } from '../src/wst/evaluate.js';
import { createHhTask, HH_TEMPLATES, splitDialogue } from '../src/wst/hh.js';
import type { Student } from '../src/wst/student.js';
import { Model } from '../src/models/model.js';
import { serve } from '../src/serving/server.js';
import { runCli } from './run-cli.js';
import { tinyTextModelFolder } from './tiny-models.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'wst-hh-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function hhData(n: number): string {
  const dir = path.join(tmp, 'data');
  mkdirSync(dir, { recursive: true });
  const rows = Array.from({ length: n }, (_, i) => {
    const q = `\n\nHuman: tell me about thing ${i}\n\nAssistant: which thing?\n\nHuman: number ${i}\n\nAssistant:`;
    return { chosen: `${q} I can't help with that.`, rejected: `${q} Sure, here it is.` };
  });
  writeFileSync(path.join(dir, 'hh-rlhf.harmless-base.test.jsonl.gz'), gzipSync(rows.map((r) => JSON.stringify(r)).join('\n') + '\n'));
  return dir;
}

describe('HH-RLHF as a WST task', () => {
  it('the query is the dialogue up to the last assistant header; the reference is chosen\'s last turn', () => {
    const d = splitDialogue('\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: see you');
    expect(d).toEqual({ query: '\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant:', answer: ' see you' });
    expect(splitDialogue('no turns')).toBeNull();
  });

  it('a scored evaluation: mean score, win rate against no instruction (ties half), misleading / helped beyond the margin', async () => {
    const examples = [0, 1, 2, 3].map((i) => ({ id: `q${i}`, question: `Q${i}`, answer: '', solution: '' }));
    // The scripted student answers with its instruction (or "plain"); the scorer reads a number from it.
    const student: Student = {
      name: 'scripted', stats: { requests: 0, deduplicated: 0, promptTokens: 0, completionTokens: 0, seconds: 0 },
      answer: async (reqs) => reqs.map((r) => [{ text: r.instruction ?? 'plain', promptTokens: 1, completionTokens: 1 }]),
    };
    const table: Record<string, number[]> = { plain: [1, 1, 1, 1], up: [2, 1, 1.05, 3], down: [0, 1, 1, 1] };
    const r = await evaluateWst({
      task: createHhTask() as unknown as Task<Example>, student, templates: HH_TEMPLATES, examples,
      teachers: { up: { kind: 'fixed', instruction: 'up' }, down: { kind: 'fixed', instruction: 'down' } },
      scorer: async (items) => items.map((it) => table[it.answer][Number(it.example.id.slice(1))]), margin: 0.1,
    });
    expect(r.teachers.none).toMatchObject({ accuracy: null, mean_score: 1, win_rate: 0.5, misleading: 0, helped: 0, relative_gain: 0 });
    expect(r.teachers.up).toMatchObject({ mean_score: 1.7625, win_rate: (1 + 0.5 + 1 + 1) / 4, misleading: 0, helped: 0.5 });
    expect(r.teachers.up.relative_gain).toBeCloseTo(0.7625, 12);
    expect(r.teachers.down).toMatchObject({ mean_score: 0.75, win_rate: (0 + 0.5 * 3) / 4, misleading: 0.25, helped: 0 });
    expect(r.margin).toBe(0.1);
    expect(r.queries.find((q) => q.teacher === 'up' && q.id === 'q3')).toMatchObject({ score: 3, score_alone: 1 });
    expect(wstTable(r)).toMatch(/win rate vs none[\s\S]*the win rate is the primary figure/);
  });

  it('train wst and eval wst --task hh-rlhf run end to end with a reward model from train rm', async () => {
    const dataDir = hhData(40);
    const env = { WST_DASH_DATA: dataDir };
    const rmOut = path.join(tmp, 'rm');
    const rm = await runCli(['train', 'rm', '--out', rmOut, '--train-pairs', '30', '--epochs', '2', '--hidden', '16', '--max-chars', '64'], env);
    expect(rm.code, rm.stderr).toBe(0);
    const teacher = await tinyTextModelFolder(tmp, 'teacher', 16, 1), student = await tinyTextModelFolder(tmp, 'student', 16, 2);
    const common = ['--task', 'hh-rlhf', '--reward-model', path.join(rmOut, 'model'), '--student', student, '--max-instruction-tokens', '6', '--max-student-tokens', '8'];
    const out = path.join(tmp, 'wst');
    const t = await runCli(['train', 'wst', ...common, '--teacher', teacher, '--out', out, '--steps', '2', '--prompts', '2', '--group', '4', '--eval-queries', '4'], env);
    expect(t.code, t.stderr).toBe(0);
    const res = JSON.parse(t.stdout.trim().split('\n').pop()!);
    expect(typeof res.student_mean_score).toBe('number');
    expect(t.stderr).toMatch(/mean score of the student's answers under the teacher/);
    const steps = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.type === 'step');
    expect(steps.length).toBe(2);
    for (const s of steps) expect(Number.isFinite(s.reward)).toBe(true);
    const e = await runCli(['eval', 'wst', ...common, '--untrained', teacher, '--teacher', res.teacher, '--fixed', 'Be kind.', '--limit', '6', '--json'], env);
    expect(e.code, e.stderr).toBe(0);
    const table = JSON.parse(e.stdout);
    expect(Object.keys(table.teachers)).toEqual(['none', 'fixed: Be kind.', 'untrained', 'trained']);
    for (const s of Object.values(table.teachers) as { accuracy: null; mean_score: number; win_rate: number }[]) {
      expect(s.accuracy).toBeNull();
      expect(Number.isFinite(s.mean_score)).toBe(true);
      expect(s.win_rate).toBeGreaterThanOrEqual(0);
    }
    // One process's reward model is another's scorer: the same table through serve's /v1/score.
    const served = await serve(await Model.load(path.join(rmOut, 'model')), { port: 0, modelName: 'rm' });
    try {
      const viaHttp = await runCli(['eval', 'wst', ...common.filter((_, i) => i !== 2 && i !== 3), '--scorer-url', `${served.url}/score`, '--untrained', teacher, '--teacher', res.teacher,
        '--fixed', 'Be kind.', '--limit', '6', '--json'], env);
      expect(viaHttp.code, viaHttp.stderr).toBe(0);
      expect(JSON.parse(viaHttp.stdout).teachers).toEqual(table.teachers);
    } finally {
      await served.close();
    }
    const two = await runCli(['eval', 'wst', ...common, '--scorer-url', 'http://127.0.0.1:9/score'], env);
    expect(two.code).toBe(2);
    expect(two.stderr).toMatch(/give one scorer, not --reward-model and --scorer-url/);
    const missing = await runCli(['eval', 'wst', '--task', 'hh-rlhf', '--student', student], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--reward-model DIR is required with --task hh-rlhf/);
  }, 120_000);
});
