// safetensors reading and writing, with full validation of the header, and Hugging Face checkpoint
// directories (single file or sharded with model.safetensors.index.json).
//
// Format: u64 little-endian header length N, N bytes of JSON header
//   { "__metadata__"?: {string: string}, "<name>": { "dtype": "F32", "shape": [..], "data_offsets": [begin, end] }, ... }
// then the data section; offsets are relative to its start. As in the reference implementation, the tensors
// must tile the data section exactly: no overlaps, no gaps, no trailing bytes.
// Everything is read through file handles with positioned reads (one per tensor); only the header is
// decoded as text. Data always comes back as Float32Array (F16 and BF16 are widened exactly).
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import * as path from 'node:path';
import { writeDirAtomic, writeFileAtomic } from './atomic.js';
import { type ModelConfig, configToHf, readConfigFile, tensorShapes, validateConfig } from './config.js';

if (endianness() !== 'LE') throw new Error('wst-dash model files require a little-endian host');

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16';

/** Bytes per element of every dtype the format defines (only F32/F16/BF16 can be read as data). */
const DTYPE_SIZES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4, F64: 8, I64: 8, U64: 8,
};
const READABLE: ReadonlySet<string> = new Set(['F32', 'F16', 'BF16']);

export const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Largest single read/write call (Node caps one call at 2 GiB). */
const IO_CHUNK = 1 << 30;

export class SafetensorsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SafetensorsError';
  }
}

export interface SafetensorsTensorInfo {
  name: string;
  /** The dtype string from the header (any dtype the format defines; reading data needs F32/F16/BF16). */
  dtype: string;
  shape: number[];
  /** Byte offsets relative to the start of the data section. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  file: string;
  fileSize: number;
  /** Absolute file offset of the data section (8 + header length). */
  dataOffset: number;
  metadata: Record<string, string> | null;
  /** In header order. */
  tensors: Map<string, SafetensorsTensorInfo>;
}

export interface Tensor {
  /** Storage dtype in the file it came from. */
  dtype: SafetensorsDtype;
  shape: number[];
  data: Float32Array;
}

export interface TensorInput {
  shape: readonly number[];
  data: Float32Array;
  /** Storage dtype to write; default F32 (bit-exact). */
  dtype?: SafetensorsDtype;
}

export type TensorMap = Map<string, TensorInput> | Record<string, TensorInput>;

// ---------------------------------------------------------------------------------------------------------
// Half-precision conversions

let f16Table: Float32Array | undefined;

/** f16 bits → f32 value for all 65536 patterns (exact; subnormals, ±0, ±inf and NaN payloads included). */
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const bits = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    let mant = h & 0x3ff;
    let out: number;
    if (exp === 0x1f) out = sign | 0x7f800000 | (mant << 13);
    else if (exp !== 0) out = sign | ((exp + 112) << 23) | (mant << 13);
    else if (mant === 0) out = sign;
    else {
      // Subnormal: normalise. value = mant * 2^-24.
      let e = 113;
      while ((mant & 0x400) === 0) {
        mant <<= 1;
        e--;
      }
      out = sign | (e << 23) | ((mant & 0x3ff) << 13);
    }
    bits[h] = out >>> 0;
  }
  f16Table = new Float32Array(bits.buffer);
  return f16Table;
}

/** Widens IEEE binary16 values to Float32Array (exact). */
export function f16ToF32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  const t = halfTable();
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
  return out;
}

/** Widens bfloat16 values to Float32Array (exact: bf16 is the top half of an f32). */
export function bf16ToF32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) o[i] = src[i] << 16;
  return out;
}

/** Rounds f32 values to IEEE binary16 (round to nearest even; overflow → ±inf; NaN stays NaN). */
export function f32ToF16(src: Float32Array, out = new Uint16Array(src.length)): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const x = u[i];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    const mant = x & 0x7fffff;
    let h: number;
    if (exp === 0xff) h = sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
    else {
      const e = exp - 112; // rebias 127 → 15
      if (e >= 0x1f) h = sign | 0x7c00;
      else if (e > 0) {
        h = sign | (e << 10) | (mant >>> 13);
        const rem = mant & 0x1fff;
        if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++; // a carry into the exponent is correct
      } else if (e >= -10) {
        const full = mant | 0x800000;
        const shift = 14 - e; // 14..24
        let m = full >>> shift;
        const rem = full & ((1 << shift) - 1);
        const half = 1 << (shift - 1);
        if (rem > half || (rem === half && (m & 1) !== 0)) m++;
        h = sign | m;
      } else h = sign;
    }
    out[i] = h;
  }
  return out;
}

/** Rounds f32 values to bfloat16 (round to nearest even; NaN stays NaN). */
export function f32ToBf16(src: Float32Array, out = new Uint16Array(src.length)): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const x = u[i];
    if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) out[i] = (x >>> 16) | 0x40;
    else out[i] = ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Reading

function product(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

async function readExactly(fh: FileHandle, buf: Uint8Array, position: number, file: string, what: string): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const len = Math.min(IO_CHUNK, buf.length - done);
    const { bytesRead } = await fh.read(buf, done, len, position + done);
    if (bytesRead === 0) throw new SafetensorsError(`${file}: unexpected end of file while reading ${what}`);
    done += bytesRead;
  }
}

function parseHeaderJson(bytes: Uint8Array, file: string, fileSize: number, dataOffset: number): SafetensorsHeader {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new SafetensorsError(`${file}: safetensors header is not valid UTF-8`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new SafetensorsError(`${file}: safetensors header is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw new SafetensorsError(`${file}: safetensors header must be a JSON object`);

  const dataSize = fileSize - dataOffset;
  let metadata: Record<string, string> | null = null;
  const tensors = new Map<string, SafetensorsTensorInfo>();
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof v !== 'object' || v === null || Array.isArray(v))
        throw new SafetensorsError(`${file}: __metadata__ must be an object of strings`);
      for (const [k, s] of Object.entries(v))
        if (typeof s !== 'string') throw new SafetensorsError(`${file}: __metadata__.${k} must be a string, got ${JSON.stringify(s)}`);
      metadata = { ...(v as Record<string, string>) };
      continue;
    }
    const where = `${file}: tensor "${name}"`;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new SafetensorsError(`${where}: entry must be an object`);
    const { dtype, shape, data_offsets: offs } = v as Record<string, unknown>;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_SIZES))
      throw new SafetensorsError(`${where}: unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || shape.some((d) => typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0))
      throw new SafetensorsError(`${where}: shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
    if (!Array.isArray(offs) || offs.length !== 2 || offs.some((o) => typeof o !== 'number' || !Number.isSafeInteger(o) || o < 0))
      throw new SafetensorsError(`${where}: data_offsets must be [begin, end] non-negative integers, got ${JSON.stringify(offs)}`);
    const [begin, end] = offs as number[];
    if (end < begin) throw new SafetensorsError(`${where}: data_offsets end ${end} is before begin ${begin}`);
    const nbytes = product(shape as number[]) * DTYPE_SIZES[dtype];
    if (!Number.isSafeInteger(nbytes) || nbytes !== end - begin)
      throw new SafetensorsError(
        `${where}: shape ${JSON.stringify(shape)} × ${dtype} (${DTYPE_SIZES[dtype]} bytes) needs ${nbytes} bytes but data_offsets span ${end - begin}`,
      );
    if (end > dataSize)
      throw new SafetensorsError(`${where}: data_offsets [${begin}, ${end}] run past the end of the data section (${dataSize} bytes)`);
    tensors.set(name, { name, dtype, shape: (shape as number[]).slice(), begin, end });
  }

  const sorted = [...tensors.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev: SafetensorsTensorInfo | undefined;
  for (const t of sorted) {
    if (t.begin < pos)
      throw new SafetensorsError(`${file}: tensors "${prev!.name}" and "${t.name}" overlap (bytes ${t.begin}..${pos} of the data section)`);
    if (t.begin > pos)
      throw new SafetensorsError(`${file}: gap of ${t.begin - pos} bytes in the data section before tensor "${t.name}"`);
    pos = t.end;
    prev = t;
  }
  if (pos !== dataSize)
    throw new SafetensorsError(`${file}: data section is ${dataSize} bytes but the tensors cover ${pos} (truncated or trailing data)`);
  return { file, fileSize, dataOffset, metadata, tensors };
}

async function readHeaderFrom(fh: FileHandle, file: string): Promise<SafetensorsHeader> {
  const { size: fileSize } = await fh.stat();
  if (fileSize < 8) throw new SafetensorsError(`${file}: file is ${fileSize} bytes, too short for a safetensors header`);
  const lenBuf = Buffer.alloc(8);
  await readExactly(fh, lenBuf, 0, file, 'the header length');
  const n = lenBuf.readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER_BYTES))
    throw new SafetensorsError(`${file}: header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit (not a safetensors file?)`);
  const headerLen = Number(n);
  if (headerLen > fileSize - 8)
    throw new SafetensorsError(`${file}: header length ${headerLen} runs past the end of the ${fileSize}-byte file (truncated?)`);
  if (headerLen < 2) throw new SafetensorsError(`${file}: header length ${headerLen} is too small`);
  const bytes = Buffer.alloc(headerLen);
  await readExactly(fh, bytes, 8, file, 'the header');
  if (bytes[0] !== 0x7b) throw new SafetensorsError(`${file}: safetensors header must start with '{'`);
  return parseHeaderJson(bytes, file, fileSize, 8 + headerLen);
}

async function openForRead(file: string): Promise<FileHandle> {
  try {
    return await fsp.open(file, 'r');
  } catch (err) {
    throw new SafetensorsError(`${file}: cannot open: ${(err as Error).message}`);
  }
}

/** Reads and validates the header (tensor names, dtypes, shapes, offsets, metadata) without reading tensor data. */
export async function readSafetensorsHeader(file: string): Promise<SafetensorsHeader> {
  const fh = await openForRead(file);
  try {
    return await readHeaderFrom(fh, file);
  } finally {
    await fh.close();
  }
}

async function readTensorData(fh: FileHandle, header: SafetensorsHeader, info: SafetensorsTensorInfo): Promise<Tensor> {
  const where = `${header.file}: tensor "${info.name}"`;
  if (!READABLE.has(info.dtype))
    throw new SafetensorsError(`${where} has dtype ${info.dtype}, which is not supported (supported: F32, F16, BF16)`);
  const nbytes = info.end - info.begin;
  const count = product(info.shape);
  const pos = header.dataOffset + info.begin;
  const dtype = info.dtype as SafetensorsDtype;
  if (dtype === 'F32') {
    const data = new Float32Array(count);
    await readExactly(fh, new Uint8Array(data.buffer), pos, header.file, `tensor "${info.name}"`);
    return { dtype, shape: info.shape.slice(), data };
  }
  const half = new Uint16Array(count);
  await readExactly(fh, new Uint8Array(half.buffer, 0, nbytes), pos, header.file, `tensor "${info.name}"`);
  return { dtype, shape: info.shape.slice(), data: dtype === 'F16' ? f16ToF32(half) : bf16ToF32(half) };
}

export interface ReadOptions {
  /** Read only these tensors (each must exist). Default: all. */
  names?: Iterable<string>;
}

/** Reads tensors (as Float32Array) from a safetensors file, validating the whole header first. */
export async function readSafetensors(file: string, options: ReadOptions = {}): Promise<Map<string, Tensor>> {
  const fh = await openForRead(file);
  try {
    const header = await readHeaderFrom(fh, file);
    const names = options.names === undefined ? [...header.tensors.keys()] : [...options.names];
    const out = new Map<string, Tensor>();
    for (const name of names) {
      const info = header.tensors.get(name);
      if (!info) throw new SafetensorsError(`${file}: tensor "${name}" not found`);
      out.set(name, await readTensorData(fh, header, info));
    }
    return out;
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Checkpoint directories

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

async function exists(p: string): Promise<boolean> {
  return fsp.stat(p).then(
    () => true,
    () => false,
  );
}

/** Parses model.safetensors.index.json → Map<tensor name, shard file name>. */
export async function readShardIndex(indexFile: string): Promise<Map<string, string>> {
  let json: unknown;
  try {
    json = JSON.parse(await fsp.readFile(indexFile, 'utf8'));
  } catch (err) {
    throw new SafetensorsError(`${indexFile}: cannot read index: ${(err as Error).message}`);
  }
  const wm = (json as Record<string, unknown> | null)?.weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm))
    throw new SafetensorsError(`${indexFile}: weight_map must be an object mapping tensor names to shard files`);
  const map = new Map<string, string>();
  for (const [name, shard] of Object.entries(wm)) {
    if (typeof shard !== 'string' || shard === '' || path.isAbsolute(shard) || shard.split(/[\\/]/).includes('..'))
      throw new SafetensorsError(`${indexFile}: weight_map["${name}"] must be a shard file name inside the directory, got ${JSON.stringify(shard)}`);
    map.set(name, shard);
  }
  return map;
}

/**
 * Loads the tensors of a Hugging Face checkpoint directory: model.safetensors if present (as transformers
 * prefers it), else the shards listed by model.safetensors.index.json.
 */
export async function loadCheckpointTensors(dir: string, options: ReadOptions = {}): Promise<Map<string, Tensor>> {
  const single = path.join(dir, SINGLE_FILE);
  if (await exists(single)) return readSafetensors(single, options);
  const indexFile = path.join(dir, INDEX_FILE);
  if (!(await exists(indexFile))) throw new SafetensorsError(`${dir}: neither ${SINGLE_FILE} nor ${INDEX_FILE} found`);
  const weightMap = await readShardIndex(indexFile);
  const wanted = options.names === undefined ? [...weightMap.keys()] : [...options.names];
  const byShard = new Map<string, string[]>();
  for (const name of wanted) {
    const shard = weightMap.get(name);
    if (shard === undefined) throw new SafetensorsError(`${indexFile}: tensor "${name}" is not in weight_map`);
    if (!byShard.has(shard)) byShard.set(shard, []);
    byShard.get(shard)!.push(name);
  }
  for (const [shard, names] of byShard)
    if (!(await exists(path.join(dir, shard))))
      throw new SafetensorsError(`${indexFile}: shard file ${shard} (holding "${names[0]}"${names.length > 1 ? ` and ${names.length - 1} more` : ''}) is missing from ${dir}`);
  const parts = new Map<string, Tensor>();
  for (const [shard, names] of byShard) {
    const file = path.join(dir, shard);
    const header = await readSafetensorsHeader(file);
    for (const name of names)
      if (!header.tensors.has(name))
        throw new SafetensorsError(`${file}: tensor "${name}" is listed in ${INDEX_FILE} but not present in the shard`);
    for (const [name, t] of await readSafetensors(file, { names })) parts.set(name, t);
  }
  const out = new Map<string, Tensor>();
  for (const name of wanted) out.set(name, parts.get(name)!);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Validation against a config

function isIgnoredBuffer(name: string): boolean {
  return name.endsWith('rotary_emb.inv_freq');
}

/**
 * Compares a checkpoint's tensors with the parameters `config` needs. Returns one message per problem
 * (empty when all is well): missing tensors, unexpected tensors, shape mismatches. Rotary inv_freq buffers are
 * ignored, and with tied embeddings a redundant lm_head.weight of the right shape is allowed.
 */
export function validateAgainstConfig(tensors: Map<string, { shape: readonly number[] }>, config: ModelConfig): string[] {
  const expected = tensorShapes(config);
  const errors: string[] = [];
  for (const [name, shape] of expected) {
    const t = tensors.get(name);
    if (!t) errors.push(`missing tensor "${name}" (expected shape [${shape.join(', ')}])`);
    else if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
      errors.push(`tensor "${name}" has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
  }
  for (const [name, t] of tensors) {
    if (expected.has(name) || isIgnoredBuffer(name)) continue;
    if (name === 'lm_head.weight' && config.tieWordEmbeddings) {
      const want = [config.vocabSize, config.hiddenSize];
      if (t.shape.length !== 2 || t.shape[0] !== want[0] || t.shape[1] !== want[1])
        errors.push(`tensor "${name}" has shape [${t.shape.join(', ')}], expected [${want.join(', ')}]`);
      continue;
    }
    errors.push(`unexpected tensor "${name}" (shape [${t.shape.join(', ')}])`);
  }
  return errors;
}

export interface Checkpoint {
  config: ModelConfig;
  tensors: Map<string, Tensor>;
}

/** Loads config.json and the weights of a checkpoint directory and checks that they agree (throws otherwise). */
export async function loadCheckpoint(dir: string): Promise<Checkpoint> {
  const config = await readConfigFile(path.join(dir, 'config.json'));
  const tensors = await loadCheckpointTensors(dir);
  const errors = validateAgainstConfig(tensors, config);
  if (errors.length > 0)
    throw new SafetensorsError(`${dir}: checkpoint does not match config.json:\n  ${errors.slice(0, 20).join('\n  ')}${errors.length > 20 ? `\n  ... and ${errors.length - 20} more` : ''}`);
  for (const name of [...tensors.keys()]) if (isIgnoredBuffer(name)) tensors.delete(name);
  return { config, tensors };
}

// ---------------------------------------------------------------------------------------------------------
// Writing

function entries(tensors: TensorMap): [string, TensorInput][] {
  return tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
}

function checkInput(name: string, t: TensorInput): SafetensorsDtype {
  if (name === '' || name === '__metadata__') throw new SafetensorsError(`invalid tensor name ${JSON.stringify(name)}`);
  if (!t || !(t.data instanceof Float32Array)) throw new SafetensorsError(`tensor "${name}": data must be a Float32Array`);
  if (!Array.isArray(t.shape) || t.shape.some((d) => !Number.isSafeInteger(d) || d < 0))
    throw new SafetensorsError(`tensor "${name}": shape must be a list of non-negative integers, got ${JSON.stringify(t.shape)}`);
  if (product(t.shape) !== t.data.length)
    throw new SafetensorsError(`tensor "${name}": shape [${t.shape.join(', ')}] needs ${product(t.shape)} elements, data has ${t.data.length}`);
  const dtype = t.dtype ?? 'F32';
  if (!READABLE.has(dtype)) throw new SafetensorsError(`tensor "${name}": cannot write dtype ${JSON.stringify(dtype)} (F32, F16, BF16)`);
  return dtype;
}

/** Encodes a tensor's storage bytes (F32: a view of the same memory, bit-exact). */
function tensorBytes(data: Float32Array, dtype: SafetensorsDtype): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const half = dtype === 'F16' ? f32ToF16(data) : f32ToBf16(data);
  return new Uint8Array(half.buffer);
}

async function writeAll(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const len = Math.min(IO_CHUNK, bytes.length - done);
    const { bytesWritten } = await fh.write(bytes, done, len, position + done);
    done += bytesWritten;
  }
}

/**
 * Writes a safetensors file atomically (temporary file + fsync + rename). Tensors are laid out sorted by name;
 * the header is padded with spaces to a multiple of 8 bytes, like the reference implementation.
 */
export async function writeSafetensors(file: string, tensors: TensorMap, metadata?: Record<string, string>): Promise<void> {
  const list = entries(tensors)
    .map(([name, t]) => ({ name, t, dtype: checkInput(name, t) }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (let i = 1; i < list.length; i++) if (list[i].name === list[i - 1].name) throw new SafetensorsError(`duplicate tensor "${list[i].name}"`);
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata))
      if (typeof v !== 'string') throw new SafetensorsError(`metadata "${k}" must be a string, got ${JSON.stringify(v)}`);
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const { name, t, dtype } of list) {
    const nbytes = t.data.length * (dtype === 'F32' ? 4 : 2);
    header[name] = { dtype, shape: [...t.shape], data_offsets: [offset, offset + nbytes] };
    offset += nbytes;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length), 0);

  await writeFileAtomic(file, async (fh) => {
    await writeAll(fh, prefix, 0);
    await writeAll(fh, json, 8);
    let pos = 8 + json.length;
    for (const { t, dtype } of list) {
      const bytes = tensorBytes(t.data, dtype);
      await writeAll(fh, bytes, pos);
      pos += bytes.length;
    }
  });
}

export interface SaveCheckpointOptions {
  /** Storage dtype for every tensor (default F32). */
  dtype?: SafetensorsDtype;
  /** Split into model-0000k-of-0000n.safetensors shards of at most this many bytes (plus an index). */
  maxShardBytes?: number;
}

/**
 * Writes a Hugging Face checkpoint directory (config.json + model.safetensors, or shards + index) atomically
 * as a whole: `dir` is replaced only once everything is written. The tensors must match `config`.
 */
export async function saveCheckpoint(dir: string, config: ModelConfig, tensors: TensorMap, options: SaveCheckpointOptions = {}): Promise<void> {
  validateConfig(config, `config for ${dir}`);
  const list = entries(tensors).filter(([name]) => !isIgnoredBuffer(name));
  const errors = validateAgainstConfig(new Map(list), config);
  if (errors.length > 0) throw new SafetensorsError(`cannot save ${dir}: tensors do not match the config:\n  ${errors.join('\n  ')}`);
  const dtype = options.dtype ?? 'F32';
  const elemBytes = dtype === 'F32' ? 4 : 2;
  const items = list.map(([name, t]) => [name, { shape: t.shape, data: t.data, dtype }] as [string, TensorInput]);
  items.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const hfConfig = configToHf({ ...config, torchDtype: dtype === 'F32' ? 'float32' : dtype === 'F16' ? 'float16' : 'bfloat16' });

  const shards: [string, TensorInput][][] = [];
  const max = options.maxShardBytes;
  if (max !== undefined && (!Number.isSafeInteger(max) || max <= 0))
    throw new SafetensorsError(`maxShardBytes must be a positive integer, got ${max}`);
  let current: [string, TensorInput][] = [];
  let currentBytes = 0;
  for (const item of items) {
    const nbytes = item[1].data.length * elemBytes;
    if (max !== undefined && current.length > 0 && currentBytes + nbytes > max) {
      shards.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(item);
    currentBytes += nbytes;
  }
  shards.push(current);

  await writeDirAtomic(dir, async (tmp) => {
    await fsp.writeFile(path.join(tmp, 'config.json'), JSON.stringify(hfConfig, null, 2) + '\n');
    if (shards.length === 1) {
      await writeSafetensors(path.join(tmp, SINGLE_FILE), new Map(shards[0]), { format: 'pt' });
      return;
    }
    const n = shards.length;
    const pad = (k: number) => String(k).padStart(5, '0');
    const weightMap: Record<string, string> = {};
    let total = 0;
    for (let k = 0; k < n; k++) {
      const shardName = `model-${pad(k + 1)}-of-${pad(n)}.safetensors`;
      for (const [name, t] of shards[k]) {
        weightMap[name] = shardName;
        total += t.data.length * elemBytes;
      }
      await writeSafetensors(path.join(tmp, shardName), new Map(shards[k]), { format: 'pt' });
    }
    await fsp.writeFile(path.join(tmp, INDEX_FILE), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n');
  });
}
