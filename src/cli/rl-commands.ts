// CLI commands for RL: train, eval, bench dash, demo.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../models/atomic.js';
import { UsageError, checkMaxNewTokens, parseDevice, parseIntArg } from './args.js';
import { parseFloatArg } from './model-commands.js';
import type { ArmName } from '../rl/race.js';

/** A one-line progress display on a terminal (stderr); plain lines elsewhere, throttled. */
export function progressLine(): { update: (text: string) => void; done: () => void } {
  const tty = process.stderr.isTTY;
  let last = 0, shown = false;
  return {
    update(text) {
      const t = Date.now();
      if (tty) {
        process.stderr.write(`\r\x1b[K${text}`);
        shown = true;
      } else if (t - last > 5000) {
        process.stderr.write(text + '\n');
        last = t;
      }
    },
    done() {
      if (tty && shown) process.stderr.write('\n');
      shown = false;
    },
  };
}

function nonNegative(x: number, name: string): number {
  if (x < 0) throw new UsageError(`${name} must be >= 0, got ${x}`);
  return x;
}

async function taskFor(name: string | undefined) {
  const { getTask } = await import('../rl/tasks/index.js');
  const { builtinTask } = await import('../rl/builtin.js');
  if (name === undefined || name === 'arith') return builtinTask;
  if (name !== 'gsm8k' && name !== 'math500') throw new UsageError(`--task must be arith, gsm8k or math500, got "${name}"`);
  return getTask(name);
}

export async function evalCommand(values: Record<string, unknown>): Promise<void> {
  const { Model } = await import('../models/model.js');
  const { evaluate } = await import('../rl/trainer.js');
  if (!values.model) throw new UsageError('--model DIR is required');
  const task = await taskFor(values.task as string | undefined);
  const limit = values.limit === undefined ? 500 : parseIntArg(values.limit as string, '--limit');
  const examples = task.examples('test', { limit, file: values.file as string | undefined, seed: 12345 });
  const model = await Model.load(values.model as string, { device: parseDevice(values) });
  const maxNewTokens = values['max-new-tokens'] === undefined ? 64 : checkMaxNewTokens(parseIntArg(values['max-new-tokens'] as string, '--max-new-tokens'), model);
  const r = await evaluate(model, task, examples, { maxNewTokens });
  if (values.json) console.log(JSON.stringify({ accuracy: r.accuracy, n: r.n }));
  else console.log(`accuracy ${(100 * r.accuracy).toFixed(2)}% on ${r.n} problems (${r.seconds.toFixed(1)} s)`);
}

export async function trainCommand(algo: string | undefined, values: Record<string, unknown>): Promise<void> {
  const { Model } = await import('../models/model.js');
  const { trainRl, trainSft } = await import('../rl/trainer.js');
  const { PRESETS, TASK_MAX_NEW_TOKENS } = await import('../rl/presets.js');
  const { builtinSftModel, builtinConfig, builtinTokenizer } = await import('../rl/builtin.js');
  if (algo !== 'sft' && algo !== 'grpo' && algo !== 'dash') throw new UsageError('usage: wst-dash train sft|grpo|dash --task arith|gsm8k|math500 [--model DIR] --out DIR');
  const out = values.out as string | undefined;
  if (!out) throw new UsageError('--out DIR is required');
  const task = await taskFor(values.task as string | undefined);
  const steps = values.steps === undefined ? (algo === 'sft' ? 300 : 20) : parseIntArg(values.steps as string, '--steps');
  const seed = values.seed === undefined ? 0 : parseIntArg(values.seed as string, '--seed', 0);
  const device = parseDevice(values);
  // Options checked before any model is loaded or warmed up (a usage error costs nothing).
  const early = {
    group: values.group === undefined ? undefined : parseIntArg(values.group as string, '--group', 2),
    iterations: values.iterations === undefined ? 1 : parseIntArg(values.iterations as string, '--iterations'),
    tau: values.tau === undefined ? undefined : nonNegative(parseFloatArg(values.tau as string, '--tau', 0), '--tau'),
    temperature: nonNegative(parseFloatArg(values.temperature as string | undefined, '--temperature', PRESETS.dash.temperature), '--temperature'),
    lr: nonNegative(parseFloatArg(values.lr as string | undefined, '--lr', algo === 'sft' ? 3e-3 : PRESETS.dash.lr), '--lr'),
  };
  const dash = algo === 'dash';
  const generationArg = values.generation as string | undefined;
  if (algo !== 'sft' && generationArg !== undefined && (dash || (generationArg !== 'per-microbatch' && generationArg !== 'decoupled')))
    throw new UsageError(dash ? '--generation is for train grpo (DASH always samples preemptively)' : `--generation must be per-microbatch or decoupled, got "${generationArg}"`);
  if (early.iterations > 1 && (algo === 'sft' || (algo === 'grpo' && values.generation !== 'decoupled')))
    throw new UsageError('--iterations > 1 needs decoupled or preemptive generation (train grpo --generation decoupled, or train dash)');
  const bar = progressLine();
  const resume = Boolean(values.resume);
  if (resume && algo === 'sft') throw new UsageError('--resume is for train grpo|dash');
  const { existsSync } = await import('node:fs');
  if (resume && !existsSync(path.join(out, 'checkpoint', 'trainer_state.json'))) throw new UsageError(`--resume: ${out}/checkpoint holds no checkpoint (trainer_state.json)`);
  // One run per --out (released at exit), taken before any model is loaded or warmed up.
  await mkdir(out, { recursive: true });
  const { lockOutDir } = await import('./lock.js');
  const release = lockOutDir(out);
  let model;
  if (resume) model = await Model.load(path.join(out, 'checkpoint'), { device });
  else if (values.model) model = await Model.load(values.model as string, { device });
  else if (algo === 'sft') model = Model.create(builtinConfig(), { seed, tokenizer: builtinTokenizer(), device });
  else model = (await builtinSftModel({ log: (l) => console.error(l), device })).model;
  if (algo === 'sft') {
    const batchSize = values['batch-size'] === undefined ? 16 : parseIntArg(values['batch-size'] as string, '--batch-size');
    const res = await trainSft({
      task, model, steps, batchSize, lr: early.lr, warmupSteps: 20, schedule: 'cosine', seed,
      onStep: (s, loss) => bar.update(`sft step ${s}/${steps} loss ${loss.toFixed(4)}`),
    });
    bar.done();
    await model.save(out);
    console.log(JSON.stringify({ steps, finalLoss: res.losses[res.losses.length - 1], seconds: res.seconds, out }));
    release();
    return;
  }
  // The same settings as the race (src/rl/presets.ts), each overridable.
  const preset = PRESETS[dash ? 'dash' : generationArg === 'decoupled' ? 'grpo_decoupled' : 'grpo'];
  const generation = preset.generation;
  const beta = parseFloatArg(values.beta as string | undefined, '--beta', preset.beta);
  const shareArg = values['share-prefix'] as string | undefined;
  if (shareArg !== undefined && shareArg !== 'on' && shareArg !== 'off') throw new UsageError(`--share-prefix must be on or off, got ${shareArg}`);
  // Default: on for DASH, off for GRPO (TRL computes every sequence in full).
  const sharePrefix = shareArg === undefined ? undefined : shareArg === 'on';
  const reference = beta > 0 ? await Model.load(values.model ? (values.model as string) : (await builtinSftModel({ device })).dir, { device }) : undefined;
  const metricsFile = path.join(out, 'metrics.jsonl');
  if (!resume) await writeFileAtomic(metricsFile, '');
  const res = await trainRl({
    task, policy: model, reference, steps, seed,
    promptsPerStep: values.prompts === undefined ? preset.promptsPerStep : parseIntArg(values.prompts as string, '--prompts'),
    groupSize: early.group ?? preset.groupSize,
    microBatch: values['micro-batch'] === undefined ? preset.microBatch : parseIntArg(values['micro-batch'] as string, '--micro-batch'),
    generation, beta, sharePrefix: sharePrefix ?? preset.sharePrefix,
    filterThreshold: early.tau ?? preset.filterThreshold,
    iterations: early.iterations,
    lr: values.lr === undefined ? preset.lr : early.lr,
    maxNewTokens: checkMaxNewTokens(values['max-new-tokens'] === undefined ? TASK_MAX_NEW_TOKENS[task.name] ?? 64 : parseIntArg(values['max-new-tokens'] as string, '--max-new-tokens'), model),
    temperature: values.temperature === undefined ? preset.temperature : early.temperature,
    evalExamples: task.examples('test', { seed: 12345, limit: values['eval-problems'] === undefined ? 200 : parseIntArg(values['eval-problems'] as string, '--eval-problems') }),
    evalEvery: values['eval-every'] === undefined ? 0 : parseIntArg(values['eval-every'] as string, '--eval-every'),
    metricsFile,
    // out/checkpoint: resumable (weights + AdamW + trainer position); out/model: the final model.
    checkpointDir: path.join(out, 'checkpoint'),
    // Checkpoints on by default (every 10 steps and at the end); --checkpoint-every 0 turns them off.
    checkpointEvery: values['checkpoint-every'] === undefined ? 10 : parseIntArg(values['checkpoint-every'] as string, '--checkpoint-every', 0),
    resume, resumeForce: Boolean(values.force),
    onStep: (m) => bar.update(`${algo} step ${m.step}/${steps}  reward ${m.reward.toFixed(3)}  kept ${(100 * m.keptFraction).toFixed(0)}%  ${m.elapsed.toFixed(1)} s`),
    onEval: (e) => { bar.done(); console.error(`step ${e.step}: held-out accuracy ${(100 * e.accuracy).toFixed(1)}%`); },
  });
  bar.done();
  // The final model goes to its own folder: saving replaces a folder whole, and out/ also holds
  // metrics.jsonl and the checkpoint.
  const modelDir = path.join(out, 'model');
  await model.save(modelDir);
  const last = res.evals[res.evals.length - 1];
  console.log(JSON.stringify({ steps, seconds: res.seconds, accuracy: last?.accuracy ?? null, model: modelDir, metrics: metricsFile }));
  release();
}

export async function benchDashCommand(values: Record<string, unknown>, demo = false): Promise<void> {
  const { runRace, raceTable, DEFAULT_RACE } = await import('../rl/race.js');
  const bar = progressLine();
  const outDir = (values.out as string | undefined) ?? (demo ? 'wst-dash-demo' : path.join('bench', 'results', 'dash'));
  const steps = values.steps === undefined ? DEFAULT_RACE.steps : parseIntArg(values.steps as string, '--steps');
  console.error(`wst-dash ${demo ? 'demo' : 'bench dash'}: writing to ${path.resolve(outDir)}`);
  const arms: ArmName[] = demo ? ['grpo', 'dash'] : [...DEFAULT_RACE.arms];
  if (!demo && values.control) arms.push('dash_control');
  if (!demo && values.ablation) arms.push('dash_unshared', 'dash_exact');
  const r = await runRace({
    ...DEFAULT_RACE, arms: [...arms], steps, outDir, device: parseDevice(values), refresh: Boolean(values.refresh),
    tau: nonNegative(parseFloatArg(values.tau as string | undefined, '--tau', DEFAULT_RACE.tau as number), '--tau'),
    // bench: 3 interleaved runs, median times (this VM's load varies ±15 % within minutes); demo: one.
    repeat: values.repeat === undefined ? (demo || values.seeds !== undefined ? 1 : 3) : parseIntArg(values.repeat as string, '--repeat', 1),
    seeds: values.seeds === undefined ? (demo ? 3 : 1) : parseIntArg(values.seeds as string, '--seeds', 1),
    evalProblems: values['eval-problems'] === undefined ? DEFAULT_RACE.evalProblems : parseIntArg(values['eval-problems'] as string, '--eval-problems', 1),
    log: (l) => { bar.done(); console.error(l); },
    progress: (t) => bar.update(t),
  });
  bar.done();
  if (demo) {
    const { writeDemoReport } = await import('../rl/report.js');
    const report = await writeDemoReport(r, outDir);
    console.log(raceTable(r));
    console.log(`\nreport: ${report}`);
    return;
  }
  if (values.json) {
    const { arms, ...rest } = r;
    const slim = Object.fromEntries(Object.entries(arms).map(([k, a]) => [k, { ...a, steps: undefined }]));
    console.log(JSON.stringify({ ...rest, arms: slim }));
  } else console.log(raceTable(r));
}
