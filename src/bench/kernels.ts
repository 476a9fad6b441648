// `wst-dash bench kernels`: kernel throughput against this machine's own limits.
// - FMA peak: a native loop of independent FMA chains on the active SIMD path (GFLOP/s).
// - GEMM: GFLOP/s for 1024^3 and transformer shapes, with OpenBLAS run side by side
//   (interleaved repetitions, medians) when the machine has it.
// - Attention (forward and backward) GFLOP/s against the FMA peak.
// - Sampling tokens/s, against the streaming read bandwidth over the same bytes of logits.
// Human table on stdout (or one JSON object with --json); progress on stderr; the JSON is
// also written to bench/results/kernels-<timestamp>.json and kernels-latest.json.
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { kernels } from '../kernels/index.js';
import { native, packageRoot } from '../native.js';

export interface KernelBenchOptions { json: boolean; quick: boolean; threads?: number; out?: string }

interface GemmShape { name: string; m: number; k: number; n: number; transA: boolean; transB: boolean; quick: boolean }

// Transformer shapes (d_model 512, MLP 1536, vocab 8192, 512 tokens per step). Forward
// projections are x @ W^T (W stored (out, in): transB); the backward has dinp = dout @ W and
// dW = dout^T @ x (transA).
const GEMM_SHAPES: GemmShape[] = [
  { name: 'square 1024^3', m: 1024, k: 1024, n: 1024, transA: false, transB: false, quick: true },
  { name: 'fwd x@Wqkv^T', m: 512, k: 512, n: 1536, transA: false, transB: true, quick: true },
  { name: 'fwd mlp down x@W^T', m: 512, k: 1536, n: 512, transA: false, transB: true, quick: false },
  { name: 'fwd lm head x@W^T', m: 512, k: 512, n: 8192, transA: false, transB: true, quick: true },
  { name: 'bwd dinp=dout@W', m: 512, k: 1536, n: 512, transA: false, transB: false, quick: false },
  { name: 'bwd dW=dout^T@x', m: 1536, k: 512, n: 512, transA: true, transB: false, quick: true },
  { name: 'decode m=1 x@W^T', m: 1, k: 512, n: 8192, transA: false, transB: true, quick: true },
  { name: 'decode m=16 x@W^T', m: 16, k: 512, n: 2048, transA: false, transB: true, quick: false },
  { name: 'decode m=64 x@W^T', m: 64, k: 512, n: 8192, transA: false, transB: true, quick: false },
];

export interface GemmResult {
  name: string;
  shape: { m: number; k: number; n: number; transA: boolean; transB: boolean };
  threads: number;
  gflops: number;
  openblasGflops: number | null;
  ratio: number | null;
  /** The same ratio from the best (not median) times of each. */
  ratioBest: number | null;
  /** OpenBLAS is called through a binding without transA: its number is for the same m, k, n untransposed. */
  openblasNote?: string;
  fractionOfPeak: number;
}

export interface AttentionResult {
  op: 'forward' | 'backward';
  shape: { batch: number; heads: number; kvHeads: number; seq: number; headDim: number; causal: boolean };
  threads: number;
  gflops: number;
  fractionOfPeak: number;
}

export interface SamplingResult {
  config: string;
  rows: number;
  vocab: number;
  threads: number;
  tokensPerSecond: number;
  logitsGBps: number;
  /** logitsGBps over the measured read bandwidth (sampling is memory-bound, not FMA-bound). */
  fractionOfPeak: number;
}

export interface KernelBenchReport {
  timestamp: string;
  quick: boolean;
  machine: {
    cpu: string;
    cores: number;
    isa: string;
    threads: number[];
    loadAverage: number[];
    fmaPeakGflops: Record<string, number>;
    readBandwidthGBps: Record<string, number>;
    openblas: { available: boolean; coretype: string | null; threadTimeout: string | null };
  };
  gemm: GemmResult[];
  attention: AttentionResult[] | { skipped: string };
  sampling: SamplingResult[] | { skipped: string };
}

const progress = (msg: string) => process.stderr.write(`[bench kernels] ${msg}\n`);

function randomF32(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let a = seed >>> 0;
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  }
  return out;
}

const nowSec = () => Number(process.hrtime.bigint()) * 1e-9;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : 0.5 * (s[s.length / 2 - 1] + s[s.length / 2]);
};

// A blocking sleep (the timed loops are synchronous).
const sleepSync = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

// How long the OpenBLAS and the engine's pools spin after a call before their threads sleep
// (OpenBLAS: 2^OPENBLAS_THREAD_TIMEOUT TSC cycles, set below to 2^20, ~0.5 ms at a 2.1 GHz TSC;
// the engine: ~0.4 ms, threadpool.cpp): each sample starts this long after the other library's
// last call, so that neither library's idle threads spin on a core the other one is timed on.
const SETTLE_MS = 2;

/**
 * Seconds per call of each function, measured side by side: every sample runs each function
 * `reps` times in turn (reps sized so a sample lasts at least minSample), until `budget` seconds
 * have passed and each has `minSamples` samples. Returns the medians (and the best times in
 * `best`, less sensitive to other processes on a shared machine).
 */
function interleaved(fns: (() => unknown)[], budget: number, minSamples: number, minSample: number, best?: number[]): number[] {
  const reps = fns.map((fn) => {
    fn(); // warm-up (page faults, packing buffers, thread wake-up)
    let r = 1;
    for (;;) {
      const t0 = nowSec();
      for (let i = 0; i < r; i++) fn();
      const dt = nowSec() - t0;
      if (dt >= minSample || r >= 1 << 20) return r;
      r = Math.max(r * 2, Math.ceil((r * minSample) / Math.max(dt, 1e-7)));
    }
  });
  const samples: number[][] = fns.map(() => []);
  const start = nowSec();
  while (nowSec() - start < budget || samples[0].length < minSamples) {
    fns.forEach((fn, j) => {
      if (fns.length > 1) sleepSync(SETTLE_MS);
      const t0 = nowSec();
      for (let i = 0; i < reps[j]; i++) fn();
      samples[j].push((nowSec() - t0) / reps[j]);
    });
  }
  if (best) samples.forEach((xs, j) => (best[j] = Math.min(...xs)));
  return samples.map(median);
}

function isNotImplemented(err: unknown): boolean {
  const msg = err instanceof Error ? err.message : String(err);
  return /not implemented|is not a function|Cannot read properties of undefined/i.test(msg);
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

const fmt = (x: number | null | undefined, digits = 1) => (x === null || x === undefined ? '-' : x.toFixed(digits));

export async function runKernelBench(opts: KernelBenchOptions): Promise<KernelBenchReport> {
  const quick = opts.quick;
  const threadList = opts.threads !== undefined ? [opts.threads] : [1, 2];
  // Debian's OpenBLAS 0.3.21 does not know newer Xeons (e.g. model 207) and falls back to its
  // SSE3 "Prescott" kernels; compare against its best kernels for the ISA we run instead (the
  // environment variable must be set before OpenBLAS is loaded; a user's own value wins).
  if (process.env.OPENBLAS_CORETYPE === undefined && native.isa !== 'generic')
    process.env.OPENBLAS_CORETYPE = native.isa === 'avx512' ? 'SkylakeX' : 'Haswell';
  // OpenBLAS's idle threads spin for 2^28 TSC cycles (~0.13 s here) after each call before they
  // sleep: interleaved in one process, that spinning took the second core from the engine's next
  // 2-thread sample (issue 16's "2-thread collapse": ours at 2 threads measured below 1 thread,
  // while alone it scaled 1.8x). 2^20 cycles (~0.5 ms) still spans the back-to-back calls of
  // one sample, and samples are SETTLE_MS apart. A user's own value wins.
  if (process.env.OPENBLAS_THREAD_TIMEOUT === undefined) process.env.OPENBLAS_THREAD_TIMEOUT = '20';
  const openblas = Boolean(native.openblasAvailable());
  const threadsBefore = kernels.threads;

  const report: KernelBenchReport = {
    timestamp: new Date().toISOString(),
    quick,
    machine: {
      cpu: os.cpus()[0]?.model ?? 'unknown',
      cores: os.cpus().length,
      isa: native.isa,
      threads: threadList,
      loadAverage: os.loadavg().map((x) => Math.round(x * 100) / 100),
      fmaPeakGflops: {},
      readBandwidthGBps: {},
      openblas: {
        available: openblas,
        coretype: openblas ? (process.env.OPENBLAS_CORETYPE ?? null) : null,
        threadTimeout: openblas ? (process.env.OPENBLAS_THREAD_TIMEOUT ?? null) : null,
      },
    },
    gemm: [],
    attention: [],
    sampling: [],
  };

  const budget = quick ? 0.35 : 2.0, minSamples = quick ? 3 : 7, minSample = quick ? 0.002 : 0.005;
  const samplingVocab = 32768, samplingRows = 64;
  try {
    for (const t of threadList) {
      kernels.threads = t;
      progress(`FMA peak, ${t} thread(s)`);
      // A peak is a maximum: the best of several short trials (robust to a busy machine).
      const trials = quick ? 5 : 12;
      let fma = 0, bw = 0;
      for (let i = 0; i < trials; i++) {
        fma = Math.max(fma, native.measureFmaPeak({ seconds: 0.04, threads: t }));
        bw = Math.max(bw, native.measureReadBandwidth({ bytes: samplingRows * samplingVocab * 4, seconds: 0.03, threads: t }));
      }
      report.machine.fmaPeakGflops[t] = fma;
      report.machine.readBandwidthGBps[t] = bw;
    }

    // ---- GEMM ----------------------------------------------------------------------------
    for (const s of GEMM_SHAPES.filter((g) => !quick || g.quick)) {
      const a = randomF32(s.m * s.k, 1), b = randomF32(s.k * s.n, 2), c = new Float32Array(s.m * s.n);
      const c2 = new Float32Array(s.m * s.n);
      const flops = 2 * s.m * s.n * s.k;
      for (const t of threadList) {
        progress(`GEMM ${s.name} (m=${s.m} k=${s.k} n=${s.n}), ${t} thread(s)`);
        kernels.threads = t;
        const ours = () => native.sgemm({ a, b, c, m: s.m, n: s.n, k: s.k, transA: s.transA, transB: s.transB, alpha: 1, beta: 0 }, false);
        const fns: (() => unknown)[] = [ours];
        if (openblas) fns.push(() => native.openblasSgemm({ a, b, c: c2, m: s.m, k: s.k, n: s.n, transB: s.transB, threads: t }));
        const best: number[] = [];
        const [tOurs, tBlas] = interleaved(fns, budget, minSamples, minSample, best);
        const gflops = flops / tOurs * 1e-9;
        const blas = tBlas === undefined ? null : flops / tBlas * 1e-9;
        report.gemm.push({
          name: s.name,
          shape: { m: s.m, k: s.k, n: s.n, transA: s.transA, transB: s.transB },
          threads: t,
          gflops,
          openblasGflops: blas,
          ratio: blas === null ? null : gflops / blas,
          ratioBest: blas === null ? null : best[1] / best[0],
          ...(s.transA && openblas ? { openblasNote: 'OpenBLAS timed on the same m, k, n without transA' } : {}),
          fractionOfPeak: gflops / report.machine.fmaPeakGflops[t],
        });
      }
    }

    // ---- attention -----------------------------------------------------------------------
    const att = { batch: 1, heads: 8, kvHeads: 2, seq: quick ? 256 : 512, headDim: 64, causal: true };
    try {
      const ops = kernels.ops as unknown as Record<string, (o: unknown) => unknown>;
      const q = randomF32(att.batch * att.seq * att.heads * att.headDim, 3);
      const kk = randomF32(att.batch * att.seq * att.kvHeads * att.headDim, 4);
      const vv = randomF32(att.batch * att.seq * att.kvHeads * att.headDim, 5);
      const base = { batch: att.batch, heads: att.heads, kvHeads: att.kvHeads, seqQ: att.seq, seqK: att.seq, headDim: att.headDim, causal: att.causal, q, k: kk, v: vv };
      // Causal pairs (query, visible key); QK^T and PV are 2 flops per pair and dim each.
      const pairs = att.batch * att.heads * (att.seq * (att.seq + 1)) / 2;
      const fwdFlops = 4 * pairs * att.headDim;
      const rows: AttentionResult[] = [];
      for (const t of threadList) {
        kernels.threads = t;
        progress(`attention forward (seq ${att.seq}), ${t} thread(s)`);
        const [tf] = interleaved([() => ops.attention(base)], budget, minSamples, minSample);
        rows.push({ op: 'forward', shape: att, threads: t, gflops: fwdFlops / tf * 1e-9, fractionOfPeak: fwdFlops / tf * 1e-9 / report.machine.fmaPeakGflops[t] });
        if (typeof ops.attentionForward === 'function' && typeof ops.attentionBackward === 'function') {
          progress(`attention backward (seq ${att.seq}), ${t} thread(s)`);
          const { out, lse } = ops.attentionForward(base) as { out: Float32Array; lse: Float32Array };
          const dout = randomF32(q.length, 6);
          // Backward: recompute QK^T, dP = dO V^T, dV, dQ, dK: 5 products of 2 flops per pair and dim.
          const bwdFlops = 10 * pairs * att.headDim;
          const [tb] = interleaved([() => ops.attentionBackward({ ...base, dout, out, lse })], budget, minSamples, minSample);
          rows.push({ op: 'backward', shape: att, threads: t, gflops: bwdFlops / tb * 1e-9, fractionOfPeak: bwdFlops / tb * 1e-9 / report.machine.fmaPeakGflops[t] });
        }
      }
      report.attention = rows;
    } catch (err) {
      if (!isNotImplemented(err)) throw err;
      report.attention = { skipped: `not available: ${(err as Error).message}` };
      progress(`attention skipped: ${(err as Error).message}`);
    }

    // ---- sampling ------------------------------------------------------------------------
    try {
      const ops = kernels.ops as unknown as Record<string, (l: Float32Array, o: unknown) => unknown>;
      const logits = randomF32(samplingRows * samplingVocab, 7).map((x) => 8 * x);
      const configs: [string, Record<string, unknown>][] = [
        ['greedy', { temperature: 0 }],
        ['T=0.8 top-p 0.95', { temperature: 0.8, topP: 0.95 }],
        ['T=1 top-k 50 min-p 0.05', { temperature: 1, topK: 50, minP: 0.05 }],
      ];
      const rows: SamplingResult[] = [];
      for (const t of threadList) {
        kernels.threads = t;
        for (const [name, cfg] of configs) {
          progress(`sampling ${name} (${samplingRows} x ${samplingVocab}), ${t} thread(s)`);
          const o = { rows: samplingRows, vocab: samplingVocab, seed: 1234, counter: 0, ...cfg };
          const [ts] = interleaved([() => ops.sample(logits, o)], budget, minSamples, minSample);
          const gbps = (samplingRows * samplingVocab * 4) / ts * 1e-9;
          rows.push({ config: name, rows: samplingRows, vocab: samplingVocab, threads: t, tokensPerSecond: samplingRows / ts, logitsGBps: gbps, fractionOfPeak: gbps / report.machine.readBandwidthGBps[t] });
        }
      }
      report.sampling = rows;
    } catch (err) {
      if (!isNotImplemented(err)) throw err;
      report.sampling = { skipped: `not available: ${(err as Error).message}` };
      progress(`sampling skipped: ${(err as Error).message}`);
    }
  } finally {
    kernels.threads = threadsBefore;
  }

  const dir = path.resolve(opts.out ?? path.join(packageRoot, 'bench', 'results'));
  mkdirSync(dir, { recursive: true });
  const text = JSON.stringify(report, null, 2) + '\n';
  const stamp = report.timestamp.replace(/[:.]/g, '-');
  writeAtomic(path.join(dir, `kernels-${stamp}.json`), text);
  writeAtomic(path.join(dir, 'kernels-latest.json'), text);
  progress(`wrote ${path.join(dir, `kernels-${stamp}.json`)}`);

  if (opts.json) process.stdout.write(JSON.stringify(report) + '\n');
  else process.stdout.write(renderTable(report));
  return report;
}

function renderTable(r: KernelBenchReport): string {
  const lines: string[] = [];
  const m = r.machine;
  lines.push(`CPU ${m.cpu} (${m.cores} cores), SIMD path ${m.isa}, load average ${m.loadAverage.join(' ')}`);
  for (const t of m.threads)
    lines.push(`  ${t} thread(s): FMA peak ${fmt(m.fmaPeakGflops[t])} GFLOP/s, read bandwidth ${fmt(m.readBandwidthGBps[t])} GB/s`);
  lines.push(`  OpenBLAS: ${m.openblas.available ? `yes (OPENBLAS_CORETYPE=${m.openblas.coretype ?? 'auto'}, OPENBLAS_THREAD_TIMEOUT=${m.openblas.threadTimeout ?? 'default'})` : 'not installed'}`);
  lines.push('');
  lines.push('GEMM                    m     k     n  thr   GFLOP/s  OpenBLAS  ratio  (best)  of peak');
  for (const g of r.gemm)
    lines.push(
      `${g.name.padEnd(20)} ${String(g.shape.m).padStart(4)} ${String(g.shape.k).padStart(5)} ${String(g.shape.n).padStart(5)} ${String(g.threads).padStart(4)} ` +
      `${fmt(g.gflops).padStart(9)} ${fmt(g.openblasGflops).padStart(9)} ${fmt(g.ratio, 2).padStart(6)} ${fmt(g.ratioBest, 2).padStart(7)} ${(fmt(g.fractionOfPeak * 100, 0) + '%').padStart(8)}` +
      (g.openblasNote ? '  (*)' : ''));
  if (r.gemm.some((g) => g.openblasNote)) lines.push('  (*) OpenBLAS timed on the same m, k, n without transA (its binding has no transA)');
  lines.push('');
  if ('skipped' in r.attention) lines.push(`Attention: skipped (${r.attention.skipped})`);
  else {
    lines.push('Attention (B H KVH T D)     op        thr   GFLOP/s  of peak');
    for (const a of r.attention)
      lines.push(`${`${a.shape.batch} ${a.shape.heads} ${a.shape.kvHeads} ${a.shape.seq} ${a.shape.headDim}${a.shape.causal ? ' causal' : ''}`.padEnd(27)} ${a.op.padEnd(9)} ${String(a.threads).padStart(3)} ${fmt(a.gflops).padStart(9)} ${(fmt(a.fractionOfPeak * 100, 0) + '%').padStart(8)}`);
  }
  lines.push('');
  if ('skipped' in r.sampling) lines.push(`Sampling: skipped (${r.sampling.skipped})`);
  else {
    lines.push('Sampling (rows x vocab)         config                   thr   tokens/s  logits GB/s  of read bw');
    for (const s of r.sampling)
      lines.push(`${`${s.rows} x ${s.vocab}`.padEnd(31)} ${s.config.padEnd(24)} ${String(s.threads).padStart(3)} ${fmt(s.tokensPerSecond, 0).padStart(10)} ${fmt(s.logitsGBps).padStart(12)} ${(fmt(s.fractionOfPeak * 100, 0) + '%').padStart(11)}`);
  }
  return lines.join('\n') + '\n';
}
