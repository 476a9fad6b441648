// Where wst-dash keeps what it downloads or computes, and where it looks for data sets.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Package root: this file is src/paths.ts or dist/paths.js. */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The cache: warm-up models, downloads, student answers ($WST_DASH_CACHE, else ~/.cache/wst-dash). */
export function cacheDir(): string {
  return process.env.WST_DASH_CACHE ? path.resolve(process.env.WST_DASH_CACHE) : path.join(homedir(), '.cache', 'wst-dash');
}

/**
 * Where the reference data sets (gsm8k.*.jsonl, math500.test.jsonl, ...) live: $WST_DASH_DATA (the
 * CLI's --data-dir sets it); else, in a checkout, `../shared/data` beside the repository; else (the
 * package installed as a dependency, or no such folder) `<cache>/data`.
 */
export function defaultDataDir(): string {
  const env = process.env.WST_DASH_DATA;
  if (env) return path.resolve(env);
  const beside = path.resolve(packageRoot, '../shared/data');
  const installed = packageRoot.split(path.sep).includes('node_modules');
  return !installed && existsSync(beside) ? beside : path.join(cacheDir(), 'data');
}
