// WST: templates, the local student (batched, de-duplicated, in order), the environment (the
// teacher's completion scored by a frozen student's outcome), the loop on a toy world (advantages,
// filtering, resume), evaluation (misleading / helped) and the built-in world's construction.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { Model } from '../src/models/model.js';
import { evaluate, trainRl, trainSft, type RlOptions } from '../src/rl/trainer.js';
import type { Example } from '../src/rl/tasks/common.js';
import { generateOps, opsTask, opsTokenizer, opsLlamaConfig, REPERTOIRE, REPERTOIRE_LIST, studentBehaviour, studentCorpus, teacherCorpus, type OpsExample } from '../src/wst/builtin.js';
import { wstEnvironment } from '../src/wst/environment.js';
import { evaluateWst } from '../src/wst/evaluate.js';
import { localStudent, type Student, type StudentRequest } from '../src/wst/student.js';
import { BUILTIN_TEMPLATES, checkTemplates, parseInstruction, studentPrompt, teacherPrompt } from '../src/wst/templates.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'wst-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A frozen "student" that follows the built-in behaviour exactly (no model): the rules, not weights. */
function ruleStudent(examples: readonly OpsExample[]): Student & { calls: StudentRequest[][] } {
  const byQuestion = new Map(examples.map((e) => [e.question, e]));
  const calls: StudentRequest[][] = [];
  const stats = { requests: 0, deduplicated: 0, promptTokens: 0, completionTokens: 0, seconds: 0 };
  return {
    name: 'rules', stats, calls,
    async answer(requests, o = {}) {
      calls.push([...requests]);
      stats.requests += requests.length;
      return requests.map((r) => Array.from({ length: o.samples ?? 1 }, () => {
        const text = studentBehaviour(r.instruction, byQuestion.get(r.query)!);
        stats.completionTokens += text.length;
        return { text, promptTokens: 10, completionTokens: text.length };
      }));
    },
  };
}

/** A tiny teacher over the ops alphabet (random weights). */
function tinyTeacher(seed = 3): Model {
  const config = opsLlamaConfig(32, 1, 64);
  return Model.create(config, { seed, std: 0.3, tokenizer: opsTokenizer() });
}

describe('WST templates', () => {
  it('fill the teacher and student prompts and parse the instruction line', () => {
    expect(teacherPrompt(BUILTIN_TEMPLATES, 'q?')).toBe('Q: q?\nI: ');
    expect(studentPrompt(BUILTIN_TEMPLATES, 'Add.', 'q?')).toBe('I: Add.\nQ: q?\nA: ');
    expect(studentPrompt(BUILTIN_TEMPLATES, null, 'q?')).toBe('Q: q?\nA: ');
    expect(studentPrompt(BUILTIN_TEMPLATES, '', 'q?')).toBe('Q: q?\nA: ');
    expect(parseInstruction('  Add the two numbers. \nrest')).toBe('Add the two numbers.');
    expect(parseInstruction('x'.repeat(300), 10)).toBe('x'.repeat(10));
    expect(() => checkTemplates({ ...BUILTIN_TEMPLATES, student: 'Q: {query}' })).toThrow(/templates.student must contain/);
    expect(() => checkTemplates({ ...BUILTIN_TEMPLATES, teacher: 'no query' })).toThrow(/templates.teacher must contain/);
  });
});

describe('the built-in world', () => {
  const ex = generateOps({ seed: 3, count: 300, split: 'train' });
  it('has three kinds, disjoint splits and answers that check', () => {
    const test = generateOps({ seed: 3, count: 300, split: 'test' });
    const q = new Set(ex.map((e) => e.question));
    expect(test.some((e) => q.has(e.question))).toBe(false);
    for (const kind of ['add', 'sub', 'mul']) expect(ex.filter((e) => e.kind === kind).length).toBeGreaterThan(60);
    for (const e of ex) expect(opsTask.isCorrect(e.solution, e)).toBe(true);
    expect(generateOps({ seed: 3, count: 10, split: 'train' })).toEqual(ex.slice(0, 10));
  });
  it('the right instruction unlocks every kind; none or any fixed one is right on one kind only', () => {
    const acc = (instr: (e: OpsExample) => string | null) => ex.filter((e) => opsTask.isCorrect(studentBehaviour(instr(e), e), e)).length / ex.length;
    expect(acc((e) => REPERTOIRE[e.kind])).toBe(1);
    const alone = acc(() => null);
    expect(alone).toBeGreaterThan(0.25);
    expect(alone).toBeLessThan(0.45);
    for (const t of REPERTOIRE_LIST) expect(acc(() => t)).toBeLessThan(0.45);
  });
  it('the student corpus never ties an operation to the question: only the instruction decides it', () => {
    const corpus = studentCorpus(2000);
    const answers = corpus.filter((c) => c.question.endsWith('\nA: '));
    expect(answers.length).toBeGreaterThan(1200);
    for (const c of answers) {
      const instr = c.question.startsWith('I: ') ? c.question.slice(3, c.question.indexOf('\n')) : null;
      const op = c.solution.match(/^\d+([+*-])\d+=/)?.[1] ?? (c.solution.startsWith('####') ? 'last' : '?');
      const want = instr === REPERTOIRE.sub ? '-' : instr === REPERTOIRE.mul ? '*' : instr === REPERTOIRE.last ? 'last' : '+';
      expect(op).toBe(want);
    }
    // the teacher corpus draws every instruction of the repertoire
    const t = teacherCorpus(1000);
    for (const instr of REPERTOIRE_LIST) expect(t.filter((c) => c.solution === instr).length).toBeGreaterThan(50);
  });
});

describe('the WST environment', () => {
  const ex = generateOps({ seed: 4, count: 64, split: 'train' });
  it('scores a whole step at once: reward = the student\'s correctness under the parsed instruction', async () => {
    const student = ruleStudent(ex);
    const env = wstEnvironment({ task: opsTask, student, templates: BUILTIN_TEMPLATES });
    const rollouts = ex.slice(0, 3).flatMap((e, g) => [REPERTOIRE[e.kind] + '\nignored', REPERTOIRE.last, ''].map((completion) => ({ example: e, prompt: env.prompt(e), completion, group: g })));
    const r = await env.score(rollouts, { step: 0, seed: 1 });
    expect(student.calls.length).toBe(1);
    expect(student.calls[0].length).toBe(9);
    expect(student.calls[0][0].instruction).toBe(REPERTOIRE[ex[0].kind]);
    expect(student.calls[0][2].instruction).toBeNull(); // an empty instruction: the student alone
    for (let g = 0; g < 3; g++) {
      expect(r.rewards[3 * g]).toBe(1);
      expect(r.rewards[3 * g + 1]).toBe(opsTask.isCorrect(`#### ${ex[g].n}`, ex[g]) ? 1 : 0);
      expect(r.rewards[3 * g + 2]).toBe(ex[g].kind === 'add' ? 1 : 0);
    }
    expect(r.metrics?.student_answers).toBe(9);
    expect(r.metrics?.student_correct).toBe(r.rewards.reduce((a, b) => a + b, 0));
  });
  it('K samples per instruction: the reward is their mean', async () => {
    const env = wstEnvironment({ task: opsTask, student: ruleStudent(ex), templates: BUILTIN_TEMPLATES, samples: 3, scorer: (a, e) => (opsTask.isCorrect(a, e) ? 0.5 : 0) });
    const r = await env.score([{ example: ex[0], prompt: '', completion: REPERTOIRE[ex[0].kind], group: 0 }], { step: 0, seed: 0 });
    expect(r.rewards).toEqual([0.5]);
    expect(r.metrics?.student_answers).toBe(3);
  });
});

describe('the WST loop on a toy world (rule student, tiny teacher)', () => {
  const train = generateOps({ seed: 5, count: 1024, split: 'train' });
  const heldOut = generateOps({ seed: 5, count: 90, split: 'test' });
  const base = (policy: Model, student: Student, over: Partial<RlOptions> = {}): RlOptions => ({
    environment: wstEnvironment({ task: opsTask, student, templates: BUILTIN_TEMPLATES }), policy, steps: 2, promptsPerStep: 4, groupSize: 4,
    generation: 'preemptive', microBatch: 4, filterThreshold: 0, beta: 0, lr: 1e-2, maxNewTokens: 8, seed: 1, trainExamples: train, temperature: 1, ...over,
  });
  it('DASH: one student call per step; advantages per group; uniform groups never reach the teacher\'s training', async () => {
    // A student that is right when the instruction has an odd length: mixed groups from a random teacher.
    const byQ = new Map(train.map((e) => [e.question, e]));
    const calls: StudentRequest[][] = [];
    const student: Student = {
      name: 'parity', stats: { requests: 0, deduplicated: 0, promptTokens: 0, completionTokens: 0, seconds: 0 },
      async answer(requests) {
        calls.push([...requests]);
        return requests.map((r) => [{ text: (r.instruction ?? '').length % 2 ? byQ.get(r.query)!.solution : '#### -1', promptTokens: 1, completionTokens: 1 }]);
      },
    };
    const policy = tinyTeacher();
    const trained: number[][] = [];
    const one = policy.trainGrpo.bind(policy), many = policy.trainGrpoMany.bind(policy);
    vi.spyOn(policy, 'trainGrpo').mockImplementation(async (b, o) => { trained.push([...o.advantages]); return one(b, o); });
    vi.spyOn(policy, 'trainGrpoMany').mockImplementation(async (l) => { for (const c of l) trained.push([...c.options.advantages]); return many(l); });
    const r = await trainRl(base(policy, student, { steps: 3 }));
    expect(calls.length).toBe(3);
    expect(calls.every((c) => c.length === 16)).toBe(true);
    expect(trained.flat().length).toBeGreaterThan(0);
    for (const a of trained.flat()) expect(Math.abs(a)).toBeGreaterThan(0);
    for (const s of r.steps) expect(s.env?.student_answers).toBe(16);
    // what was trained is the kept part of each step (uniform groups dropped)
    expect(trained.flat().length).toBe(Math.round(r.steps.reduce((a, s) => a + s.keptFraction * 16, 0)));
  });
  it('resuming from a checkpoint takes exactly the steps an uninterrupted run takes', async () => {
    const full = tinyTeacher(11);
    await trainRl(base(full, ruleStudent(train), { steps: 4 }));
    const dir = path.join(tmp, 'ckpt');
    await trainRl(base(tinyTeacher(11), ruleStudent(train), { steps: 2, checkpointDir: dir, checkpointEvery: 2 }));
    const resumed = await Model.load(dir);
    await trainRl(base(resumed, ruleStudent(train), { steps: 4, resume: true }));
    for (const { name } of full.tensorNames())
      expect(Buffer.from(resumed.getTensor(name).buffer).equals(Buffer.from(full.getTensor(name).buffer)), name).toBe(true);
  });
  it('the student\'s reward really teaches a warm-started teacher to read the verb', async () => {
    const student = ruleStudent([...train, ...heldOut]);
    const policy = Model.create(opsLlamaConfig(48, 2, 96), { seed: 2, std: 0.02, tokenizer: opsTokenizer() });
    const pass = { name: 'c', stop: [], examples: () => [], prompt: (e: Example) => e.question, reference: (e: Example) => e.solution, answer: () => '', extract: () => null, isCorrect: () => false };
    await trainSft({ task: pass, model: policy, steps: 300, batchSize: 16, lr: 5e-3, warmupSteps: 10, schedule: 'cosine', seed: 0, trainExamples: teacherCorpus(2400) });
    const env = wstEnvironment({ task: opsTask, student, templates: BUILTIN_TEMPLATES });
    const before = await evaluate(policy, env, heldOut, { maxNewTokens: 24 });
    await trainRl(base(policy, student, { steps: 60, promptsPerStep: 16, groupSize: 8, microBatch: 8, maxNewTokens: 24, lr: 1e-3, temperature: 0.7, filterThreshold: 0.4 }));
    const after = await evaluate(policy, env, heldOut, { maxNewTokens: 24 });
    expect(after.accuracy).toBeGreaterThan(before.accuracy + 0.2);
  });
});

describe('evaluateWst', () => {
  const ex = generateOps({ seed: 6, count: 90, split: 'test' });
  it('counts misleading (right alone, wrong with it) and helped (wrong alone, right with it)', async () => {
    const r = await evaluateWst({ task: opsTask, student: ruleStudent(ex), templates: BUILTIN_TEMPLATES, examples: ex, teachers: {
      sub: { kind: 'fixed', instruction: REPERTOIRE.sub }, add: { kind: 'fixed', instruction: REPERTOIRE.add },
    } });
    const frac = (k: string) => ex.filter((e) => e.kind === k).length / ex.length;
    expect(r.teachers.none.accuracy).toBeCloseTo(frac('add'), 9);
    expect(r.teachers.none.misleading).toBe(0);
    expect(r.teachers.sub.misleading).toBeCloseTo(frac('add'), 9);
    expect(r.teachers.sub.helped).toBeCloseTo(frac('sub'), 9);
    expect(r.teachers.add.misleading).toBe(0);
    expect(r.teachers.sub.relative_gain).toBeCloseTo((frac('sub') - frac('add')) / frac('add'), 9);
    expect(r.queries.length).toBe(3 * ex.length);
  });
});

describe('localStudent', () => {
  it('answers in request order, the same as one generate per prompt; greedy duplicates computed once', async () => {
    const model = Model.create(opsLlamaConfig(32, 1, 64), { seed: 9, std: 0.3, tokenizer: opsTokenizer() });
    const student = localStudent(model, { templates: BUILTIN_TEMPLATES, stop: ['\n'], maxTokens: 6 });
    const ex = generateOps({ seed: 7, count: 5, split: 'test' });
    const requests = [...ex.map((e) => ({ instruction: REPERTOIRE.add, query: e.question })), { instruction: REPERTOIRE.add, query: ex[0].question }, { instruction: null, query: ex[1].question }];
    const got = await student.answer(requests);
    expect(student.stats.deduplicated).toBe(1);
    for (let i = 0; i < requests.length; i++) {
      const [one] = await model.generate([studentPrompt(BUILTIN_TEMPLATES, requests[i].instruction, requests[i].query)], { temperature: 0, maxNewTokens: 6, stop: ['\n'] });
      expect(got[i][0].text).toBe(one.text);
    }
    const k = await student.answer(requests.slice(0, 2), { samples: 3, temperature: 1, seed: 4 });
    expect(k.map((a) => a.length)).toEqual([3, 3]);
    await expect(student.answer(requests, { samples: 0 })).rejects.toThrow(/samples must be a positive integer/);
  });
});
