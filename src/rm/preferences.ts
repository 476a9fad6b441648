// Preference pairs for reward models: HH-RLHF transcripts (`{"chosen","rejected"}`, each a whole
// `\n\nHuman: ...\n\nAssistant: ...` dialogue) or `{"prompt","chosen","rejected"}` (the prompt
// prepended to each response). JSONL, optionally gzipped.
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { shuffleInPlace } from '../rl/tasks/common.js';

export interface PreferencePair {
  /** 1-based line in the source file. */
  line: number;
  /** The whole preferred text (prompt + response). */
  chosen: string;
  rejected: string;
}

/** Reads a preference file; a bad line raises an Error naming the file and line; an empty file too. */
export function loadPreferences(file: string): PreferencePair[] {
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (e) {
    throw new Error(`${file}: cannot read: ${(e as Error).message}`);
  }
  let text: string;
  try {
    text = (buf[0] === 0x1f && buf[1] === 0x8b ? gunzipSync(buf) : buf).toString('utf8');
  } catch (e) {
    throw new Error(`${file}: not valid gzip: ${(e as Error).message}`);
  }
  const pairs: PreferencePair[] = [];
  text.split(/\r?\n/).forEach((l, k) => {
    if (l.trim() === '') return;
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(l) as Record<string, unknown>;
    } catch (e) {
      throw new Error(`${file}:${k + 1}: invalid JSON (${(e as Error).message})`);
    }
    if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) throw new Error(`${file}:${k + 1}: expected a JSON object`);
    for (const key of ['chosen', 'rejected'] as const)
      if (typeof rec[key] !== 'string' || !(rec[key] as string).trim()) throw new Error(`${file}:${k + 1}: "${key}" must be a non-empty string`);
    if (rec.prompt !== undefined && typeof rec.prompt !== 'string') throw new Error(`${file}:${k + 1}: "prompt" must be a string`);
    const prompt = (rec.prompt as string | undefined) ?? '';
    pairs.push({ line: k + 1, chosen: prompt + (rec.chosen as string), rejected: prompt + (rec.rejected as string) });
  });
  if (pairs.length === 0) throw new Error(`${file}: no records (the file is empty)`);
  return pairs;
}

/** A seeded split: the first `trainCount` of a shuffled copy train, the rest are held out. */
export function splitPairs(pairs: readonly PreferencePair[], trainCount: number, seed: number): { train: PreferencePair[]; heldOut: PreferencePair[] } {
  if (!Number.isInteger(trainCount) || trainCount < 1 || trainCount >= pairs.length)
    throw new RangeError(`the training split must keep at least one pair out: ${trainCount} of ${pairs.length}`);
  const order = shuffleInPlace(pairs.slice(), seed);
  return { train: order.slice(0, trainCount), heldOut: order.slice(trainCount) };
}

/**
 * The text a reward model reads, at most `maxChars` characters (0: all): of an HH dialogue, its last
 * exchange — the end of the last human turn (at most half the budget) and the start of the
 * assistant's reply (the rest). Chosen and rejected differ in the reply; this keeps the reply's
 * opening, where refusals and compliance show, and gives both texts of a pair the same start,
 * computed once in training. Texts without turns keep their last `maxChars` characters.
 */
export function rewardText(text: string, maxChars: number): string {
  const a = text.lastIndexOf('\n\nAssistant:');
  const h = a < 0 ? -1 : text.lastIndexOf('\n\nHuman:', a);
  if (h < 0) return maxChars > 0 && text.length > maxChars ? text.slice(-maxChars) : text;
  const human = text.slice(h, a + 12), reply = text.slice(a + 12);
  if (maxChars <= 0) return human + reply;
  const keepHuman = human.slice(-Math.min(human.length, Math.floor(maxChars / 2)));
  return keepHuman + reply.slice(0, maxChars - keepHuman.length);
}
