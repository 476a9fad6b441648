// The public data sets by name: when a task's file is in neither the data folder nor the cache,
// it is fetched once from its public source into `<cache>/data/` (atomic: a partial download is
// never read), then read from disk like any local file.
import { downloadFileToCacheDir } from '@huggingface/hub';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../../models/atomic.js';
import { cacheDir } from '../../paths.js';
import { hubCacheDir, quietHub } from '../../models/hub.js';
import { defaultDataDir } from './common.js';

type Source = { url: string } | { hubDataset: string; path: string };

/** Where each file comes from (the origins ../shared/data/README.md names). */
export const DATA_SOURCES: Readonly<Record<string, Source>> = {
  'gsm8k.train.jsonl': { url: 'https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/train.jsonl' },
  'gsm8k.test.jsonl': { url: 'https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/test.jsonl' },
  'math500.test.jsonl': { hubDataset: 'HuggingFaceH4/MATH-500', path: 'test.jsonl' },
  'hh-rlhf.harmless-base.test.jsonl.gz': { hubDataset: 'Anthropic/hh-rlhf', path: 'harmless-base/test.jsonl.gz' },
};

/** The files each task reads. */
export const TASK_FILES: Readonly<Record<string, readonly string[]>> = {
  gsm8k: ['gsm8k.train.jsonl', 'gsm8k.test.jsonl'],
  math500: ['math500.test.jsonl'],
  'hh-rlhf': ['hh-rlhf.harmless-base.test.jsonl.gz'],
};

/** The cache's data folder (downloads land here). */
export const cachedDataDir = () => path.join(cacheDir(), 'data');

export interface FetchDataOptions {
  log?: (line: string) => void;
  /** Replaces https://raw.githubusercontent.com (default $WST_DASH_RAW_URL): a mirror, or a test server. */
  rawUrl?: string;
  /** Default $HF_ENDPOINT, else https://huggingface.co. */
  hubUrl?: string;
  /** Per-request time-out in ms (default 120 s). */
  timeoutMs?: number;
}

async function fetchSource(name: string, source: Source, o: FetchDataOptions): Promise<Buffer> {
  if ('url' in source) {
    const base = o.rawUrl ?? process.env.WST_DASH_RAW_URL;
    const url = base ? source.url.replace('https://raw.githubusercontent.com', base.replace(/\/$/, '')) : source.url;
    const res = await fetch(url, { signal: AbortSignal.timeout(o.timeoutMs ?? 120_000) });
    if (!res.ok) throw new Error(`${name}: ${url} answered ${res.status} ${res.statusText}`);
    return Buffer.from(await res.arrayBuffer());
  }
  const file = await quietHub(() => downloadFileToCacheDir({
    repo: { type: 'dataset', name: source.hubDataset }, path: source.path, cacheDir: hubCacheDir(),
    hubUrl: o.hubUrl ?? process.env.HF_ENDPOINT ?? undefined, accessToken: process.env.HF_TOKEN || undefined,
  }));
  return readFileSync(file);
}

/**
 * Makes sure `name` can be read: from the data folder, else from the cache, else downloaded into
 * the cache. Returns the local path.
 */
export async function ensureDataFile(name: string, o: FetchDataOptions = {}): Promise<string> {
  const local = path.join(defaultDataDir(), name), cached = path.join(cachedDataDir(), name);
  if (existsSync(local)) return local;
  if (existsSync(cached)) return cached;
  const source = DATA_SOURCES[name];
  if (!source) throw new Error(`data file ${name}: not in ${defaultDataDir()} and no public source is known for it`);
  o.log?.(`fetching ${name} from ${'url' in source ? source.url : `hub dataset ${source.hubDataset}/${source.path}`} into ${cachedDataDir()}`);
  let data: Buffer;
  try {
    data = await fetchSource(name, source, o);
  } catch (e) {
    throw new Error(`data file ${name}: not in ${defaultDataDir()} and the download failed (${(e as Error).message.split('\n')[0]}); point at a folder holding it with --data-dir or give --file`);
  }
  mkdirSync(cachedDataDir(), { recursive: true });
  await writeFileAtomic(cached, data);
  return cached;
}

/** Every file a task reads (see TASK_FILES), fetched when missing; tasks without files need nothing. */
export async function ensureTaskData(task: string, o: FetchDataOptions = {}): Promise<void> {
  for (const name of TASK_FILES[task] ?? []) await ensureDataFile(name, o);
}
