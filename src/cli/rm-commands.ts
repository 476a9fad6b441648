// CLI commands for reward models: train rm, score rm.
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../models/atomic.js';
import type { Model } from '../models/model.js';
import { UsageError, intOption, parseDevice, parseIntArg } from './args.js';
import { parseFloatArg } from './model-commands.js';
import { progressLine } from './rl-commands.js';

const HH_FILE = 'hh-rlhf.harmless-base.test.jsonl.gz';
const int = intOption;

/** --data FILE, else the HH-RLHF harmless-base file (data folder, cache, or fetched once). */
async function dataFile(values: Record<string, unknown>): Promise<string> {
  if (values.data !== undefined) {
    if (!existsSync(values.data as string)) throw new UsageError(`--data ${values.data as string}: no such file`);
    return values.data as string;
  }
  const { ensureDataFile } = await import('../rl/tasks/fetch-data.js');
  return ensureDataFile(HH_FILE, { log: (l) => console.error(l) });
}

/** A reward model from --model: a reward-model folder as is, a causal LM's backbone with a new score head. */
async function rewardModelFrom(dir: string, device: 'cpu' | 'cuda'): Promise<Model> {
  const { Model } = await import('../models/model.js');
  const lm = await Model.load(dir, { device });
  if (lm.config.scoreHead) return lm;
  return Model.rewardModelFrom(lm);
}

export async function trainRmCommand(values: Record<string, unknown>): Promise<void> {
  const { loadPreferences, splitPairs } = await import('../rm/preferences.js');
  const { bagOfWordsBaseline, lengthBaseline } = await import('../rm/baselines.js');
  const { builtinRewardModel, evaluateRewardModel, trainRewardModel } = await import('../rm/train.js');
  const out = values.out as string | undefined;
  if (!out) throw new UsageError('--out DIR is required');
  const device = parseDevice(values);
  const o = {
    trainPairs: int(values, 'train-pairs', 2000), splitSeed: int(values, 'split-seed', 1234, 0), seed: int(values, 'seed', 1, 0),
    epochs: int(values, 'epochs', 3), lmEpochs: int(values, 'lm-epochs', 0, 0), pairsPerStep: int(values, 'pairs-per-step', 8),
    maxChars: int(values, 'max-chars', 256, 0), hidden: int(values, 'hidden', 64), layers: int(values, 'layers', 2),
    lr: parseFloatArg(values.lr as string | undefined, '--lr', 1e-3),
  };
  if (!(o.lr > 0)) throw new UsageError(`--lr must be > 0, got ${o.lr}`);
  const file = await dataFile(values);
  const pairs = loadPreferences(file);
  if (o.trainPairs >= pairs.length) throw new UsageError(`--train-pairs ${o.trainPairs} leaves nothing held out (${file} has ${pairs.length} pairs)`);
  const { train, heldOut } = splitPairs(pairs, o.trainPairs, o.splitSeed);
  await mkdir(out, { recursive: true });
  const { lockOutDir } = await import('./lock.js');
  const release = lockOutDir(out);
  const model = values.model
    ? await rewardModelFrom(values.model as string, device)
    : builtinRewardModel(train.flatMap((p) => [p.chosen, p.rejected]), { hidden: o.hidden, layers: o.layers, maxChars: o.maxChars, seed: o.seed, device });
  console.error(`train rm: ${train.length} pairs for training, ${heldOut.length} held out (${file}, split seed ${o.splitSeed}); ${values.model ? values.model as string : `built-in character-level Llama, ${o.hidden} wide, ${o.layers} layers`}, ${model.numParams} parameters`);
  const baselines = [lengthBaseline(train, heldOut), bagOfWordsBaseline(train, heldOut)];
  for (const b of baselines) console.error(`baseline ${b.name}: held-out ${(100 * b.accuracy).toFixed(1)}% (${b.detail})`);
  const metricsFile = path.join(out, 'metrics.jsonl');
  await writeFileAtomic(metricsFile, '');
  const lines: string[] = [];
  const bar = progressLine();
  const modelDir = path.join(out, 'model');
  const history = await trainRewardModel({
    model, train, heldOut, epochs: o.epochs, lmEpochs: o.lmEpochs, pairsPerStep: o.pairsPerStep, lr: o.lr, maxChars: o.maxChars, seed: o.seed,
    onStep: (phase, s, n, loss) => bar.update(`${phase === 'lm' ? 'lm warm-up' : 'reward model'} step ${s}/${n} loss ${loss.toFixed(4)}`),
    onEpoch: async (e) => {
      bar.done();
      console.error(`epoch ${e.epoch}: loss ${e.loss.toFixed(4)}, held-out pairwise accuracy ${(100 * e.heldout_accuracy).toFixed(1)}% (${e.seconds.toFixed(0)} s)`);
      lines.push(JSON.stringify({ type: 'epoch', ...e }));
      await writeFileAtomic(metricsFile, lines.join('\n') + '\n');
      await model.save(modelDir); // the latest epoch's model: a run stopped later keeps it
    },
  });
  const final = await evaluateRewardModel(model, heldOut, { maxChars: o.maxChars });
  const best = baselines.reduce((a, b) => (b.accuracy > a.accuracy ? b : a));
  const result = {
    data: file, train_pairs: train.length, heldout_pairs: heldOut.length, split_seed: o.splitSeed, seed: o.seed, max_chars: o.maxChars,
    parameters: model.numParams, seconds: history[history.length - 1]?.seconds ?? 0, heldout: final, epochs: history,
    baselines: Object.fromEntries(baselines.map((b) => [b.name, b])), margin_vs_best_baseline: final.accuracy - best.accuracy, model: modelDir,
  };
  await writeFileAtomic(path.join(out, 'result.json'), JSON.stringify(result, null, 2) + '\n');
  await writeFileAtomic(path.join(out, 'report.md'), rmReport(result));
  release();
  console.log(JSON.stringify(result));
}

export async function scoreRmCommand(values: Record<string, unknown>): Promise<void> {
  const { loadPreferences } = await import('../rm/preferences.js');
  const { evaluateRewardModel } = await import('../rm/train.js');
  const { Model } = await import('../models/model.js');
  if (!values.model) throw new UsageError('--model DIR is required');
  const limit = values.limit === undefined ? undefined : parseIntArg(values.limit as string, '--limit');
  const maxChars = int(values, 'max-chars', 256, 0);
  const file = await dataFile(values);
  const pairs = loadPreferences(file).slice(0, limit);
  const model = await Model.load(values.model as string, { device: parseDevice(values) });
  if (!model.config.scoreHead) throw new UsageError(`--model ${values.model as string} is not a reward model (its config names no *ForSequenceClassification class)`);
  const ev = await evaluateRewardModel(model, pairs, { maxChars });
  if (values.json) console.log(JSON.stringify({ data: file, ...ev }));
  else console.log(`pairwise accuracy ${(100 * ev.accuracy).toFixed(2)}% on ${ev.n} pairs; mean score chosen ${ev.chosen_mean.toFixed(3)}, rejected ${ev.rejected_mean.toFixed(3)}, margin ${ev.margin_mean.toFixed(3)} ± ${ev.margin_sd.toFixed(3)}`);
}

/** report.md of a train rm run: the held-out accuracy per epoch beside the baselines. */
function rmReport(r: { data: string; train_pairs: number; heldout_pairs: number; split_seed: number; seed: number; max_chars: number; parameters: number; seconds: number;
  heldout: { accuracy: number; margin_mean: number }; epochs: { epoch: number; loss: number; heldout_accuracy: number; seconds: number }[];
  baselines: Record<string, { accuracy: number; train_accuracy: number; detail: string }>; margin_vs_best_baseline: number }): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  return [
    '# Reward model', '',
    `Data: \`${r.data}\`: ${r.train_pairs} pairs trained on, ${r.heldout_pairs} held out (split seed ${r.split_seed}); seed ${r.seed}; the last ${r.max_chars || 'all'} characters of each text; ${r.parameters} parameters; ${r.seconds.toFixed(0)} s.`, '',
    '| model | held-out pairwise accuracy | training split |', '| --- | ---: | ---: |',
    `| reward model | ${pct(r.heldout.accuracy)} | |`,
    ...Object.entries(r.baselines).map(([name, b]) => `| baseline: ${name} (${b.detail}) | ${pct(b.accuracy)} | ${pct(b.train_accuracy)} |`), '',
    `Reward model − best baseline: ${(100 * r.margin_vs_best_baseline).toFixed(1)} points (${r.heldout_pairs} pairs: one pair is ${(100 / r.heldout_pairs).toFixed(2)} points).`, '',
    '| epoch | loss | held-out accuracy | s |', '| ---: | ---: | ---: | ---: |',
    ...r.epochs.map((e) => `| ${e.epoch} | ${e.loss.toFixed(4)} | ${pct(e.heldout_accuracy)} | ${e.seconds.toFixed(0)} |`), '',
  ].join('\n');
}
