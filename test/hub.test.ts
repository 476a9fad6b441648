// Models and data sets by name: a hub id downloaded once into the hub cache (only what Model.load
// reads), offline with a warm cache, and the tasks' public data sets fetched into the cache, all
// against a loopback stand-in for the hub and the raw-file host.
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Model } from '../src/models/model.js';
import { cachedSnapshot, downloadModel, isHubId } from '../src/models/hub.js';
import { startFakeHub, type FakeHub } from './hub-server.js';
import { runCli } from './run-cli.js';
import { tinyTextModelFolder } from './tiny-models.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'wst-hub-'));
let hub: FakeHub, modelDir: string, dataDir: string;
const MATH = [
  { problem: 'What is $1+1$?', solution: 'It is $\\boxed{2}$.', answer: '2', subject: 'Prealgebra', level: 1, unique_id: 'test/a/1.json' },
  { problem: 'What is $2\\cdot 3$?', solution: 'It is $\\boxed{6}$.', answer: '6', subject: 'Prealgebra', level: 1, unique_id: 'test/a/2.json' },
];
const GSM = [{ question: 'Tom has 2 apples and buys 3. How many?', answer: 'He has 2+3=<<2+3=5>>5.\n#### 5' }];

beforeAll(async () => {
  modelDir = await tinyTextModelFolder(tmp, 'tiny', 16, 1);
  // Files a hub repository also carries that Model.load does not read: never downloaded.
  mkdirSync(path.join(modelDir, 'onnx'));
  writeFileSync(path.join(modelDir, 'onnx', 'model.onnx'), Buffer.alloc(4096));
  writeFileSync(path.join(modelDir, 'pytorch_model.bin'), Buffer.alloc(4096));
  dataDir = path.join(tmp, 'hubdata');
  mkdirSync(dataDir);
  writeFileSync(path.join(dataDir, 'test.jsonl'), MATH.map((r) => JSON.stringify(r)).join('\n') + '\n');
  writeFileSync(path.join(tmp, 'gsm.jsonl'), GSM.map((r) => JSON.stringify(r)).join('\n') + '\n');
  hub = await startFakeHub({ 'models/acme/tiny': modelDir, 'datasets/HuggingFaceH4/MATH-500': dataDir }, {
    '/openai/grade-school-math/master/grade_school_math/data/train.jsonl': path.join(tmp, 'gsm.jsonl'),
    '/openai/grade-school-math/master/grade_school_math/data/test.jsonl': path.join(tmp, 'gsm.jsonl'),
  });
});
afterAll(async () => {
  await hub?.close();
  rmSync(tmp, { recursive: true, force: true });
});

const resolveHits = () => [...hub.hits].filter(([p]) => p.includes('/resolve/')).reduce((s, [, n]) => s + n, 0);

describe('models by hub id', () => {
  it('tells hub ids from local paths', () => {
    expect(isHubId('Qwen/Qwen2.5-0.5B-Instruct')).toBe(true);
    expect(isHubId('acme/tiny')).toBe(true);
    expect(isHubId('/abs/path')).toBe(false);
    expect(isHubId('./rel/dir')).toBe(false);
    expect(isHubId('../x/y')).toBe(false);
    expect(isHubId(modelDir)).toBe(false);
    expect(isHubId('no-slash')).toBe(false);
  });

  it('downloads only what Model.load reads, once; the snapshot loads and computes as the original; offline uses the warm cache', async () => {
    const cacheDir = path.join(tmp, 'hf-cache-1'), lines: string[] = [];
    const snap = await downloadModel('acme/tiny', { hubUrl: hub.url, cacheDir, token: 'hf_secret', log: (l) => lines.push(l) });
    expect(snap.startsWith(path.join(cacheDir, 'models--acme--tiny', 'snapshots'))).toBe(true);
    expect(existsSync(path.join(snap, 'config.json')) && existsSync(path.join(snap, 'model.safetensors')) && existsSync(path.join(snap, 'wst-tokenizer.json'))).toBe(true);
    expect(existsSync(path.join(snap, 'pytorch_model.bin')) || existsSync(path.join(snap, 'onnx'))).toBe(false);
    expect(lines.some((l) => /downloading model\.safetensors/.test(l))).toBe(true);
    expect(lines.join('\n')).not.toMatch(/hf_secret/);
    expect([...hub.auth]).toEqual(['Bearer hf_secret']);
    const [a, b] = [await Model.load(modelDir), await Model.load(snap)];
    expect(Array.from(await b.logits([1, 5, 9]))).toEqual(Array.from(await a.logits([1, 5, 9])));

    const before = resolveHits();
    expect(await downloadModel('acme/tiny', { hubUrl: hub.url, cacheDir })).toBe(snap);
    expect(resolveHits()).toBe(before); // nothing fetched again
    expect(await downloadModel('acme/tiny', { hubUrl: hub.url, cacheDir, offline: true })).toBe(snap);
    expect(cachedSnapshot('acme/tiny', 'main', cacheDir)).toBe(snap);
    // The hub gone: the warm cache serves, a cold one fails naming the id and the hub.
    expect(await downloadModel('acme/tiny', { hubUrl: 'http://127.0.0.1:9', cacheDir })).toBe(snap);
    await expect(downloadModel('acme/tiny', { hubUrl: 'http://127.0.0.1:9', cacheDir: path.join(tmp, 'cold') })).rejects.toThrow(/acme\/tiny@main: cannot reach the hub at http:\/\/127\.0\.0\.1:9/);
    await expect(downloadModel('acme/tiny', { cacheDir: path.join(tmp, 'cold'), offline: true })).rejects.toThrow(/not in the hub cache .* and offline/);
    await expect(downloadModel('acme/none', { hubUrl: hub.url, cacheDir })).rejects.toThrow(/acme\/none@main/);
  });

  it('the CLI takes a hub id wherever it takes a model folder (generate, same output as the folder)', async () => {
    const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: path.join(tmp, 'hf-cache-cli') };
    const local = await runCli(['generate', '--model', modelDir, '--ids', '1,5,9', '--max-new-tokens', '6', '--json'], env);
    const named = await runCli(['generate', '--model', 'acme/tiny', '--ids', '1,5,9', '--max-new-tokens', '6', '--json'], env);
    expect(named.code).toBe(0);
    expect(JSON.parse(named.stdout)).toEqual(JSON.parse(local.stdout));
    expect(named.stderr).toMatch(/acme\/tiny: downloading config\.json/);
    const offline = await runCli(['generate', '--model', 'acme/tiny', '--ids', '1,5,9', '--max-new-tokens', '6', '--json'], { ...env, HF_HUB_OFFLINE: '1', HF_ENDPOINT: 'http://127.0.0.1:9' });
    expect(JSON.parse(offline.stdout)).toEqual(JSON.parse(local.stdout));
  });
});

describe('data sets by name', () => {
  it('a task whose data is neither in --file nor the data folder is fetched once into the cache', async () => {
    const cache = path.join(tmp, 'wst-cache'), empty = path.join(tmp, 'empty-data');
    mkdirSync(empty);
    const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: path.join(tmp, 'hf-cache-data'), WST_DASH_CACHE: cache, WST_DASH_DATA: empty, WST_DASH_RAW_URL: hub.url };
    const math = await runCli(['eval', '--task', 'math500', '--model', modelDir, '--limit', '2', '--max-new-tokens', '4', '--json'], env);
    expect(math.code, math.stderr).toBe(0);
    expect(JSON.parse(math.stdout).n).toBe(2);
    expect(math.stderr).toMatch(/fetching math500\.test\.jsonl from hub dataset HuggingFaceH4\/MATH-500\/test\.jsonl/);
    expect(existsSync(path.join(cache, 'data', 'math500.test.jsonl'))).toBe(true);
    const gsm = await runCli(['eval', '--task', 'gsm8k', '--model', modelDir, '--limit', '1', '--max-new-tokens', '4', '--json'], env);
    expect(gsm.code, gsm.stderr).toBe(0);
    expect(existsSync(path.join(cache, 'data', 'gsm8k.train.jsonl'))).toBe(true);
    // Warm: nothing fetched, the same answer with the hosts gone.
    const again = await runCli(['eval', '--task', 'math500', '--model', modelDir, '--limit', '2', '--max-new-tokens', '4', '--json'], { ...env, HF_ENDPOINT: 'http://127.0.0.1:9', WST_DASH_RAW_URL: 'http://127.0.0.1:9' });
    expect(again.stdout).toBe(math.stdout);
    expect(again.stderr).not.toMatch(/fetching/);
    // Cold and unreachable: one line naming the file, the folder and the way out.
    const cold = await runCli(['eval', '--task', 'gsm8k', '--model', modelDir], { ...env, WST_DASH_CACHE: path.join(tmp, 'cold-cache'), WST_DASH_RAW_URL: 'http://127.0.0.1:9' });
    expect(cold.code).toBe(1);
    expect(cold.stderr.trim().split('\n').pop()).toMatch(/data file gsm8k\.train\.jsonl: not in .*empty-data and the download failed .*--data-dir or give --file/);
  });
});
