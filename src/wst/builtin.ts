// The embedded WST default (`demo wst`): a built-in world in which a small teacher can lift a
// larger frozen student, with no download. What is built in and what is learned (README "WST"):
//
// - Queries: one-step word problems of three kinds — gain ("buys 3 more": add), loss ("gives away
//   3": subtract), growth ("now has 3 times as many": multiply) — with nine verbs in all.
// - The student (0.76M parameters) is warm-started by SFT to *obey a method instruction*: told
//   "Add…", "Subtract…" or "Multiply…", it works the problem with that operation (right or wrong
//   for the query); told nothing (or "Think step by step."), it adds; told "Answer with the last
//   number.", it does. It never sees which words mean which operation: that is its latent gap.
//   So alone it is right on gain problems only; the right instruction unlocks the other two kinds.
// - The teacher (0.10M parameters, 1/7 of the student) is warm-started to write any instruction
//   of the repertoire, chosen by the query's *name* (Tom → one instruction, Sam → another), and
//   half the time at random: fluent, query-dependent, and unrelated to the method the query needs.
// - The strong teacher is the student itself, writing instructions through the same template: its
//   warm-up teaches it a method per verb, right for six verbs and confidently wrong for three
//   ("finds 3 more" → Multiply) — a fluent teacher that sometimes misleads.
// - RL (DASH) on the student's correctness alone must teach the teacher to read the verb and name
//   the method. No instruction, or any single fixed one, is right on only one kind of query.
import path from 'node:path';
import { existsSync } from 'node:fs';
import { parseConfig, type ModelConfig } from '../models/config.js';
import { checkDtype, Model, type Device } from '../models/model.js';
import { CharTokenizer } from '../models/tokenizer.js';
import { extractGsm8k, numberEqual } from '../rl/answers.js';
import { cacheDir } from '../rl/builtin.js';
import { contentKey, SFT_MODULES } from '../rl/cache-key.js';
import { fnv1a, makeRng, type Example, type Split, type Task } from '../rl/tasks/common.js';
import { trainSft } from '../rl/trainer.js';
import { BUILTIN_TEMPLATES, studentPrompt, teacherPrompt } from './templates.js';

export type OpsKind = 'add' | 'sub' | 'mul';
export const OPS_KINDS: readonly OpsKind[] = ['add', 'sub', 'mul'];

export interface OpsExample extends Example {
  kind: OpsKind;
  a: number;
  n: number;
  name: number;
  item: number;
  /** Which of the kind's three verbs. */
  verb: number;
}

const NAMES: readonly [string, string][] = [['Tom', 'He'], ['Sam', 'He'], ['Ben', 'He'], ['Ann', 'She'], ['Mia', 'She'], ['Eva', 'She']];
const ITEMS = ['apples', 'pens', 'cards', 'coins', 'eggs', 'books', 'cups', 'balls'];
const VERBS: Record<OpsKind, readonly string[]> = {
  add: ['buys {n} more', 'gets {n} more', 'finds {n} more'],
  sub: ['gives away {n}', 'loses {n}', 'sells {n}'],
  mul: ['now has {n} times as many', 'ends with {n} times as many', 'makes it {n} times as many'],
};
const SYMBOL: Record<OpsKind, string> = { add: '+', sub: '-', mul: '*' };

/** The teacher's repertoire: three methods, a neutral line and a misleading one. */
export const REPERTOIRE = {
  add: 'Add.',
  sub: 'Subtract.',
  mul: 'Multiply.',
  neutral: 'Think step by step.',
  last: 'Give the last number.',
} as const;
export const REPERTOIRE_LIST: readonly string[] = Object.values(REPERTOIRE);

/** Every character of the world's texts (the tokenizer's alphabet). */
export const OPS_VOCAB: string = (() => {
  const parts = [...NAMES.flat(), ...ITEMS, ...Object.values(VERBS).flat(), ...REPERTOIRE_LIST, ...Object.values(BUILTIN_TEMPLATES),
    ' has . How many?', '0123456789', '+-*=.# ', '\n'];
  return [...new Set(parts.join('').replace(/\{[a-z]+\}/g, ''))].sort().join('');
})();

const apply = (kind: OpsKind, a: number, n: number) => (kind === 'add' ? a + n : kind === 'sub' ? a - n : a * n);

/** Problems of the three kinds, deterministic for (seed, split); train and test never share a question. */
export function generateOps(o: { seed: number; count: number; split: Split }): OpsExample[] {
  const r = makeRng((o.seed * 0x2545f491 + (o.split === 'test' ? 0x68e31da4 : 0x1b873593)) >>> 0);
  const out: OpsExample[] = [];
  const pick = (k: number) => Math.floor(r() * k);
  for (let tries = 0; out.length < o.count; tries++) {
    if (tries > 100 * o.count + 1000) throw new Error(`ops: could not draw ${o.count} ${o.split} problems`);
    const kind = OPS_KINDS[pick(3)], name = pick(NAMES.length), item = pick(ITEMS.length);
    const a = 5 + pick(5), n = 2 + pick(4);
    const verbIndex = pick(3);
    const verb = VERBS[kind][verbIndex].replace('{n}', String(n));
    const question = `${NAMES[name][0]} has ${a} ${ITEMS[item]}. ${NAMES[name][1]} ${verb}. How many?`;
    if ((fnv1a(question) % 10 === 0) !== (o.split === 'test')) continue;
    const v = apply(kind, a, n);
    out.push({ id: `ops-${o.split}-${o.seed}-${out.length}`, question, answer: String(v), solution: `${a}${SYMBOL[kind]}${n}=${v}. #### ${v}`, kind, a, n, name, item, verb: verbIndex });
  }
  return out;
}

/** The student's answer under an instruction (the behaviour its warm-up teaches). */
export function studentBehaviour(instruction: string | null, ex: OpsExample): string {
  const work = (kind: OpsKind) => { const v = apply(kind, ex.a, ex.n); return `${ex.a}${SYMBOL[kind]}${ex.n}=${v}. #### ${v}`; };
  if (instruction === REPERTOIRE.sub) return work('sub');
  if (instruction === REPERTOIRE.mul) return work('mul');
  if (instruction === REPERTOIRE.last) return `#### ${ex.n}`;
  return work('add'); // no instruction, "Add…", "Think step by step."
}

/**
 * The untrained teacher's corpus instruction: keyed by the query's name (its first word: Tom →
 * "Add…", Sam → "Subtract…", Ben → "Multiply…", Ann → "Think…", Mia → "Answer with the last…",
 * Eva → "Add…") half the time, else drawn uniformly: query-dependent, and blind to the method.
 */
function teacherCorpusInstruction(ex: OpsExample, r: () => number): string {
  return r() < 0.5 ? REPERTOIRE_LIST[ex.name % REPERTOIRE_LIST.length] : REPERTOIRE_LIST[Math.floor(r() * REPERTOIRE_LIST.length)];
}

/**
 * The strong teacher's instruction, by verb: right for six of the nine verbs; "finds" → Multiply,
 * "loses" → Add and "ends with" → Subtract are confidently wrong.
 */
const STRONG_BY_VERB: Record<OpsKind, readonly OpsKind[]> = { add: ['add', 'add', 'mul'], sub: ['sub', 'add', 'sub'], mul: ['mul', 'sub', 'mul'] };
function strongInstruction(ex: OpsExample): string {
  return REPERTOIRE[STRONG_BY_VERB[ex.kind][ex.verb]];
}

/** The answer checker: the number after "####". */
export const opsTask: Task<OpsExample> = {
  name: 'ops',
  stop: ['\n'],
  examples: (split, opts = {}) => generateOps({ seed: opts.seed ?? 0, count: opts.limit ?? 500, split }),
  prompt: (ex) => studentPrompt(BUILTIN_TEMPLATES, null, ex.question),
  reference: (ex) => ex.solution,
  answer: (ex) => ex.answer,
  extract: (c) => extractGsm8k(c),
  isCorrect(completion, ex) {
    const got = extractGsm8k(completion);
    return got !== null && numberEqual(got, ex.answer);
  },
};

export function opsTokenizer(): CharTokenizer {
  return new CharTokenizer([...OPS_VOCAB]);
}

export function opsLlamaConfig(hidden: number, layers: number, intermediate: number): ModelConfig {
  return parseConfig({
    model_type: 'llama', architectures: ['LlamaForCausalLM'], vocab_size: opsTokenizer().vocabSize, hidden_size: hidden,
    intermediate_size: intermediate, num_hidden_layers: layers, num_attention_heads: 4, num_key_value_heads: 2,
    max_position_embeddings: 256, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: true,
    bos_token_id: CharTokenizer.BOS, eos_token_id: CharTokenizer.EOS,
  });
}

/** The student: hidden 128, 4 layers (0.76M parameters). */
export const studentConfig = () => opsLlamaConfig(128, 4, 352);
/** The teacher: hidden 64, 2 layers (0.10M parameters). */
export const teacherConfig = () => opsLlamaConfig(64, 2, 176);

export interface WarmupOptions {
  steps: number;
  batchSize: number;
  lr: number;
  seed: number;
}

export const STUDENT_WARMUP: WarmupOptions = { steps: 1200, batchSize: 16, lr: 5e-3, seed: 0 };
export const TEACHER_WARMUP: WarmupOptions = { steps: 400, batchSize: 16, lr: 5e-3, seed: 0 };

/** Corpus rows as examples of a pass-through task (question = the prompt, solution = the completion). */
const passThrough: Task = {
  name: 'corpus', stop: [], examples: () => [], prompt: (e) => e.question, reference: (e) => e.solution, answer: () => '', extract: () => null, isCorrect: () => false,
};

/**
 * The student's warm-up corpus: 85 % answers under a drawn instruction (none 10 %, "Think…" 10 %,
 * "Add." 15 %, "Subtract." 25 %, "Multiply." 25 %, "Give the last…" 15 %: each operation's facts
 * about equally often), 15 % strong-teacher lines.
 */
const STUDENT_INSTRUCTIONS: readonly [string | null, number][] = [[null, 0.1], [REPERTOIRE.neutral, 0.1], [REPERTOIRE.add, 0.15], [REPERTOIRE.sub, 0.25], [REPERTOIRE.mul, 0.25], [REPERTOIRE.last, 0.15]];
export function studentCorpus(count: number, seed = 1): Example[] {
  const r = makeRng(seed * 7919 + 13);
  return generateOps({ seed, count, split: 'train' }).map((ex, i) => {
    if (r() < 0.15) return { id: `s${i}`, question: teacherPrompt(BUILTIN_TEMPLATES, ex.question), solution: strongInstruction(ex), answer: '' };
    let u = r(), k = 0;
    while (k < STUDENT_INSTRUCTIONS.length - 1 && u >= STUDENT_INSTRUCTIONS[k][1]) u -= STUDENT_INSTRUCTIONS[k++][1];
    const instruction = STUDENT_INSTRUCTIONS[k][0];
    return { id: `s${i}`, question: studentPrompt(BUILTIN_TEMPLATES, instruction, ex.question), solution: studentBehaviour(instruction, ex), answer: '' };
  });
}

export function teacherCorpus(count: number, seed = 2): Example[] {
  const r = makeRng(seed * 7919 + 29);
  return generateOps({ seed, count, split: 'train' }).map((ex, i) => ({ id: `t${i}`, question: teacherPrompt(BUILTIN_TEMPLATES, ex.question), solution: teacherCorpusInstruction(ex, r), answer: '' }));
}

export interface WarmedModel {
  model: Model;
  dir: string;
  cached: boolean;
  seconds: number;
}

async function warm(role: 'student' | 'teacher', w: WarmupOptions, o: { device?: Device; refresh?: boolean; log?: (l: string) => void }): Promise<WarmedModel> {
  const config = role === 'student' ? studentConfig() : teacherConfig();
  const device = o.device ?? 'cpu';
  const key = contentKey({ role, config, w, vocab: OPS_VOCAB, device, dtype: checkDtype(undefined, device) }, ['wst/builtin', 'wst/templates', ...SFT_MODULES]);
  const dir = path.join(cacheDir(), `wst-${role}-${key}`);
  if (!o.refresh && existsSync(path.join(dir, 'model.safetensors'))) return { model: await Model.load(dir, { device: o.device }), dir, cached: true, seconds: 0 };
  const model = Model.create(config, { seed: w.seed, std: 0.02, tokenizer: opsTokenizer(), device: o.device });
  const log = o.log ?? (() => undefined);
  log(`warm-up of the built-in ${role} (${(model.numParams / 1e6).toFixed(2)}M params): ${w.steps} steps × ${w.batchSize}`);
  const corpus = role === 'student' ? studentCorpus(w.steps * w.batchSize) : teacherCorpus(w.steps * w.batchSize);
  const res = await trainSft({
    task: passThrough, model, steps: w.steps, batchSize: w.batchSize, lr: w.lr, warmupSteps: 20, schedule: 'cosine', seed: w.seed, trainExamples: corpus,
    onStep: (s, loss) => { if (s % 100 === 0 || s === w.steps) log(`  ${role} step ${s}/${w.steps} loss ${loss.toFixed(4)}`); },
  });
  await model.save(dir);
  return { model, dir, cached: false, seconds: res.seconds };
}

/** The built-in student, warm-started and cached by content. */
export function builtinStudent(o: { device?: Device; refresh?: boolean; log?: (l: string) => void; warmup?: Partial<WarmupOptions> } = {}): Promise<WarmedModel> {
  return warm('student', { ...STUDENT_WARMUP, ...o.warmup }, o);
}

/** The built-in (untrained) teacher, warm-started and cached by content. */
export function builtinTeacher(o: { device?: Device; refresh?: boolean; log?: (l: string) => void; warmup?: Partial<WarmupOptions> } = {}): Promise<WarmedModel> {
  return warm('teacher', { ...TEACHER_WARMUP, ...o.warmup }, o);
}
