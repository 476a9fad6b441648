// The built-in default: a small character-level Llama for the `arith` task, warm-started by SFT
// and cached, so that `wst-dash demo` and `bench dash` run anywhere without downloads.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { parseConfig, type ModelConfig } from '../models/config.js';
import { checkDtype, Model, type Device } from '../models/model.js';
import { CharTokenizer } from '../models/tokenizer.js';
import { cacheDir } from '../paths.js';
import { contentKey, SFT_MODULES } from './cache-key.js';
import { ARITH_VOCAB, createArithTask, type ArithFlaw } from './tasks/arith.js';
import { evaluate, trainSft } from './trainer.js';

/** The built-in task: arith at difficulty 1 (one step, + or -, numbers up to 20). */
export const BUILTIN_DIFFICULTY = 1;
export const builtinTask = createArithTask({ difficulty: BUILTIN_DIFFICULTY });

export interface BuiltinSftOptions {
  steps: number;
  batchSize: number;
  lr: number;
  seed: number;
  /**
   * Fraction of the SFT corpus's reference solutions that come from a flawed solver (arith's
   * flawedRate / flawedKind): a realistically imperfect warm-up corpus, so that the SFT model has
   * learned a right and a wrong behaviour and RL has something to select (bench/archive/NOTES-2026-11.md). Evaluation
   * and rewards use the true answers.
   */
  flawedRate: number;
  flawedKind: ArithFlaw;
  /** arith's flawedSkew: the flawed rate is flawedRate ± flawedSkew by item. */
  flawedSkew: number;
}

/**
 * 1800 steps × 16 at lr 5e-3 (cosine) teach the 2-layer model most of the arithmetic (2400 steps on a clean
 * corpus: 78.8 % greedy held-out). Half of the references come from the flawed solver, which answers with the
 * last amount mentioned: 75 % of those about apples, cards, eggs and cups, 25 % of the others (flawedSkew
 * 0.25). With one global 50 % rate the model's choice of ending was a coin that last-bit rounding tipped:
 * 29.0 % held-out accuracy on the AVX-512 path, 59.4 % on the AVX2 path, from the same code. With the skew
 * the model prefers an ending per item with a margin: 36.6 % (AVX-512) and 26.8 % (AVX2), and DASH and GRPO
 * both lift it by ~39 points in 64 steps on either path (bench/RESULTS.md).
 */
export const BUILTIN_SFT: BuiltinSftOptions = { steps: 1800, batchSize: 16, lr: 5e-3, seed: 0, flawedRate: 0.5, flawedKind: 'operand', flawedSkew: 0.25 };

export function builtinTokenizer(): CharTokenizer {
  return new CharTokenizer([...ARITH_VOCAB]);
}

/**
 * A 0.38M-parameter Llama (hidden 128, 2 layers, GQA 4/2) over the arith characters. Two layers copy the
 * operands and learn the sums faster per second of SFT than four (bench/archive/NOTES-2026-11.md).
 */
export function builtinConfig(vocabSize = builtinTokenizer().vocabSize): ModelConfig {
  return parseConfig({
    model_type: 'llama', architectures: ['LlamaForCausalLM'], vocab_size: vocabSize, hidden_size: 128,
    intermediate_size: 352, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
    max_position_embeddings: 512, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: true,
    bos_token_id: CharTokenizer.BOS, eos_token_id: CharTokenizer.EOS,
  });
}

export { cacheDir };

/** Where the SFT warm-up for these options (and device) is cached, with the resolved options. */
export function builtinSftEntry(options: Partial<BuiltinSftOptions> & { device?: Device } = {}): { sft: BuiltinSftOptions; config: ModelConfig; dir: string } {
  const sft: BuiltinSftOptions = {
    steps: options.steps ?? BUILTIN_SFT.steps, batchSize: options.batchSize ?? BUILTIN_SFT.batchSize,
    lr: options.lr ?? BUILTIN_SFT.lr, seed: options.seed ?? BUILTIN_SFT.seed,
    flawedRate: options.flawedRate ?? BUILTIN_SFT.flawedRate, flawedKind: options.flawedKind ?? BUILTIN_SFT.flawedKind,
    flawedSkew: options.flawedSkew ?? BUILTIN_SFT.flawedSkew,
  };
  const config = builtinConfig();
  // Keyed by content: the options, the code that makes the corpus and trains (this module, arith,
  // the trainer and model), the engine binary and its ISA path. The ISA matters: the AVX2 and
  // AVX-512 kernels round differently, and 1800 SFT steps carry that into different models.
  const device = options.device ?? 'cpu';
  const key = contentKey({ config, sft, vocab: ARITH_VOCAB, difficulty: BUILTIN_DIFFICULTY, device, dtype: checkDtype(undefined, device) },
    ['rl/builtin', 'rl/tasks/arith', ...SFT_MODULES]);
  return { sft, config, dir: path.join(cacheDir(), `arith-sft-${key}`) };
}

/** The SFT warm-started built-in model: loaded from the cache, or trained (then cached). */
export async function builtinSftModel(options: Partial<BuiltinSftOptions> & { log?: (line: string) => void; refresh?: boolean; device?: Device } = {}): Promise<{ model: Model; dir: string; cached: boolean; seconds: number }> {
  const { sft, config, dir } = builtinSftEntry(options);
  if (!options.refresh && existsSync(path.join(dir, 'model.safetensors'))) {
    return { model: await Model.load(dir, { device: options.device }), dir, cached: true, seconds: 0 };
  }
  const model = Model.create(config, { seed: sft.seed, std: 0.02, tokenizer: builtinTokenizer(), device: options.device });
  const log = options.log ?? (() => undefined);
  log(`SFT warm-up of the built-in model (${(model.numParams / 1e6).toFixed(2)}M params): ${sft.steps} steps × ${sft.batchSize}` +
    (sft.flawedRate > 0 ? `, ${Math.round(100 * sft.flawedRate)}% of references from a flawed solver (${sft.flawedKind}` +
      (sft.flawedSkew ? `, ${Math.round(100 * (sft.flawedRate + sft.flawedSkew))} / ${Math.round(100 * (sft.flawedRate - sft.flawedSkew))}% by item)` : ')') : ''));
  const train = builtinTask.examples('train', { seed: 1, limit: 20000, flawedRate: sft.flawedRate, flawedKind: sft.flawedKind, flawedSkew: sft.flawedSkew });
  const res = await trainSft({
    task: builtinTask, model, steps: sft.steps, batchSize: sft.batchSize, lr: sft.lr, warmupSteps: 20, schedule: 'cosine',
    seed: sft.seed, trainExamples: train,
    onStep: (step, loss) => { if (step % 25 === 0 || step === sft.steps) log(`  sft step ${step}/${sft.steps} loss ${loss.toFixed(4)}`); },
  });
  await model.save(dir);
  return { model, dir, cached: false, seconds: res.seconds };
}

