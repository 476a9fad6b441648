#!/usr/bin/env node
// llama.cpp CPU decode speed on a GGUF file, through node-llama-cpp 3.21.1 (its prebuilt CPU binary),
// for the side-by-side model benchmark (bench/archive/NOTES-2026-11.md, "Model speed"). node-llama-cpp is NOT a
// dependency: install it apart, e.g. `mkdir -p /tmp/nlc && cd /tmp/nlc && npm i --no-save
// node-llama-cpp@3.21.1`, and point NODE_LLAMA_CPP at its dist/index.js (default: that /tmp/nlc path,
// then a plain `node-llama-cpp` import).
//
//   node bench/llamacpp_decode.mjs --gguf FILE [--threads 1] [--prompt-len 32] [--new 64] [--reps 3]
//        -> one JSON line: median prefill / decode tokens/s at batch 1, greedy, and the greedy ids.
//   ... --serve: prints {"ready":true}, then per stdin line "REPS" runs REPS measurements and answers
//        one JSON line (lets a driver interleave these runs with the engine's).
//
// Decode rate: the prompt minus its last token is evaluated without sampling (prefill), then the
// last prompt token is fed to a greedy generator; the time from the first yielded token to the
// last over (new - 1) tokens is (new - 1) single-token decode steps.
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

function parseArgs(argv) {
  const o = { threads: 1, promptLen: 32, new: 64, reps: 3, seed: 101, serve: false, gguf: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--gguf') o.gguf = val();
    else if (a === '--threads') o.threads = +val();
    else if (a === '--prompt-len') o.promptLen = +val();
    else if (a === '--new') o.new = +val();
    else if (a === '--reps') o.reps = +val();
    else if (a === '--seed') o.seed = +val();
    else if (a === '--serve') o.serve = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.gguf) throw new Error('--gguf FILE is required');
  for (const k of ['threads', 'promptLen', 'new', 'reps'])
    if (!Number.isInteger(o[k]) || o[k] < 1) throw new Error(`--${k} must be an integer >= 1`);
  if (o.new < 2) throw new Error('--new must be >= 2');
  return o;
}

async function importNodeLlamaCpp() {
  const candidates = [process.env.NODE_LLAMA_CPP, '/tmp/nlc/node_modules/node-llama-cpp/dist/index.js'].filter(Boolean);
  for (const c of candidates) if (existsSync(c)) return import(pathToFileURL(c).href);
  return import('node-llama-cpp');
}

// The same xorshift prompts as src/bench/model.ts benchPrompts (ids in [3, vocab)).
function benchPrompt(len, vocab, seed) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s;
  };
  const lo = Math.min(3, vocab - 1);
  return Array.from({ length: len }, () => lo + (next() % (vocab - lo)));
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const now = () => Number(process.hrtime.bigint()) / 1e9;
// CPU seconds of this process (all threads): at 1 thread, time descheduled by other jobs does not count.
const cpuNow = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const nlc = await importNodeLlamaCpp();
  const llama = await nlc.getLlama({ gpu: false, build: 'never', logLevel: 'error', maxThreads: o.threads });
  const model = await llama.loadModel({ modelPath: o.gguf, gpuLayers: 0, useMmap: true });
  const vocab = model.tokens.nTokens ?? model.fileInfo?.metadata?.llama?.vocab_size;
  const context = await model.createContext({
    contextSize: o.promptLen + o.new + 16,
    batchSize: Math.max(o.promptLen, 32),
    threads: { ideal: o.threads, min: o.threads },
    sequences: 1,
  });
  const seq = context.getSequence();
  const prompt = benchPrompt(o.promptLen, vocab, o.seed);

  async function once() {
    await seq.clearHistory();
    const t0 = now();
    await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, -1));
    const prefill = now() - t0;
    const ids = [];
    let tFirst = 0, tLast = 0, cFirst = 0, cLast = 0;
    for await (const tok of seq.evaluate(prompt.slice(-1), { temperature: 0, yieldEogToken: true })) {
      tLast = now();
      cLast = cpuNow();
      if (ids.length === 0) {
        tFirst = tLast;
        cFirst = cLast;
      }
      ids.push(tok);
      if (ids.length >= o.new) break;
    }
    const steps = ids.length - 1;
    return {
      prefillTokensPerSecond: (o.promptLen - 1) / prefill,
      decodeTokensPerSecond: steps > 0 ? steps / (tLast - tFirst) : NaN,
      decodeTokensPerCpuSecond: steps > 0 ? steps / (cLast - cFirst) : NaN,
      ids,
    };
  }

  const report = (runs) => ({
    engine: 'llama.cpp (node-llama-cpp 3.21.1, CPU)',
    threads: o.threads,
    contextThreads: context.currentThreads ?? o.threads,
    promptLen: o.promptLen,
    newTokens: o.new,
    prefillTokensPerSecond: median(runs.map((r) => r.prefillTokensPerSecond)),
    decodeTokensPerSecond: median(runs.map((r) => r.decodeTokensPerSecond)),
    decodeTokensPerCpuSecond: median(runs.map((r) => r.decodeTokensPerCpuSecond)),
    runs: runs.map((r) => ({ prefill: r.prefillTokensPerSecond, decode: r.decodeTokensPerSecond, decodeCpu: r.decodeTokensPerCpuSecond })),
    ids: runs[0].ids,
  });

  await once(); // warm-up
  if (!o.serve) {
    const runs = [];
    for (let r = 0; r < o.reps; r++) runs.push(await once());
    console.log(JSON.stringify(report(runs)));
  } else {
    console.log(JSON.stringify({ ready: true }));
    const rl = createInterface({ input: process.stdin });
    for await (const line of rl) {
      const n = parseInt(line.trim(), 10);
      if (!Number.isInteger(n) || n < 1) continue;
      const runs = [];
      for (let r = 0; r < n; r++) runs.push(await once());
      console.log(JSON.stringify(report(runs)));
    }
  }
  await context.dispose();
  await model.dispose();
  await llama.dispose();
}

main().catch((err) => {
  console.error(err?.stack ?? String(err));
  process.exit(1);
});
