// TODO(helper): attention.
import { defineOp } from './define.js';
export const attention = defineOp((_args: Record<string, unknown>) => {
  throw new Error('not implemented yet');
  return { run: () => undefined, result: () => new Float32Array(0) };
});
