// TODO(helper): sampling.
import { defineOp } from './define.js';
export const sample = defineOp((_logits: Float32Array, _opts: Record<string, unknown>) => {
  throw new Error('not implemented yet');
  return { run: () => undefined, result: () => new Int32Array(0) };
});
