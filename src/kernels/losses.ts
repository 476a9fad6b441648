// TODO(helper): the loss ops (logprobs, grpo, softmax family).
import { defineOp } from './define.js';
export const logprobs = defineOp((_logits: Float32Array, _ids: Int32Array, _opts: { rows: number; vocab: number }) => {
  throw new Error('not implemented yet');
  return { run: () => undefined, result: () => new Float32Array(0) };
});
export const grpo = defineOp((_args: Record<string, unknown>) => {
  throw new Error('not implemented yet');
  return { run: () => undefined, result: () => ({}) };
});
