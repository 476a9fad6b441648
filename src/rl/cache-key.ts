// Content keys for the built-in models' caches: a cache entry is reused only when everything that
// determines its bits is the same — the options, the code that generates the corpus and trains the
// model (the running modules' own source), the engine binary, its ISA path and backend.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { native, nativeFile } from '../native.js';

/** src/ (through tsx) or dist/ (compiled): the folder this module runs from, one level up. */
const codeRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ext = path.extname(fileURLToPath(import.meta.url)) || '.js';

let engineHash: string | undefined;

/** The engine as it runs: a hash of the loaded addon binary, with its ISA path and backend. */
export function engineFingerprint(): { isa: string; backend: string; addon: string } {
  if (engineHash === undefined) {
    const h = createHash('sha256');
    if (nativeFile && existsSync(nativeFile)) h.update(readFileSync(nativeFile));
    else h.update('unknown-addon');
    engineHash = h.digest('hex').slice(0, 16);
  }
  return { isa: String(native.isa ?? 'none'), backend: String(native.backend), addon: engineHash };
}

/**
 * sha256 (12 hex digits) of `parts` (the options, as JSON), the source of `modules` (paths below
 * src/ or dist/ without extension, e.g. 'rl/tasks/arith') and the engine fingerprint.
 */
export function contentKey(parts: unknown, modules: readonly string[]): string {
  const h = createHash('sha256');
  h.update(JSON.stringify(parts));
  h.update(JSON.stringify(engineFingerprint()));
  for (const m of modules) {
    const file = path.join(codeRoot, m + ext);
    if (!existsSync(file)) throw new Error(`contentKey: module ${m} not found at ${file}`);
    h.update(m).update(readFileSync(file));
  }
  return h.digest('hex').slice(0, 12);
}

/** The modules whose code decides an SFT warm-up's bits (corpus, tokenizer, model, trainer). */
export const SFT_MODULES = ['rl/trainer', 'rl/tasks/common', 'models/model', 'models/tokenizer', 'models/config', 'models/safetensors'] as const;
