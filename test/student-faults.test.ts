// `train wst` with its student behind `serve`, as users run it against vLLM or llama-server:
// through a fault-injecting proxy (429 + Retry-After, 500, 503, stalls past the time-out, resets,
// truncated JSON) the run gets the same rewards and the same teacher, bit for bit, as without
// faults; with the server gone for good it stops with a clear error and a resumable checkpoint;
// killed with SIGKILL mid-step, `--resume` continues at the last checkpoint with the step's
// answers from the response cache.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model } from '../src/models/model.js';
import { serve, type Serving } from '../src/serving/server.js';
import { TEXT_TEMPLATES } from '../src/wst/templates.js';
import { repoRoot, runCli } from './run-cli.js';
import { tinyTextModelFolder } from './tiny-models.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'wst-faults-'));
const dataDir = path.join(tmp, 'data');
let server: Serving, teacher: string;

/**
 * A student that answers "#### 5" or "#### 7" at random (temperature 1): every GSM8K answer below is
 * 5, so a group's rewards differ and the teacher has something to learn from. Trained here by SFT
 * (well under a second).
 */
async function coinStudent(): Promise<Model> {
  const model = await Model.load(await tinyTextModelFolder(tmp, 'student', 32, 7));
  let s = 1;
  const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
  for (let step = 0; step < 150; step++) {
    const sequences: number[][] = [], from: number[] = [];
    for (let b = 0; b < 16; b++) {
      const prompt = model.encode(TEXT_TEMPLATES.student.replace('{instruction}', 'abcdefgh'.slice(0, 1 + Math.floor(rnd() * 8))).replace('{query}', `q${Math.floor(rnd() * 100)}?`));
      sequences.push([...prompt, ...model.encode(` #### ${rnd() < 0.5 ? 5 : 7}\n\nQuestion:`, false)]);
      from.push(prompt.length);
    }
    await model.trainSft({ sequences, from });
    await model.optimizerStep({ lr: 1e-2, maxGradNorm: 1 });
  }
  return model;
}

type Fault = '429' | '500' | '503' | 'stall' | 'reset' | 'truncate';
const FAULTS: Fault[] = ['429', '500', '503', 'stall', 'reset', 'truncate'];

/**
 * A proxy in front of `serve`. mode 'faults': every other request, on its first attempt only
 * (identified by its body), gets the next fault of FAULTS. 'dead': after `passFirst` requests,
 * every request gets 503. 'hold': after `passFirst` requests, requests are never answered. 'pass': none.
 */
async function proxy(target: string, mode: 'pass' | 'faults' | 'dead' | 'hold', passFirst = 0) {
  const seen = new Set<string>();
  const held: ServerResponse[] = [];
  let n = 0, faulted = 0;
  const forward = (req: IncomingMessage, body: Buffer, res: ServerResponse, truncate = false) => {
    const up = request(new URL(req.url ?? '/', target), { method: req.method, headers: req.headers }, (r) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => {
        const all = Buffer.concat(chunks);
        res.writeHead(r.statusCode ?? 502, { 'content-type': r.headers['content-type'] ?? 'application/json' });
        res.end(truncate ? all.subarray(0, all.length >> 1) : all);
      });
    });
    up.end(body);
  };
  const srv: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const key = createHash('sha256').update(body).digest('hex');
      const first = !seen.has(key);
      seen.add(key);
      const i = n++;
      if (mode === 'dead' && i >= passFirst) { res.writeHead(503, { 'content-type': 'application/json' }); res.end('{"error":{"message":"gone"}}'); return; }
      if (mode === 'hold' && i >= passFirst) { held.push(res); return; }
      if (mode !== 'faults' || !first || i % 2 === 1) return forward(req, body, res);
      const fault = FAULTS[faulted++ % FAULTS.length];
      if (fault === '429') { res.writeHead(429, { 'retry-after': '0', 'content-type': 'application/json' }); res.end('{"error":{"message":"slow down"}}'); }
      else if (fault === '500' || fault === '503') { res.writeHead(Number(fault), { 'content-type': 'application/json' }); res.end('{"error":{"message":"boom"}}'); }
      else if (fault === 'stall') setTimeout(() => res.socket?.destroy(), 1500); // past the 1 s time-out
      else if (fault === 'reset') res.socket?.destroy();
      else forward(req, body, res, true);
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/v1`,
    get requests() { return n; },
    get faulted() { return faulted; },
    close: () => new Promise<void>((resolve) => { for (const r of held) r.socket?.destroy(); srv.closeAllConnections(); srv.close(() => resolve()); }),
  };
}

const STEPS = 3, PER_STEP = 2 * 4; // prompts × group, one student answer each
const trainArgs = (out: string, url: string, extra: string[] = []) => [
  'train', 'wst', '--task', 'gsm8k', '--teacher', teacher, '--student-url', url, '--student-model', 'student', '--student-api', 'completions',
  '--student-temperature', '1', '--student-timeout', '1', '--student-attempts', '3', '--out', out, '--steps', String(STEPS), '--prompts', '2',
  '--group', '4', '--micro-batch', '4', '--max-instruction-tokens', '6', '--max-student-tokens', '8', '--eval-queries', '0',
  '--checkpoint-every', '1', '--seed', '3', ...extra,
];
const env = () => ({ WST_DASH_DATA: dataDir });
const steps = (out: string) => readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.type === 'step');
const weights = (out: string) => readFileSync(path.join(out, 'teacher', 'model.safetensors'));

beforeAll(async () => {
  mkdirSync(dataDir);
  const rows = Array.from({ length: 12 }, (_, i) => JSON.stringify({ question: `q${i}?`, answer: `It is five.\n#### 5` })).join('\n') + '\n';
  writeFileSync(path.join(dataDir, 'gsm8k.train.jsonl'), rows);
  writeFileSync(path.join(dataDir, 'gsm8k.test.jsonl'), rows);
  teacher = await tinyTextModelFolder(tmp, 'teacher', 16, 1);
  server = await serve(await coinStudent(), { port: 0, modelName: 'student' });
});
afterAll(async () => {
  await server?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('eval wst with the student behind servers', () => {
  it('gives what the same student gives locally, over one endpoint or two', async () => {
    const p = await proxy(new URL(server.url).origin, 'pass');
    const common = ['eval', 'wst', '--task', 'gsm8k', '--untrained', teacher, '--fixed', 'Be brief.', '--limit', '6', '--max-instruction-tokens', '6', '--max-student-tokens', '8'];
    const studentDir = path.join(tmp, 'student-saved');
    await (await coinStudent()).save(studentDir);
    const local = await runCli([...common, '--student', studentDir, '--queries', path.join(tmp, 'local.jsonl'), '--json'], env());
    const remote = await runCli([...common, '--student-url', `${server.url},${p.url}`, '--student-model', 'student', '--student-api', 'completions',
      '--queries', path.join(tmp, 'remote.jsonl'), '--json'], env());
    await p.close();
    expect(local.code, local.stderr).toBe(0);
    expect(remote.code, remote.stderr).toBe(0);
    expect(JSON.parse(remote.stdout).teachers).toEqual(JSON.parse(local.stdout).teachers);
    expect(readFileSync(path.join(tmp, 'remote.jsonl'), 'utf8')).toBe(readFileSync(path.join(tmp, 'local.jsonl'), 'utf8'));
    expect(p.requests).toBeGreaterThan(0); // both endpoints served
  }, 60_000);
});

describe('train wst against a student server that fails', () => {
  let clean: string;

  it('through the fault proxy: the same rewards and teacher, bit for bit, as without faults; the retries counted', async () => {
    clean = path.join(tmp, 'clean');
    const a = await runCli(trainArgs(clean, server.url), env());
    expect(a.code, a.stderr).toBe(0);
    const p = await proxy(new URL(server.url).origin, 'faults');
    const faulty = path.join(tmp, 'faulty');
    const b = await runCli(trainArgs(faulty, p.url), env());
    await p.close();
    expect(b.code, b.stderr).toBe(0);
    const [sa, sb] = [steps(clean), steps(faulty)];
    expect(sa.map((m) => m.reward)).toEqual(sb.map((m) => m.reward));
    expect(sa.some((m) => m.reward > 0 && m.reward < 1)).toBe(true); // a reward that can tell instructions apart
    expect(weights(faulty).equals(weights(clean))).toBe(true);
    expect(p.faulted).toBeGreaterThanOrEqual(FAULTS.length); // every kind of fault was served at least once
    expect(sa.reduce((s, m) => s + m.env.student_retries, 0)).toBe(0);
    expect(sb.reduce((s, m) => s + m.env.student_retries, 0)).toBeGreaterThanOrEqual(p.faulted);
  }, 120_000);

  it('the server gone for good: a clear error naming the endpoint, a checkpoint, and --resume finishes with the same teacher', async () => {
    const p = await proxy(new URL(server.url).origin, 'dead', 2 * PER_STEP);
    const out = path.join(tmp, 'gone');
    const r = await runCli(trainArgs(out, p.url), env());
    await p.close();
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n').pop()).toMatch(new RegExp(`^wst-dash train wst: student ${p.url.replace(/[/.]/g, '\\$&')}: .*503.*\\(3 attempts at most; the step cannot go on without this answer\\)$`));
    expect(JSON.parse(readFileSync(path.join(out, 'checkpoint', 'trainer_state.json'), 'utf8')).step).toBe(2);
    const resumed = await runCli(trainArgs(out, server.url, ['--resume']), env());
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(steps(out).map((m) => m.reward)).toEqual(steps(clean).map((m) => m.reward));
    expect(weights(out).equals(weights(clean))).toBe(true);
  }, 120_000);

  it('kill -9 mid-step, then --resume: continues at the last checkpoint, the step\'s answers already paid for come from the cache', async () => {
    // Steps 1-2 and two answers of step 3 pass; the rest of step 3 is never answered.
    const p = await proxy(new URL(server.url).origin, 'hold', 2 * PER_STEP + 2);
    const out = path.join(tmp, 'killed'), cache = path.join(tmp, 'answers');
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/cli/main.ts'), ...trainArgs(out, p.url, ['--student-cache', cache])],
      { cwd: repoRoot, env: { ...process.env, ...env() }, stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    const deadline = Date.now() + 60_000;
    while (!(existsSync(cache) && readdirSync(cache).filter((f) => f.endsWith('.json')).length >= 2 * PER_STEP + 2) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(p.requests).toBeGreaterThan(2 * PER_STEP + 2); // step 3 is under way, held
    child.kill('SIGKILL');
    await exited;
    await p.close();
    expect(JSON.parse(readFileSync(path.join(out, 'checkpoint', 'trainer_state.json'), 'utf8')).step).toBe(2);
    const r = await runCli(trainArgs(out, server.url, ['--resume', '--student-cache', cache]), env());
    expect(r.code, r.stderr).toBe(0);
    const s = steps(out);
    expect(s.map((m) => m.step)).toEqual([1, 2, 3]);
    expect(s[2].env.student_cache_hits).toBe(2);
    expect(s[2].env.student_cache_misses).toBe(PER_STEP - 2);
    expect(s.map((m) => m.reward)).toEqual(steps(clean).map((m) => m.reward));
    expect(weights(out).equals(weights(clean))).toBe(true);
  }, 120_000);
});
