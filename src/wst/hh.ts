// WST on HH-RLHF (our definitions; README "WST"): the query is the dialogue of `chosen` up to and
// including its last "\n\nAssistant:"; the student writes the next assistant turn under the
// teacher's instruction; the reward is a scorer's score of that turn (a reward model here). There
// is no right answer: the task's checker says no to everything, and evaluations report scores.
import type { Model } from '../models/model.js';
import { dataFile, type Example, type ExampleOptions, type Split, type Task } from '../rl/tasks/common.js';
import { loadPreferences, splitPairs } from '../rm/preferences.js';
import { rewardScores } from '../rm/train.js';
import type { BatchScorer } from './environment.js';
import type { WstTemplates } from './templates.js';

export const HH_FILE = 'hh-rlhf.harmless-base.test.jsonl.gz';
/** The split `train rm` uses by default: the reward model never sees the test queries' pairs. */
export const HH_SPLIT = { trainPairs: 2000, seed: 1234 } as const;

export interface HhExample extends Example {
  /** 1-based line in the source file. */
  line: number;
}

/** The dialogue up to the last assistant turn's header, and that turn (chosen's answer). */
export function splitDialogue(transcript: string): { query: string; answer: string } | null {
  const k = transcript.lastIndexOf('\n\nAssistant:');
  if (k < 0) return null;
  return { query: transcript.slice(0, k + 12), answer: transcript.slice(k + 12) };
}

export interface HhTaskOptions {
  /** Keep the last N characters of each query (models with a short context); 0: all (default). */
  maxQueryChars?: number;
}

export function createHhTask(options: HhTaskOptions = {}): Task<HhExample> {
  const cut = (q: string) => (options.maxQueryChars && q.length > options.maxQueryChars ? q.slice(-options.maxQueryChars) : q);
  return {
    name: 'hh-rlhf',
    stop: ['\n\nHuman:'],
    examples(split: Split, opts: ExampleOptions = {}) {
      const pairs = loadPreferences(opts.file ?? dataFile(HH_FILE));
      // The train rm split (2,000 of 2,312 for the harmless-base file; 80 % of a smaller file).
      const trainCount = Math.min(HH_SPLIT.trainPairs, Math.floor(0.8 * pairs.length));
      const { train, heldOut } = opts.file ? { train: pairs, heldOut: pairs } : splitPairs(pairs, Math.max(1, trainCount), HH_SPLIT.seed);
      const rows = (split === 'train' ? train : heldOut).flatMap((p) => {
        const d = splitDialogue(p.chosen);
        return d ? [{ id: `hh:${p.line}`, question: cut(d.query), answer: '', solution: d.answer, line: p.line }] : [];
      });
      return opts.limit === undefined ? rows : rows.slice(0, opts.limit);
    },
    prompt: (e) => e.question,
    reference: (e) => e.solution,
    answer: () => '',
    extract: (c) => c,
    isCorrect: () => false,
  };
}

/** Templates for dialogue students: the instruction goes before the dialogue, which ends "Assistant:". */
export const HH_TEMPLATES: WstTemplates = {
  teacher: 'Write one short instruction for the assistant who answers the last message below.\n{query}\nInstruction:',
  student: 'Instruction: {instruction}{query}',
  studentNone: '{query}',
};

/** Short templates for the built-in character-level models (256 positions). */
export const HH_SHORT_TEMPLATES: WstTemplates = { teacher: '{query}\nI: ', student: 'I: {instruction}\n{query}', studentNone: '{query}' };

/** A reward model as a batched scorer: the score of the query followed by the student's answer. */
export function rewardModelScorer(rm: Model, options: { maxChars?: number; batchSize?: number } = {}): BatchScorer {
  return (items) => rewardScores(rm, items.map((it) => ({ prompt: it.example.question, response: it.answer })), options);
}
