// CLI commands over a model folder: generate, logits, export gguf.
import { UsageError, checkMaxNewTokens, parseDevice, parseIntArg } from './args.js';

export function parseIds(text: string | undefined, name = '--ids'): number[] {
  if (text === undefined || text.trim() === '') throw new UsageError(`${name} must be a comma-separated list of token ids`);
  return text.split(',').map((s) => {
    const n = Number(s.trim());
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`${name} must hold non-negative integers, got "${s}"`);
    return n;
  });
}

export function parseFloatArg(text: string | undefined, name: string, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n)) throw new UsageError(`${name} must be a number, got "${text}"`);
  return n;
}

function needModel(values: Record<string, unknown>): string {
  const dir = values.model as string | undefined;
  if (!dir) throw new UsageError('--model DIR is required');
  return dir;
}

export async function generateCommand(values: Record<string, unknown>): Promise<void> {
  const { Model } = await import('../models/model.js');
  const dir = needModel(values);
  if ((values.prompt === undefined) === (values.ids === undefined)) throw new UsageError('give exactly one of --prompt TEXT or --ids 1,2,3');
  const prompt = values.prompt !== undefined ? (values.prompt as string) : parseIds(values.ids as string);
  // Every option checked before the model loads; the length against its context after.
  const maxNewTokens = values['max-new-tokens'] === undefined ? 64 : parseIntArg(values['max-new-tokens'] as string, '--max-new-tokens');
  const temperature = parseFloatArg(values.temperature as string | undefined, '--temperature', 0);
  if (temperature < 0) throw new UsageError(`--temperature must be >= 0, got ${temperature}`);
  const topP = parseFloatArg(values['top-p'] as string | undefined, '--top-p', 1);
  if (!(topP > 0 && topP <= 1)) throw new UsageError(`--top-p must be in (0, 1], got ${topP}`);
  const minP = parseFloatArg(values['min-p'] as string | undefined, '--min-p', 0);
  if (!(minP >= 0 && minP < 1)) throw new UsageError(`--min-p must be in [0, 1), got ${minP}`);
  const sampling = {
    temperature, topP, minP,
    topK: values['top-k'] === undefined ? 0 : parseIntArg(values['top-k'] as string, '--top-k', 0),
    seed: values.seed === undefined ? 0 : parseIntArg(values.seed as string, '--seed', 0),
  };
  const model = await Model.load(dir, { device: parseDevice(values) });
  const [g] = await model.generate([prompt], { ...sampling, maxNewTokens: checkMaxNewTokens(maxNewTokens, model) });
  if (values.json) console.log(JSON.stringify({ ids: g.ids, text: g.text ?? null, logprobs: g.logprobs, finishReason: g.finishReason }));
  else console.log(g.text ?? g.ids.join(','));
}

export async function logitsCommand(values: Record<string, unknown>): Promise<void> {
  const { Model } = await import('../models/model.js');
  const ids = parseIds(values.ids as string | undefined);
  const model = await Model.load(needModel(values), { device: parseDevice(values) });
  const logits = await model.logits(ids);
  if (values.json) console.log(JSON.stringify({ logits: Array.from(logits) }));
  else console.log(Array.from(logits).map((x) => x.toFixed(5)).join(' '));
}

export async function exportGgufCommand(values: Record<string, unknown>): Promise<void> {
  const { loadCheckpoint } = await import('../models/safetensors.js');
  const { exportGguf } = await import('../models/gguf.js');
  const out = values.out as string | undefined;
  if (!out) throw new UsageError('--out FILE is required');
  const dtype = (values.dtype as string | undefined) ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16') throw new UsageError(`--dtype must be f32 or f16, got "${dtype}"`);
  const { config, tensors } = await loadCheckpoint(needModel(values));
  await exportGguf({ config, tensors, outFile: out, dtype });
  console.error(`wrote ${out}`);
}
