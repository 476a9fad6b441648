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
