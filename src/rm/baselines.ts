// Baselines a reward model must beat, fitted on the training split only: the length heuristic
// (shorter wins, or longer wins, whichever is better on the training split) and a bag-of-words
// logistic regression on the final assistant turns (pairwise, Bradley-Terry on feature differences).
import type { PreferencePair } from './preferences.js';

export interface BaselineResult {
  name: string;
  /** Held-out pairwise accuracy (ties count half). */
  accuracy: number;
  train_accuracy: number;
  detail: string;
}

/** 1, 0.5 or 0 per pair: score(chosen) above, equal to or below score(rejected). */
export function pairwiseAccuracy(chosen: ArrayLike<number>, rejected: ArrayLike<number>): number {
  let ok = 0;
  for (let i = 0; i < chosen.length; i++) ok += chosen[i] > rejected[i] ? 1 : chosen[i] === rejected[i] ? 0.5 : 0;
  return chosen.length ? ok / chosen.length : 0;
}

const accuracyOf = (pairs: readonly PreferencePair[], score: (text: string) => number) =>
  pairwiseAccuracy(pairs.map((p) => score(p.chosen)), pairs.map((p) => score(p.rejected)));

export function lengthBaseline(train: readonly PreferencePair[], heldOut: readonly PreferencePair[]): BaselineResult {
  const shorter = (t: string) => -t.length, longer = (t: string) => t.length;
  const s = accuracyOf(train, shorter), l = accuracyOf(train, longer);
  const pick = s >= l ? shorter : longer;
  return { name: 'length', accuracy: accuracyOf(heldOut, pick), train_accuracy: Math.max(s, l), detail: `${s >= l ? 'shorter' : 'longer'} wins (chosen on the training split)` };
}

/** The last assistant turn of an HH transcript (the whole text when it has none). */
export function lastAssistantTurn(text: string): string {
  const k = text.lastIndexOf('\n\nAssistant:');
  return k < 0 ? text : text.slice(k + 12);
}

const words = (s: string) => s.toLowerCase().match(/[a-z']+/g) ?? [];

/** Bag of words (present / absent, words seen in >= 3 training pairs) + log length; SGD with L2. */
export function bagOfWordsBaseline(train: readonly PreferencePair[], heldOut: readonly PreferencePair[], epochs = 30): BaselineResult {
  const df = new Map<string, number>();
  for (const p of train) for (const w of new Set([...words(lastAssistantTurn(p.chosen)), ...words(lastAssistantTurn(p.rejected))])) df.set(w, (df.get(w) ?? 0) + 1);
  const index = new Map([...df].filter(([, n]) => n >= 3).map(([w], i) => [w, i]));
  const V = index.size;
  const features = (text: string) => {
    const turn = lastAssistantTurn(text);
    const f = new Set<number>();
    for (const w of words(turn)) {
      const i = index.get(w);
      if (i !== undefined) f.add(i);
    }
    return { f: [...f], len: Math.log(1 + turn.length) };
  };
  const W = new Float64Array(V + 1);
  const score = (x: { f: number[]; len: number }) => x.f.reduce((s, i) => s + W[i], W[V] * x.len);
  const data = train.map((p) => [features(p.chosen), features(p.rejected)] as const);
  const lr = 0.1, l2 = 1e-2;
  for (let e = 0; e < epochs; e++)
    for (const [c, r] of data) {
      const g = -1 / (1 + Math.exp(score(c) - score(r))); // d(-log σ(d))/dd
      for (const i of c.f) W[i] -= lr * (g + l2 * W[i]);
      for (const i of r.f) W[i] -= lr * (-g + l2 * W[i]);
      W[V] -= lr * g * (c.len - r.len);
    }
  const s = (t: string) => score(features(t));
  return { name: 'bag of words', accuracy: accuracyOf(heldOut, s), train_accuracy: accuracyOf(train, s), detail: `logistic regression on ${V} words of the last assistant turn + its log length` };
}
