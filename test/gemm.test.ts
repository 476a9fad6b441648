import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { kernels } from '../src/index.js';
import { native } from '../src/native.js';
import { expectClose, randomF32 } from './helpers.js';

function refMatmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number, transA: boolean, transB: boolean): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += (transA ? a[p * m + i] : a[i * k + p]) * (transB ? b[j * k + p] : b[p * n + j]);
      c[i * n + j] = s;
    }
  return c;
}

/** alpha * op(A) @ op(B) + beta * C in float64; beta == 0 ignores C (even NaN). */
function refGemm(g: GemmCase, a: Float32Array, b: Float32Array, c: Float32Array): Float64Array {
  const ab = refMatmul(a, b, g.m, g.k, g.n, g.transA, g.transB);
  return ab.map((v, i) => g.alpha * v + (g.beta === 0 ? 0 : g.beta * c[i]));
}

interface GemmCase { m: number; k: number; n: number; transA: boolean; transB: boolean; alpha: number; beta: number; seed: number }

function inputs(g: GemmCase): { a: Float32Array; b: Float32Array; c: Float32Array } {
  return {
    a: randomF32(g.m * g.k, g.seed),
    b: randomF32(g.k * g.n, g.seed + 1),
    c: g.beta === 0 ? new Float32Array(g.m * g.n).fill(NaN) : randomF32(g.m * g.n, g.seed + 2),
  };
}

const refCache = new Map<string, Float64Array>();
function checkCase(g: GemmCase, got: Float32Array, what: string): void {
  const key = JSON.stringify(g);
  let ref = refCache.get(key);
  if (!ref) {
    const { a, b, c } = inputs(g);
    refCache.set(key, (ref = refGemm(g, a, b, c)));
  }
  expectClose(got, ref, 1e-4, 1e-4 * Math.sqrt(g.k) * Math.max(1, Math.abs(g.alpha)), what);
}

function label(g: GemmCase): string {
  return `${g.m}x${g.k}x${g.n} transA=${g.transA} transB=${g.transB} alpha=${g.alpha} beta=${g.beta}`;
}

// Shapes around every path's tile edges: AVX-512 MR 14 / NR 32 / KC <= 512 / NC 512, AVX2 6 / 16 /
// 384 / 256, generic 4 / 8 / 256 / 128; the small-m paths (dot kernel for m <= 16 with transB, B
// read in place for m <= MR); k over several KC blocks; n over several NC blocks.
const edgeShapes: [number, number, number][] = [
  [13, 383, 31], [14, 384, 32], [15, 385, 33],
  [5, 255, 15], [6, 256, 16], [7, 257, 17],
  [3, 9, 7], [4, 8, 8], [9, 31, 9],
  [1, 1, 1], [1, 513, 1025], [2, 100, 3],
  [8, 301, 100], [16, 301, 100], [17, 301, 100], [33, 200, 70],
  [29, 800, 1100], [130, 260, 300], [15, 1100, 40],
];
const edgeCases: GemmCase[] = [];
{
  let seed = 100;
  for (const [m, k, n] of edgeShapes)
    for (const transA of [false, true])
      for (const transB of [false, true]) {
        const [alpha, beta] = ([[1, 0], [0.75, -1.25], [-2, 1]] as const)[seed % 3];
        edgeCases.push({ m, k, n, transA, transB, alpha, beta, seed: (seed += 3) });
      }
}

function runNative(g: GemmCase): Float32Array {
  const { a, b, c } = inputs(g);
  native.sgemm({ a, b, c, m: g.m, n: g.n, k: g.k, transA: g.transA, transB: g.transB, alpha: g.alpha, beta: g.beta }, false);
  return c;
}

// Every path (packed, B read in place, dot kernel) on problems big enough to be split
// across threads and to cross the KC and NC blocks.
const bigCases: GemmCase[] = [
  { m: 150, k: 800, n: 1100, transA: false, transB: false, alpha: 1, beta: 0, seed: 11 },
  { m: 131, k: 700, n: 1100, transA: false, transB: true, alpha: 1, beta: 0, seed: 12 },
  { m: 200, k: 900, n: 700, transA: true, transB: false, alpha: 0.5, beta: 1, seed: 13 },
  { m: 5, k: 1000, n: 3000, transA: false, transB: true, alpha: 1, beta: 0, seed: 14 },
  { m: 12, k: 500, n: 2100, transA: false, transB: false, alpha: 1, beta: 0.5, seed: 15 },
  { m: 1, k: 512, n: 8192, transA: false, transB: true, alpha: 1, beta: 0, seed: 16 },
];

describe('matmul', () => {
  const shapes: [number, number, number][] = [[1, 1, 1], [3, 5, 7], [17, 33, 9], [65, 129, 47], [100, 257, 31], [1, 300, 513], [200, 3, 200]];
  for (const [m, k, n] of shapes)
    for (const transA of [false, true])
      for (const transB of [false, true])
        it(`${m}x${k}x${n} transA=${transA} transB=${transB} matches a float64 reference`, () => {
          const a = randomF32(m * k, m * 7 + k), b = randomF32(k * n, n * 13 + k);
          const c = kernels.ops.matmul(a, b, { m, k, n, transA, transB });
          expectClose(c, refMatmul(a, b, m, k, n, transA, transB), 1e-4, 1e-4 * Math.sqrt(k), 'c');
        });

  it('async form gives the same result', async () => {
    const a = randomF32(37 * 41, 1), b = randomF32(41 * 29, 2);
    const sync = kernels.matmul(a, b, { m: 37, k: 41, n: 29 });
    const async = await kernels.async.matmul(a, b, { m: 37, k: 41, n: 29 });
    expect(Array.from(async)).toEqual(Array.from(sync));
  });

  it('rejects bad arguments with errors naming them', () => {
    const a = new Float32Array(6);
    expect(() => kernels.matmul(a, a, { m: 2, k: 3, n: 3 })).toThrow(/b must have length 9/);
    expect(() => kernels.matmul(a, a, { m: -2, k: 3, n: 2 })).toThrow(/m must be an integer/);
    expect(() => kernels.matmul(a, a, { m: NaN, k: 3, n: 2 })).toThrow(/m must be/);
    expect(() => kernels.matmul(new Float64Array(6) as unknown as Float32Array, a, { m: 2, k: 3, n: 2 })).toThrow(/a must be a Float32Array/);
    expect(() => kernels.matmul(a, a, null as never)).toThrow(/options must be an object/);
    expect(() => kernels.matmul(a, a, { m: 2, k: 3, n: 2, transB: 1 as never })).toThrow(/transB must be a boolean/);
  });

  it('is bit-identical across thread counts', () => {
    const a = randomF32(130 * 300, 5), b = randomF32(300 * 70, 6);
    const before = kernels.threads;
    try {
      kernels.threads = 1;
      const one = kernels.matmul(a, b, { m: 130, k: 300, n: 70 });
      kernels.threads = 3;
      const three = kernels.matmul(a, b, { m: 130, k: 300, n: 70 });
      expect(Buffer.from(three.buffer).equals(Buffer.from(one.buffer))).toBe(true);
    } finally {
      kernels.threads = before;
    }
  });
});

describe(`sgemm (${native.isa} path)`, () => {
  for (const g of edgeCases)
    it(`${label(g)} matches a float64 reference`, () => checkCase(g, runNative(g), 'c'));

  it('beta = 0 never reads C: NaN in C does not leak', () => {
    for (const [m, k, n, transB] of [[3, 50, 40, false], [3, 50, 40, true], [70, 400, 90, false], [40, 30, 33, true]] as const) {
      const g: GemmCase = { m, k, n, transA: false, transB, alpha: 1.5, beta: 0, seed: 7 };
      const c = runNative(g);
      expect(c.every(Number.isFinite), `${label(g)} all finite`).toBe(true);
      checkCase(g, c, 'c');
    }
  });

  it('alpha = 0 or k = 0 gives beta * C (and zeros for beta = 0, even over NaN)', () => {
    const a = randomF32(4 * 6, 1), b = randomF32(6 * 5, 2), c = randomF32(4 * 5, 3);
    const want = Array.from(c, (v) => Math.fround(2 * v));
    const c1 = c.slice();
    native.sgemm({ a, b, c: c1, m: 4, n: 5, k: 6, alpha: 0, beta: 2 }, false);
    expect(Array.from(c1)).toEqual(want);
    const c2 = c.slice();
    native.sgemm({ a: new Float32Array(0), b: new Float32Array(0), c: c2, m: 4, n: 5, k: 0, alpha: 1, beta: 2 }, false);
    expect(Array.from(c2)).toEqual(want);
    const c3 = new Float32Array(20).fill(NaN);
    native.sgemm({ a, b, c: c3, m: 4, n: 5, k: 6, transB: true, alpha: 0, beta: 0 }, false);
    expect(Array.from(c3)).toEqual(new Array(20).fill(0));
  });

  it('m = 0 or n = 0 is a no-op', () => {
    expect(() => native.sgemm({ a: new Float32Array(0), b: new Float32Array(12), c: new Float32Array(0), m: 0, n: 4, k: 3, alpha: 1, beta: 0 }, false)).not.toThrow();
    const c = new Float32Array(0);
    native.sgemm({ a: new Float32Array(6), b: new Float32Array(0), c, m: 2, n: 0, k: 3, transA: true, transB: true, alpha: 1, beta: 0 }, false);
  });

  for (const g of bigCases)
    it(`${label(g)}: bit-identical for 1, 2 and 3 threads, and correct`, () => {
      const before = kernels.threads;
      try {
        const out = [1, 2, 3].map((t) => {
          kernels.threads = t;
          return runNative(g);
        });
        for (const o of out.slice(1)) expect(Buffer.from(o.buffer).equals(Buffer.from(out[0].buffer))).toBe(true);
        checkCase(g, out[0], 'c');
      } finally {
        kernels.threads = before;
      }
    });

  it('measureFmaPeak returns a positive throughput and checks its arguments', () => {
    const g = native.measureFmaPeak({ seconds: 0.01, threads: 1 });
    expect(Number.isFinite(g) && g > 0.1).toBe(true);
    expect(() => native.measureFmaPeak({ seconds: 0, threads: 1 })).toThrow(/seconds/);
    expect(() => native.measureFmaPeak({ seconds: 0.01, threads: 0 })).toThrow(/threads/);
  });
});

// Every SIMD path, forced with WST_DASH_ISA in a child process (the path is fixed at load).
const ISAS = ['generic', 'avx2', 'avx512'] as const;
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const childCode = `
const { native } = await import(${JSON.stringify(pathToFileURL(path.join(root, 'src', 'native.ts')).href)});
const chunks = [];
for await (const ch of process.stdin) chunks.push(ch);
const cases = JSON.parse(Buffer.concat(chunks).toString());
const f32 = (s) => { const b = Buffer.from(s, 'base64'); return new Float32Array(b.buffer, b.byteOffset, b.length / 4); };
const out = cases.map((g) => [1, 3].map((t) => {
  native.setThreads(t);
  const c = f32(g.c).slice();
  native.sgemm({ a: f32(g.a), b: f32(g.b), c, m: g.m, n: g.n, k: g.k, transA: g.transA, transB: g.transB, alpha: g.alpha, beta: g.beta }, false);
  return Buffer.from(c.buffer).toString('base64');
}));
process.stdout.write(JSON.stringify({ isa: native.isa, out }));
`;

describe('sgemm on every SIMD path (WST_DASH_ISA)', () => {
  const cases = [...edgeCases, ...bigCases.slice(0, 5)];
  const b64 = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength).toString('base64');
  for (const isa of ISAS)
    it(`WST_DASH_ISA=${isa}: edge shapes match the reference, bit-identical for 1 and 3 threads`, () => {
      const payload = cases.map((g) => {
        const { a, b, c } = inputs(g);
        return { ...g, a: b64(a), b: b64(b), c: b64(c) };
      });
      const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', childCode], {
        cwd: root, input: JSON.stringify(payload), env: { ...process.env, WST_DASH_ISA: isa },
        maxBuffer: 1 << 28, encoding: 'utf8',
      });
      expect(r.status, r.stderr).toBe(0);
      const res = JSON.parse(r.stdout) as { isa: string; out: string[][] };
      // The requested path, or the best below it that this CPU has.
      const rank = (s: string) => ISAS.indexOf(s as (typeof ISAS)[number]);
      expect(rank(res.isa)).toBeGreaterThanOrEqual(0);
      expect(rank(res.isa)).toBeLessThanOrEqual(rank(isa));
      if (rank(isa) <= rank(native.isa)) expect(res.isa).toBe(isa);
      cases.forEach((g, i) => {
        const [one, three] = res.out[i];
        expect(three, `${label(g)} threads 1 vs 3`).toBe(one);
        const buf = Buffer.from(one, 'base64');
        checkCase(g, new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4), `${res.isa} ${label(g)}`);
      });
    });
});

describe('bf16 matmul', () => {
  it('toBf16 rounds to nearest even and fromBf16 widens exactly', () => {
    const x = new Float32Array([1, -2.5, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -9, 3.14159, NaN, Infinity, -0]);
    const back = kernels.fromBf16(kernels.toBf16(x));
    expect(Array.from(back.subarray(0, 6))).toEqual([1, -2.5, 1, 1 + 2 ** -6, 1, 3.140625]);
    expect(Number.isNaN(back[6])).toBe(true);
    expect(back[7]).toBe(Infinity);
    expect(Object.is(back[8], -0)).toBe(true);
    const r = randomF32(1000, 5);
    const rb = kernels.fromBf16(kernels.toBf16(r));
    for (let i = 0; i < r.length; i++) expect(Math.abs(rb[i] - r[i])).toBeLessThanOrEqual(Math.abs(r[i]) * 2 ** -8);
    expect(() => native.castBf16({ out: new Uint16Array(3), x: new Float32Array(4) }, false)).toThrow(/out must have length 4/);
  });

  for (const [m, k, n] of [[37, 71, 53], [64, 128, 96], [1, 40, 257]] as const)
    for (const transA of [false, true])
      for (const transB of [false, true])
        it(`${m}x${k}x${n} ${transA ? 'T' : 'N'}${transB ? 'T' : 'N'} matches float64 on the bf16 values`, () => {
          const a = kernels.toBf16(randomF32(m * k, m + k)), b = kernels.toBf16(randomF32(k * n, k + n));
          const c = kernels.ops.matmulBf16(a, b, { m, k, n, transA, transB });
          const ref = refMatmul(kernels.fromBf16(a), kernels.fromBf16(b), m, k, n, transA, transB);
          expectClose(c, ref, 1e-5, 1e-5, 'matmulBf16');
        });

  it('rejects a Float32Array where bf16 bits are expected', () => {
    expect(() => kernels.ops.matmulBf16(new Float32Array(4) as never, new Uint16Array(4), { m: 2, k: 2, n: 2 })).toThrow(/a must be a Uint16Array/);
    expect(() => kernels.ops.matmulBf16(new Uint16Array(4), new Uint16Array(3), { m: 2, k: 2, n: 2 })).toThrow(/b must have length 4/);
  });
});

describe('tf32 matmul', () => {
  const tf32 = (x: number) => {
    const f = new Float32Array([x]), u = new Uint32Array(f.buffer);
    if ((u[0] & 0x7f800000) !== 0x7f800000) u[0] = ((u[0] + 0x1000) & 0xffffe000) >>> 0;
    return f[0];
  };
  for (const [m, k, n, transA, transB] of [[37, 71, 53, false, false], [64, 40, 96, true, true], [5, 33, 130, false, true]] as const)
    it(`${m}x${k}x${n} equals float64 on tf32-rounded inputs, ~1e-3 of the exact product`, () => {
      const a = randomF32(m * k, 3 + m), b = randomF32(k * n, 4 + n);
      const c = kernels.ops.matmulTf32(a, b, { m, k, n, transA, transB });
      const rounded = refMatmul(a.map(tf32), b.map(tf32), m, k, n, transA, transB);
      expectClose(c, rounded, 1e-5, 1e-5, 'matmulTf32 vs rounded');
      const exact = refMatmul(a, b, m, k, n, transA, transB);
      expectClose(c, exact, 3e-3, 3e-3, 'matmulTf32 vs exact');
    });
});
