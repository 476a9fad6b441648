export class UsageError extends Error {}

/** --device cpu|cuda (default cpu): where the model lives (cuda: resident on the GPU). */
export function parseDevice(values: Record<string, unknown>): 'cpu' | 'cuda' {
  const d = values.device as string | undefined;
  if (d === undefined) return 'cpu';
  if (d !== 'cpu' && d !== 'cuda') throw new UsageError(`--device must be cpu or cuda, got "${d}"`);
  return d;
}

export function parseIntArg(text: string, name: string, min = 1): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${name} must be an integer >= ${min}, got "${text}"`);
  return n;
}

/** A generation length that fits the model's context (a longer one would be cut without saying so). */
export function checkMaxNewTokens(n: number, model: { config: { maxPositionEmbeddings: number } }, name = '--max-new-tokens'): number {
  const context = model.config.maxPositionEmbeddings;
  if (n >= context) throw new UsageError(`${name} ${n} does not fit the model's context of ${context} positions (prompt + new tokens); use at most ${context - 1}`);
  return n;
}

/** An integer option: its parsed value (>= min), or `fallback` when it was not given. */
export const intOption = (values: Record<string, unknown>, key: string, fallback: number, min = 1): number =>
  values[key] === undefined ? fallback : parseIntArg(values[key] as string, `--${key}`, min);
