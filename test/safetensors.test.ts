import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, readConfigFile, tensorShapes, type ModelConfig } from '../src/models/config.js';
import {
  SafetensorsError, bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, loadCheckpoint, loadCheckpointTensors, readSafetensors,
  readSafetensorsHeader, saveCheckpoint, validateAgainstConfig, writeSafetensors, type Tensor,
} from '../src/models/safetensors.js';
import { randomF32, rng } from './helpers.js';

const SHARED = process.env.WST_DASH_SHARED ?? fileURLToPath(new URL('../../shared', import.meta.url));
const STORIES = path.join(SHARED, 'models', 'stories260K');
const haveStories = existsSync(path.join(STORIES, 'model.safetensors'));
if (!haveStories) console.warn(`stories260K fixture not found at ${STORIES} (set WST_DASH_SHARED): skipping its tests`);

/** Independent f16 decoder: (-1)^s × 2^(e-15) × (1 + m/1024), subnormals m × 2^-24. */
function refHalf(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  if (e === 0) return s * m * 2 ** -24;
  return s * 2 ** (e - 15) * (1 + m / 1024);
}

/** Raw safetensors bytes from a header object and a data section (no validation, for corrupt inputs). */
function rawFile(header: unknown, data: Uint8Array, lengthOverride?: bigint): Buffer {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

function bytesOf(t: Float32Array): Buffer {
  return Buffer.from(t.buffer, t.byteOffset, t.byteLength);
}

describe('half-precision conversion', () => {
  it('widens every f16 bit pattern exactly', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const f = f16ToF32(all);
    for (let h = 0; h < 65536; h++) {
      const want = refHalf(h);
      if (Number.isNaN(want)) expect(Number.isNaN(f[h]), `0x${h.toString(16)}`).toBe(true);
      else if (f[h] !== want || Object.is(f[h], -0) !== Object.is(want, -0)) expect.fail(`f16 0x${h.toString(16)}: got ${f[h]}, expected ${want}`);
    }
  });

  it('narrows known values, including subnormals, ±0, ±inf, NaN and ties', () => {
    const cases: [number, number][] = [
      [1, 0x3c00], [-2, 0xc000], [0.5, 0x3800], [65504, 0x7bff], [65519.99, 0x7bff], [65520, 0x7c00], [1e6, 0x7c00], [-1e6, 0xfc00],
      [Infinity, 0x7c00], [-Infinity, 0xfc00], [0, 0x0000], [-0, 0x8000], [2 ** -24, 0x0001], [-(2 ** -24), 0x8001],
      [2 ** -14, 0x0400], [2 ** -14 - 2 ** -24, 0x03ff], [2 ** -25, 0x0000], [2 ** -25 * 1.0001, 0x0001], [3 * 2 ** -25, 0x0002],
      [2 ** -26, 0x0000], [1e-10, 0x0000], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [1 + 2 ** -11 + 2 ** -20, 0x3c01],
      [0.1, 0x2e66], [-65504, 0xfbff],
    ];
    const out = f32ToF16(Float32Array.from(cases.map((c) => c[0])));
    cases.forEach(([x, h], i) => expect(out[i], `f32ToF16(${x})`).toBe(h));
    const nan = f32ToF16(Float32Array.of(NaN))[0];
    expect(nan & 0x7c00).toBe(0x7c00);
    expect(nan & 0x3ff).not.toBe(0);
  });

  it('round-trips every f16 value and rounds random floats to the nearest f16 (ties to even)', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = f32ToF16(f16ToF32(all));
    for (let h = 0; h < 65536; h++) if (!Number.isNaN(refHalf(h)) && back[h] !== h) expect.fail(`0x${h.toString(16)} → 0x${back[h].toString(16)}`);
    // Sorted finite non-negative f16 values for a nearest-value search.
    const pos: number[] = [];
    for (let h = 0; h < 0x7c00; h++) pos.push(refHalf(h));
    const r = rng(7);
    const xs = new Float32Array(20000);
    for (let i = 0; i < xs.length; i++) xs[i] = (r() < 0.5 ? -1 : 1) * 2 ** (-27 + 44 * r()) * (1 + r());
    const got = f32ToF16(xs);
    for (let i = 0; i < xs.length; i++) {
      const a = Math.abs(xs[i]);
      let lo = 0, hi = pos.length - 1;
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        if (pos[mid] <= a) lo = mid;
        else hi = mid;
      }
      let want: number;
      if (a >= 65520) want = 0x7c00;
      else if (a - pos[lo] < pos[hi] - a) want = lo;
      else if (a - pos[lo] > pos[hi] - a) want = hi;
      else want = lo % 2 === 0 ? lo : hi;
      if (a < pos[lo]) want = lo;
      if (xs[i] < 0) want |= 0x8000;
      if (got[i] !== want) expect.fail(`f32ToF16(${xs[i]}) = 0x${got[i].toString(16)}, expected 0x${want.toString(16)}`);
    }
  });

  it('converts bf16 both ways', () => {
    const bits = Uint16Array.of(0x3f80, 0xc000, 0x0000, 0x8000, 0x7f80, 0xff80, 0x0001, 0x7f7f, 0x7fc0);
    const f = bf16ToF32(bits);
    expect(Array.from(f.slice(0, 8))).toEqual([1, -2, 0, -0, Infinity, -Infinity, 2 ** -133, 3.3895313892515355e38]);
    expect(Object.is(f[3], -0)).toBe(true);
    expect(Number.isNaN(f[8])).toBe(true);
    expect(Array.from(f32ToBf16(f.slice(0, 8)))).toEqual(Array.from(bits.slice(0, 8)));
    // Ties to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
    expect(Array.from(f32ToBf16(Float32Array.of(1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, 3.4e38)))).toEqual([0x3f80, 0x3f82, 0x3f81, 0x7f80]);
    const n = f32ToBf16(Float32Array.of(NaN))[0];
    expect(Number.isNaN(bf16ToF32(Uint16Array.of(n))[0])).toBe(true);
  });
});

describe('safetensors', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'wst-safetensors-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe.skipIf(!haveStories)('stories260K', () => {
    it('reads the header and every tensor, matching config.json', async () => {
      const file = path.join(STORIES, 'model.safetensors');
      const header = await readSafetensorsHeader(file);
      expect(header.tensors.size).toBe(47);
      expect(header.dataOffset % 8).toBe(0);
      expect(header.metadata?.format).toBe('pt');
      const config = await readConfigFile(path.join(STORIES, 'config.json'));
      const tensors = await readSafetensors(file);
      expect(validateAgainstConfig(tensors, config)).toEqual([]);
      // The bytes of each tensor are the file's bytes.
      const raw = await readFile(file);
      for (const [name, info] of header.tensors) {
        const t = tensors.get(name)!;
        expect(t.dtype).toBe('F32');
        expect(bytesOf(t.data).equals(raw.subarray(header.dataOffset + info.begin, header.dataOffset + info.end)), name).toBe(true);
      }
      const some = await readSafetensors(file, { names: ['model.norm.weight'] });
      expect([...some.keys()]).toEqual(['model.norm.weight']);
      await expect(readSafetensors(file, { names: ['nope'] })).rejects.toThrow(/tensor "nope" not found/);
    });

    it('round-trips bit-exactly through writeSafetensors (and the file itself is reproduced byte for byte)', async () => {
      const src = path.join(STORIES, 'model.safetensors');
      const original = await readSafetensors(src);
      const { metadata } = await readSafetensorsHeader(src);
      const out = path.join(dir, 'rt.safetensors');
      await writeSafetensors(out, original, metadata ?? undefined);
      const back = await readSafetensors(out);
      expect([...back.keys()].sort()).toEqual([...original.keys()].sort());
      for (const [name, t] of original) {
        expect(back.get(name)!.shape).toEqual(t.shape);
        expect(bytesOf(back.get(name)!.data).equals(bytesOf(t.data)), name).toBe(true);
      }
      // Same layout rules as the reference writer (sorted names, space padding), so identical bytes.
      expect((await readFile(out)).equals(await readFile(src))).toBe(true);
      expect((await readdir(dir)).filter((f) => f.includes('.tmp'))).toEqual([]);
    });

    it('loads and saves whole checkpoint directories, sharded or not', async () => {
      const { config, tensors } = await loadCheckpoint(STORIES);
      const single = path.join(dir, 'ckpt-single');
      await saveCheckpoint(single, config, tensors);
      expect((await readdir(single)).sort()).toEqual(['config.json', 'model.safetensors']);
      const sharded = path.join(dir, 'ckpt-sharded');
      await saveCheckpoint(sharded, config, tensors, { maxShardBytes: 300_000 });
      const files = (await readdir(sharded)).sort();
      expect(files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length).toBeGreaterThan(2);
      expect(files).toContain('model.safetensors.index.json');
      for (const d of [single, sharded]) {
        const back = await loadCheckpoint(d);
        expect(back.config).toEqual(config);
        for (const [name, t] of tensors) expect(bytesOf(back.tensors.get(name)!.data).equals(bytesOf(t.data)), `${d} ${name}`).toBe(true);
      }
      // Overwriting an existing checkpoint replaces it whole.
      await saveCheckpoint(sharded, config, tensors);
      expect((await readdir(sharded)).sort()).toEqual(['config.json', 'model.safetensors']);
      expect((await readdir(dir)).filter((f) => f.startsWith('.'))).toEqual([]);
    });
  });

  it('writes F16 and BF16 and reads them back widened', async () => {
    const data = randomF32(3 * 7, 11, -3, 3);
    const file = path.join(dir, 'half.safetensors');
    await writeSafetensors(file, { a: { shape: [3, 7], data, dtype: 'F16' }, b: { shape: [21], data, dtype: 'BF16' }, c: { shape: [7, 3], data } }, { note: 'x' });
    const header = await readSafetensorsHeader(file);
    expect(header.metadata).toEqual({ note: 'x' });
    expect([...header.tensors.values()].map((t) => [t.name, t.dtype])).toEqual([['a', 'F16'], ['b', 'BF16'], ['c', 'F32']]);
    expect((8 + (header.dataOffset - 8)) % 8).toBe(0);
    const t = await readSafetensors(file);
    expect(Array.from(t.get('a')!.data)).toEqual(Array.from(f16ToF32(f32ToF16(data))));
    expect(Array.from(t.get('b')!.data)).toEqual(Array.from(bf16ToF32(f32ToBf16(data))));
    expect(bytesOf(t.get('c')!.data).equals(bytesOf(data))).toBe(true);
    for (let i = 0; i < data.length; i++) expect(Math.abs(t.get('a')!.data[i] - data[i])).toBeLessThanOrEqual(Math.abs(data[i]) * 2 ** -11);
  });

  it('writes tensors with zero-size dimensions and empty files', async () => {
    const file = path.join(dir, 'empty.safetensors');
    await writeSafetensors(file, { z: { shape: [0, 4], data: new Float32Array(0) }, s: { shape: [], data: Float32Array.of(2.5) } });
    const t = await readSafetensors(file);
    expect(t.get('z')!.shape).toEqual([0, 4]);
    expect(Array.from(t.get('s')!.data)).toEqual([2.5]);
    await writeSafetensors(file, {});
    expect((await readSafetensors(file)).size).toBe(0);
  });

  it('rejects bad tensors when writing', async () => {
    const file = path.join(dir, 'bad-write.safetensors');
    await expect(writeSafetensors(file, { a: { shape: [2, 3], data: new Float32Array(5) } })).rejects.toThrow(/tensor "a": shape \[2, 3\] needs 6 elements, data has 5/);
    await expect(writeSafetensors(file, { a: { shape: [2], data: new Float64Array(2) as never } })).rejects.toThrow(/tensor "a": data must be a Float32Array/);
    await expect(writeSafetensors(file, { a: { shape: [2], data: new Float32Array(2), dtype: 'I8' as never } })).rejects.toThrow(/cannot write dtype "I8"/);
    await expect(writeSafetensors(file, { __metadata__: { shape: [1], data: new Float32Array(1) } })).rejects.toThrow(/invalid tensor name/);
    expect(existsSync(file)).toBe(false);
  });

  describe('corrupt files each give one clear error', () => {
    const f32 = (n: number) => new Uint8Array(new Float32Array(n).fill(1.5).buffer);
    const ok = { a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [3], data_offsets: [16, 28] } };
    const cases: [string, () => Buffer, RegExp][] = [
      ['file shorter than 8 bytes', () => Buffer.from([1, 2, 3]), /file is 3 bytes, too short/],
      ['header length past EOF', () => rawFile(ok, f32(7), 5000n), /header length 5000 runs past the end of the \d+-byte file/],
      ['absurd header length', () => rawFile(ok, f32(7), 1n << 62n), /exceeds the 104857600-byte limit/],
      ['truncated data', () => rawFile(ok, f32(6)), /data_offsets \[16, 28\] run past the end of the data section \(24 bytes\)/],
      ['bad header JSON', () => rawFile('{"a": {"dtype": "F32", ', f32(7)), /header is not valid JSON/],
      ['header not an object', () => rawFile('[1,2,3]', f32(7)), /header must start with '\{'/],
      ['non-UTF-8 header', () => rawFile(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]).toString('latin1'), new Uint8Array(0)), /not valid (UTF-8|JSON)/],
      ['unknown dtype', () => rawFile({ ...ok, b: { ...ok.b, dtype: 'F12' } }, f32(7)), /tensor "b": unknown dtype "F12"/],
      ['negative shape', () => rawFile({ ...ok, b: { ...ok.b, shape: [-3] } }, f32(7)), /tensor "b": shape must be a list of non-negative integers/],
      ['shape × dtype ≠ byte length', () => rawFile({ ...ok, b: { ...ok.b, shape: [4] } }, f32(7)), /tensor "b": shape \[4\] × F32 \(4 bytes\) needs 16 bytes but data_offsets span 12/],
      ['offsets past the end', () => rawFile({ ...ok, b: { ...ok.b, data_offsets: [28, 40] } }, f32(7)), /tensor "b": data_offsets \[28, 40\] run past the end/],
      ['reversed offsets', () => rawFile({ ...ok, b: { ...ok.b, data_offsets: [28, 16] } }, f32(7)), /tensor "b": data_offsets end 16 is before begin 28/],
      ['overlapping tensors', () => rawFile({ ...ok, b: { ...ok.b, data_offsets: [12, 24] } }, f32(7)), /tensors "a" and "b" overlap/],
      ['gap between tensors', () => rawFile({ ...ok, b: { ...ok.b, data_offsets: [20, 32] } }, f32(8)), /gap of 4 bytes in the data section before tensor "b"/],
      ['trailing bytes', () => rawFile(ok, f32(8)), /data section is 32 bytes but the tensors cover 28/],
      ['bad metadata', () => rawFile({ __metadata__: { n: 3 }, ...ok }, f32(7)), /__metadata__\.n must be a string/],
      ['missing data_offsets', () => rawFile({ ...ok, b: { dtype: 'F32', shape: [3] } }, f32(7)), /tensor "b": data_offsets must be \[begin, end\]/],
    ];
    for (const [what, make, msg] of cases)
      it(what, async () => {
        const file = path.join(dir, `corrupt-${what.replace(/\W+/g, '-')}.safetensors`);
        await writeFile(file, make());
        await expect(readSafetensors(file)).rejects.toThrow(SafetensorsError);
        await expect(readSafetensors(file)).rejects.toThrow(msg);
        await expect(readSafetensorsHeader(file)).rejects.toThrow(msg);
      });

    it('unsupported dtype (I64) names the tensor; other tensors stay readable', async () => {
      const file = path.join(dir, 'i64.safetensors');
      await writeFile(file, rawFile({ a: ok.a, pos: { dtype: 'I64', shape: [3], data_offsets: [16, 40] } }, new Uint8Array(40)));
      await expect(readSafetensors(file)).rejects.toThrow(/tensor "pos" has dtype I64, which is not supported \(supported: F32, F16, BF16\)/);
      expect((await readSafetensors(file, { names: ['a'] })).get('a')!.shape).toEqual([2, 2]);
    });

    it('missing file', async () => {
      await expect(readSafetensors(path.join(dir, 'absent.safetensors'))).rejects.toThrow(/absent\.safetensors: cannot open/);
    });
  });

  describe('checkpoint directories and config validation', () => {
    const config: ModelConfig = parseConfig({
      model_type: 'qwen2', vocab_size: 19, hidden_size: 12, intermediate_size: 10, num_hidden_layers: 2, num_attention_heads: 3,
      num_key_value_heads: 1, tie_word_embeddings: false,
    });
    function makeTensors(): Map<string, Tensor> {
      const m = new Map<string, Tensor>();
      let seed = 1;
      for (const [name, shape] of tensorShapes(config))
        m.set(name, { dtype: 'F32', shape, data: randomF32(shape.reduce((a, b) => a * b, 1), seed++) });
      return m;
    }

    it('reads a hand-written two-shard index and reports a missing shard by name', async () => {
      const d = path.join(dir, 'sharded-manual');
      await mkdir(d);
      const tensors = makeTensors();
      const names = [...tensors.keys()];
      const first = new Map(names.slice(0, 10).map((n) => [n, tensors.get(n)!]));
      const second = new Map(names.slice(10).map((n) => [n, tensors.get(n)!]));
      await writeSafetensors(path.join(d, 'part-a.safetensors'), first);
      await writeSafetensors(path.join(d, 'part-b.safetensors'), second);
      const weightMap = Object.fromEntries([...names.slice(0, 10).map((n) => [n, 'part-a.safetensors']), ...names.slice(10).map((n) => [n, 'part-b.safetensors'])]);
      await writeFile(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
      const back = await loadCheckpointTensors(d);
      expect([...back.keys()]).toEqual(names);
      for (const [n, t] of tensors) expect(bytesOf(back.get(n)!.data).equals(bytesOf(t.data))).toBe(true);
      expect(validateAgainstConfig(back, config)).toEqual([]);
      const only = await loadCheckpointTensors(d, { names: [names[12]] });
      expect([...only.keys()]).toEqual([names[12]]);

      await rm(path.join(d, 'part-b.safetensors'));
      await expect(loadCheckpointTensors(d)).rejects.toThrow(/shard file part-b\.safetensors \(holding ".+" and \d+ more\) is missing/);

      // An index that points a tensor at a shard that lacks it.
      await copyFile(path.join(d, 'part-a.safetensors'), path.join(d, 'part-b.safetensors'));
      await expect(loadCheckpointTensors(d)).rejects.toThrow(/part-b\.safetensors: tensor ".+" is listed in model\.safetensors\.index\.json but not present/);

      await writeFile(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: '../evil.safetensors' } }));
      await expect(loadCheckpointTensors(d)).rejects.toThrow(/weight_map\["x"\] must be a shard file name inside the directory/);
      await writeFile(path.join(d, 'model.safetensors.index.json'), '{"weight_map": ');
      await expect(loadCheckpointTensors(d)).rejects.toThrow(/cannot read index/);
      await expect(loadCheckpointTensors(path.join(dir, 'no-such-dir'))).rejects.toThrow(/neither model\.safetensors nor model\.safetensors\.index\.json found/);
    });

    it('validateAgainstConfig names missing, unexpected and mis-shaped tensors', () => {
      const tensors = makeTensors();
      tensors.delete('model.layers.1.mlp.up_proj.weight');
      tensors.set('model.layers.0.self_attn.k_proj.weight', { dtype: 'F32', shape: [12, 12], data: new Float32Array(144) });
      tensors.set('model.layers.0.self_attn.o_proj.bias', { dtype: 'F32', shape: [12], data: new Float32Array(12) });
      tensors.set('model.layers.0.self_attn.rotary_emb.inv_freq', { dtype: 'F32', shape: [2], data: new Float32Array(2) });
      expect(validateAgainstConfig(tensors, config)).toEqual([
        'tensor "model.layers.0.self_attn.k_proj.weight" has shape [12, 12], expected [4, 12]',
        'missing tensor "model.layers.1.mlp.up_proj.weight" (expected shape [10, 12])',
        'unexpected tensor "model.layers.0.self_attn.o_proj.bias" (shape [12])',
      ]);
      // A redundant lm_head of the right shape is tolerated with tied embeddings; a wrong one is not.
      const tied = { ...config, tieWordEmbeddings: true };
      const t2 = makeTensors();
      expect(validateAgainstConfig(t2, tied)).toEqual([]);
      t2.set('lm_head.weight', { dtype: 'F32', shape: [12, 19], data: new Float32Array(228) });
      expect(validateAgainstConfig(t2, tied)).toEqual(['tensor "lm_head.weight" has shape [12, 19], expected [19, 12]']);
    });

    it('loadCheckpoint and saveCheckpoint refuse a checkpoint that does not match its config', async () => {
      const d = path.join(dir, 'mismatch');
      const tensors = makeTensors();
      await saveCheckpoint(d, config, tensors);
      const back = await loadCheckpoint(d);
      expect(back.config).toEqual(config);
      await writeFile(path.join(d, 'config.json'), JSON.stringify({ ...JSON.parse(await readFile(path.join(d, 'config.json'), 'utf8')), intermediate_size: 11 }));
      await expect(loadCheckpoint(d)).rejects.toThrow(/checkpoint does not match config\.json:\n {2}tensor "model\.layers\.0\.mlp\.gate_proj\.weight" has shape \[10, 12\], expected \[11, 12\]\n(.|\n)*down_proj\.weight" has shape \[12, 10\], expected \[12, 11\]/);
      tensors.delete('model.norm.weight');
      await expect(saveCheckpoint(path.join(dir, 'never'), config, tensors)).rejects.toThrow(/missing tensor "model\.norm\.weight"/);
      expect(existsSync(path.join(dir, 'never'))).toBe(false);
    });
  });
});
