// Models by Hugging Face hub id (`Qwen/Qwen2.5-0.5B-Instruct`), downloaded once into the hub cache
// that transformers, vLLM and huggingface-cli share (blobs + snapshots/<commit>), then loaded from
// disk. The wire protocol, the cache layout and atomic blob writes are @huggingface/hub's; ours are
// the choice of files (what Model.load reads, not every format a repository carries), byte
// progress, and offline use of a warm cache.
import { downloadFileToCacheDir, listFiles, modelInfo } from '@huggingface/hub';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { writeFileAtomic } from './atomic.js';

export interface HubOptions {
  /** Branch, tag or commit (default main). */
  revision?: string;
  /** Default $HF_ENDPOINT, else https://huggingface.co. */
  hubUrl?: string;
  /** Default $HF_TOKEN (never printed). */
  token?: string;
  /** Default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /** Never touch the network: the warm cache or an error (default: $HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** Progress lines (one per file, and every few seconds during a large one). */
  log?: (line: string) => void;
}

/** `org/name` (and not an existing local path): a hub model id. */
export function isHubId(spec: string): boolean {
  return /^[A-Za-z0-9][\w.-]*\/[\w.-]*[A-Za-z0-9_]$/.test(spec) && !spec.includes('..') && !existsSync(spec);
}

export function hubCacheDir(): string {
  if (process.env.HF_HUB_CACHE) return path.resolve(process.env.HF_HUB_CACHE);
  if (process.env.HF_HOME) return path.join(path.resolve(process.env.HF_HOME), 'hub');
  return path.join(homedir(), '.cache', 'huggingface', 'hub');
}

/** What Model.load reads: the config, the weights as safetensors, the tokenizer, the chat template. */
export function wantedModelFile(file: string): boolean {
  if (file.includes('/')) return false; // sub-folders hold other formats (onnx/, original/, ...)
  return /\.safetensors$/.test(file) || /^(config|generation_config|tokenizer|tokenizer_config|special_tokens_map|model\.safetensors\.index)\.json$/.test(file)
    || file === 'chat_template.jinja' || file === 'chat_template.json' || file === 'wst-tokenizer.json';
}

/**
 * Runs `fn` with console.debug silenced: @huggingface/hub announces each download with it, on
 * stdout, where --json results go (callers log their own progress line on stderr).
 */
export async function quietHub<T>(fn: () => Promise<T>): Promise<T> {
  const debug = console.debug;
  console.debug = () => {};
  try {
    return await fn();
  } finally {
    console.debug = debug;
  }
}

/** A fetch that reports the bytes of each response body as they arrive. */
function countingFetch(onBytes: (n: number) => void): typeof fetch {
  return async (input, init) => {
    const res = await fetch(input, init);
    if (!res.body || (init?.method ?? 'GET') !== 'GET' || res.status === 206 && res.headers.get('content-range')?.startsWith('bytes 0-0/')) return res;
    const counter = new TransformStream<Uint8Array, Uint8Array>({ transform(chunk, c) { onBytes(chunk.byteLength); c.enqueue(chunk); } });
    return new Response(res.body.pipeThrough(counter), { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

const repoFolder = (cacheDir: string, id: string) => path.join(cacheDir, `models--${id.split('/').join('--')}`);

/** The snapshot a warm cache holds for (id, revision): the commit folder with a config, or null. */
export function cachedSnapshot(id: string, revision = 'main', cacheDir = hubCacheDir()): string | null {
  const folder = repoFolder(cacheDir, id);
  const refFile = path.join(folder, 'refs', revision);
  const commit = existsSync(refFile) ? readFileSync(refFile, 'utf8').trim() : /^[0-9a-f]{40}$/.test(revision) ? revision : null;
  if (!commit) return null;
  const snapshot = path.join(folder, 'snapshots', commit);
  // Complete when every file of the listing was fetched: the listing is written last.
  if (!existsSync(path.join(snapshot, 'config.json')) || !existsSync(path.join(folder, 'wst-dash-complete', commit))) return null;
  return snapshot;
}

/**
 * Download (once) the files Model.load needs of hub model `id` at `revision`; returns the local
 * snapshot folder. Files already in the cache are not fetched again, so an interrupted download
 * resumes at the file it stopped in. Offline (or when the hub cannot be reached) a complete cached
 * snapshot is used.
 */
export async function downloadModel(id: string, options: HubOptions = {}): Promise<string> {
  const revision = options.revision ?? 'main';
  const cacheDir = options.cacheDir ?? hubCacheDir();
  const hubUrl = options.hubUrl ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co';
  const accessToken = options.token ?? process.env.HF_TOKEN ?? undefined;
  const log = options.log ?? (() => {});
  const offline = options.offline ?? process.env.HF_HUB_OFFLINE === '1';
  const cached = cachedSnapshot(id, revision, cacheDir);
  if (offline) {
    if (cached) return cached;
    throw new Error(`${id}@${revision}: not in the hub cache ${cacheDir} and offline (HF_HUB_OFFLINE=1)`);
  }
  let commit: string;
  try {
    const info = await modelInfo({ name: id, revision, hubUrl, accessToken, additionalFields: ['sha'] });
    commit = (info as { sha?: string }).sha ?? '';
    if (!/^[0-9a-f]{40}$/.test(commit)) throw new Error(`the hub returned no commit for ${id}@${revision}`);
  } catch (e) {
    if (cached) {
      log(`${id}: hub unreachable (${(e as Error).message.split('\n')[0]}); using the cached snapshot`);
      return cached;
    }
    throw new Error(`${id}@${revision}: cannot reach the hub at ${hubUrl}: ${(e as Error).message.split('\n')[0]}`);
  }
  const folder = repoFolder(cacheDir, id);
  const snapshot = path.join(folder, 'snapshots', commit);
  const marker = path.join(folder, 'wst-dash-complete', commit);
  if (existsSync(marker) && existsSync(path.join(snapshot, 'config.json'))) return snapshot;
  const files: { path: string; size: number }[] = [];
  for await (const entry of listFiles({ repo: { type: 'model', name: id }, revision: commit, recursive: true, hubUrl, accessToken }))
    if (entry.type === 'file' && wantedModelFile(entry.path)) files.push({ path: entry.path, size: entry.size });
  if (!files.some((f) => f.path === 'config.json')) throw new Error(`${id}@${revision}: the repository has no config.json`);
  if (!files.some((f) => f.path.endsWith('.safetensors'))) throw new Error(`${id}@${revision}: the repository has no safetensors weights`);
  const total = files.reduce((s, f) => s + f.size, 0);
  let done = 0, lastLog = 0;
  const fetchCounting = countingFetch((n) => {
    done += n;
    if (Date.now() - lastLog > 2000) {
      lastLog = Date.now();
      log(`${id}: ${(done / 1e6).toFixed(1)} / ${(total / 1e6).toFixed(1)} MB`);
    }
  });
  await quietHub(async () => {
    for (const [i, f] of files.entries()) {
      if (existsSync(path.join(snapshot, f.path))) continue;
      log(`${id}: downloading ${f.path} (${(f.size / 1e6).toFixed(1)} MB) [${i + 1}/${files.length}]`);
      await downloadFileToCacheDir({ repo: { type: 'model', name: id }, path: f.path, revision: commit, hubUrl, accessToken, cacheDir, fetch: fetchCounting });
    }
  });
  mkdirSync(path.dirname(marker), { recursive: true });
  await writeFileAtomic(marker, files.map((f) => f.path).join('\n') + '\n');
  // A branch or tag name points at its commit (what snapshotDownload writes too).
  if (revision !== commit) {
    mkdirSync(path.join(folder, 'refs'), { recursive: true });
    await writeFileAtomic(path.join(folder, 'refs', revision), commit);
  }
  log(`${id}: ${files.length} files in ${snapshot}`);
  return snapshot;
}

/** A local model folder as given, or a hub id downloaded (once) into the hub cache. */
export async function resolveModelPath(spec: string, options: HubOptions = {}): Promise<string> {
  if (!isHubId(spec)) return spec;
  return downloadModel(spec, options);
}
