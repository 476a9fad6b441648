// Boundary validation for the kernel API: every error names the argument and what was expected.

export type Options = Record<string, unknown>;

export function options(value: unknown, name = 'options'): Options {
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new TypeError(`${name} must be an object`);
  return value as Options;
}

/** A positive (or, with min 0, non-negative) integer size. */
export function size(value: unknown, name: string, min = 1, max = 2 ** 31 - 1): number {
  if (typeof value !== 'number') throw new TypeError(`${name} must be a number, got ${typeof value}`);
  if (!Number.isInteger(value) || value < min || value > max)
    throw new RangeError(`${name} must be an integer in [${min}, ${max}], got ${value}`);
  return value;
}

export function finite(value: unknown, name: string, min = -Infinity, max = Infinity): number {
  if (typeof value !== 'number') throw new TypeError(`${name} must be a number, got ${typeof value}`);
  if (!Number.isFinite(value) || value < min || value > max)
    throw new RangeError(`${name} must be a finite number in [${min}, ${max}], got ${value}`);
  return value;
}

export function optionalFinite(value: unknown, name: string, fallback: number, min = -Infinity, max = Infinity): number {
  return value === undefined ? fallback : finite(value, name, min, max);
}

export function bool(value: unknown, name: string, fallback = false): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new TypeError(`${name} must be a boolean, got ${typeof value}`);
  return value;
}

export function oneOf<T extends string>(value: unknown, name: string, allowed: readonly T[], fallback?: T): T {
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value))
    throw new RangeError(`${name} must be one of ${allowed.map((a) => `"${a}"`).join(', ')}, got ${JSON.stringify(value)}`);
  return value as T;
}

/** Product of sizes, refusing totals a typed array could never hold. */
export function elements(name: string, ...dims: number[]): number {
  let total = 1;
  for (const d of dims) total *= d;
  if (!Number.isSafeInteger(total) || total > 2 ** 32)
    throw new RangeError(`${name} is too large (${dims.join(' x ')} elements)`);
  return total;
}

function typedArray<T>(ctor: { new (n: number): T; name: string }, value: unknown, name: string, length?: number): T {
  if (!(value instanceof (ctor as unknown as typeof Float32Array)))
    throw new TypeError(`${name} must be a ${ctor.name}, got ${describe(value)}`);
  if (length !== undefined && (value as unknown as Float32Array).length !== length)
    throw new RangeError(`${name} must have length ${length}, got ${(value as unknown as Float32Array).length}`);
  return value as T;
}

export const f32 = (value: unknown, name: string, length?: number) => typedArray(Float32Array, value, name, length);
export const i32 = (value: unknown, name: string, length?: number) => typedArray(Int32Array, value, name, length);
/** bf16 data: the top 16 bits of each float32, in a Uint16Array (see kernels.toBf16). */
export const bf16 = (value: unknown, name: string, length?: number) => typedArray(Uint16Array, value, name, length);

/** Token ids: an Int32Array whose values all lie in [0, vocab). */
export function ids(value: unknown, name: string, length: number, vocab: number): Int32Array {
  const arr = i32(value, name, length);
  for (let i = 0; i < arr.length; i++)
    if (arr[i] < 0 || arr[i] >= vocab) throw new RangeError(`${name}[${i}] = ${arr[i]} is outside [0, ${vocab})`);
  return arr;
}

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'object') return (value as object).constructor?.name ?? 'object';
  return typeof value;
}
