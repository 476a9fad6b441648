// Side-by-side model speed: the engine vs llama.cpp (decode, batch 1) and vs PyTorch (training step),
// interleaved repetition by repetition in one run, medians and ratios. See bench/archive/NOTES-2026-11.md "Model speed".
//
//   npx tsx bench/model_compare.ts [--what decode,train,tiny] [--threads 1,2] [--reps 5] [--json]
//        [--openblas-core SkylakeX]  (OPENBLAS_CORETYPE for torch; "" = OpenBLAS auto-detection, which
//        picks the SSE3 "Prescott" kernels on this KVM Sapphire Rapids and makes torch ~5x slower)
//        [--python PATH]  (the Python with torch; default $WST_DASH_PYTHON, else /usr/bin/python3)
//        [--torch-isa native|avx2]  (avx2: torch's kernels, oneDNN and MKL limited to AVX2, as on an
//        AVX2-only machine; to pair with WST_DASH_ISA=avx2 on an AVX-512 machine)
//
// Needs node-llama-cpp 3.21.1 installed apart (bench/llamacpp_decode.mjs says where) for decode, and
// a Python with torch for train/tiny (e.g. python3 -m venv /work/venv-torch && /work/venv-torch/bin/pip
// install torch; then WST_DASH_PYTHON=/work/venv-torch/bin/python3). The engine runs in this process;
// llama.cpp and torch run in child processes kept alive in --serve mode, so every repetition of one
// engine is followed by the same repetition of the other at the same thread count.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { native, packageRoot } from '../src/native.js';
import { Model } from '../src/models/model.js';
import { exportGguf, syntheticTokenizer } from '../src/models/gguf.js';
import { writeFileAtomic } from '../src/models/atomic.js';
import { parameterCount, type ModelConfig } from '../src/models/config.js';
import { benchConfig, benchPrompts, forwardFlopsPerToken, measureDecode, measureTrain, median } from '../src/bench/model.js';

const here = path.dirname(fileURLToPath(import.meta.url));

function args() {
  const o = { what: ['decode', 'train', 'tiny'], threads: [1, 2], reps: 5, json: false, promptLen: 32, newTokens: 64, python: process.env.WST_DASH_PYTHON || '/usr/bin/python3', tinySteps: 20, openblasCore: 'SkylakeX', torchIsa: 'native' };
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    const v = () => a[++i];
    if (a[i] === '--what') o.what = v().split(',');
    else if (a[i] === '--threads') o.threads = v().split(',').map(Number);
    else if (a[i] === '--reps') o.reps = +v();
    else if (a[i] === '--json') o.json = true;
    else if (a[i] === '--prompt-len') o.promptLen = +v();
    else if (a[i] === '--new') o.newTokens = +v();
    else if (a[i] === '--python') o.python = v();
    else if (a[i] === '--tiny-steps') o.tinySteps = +v();
    else if (a[i] === '--openblas-core') o.openblasCore = v();
    else if (a[i] === '--torch-isa') o.torchIsa = v();
    else throw new Error(`unknown argument ${a[i]}`);
  }
  if (o.torchIsa !== 'native' && o.torchIsa !== 'avx2') throw new Error(`--torch-isa must be native or avx2, got ${o.torchIsa}`);
  return o;
}

const log = (m: string) => process.stderr.write(`[compare] ${m}\n`);

/** A child in --serve mode: one request line in, one JSON line out. */
class Server {
  private lines: Interface;
  private pending: ((s: string) => void)[] = [];
  private buffered: string[] = [];
  constructor(private proc: ChildProcessWithoutNullStreams, name: string) {
    this.lines = createInterface({ input: proc.stdout });
    this.lines.on('line', (l) => {
      const p = this.pending.shift();
      if (p) p(l);
      else this.buffered.push(l);
    });
    proc.stderr.on('data', (d) => process.stderr.write(`[${name}] ${d}`));
    proc.on('exit', (code) => {
      for (const p of this.pending) p(JSON.stringify({ error: `${name} exited with ${code}` }));
      this.pending = [];
    });
  }
  next(): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const take = (l: string) => {
        try {
          const j = JSON.parse(l);
          if (j.error) reject(new Error(j.error));
          else resolve(j);
        } catch (e) {
          reject(new Error(`bad line from child: ${l}`));
        }
      };
      const b = this.buffered.shift();
      if (b !== undefined) take(b);
      else this.pending.push(take);
    });
  }
  async ask(line: string): Promise<Record<string, unknown>> {
    this.proc.stdin.write(line + '\n');
    return this.next();
  }
  close(): void {
    this.proc.stdin.end();
  }
}

/** The environment that limits torch's CPU code to a SIMD level: its own kernels, oneDNN, MKL, OpenBLAS. */
function torchIsaEnv(isa: string): Record<string, string> {
  return isa === 'avx2'
    ? { ATEN_CPU_CAPABILITY: 'avx2', ONEDNN_MAX_CPU_ISA: 'AVX2', MKL_ENABLE_INSTRUCTIONS: 'AVX2', OPENBLAS_CORETYPE: 'Haswell' }
    : {};
}

function torchArgs(c: ModelConfig, batch: number, seq: number): string[] {
  return ['--hidden', c.hiddenSize, '--layers', c.numLayers, '--heads', c.numHeads, '--kv-heads', c.numKvHeads,
    '--inter', c.intermediateSize, '--vocab', c.vocabSize, '--tied', c.tieWordEmbeddings ? 1 : 0,
    '--batch', batch, '--seq', seq].map(String);
}

async function compareDecode(o: ReturnType<typeof args>) {
  const config = benchConfig('30m');
  const model = Model.create(config, { seed: 1234, std: 0.02 });
  const gguf = path.join(tmpdir(), `wst-bench-${process.pid}.gguf`);
  log(`exporting ${(parameterCount(config) / 1e6).toFixed(1)}M params to ${gguf}`);
  // A llama-layout placeholder vocabulary (llama.cpp's SPM loader wants the byte tokens); the engine's
  // config has no EOS so it never stops early, and greedy ids are checked to agree.
  await exportGguf({ config, tensors: model.tensors(), outFile: gguf, dtype: 'f32', tokenizer: syntheticTokenizer({ ...config, bosTokenId: 1, eosTokenId: 2 }) });
  const prompt = benchPrompts(1, o.promptLen, config.vocabSize, 101);
  const servers = new Map<number, Server>();
  for (const t of o.threads) {
    const p = spawn(process.execPath, [path.join(here, 'llamacpp_decode.mjs'), '--gguf', gguf, '--threads', String(t),
      '--prompt-len', String(o.promptLen), '--new', String(o.newTokens), '--seed', '101', '--serve'], { stdio: 'pipe' });
    const s = new Server(p, `llama.cpp t${t}`);
    await s.next();
    servers.set(t, s);
  }
  type Runs = { prefill: number[]; decode: number[]; decodeCpu: number[] };
  const ours = new Map<number, Runs>(o.threads.map((t) => [t, { prefill: [], decode: [], decodeCpu: [] }]));
  const theirs = new Map<number, Runs>(o.threads.map((t) => [t, { prefill: [], decode: [], decodeCpu: [] }]));
  let idsAgree = true, oursIds: number[] = [], theirIds: number[] = [];
  for (const t of o.threads) {
    native.setThreads(t);
    await measureDecode(model, prompt, 4); // warm-up
  }
  for (let r = 0; r < o.reps; r++)
    for (const t of o.threads) {
      native.setThreads(t);
      const s = await measureDecode(model, prompt, o.newTokens - 1);
      ours.get(t)!.prefill.push(o.promptLen / s.prefillSeconds);
      ours.get(t)!.decode.push(s.decodeTokens / s.decodeSeconds);
      ours.get(t)!.decodeCpu.push(s.decodeTokens / s.decodeCpuSeconds);
      const l = await servers.get(t)!.ask('1');
      theirs.get(t)!.prefill.push(l.prefillTokensPerSecond as number);
      theirs.get(t)!.decode.push(l.decodeTokensPerSecond as number);
      theirs.get(t)!.decodeCpu.push(l.decodeTokensPerCpuSecond as number);
      oursIds = s.ids0;
      theirIds = l.ids as number[];
      const n = Math.min(oursIds.length, theirIds.length);
      for (let i = 0; i < n; i++) if (oursIds[i] !== theirIds[i]) idsAgree = false;
      log(`rep ${r + 1} t${t}: decode ours ${ours.get(t)!.decode.at(-1)!.toFixed(1)} vs llama.cpp ${theirs.get(t)!.decode.at(-1)!.toFixed(1)} tok/s`);
    }
  for (const s of servers.values()) s.close();
  rmSync(gguf, { force: true });
  const rows = o.threads.map((t) => {
    const a = ours.get(t)!, b = theirs.get(t)!;
    const d = median(a.decode), dl = median(b.decode);
    return {
      threads: t,
      oursDecodeTokensPerSecond: d, llamacppDecodeTokensPerSecond: dl, decodeRatio: d / dl,
      perRepRatios: a.decode.map((x, i) => x / b.decode[i]),
      // Tokens per CPU-second of each process: at 1 thread, immune to time lost to other jobs.
      oursDecodeTokensPerCpuSecond: median(a.decodeCpu), llamacppDecodeTokensPerCpuSecond: median(b.decodeCpu),
      cpuRatio: median(a.decodeCpu) / median(b.decodeCpu),
      oursPrefillTokensPerSecond: median(a.prefill), llamacppPrefillTokensPerSecond: median(b.prefill),
      oursDecodeRuns: a.decode, llamacppDecodeRuns: b.decode,
    };
  });
  return { model: { ...config, params: parameterCount(config) }, promptLen: o.promptLen, newTokens: o.newTokens, reps: o.reps, greedyIdsAgree: idsAgree, idsOurs: oursIds.slice(0, 16), idsLlamacpp: theirIds.slice(0, 16), rows };
}

async function compareTrain(o: ReturnType<typeof args>, shape: '30m' | 'stories260k', stepsPerRep: number) {
  const config = benchConfig(shape);
  const batch = 4, seq = 128;
  const model = Model.create(config, { seed: 1234, std: 0.02 });
  const py = spawn(o.python, [path.join(here, 'torch_train.py'), '--serve', '--warmup', '2', '--threads', String(o.threads[0]), ...torchArgs(config, batch, seq)],
    { stdio: 'pipe', env: { ...process.env, OMP_NUM_THREADS: String(Math.max(...o.threads)), OMP_WAIT_POLICY: 'PASSIVE', ...(o.openblasCore ? { OPENBLAS_CORETYPE: o.openblasCore } : {}), ...torchIsaEnv(o.torchIsa) } });
  const torch = new Server(py, `torch ${shape}`);
  const ready = await torch.next();
  const ours = new Map<number, number[]>(o.threads.map((t) => [t, []]));
  const theirs = new Map<number, number[]>(o.threads.map((t) => [t, []]));
  const oursCpu = new Map<number, number[]>(o.threads.map((t) => [t, []]));
  const theirsCpu = new Map<number, number[]>(o.threads.map((t) => [t, []]));
  for (const t of o.threads) {
    native.setThreads(t);
    await measureTrain(model, batch, seq, 1, 1);
    await torch.ask(`1 ${t}`);
  }
  for (let r = 0; r < o.reps; r++)
    for (const t of o.threads) {
      native.setThreads(t);
      const { times, cpuTimes } = await measureTrain(model, batch, seq, stepsPerRep, 0);
      const mine = median(times) * 1000;
      const j = await torch.ask(`${stepsPerRep} ${t}`);
      const th = j.ms_per_step as number;
      ours.get(t)!.push(mine);
      theirs.get(t)!.push(th);
      oursCpu.get(t)!.push(median(cpuTimes) * 1000);
      theirsCpu.get(t)!.push(j.cpu_ms_per_step as number);
      log(`${shape} rep ${r + 1} t${t}: ours ${mine.toFixed(1)} ms/step vs torch ${th.toFixed(1)} ms/step (${(th / mine).toFixed(2)}x)`);
    }
  torch.close();
  const flops = 3 * forwardFlopsPerToken(config, seq) * batch * seq;
  const rows = o.threads.map((t) => {
    const a = median(ours.get(t)!), b = median(theirs.get(t)!);
    return {
      threads: t, oursMsPerStep: a, torchMsPerStep: b, speedup: b / a,
      oursTokensPerSecond: (batch * seq) / (a / 1000), torchTokensPerSecond: (batch * seq) / (b / 1000),
      oursGflops: flops / (a / 1000) / 1e9, torchGflops: flops / (b / 1000) / 1e9,
      perRepSpeedups: ours.get(t)!.map((x, i) => theirs.get(t)![i] / x),
      // CPU ms per step (all threads of each process): at 1 thread, immune to time lost to other jobs.
      oursCpuMsPerStep: median(oursCpu.get(t)!), torchCpuMsPerStep: median(theirsCpu.get(t)!),
      cpuSpeedup: median(theirsCpu.get(t)!) / median(oursCpu.get(t)!),
      oursRuns: ours.get(t)!, torchRuns: theirs.get(t)!,
    };
  });
  return { shape, model: { ...config, params: parameterCount(config) }, torch: ready.torch, torchCpuCapability: ready.cpu_capability ?? null, torchIsa: o.torchIsa, openblasCoretype: o.openblasCore || '(auto)', batch, seq, stepsPerRep, reps: o.reps, gflopsPerStep: flops / 1e9, rows };
}

async function main() {
  const o = args();
  const peaks = Object.fromEntries(o.threads.map((t) => {
    native.setThreads(t);
    return [t, native.measureFmaPeak({ seconds: 0.3, threads: t })];
  }));
  const result: Record<string, unknown> = { date: new Date().toISOString(), isa: native.isa, fmaPeakGflops: peaks };
  if (o.what.includes('decode')) result.decode = await compareDecode(o);
  if (o.what.includes('train')) result.train = await compareTrain(o, '30m', 1);
  if (o.what.includes('tiny')) result.tiny = await compareTrain(o, 'stories260k', o.tinySteps);
  const file = path.join(packageRoot, 'bench', 'results', 'model-compare.json');
  mkdirSync(path.dirname(file), { recursive: true });
  await writeFileAtomic(file, JSON.stringify(result, null, 2) + '\n');
  log(`wrote ${path.relative(process.cwd(), file)}`);
  if (o.json) {
    console.log(JSON.stringify(result));
    return;
  }
  const f = (x: number, d = 1) => x.toFixed(d);
  console.log(`engine SIMD path ${native.isa}${process.env.WST_DASH_ISA ? ` (WST_DASH_ISA=${process.env.WST_DASH_ISA})` : ''}; FMA peak GFLOP/s: ${o.threads.map((t) => `${t} thread(s) ${f(peaks[t])}`).join(', ')}`);
  const dec = result.decode as Awaited<ReturnType<typeof compareDecode>> | undefined;
  if (dec) {
    console.log(`\ndecode, batch 1, ${(dec.model.params / 1e6).toFixed(1)}M F32, prompt ${dec.promptLen}, ${dec.newTokens} greedy tokens (ids agree: ${dec.greedyIdsAgree})`);
    console.log('threads  ours tok/s  llama.cpp tok/s  ratio   per-CPU-s ratio  (prefill ours / llama.cpp)');
    for (const r of dec.rows)
      console.log(`${String(r.threads).padStart(7)}  ${f(r.oursDecodeTokensPerSecond).padStart(10)}  ${f(r.llamacppDecodeTokensPerSecond).padStart(15)}  ${f(r.decodeRatio, 2).padStart(5)}x  ${f(r.cpuRatio, 2).padStart(14)}x  (${f(r.oursPrefillTokensPerSecond)} / ${f(r.llamacppPrefillTokensPerSecond)})`);
  }
  for (const key of ['train', 'tiny'] as const) {
    const tr = result[key] as Awaited<ReturnType<typeof compareTrain>> | undefined;
    if (!tr) continue;
    console.log(`\ntrain step (fwd + bwd + AdamW), ${tr.shape} (${(tr.model.params / 1e6).toFixed(2)}M), ${tr.batch} x ${tr.seq}, ours ${native.isa}, torch ${tr.torch} (CPU capability ${tr.torchCpuCapability ?? '?'}${tr.torchIsa === 'avx2' ? ', limited to AVX2' : ''})`);
    console.log('threads  ours ms/step  torch ms/step  speedup  ours GFLOP/s  torch GFLOP/s  CPU-ms speedup');
    for (const r of tr.rows)
      console.log(`${String(r.threads).padStart(7)}  ${f(r.oursMsPerStep, 2).padStart(12)}  ${f(r.torchMsPerStep, 2).padStart(13)}  ${f(r.speedup, 2).padStart(6)}x  ${f(r.oursGflops).padStart(12)}  ${f(r.torchGflops).padStart(13)}  ${f(r.cpuSpeedup, 2).padStart(13)}x`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
