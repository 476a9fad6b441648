// The public kernel API: `import { kernels } from 'wst-dash'`.
// Every op of every group file is exposed as kernels.ops.<name> (sync) and
// kernels.async.<name> (Promise, off the event loop); the five headline ops are also at the top.
import { native } from '../native.js';
import type { KernelOp } from './define.js';
import * as gemm from './gemm.js';
import * as attention from './attention.js';
import * as layers from './layers.js';
import * as losses from './losses.js';
import * as sampling from './sampling.js';
import * as optim from './optim.js';

const groups = { gemm, attention, layers, losses, sampling, optim };

type Group = typeof groups;
type OpsOf<G> = { [K in keyof G as G[K] extends KernelOp<never, unknown> ? K : never]: G[K] };
type AllOps = OpsOf<Group['gemm']> & OpsOf<Group['attention']> & OpsOf<Group['layers']> &
  OpsOf<Group['losses']> & OpsOf<Group['sampling']> & OpsOf<Group['optim']>;
type SyncOps = { [K in keyof AllOps]: AllOps[K] extends KernelOp<infer A, infer T> ? (...args: A) => T : never };
type AsyncOps = { [K in keyof AllOps]: AllOps[K] extends KernelOp<infer A, infer T> ? (...args: A) => Promise<T> : never };

function isOp(x: unknown): x is KernelOp<unknown[], unknown> {
  return typeof x === 'object' && x !== null && typeof (x as KernelOp<[], unknown>).sync === 'function' &&
    typeof (x as KernelOp<[], unknown>).async === 'function';
}

const ops = {} as Record<string, unknown>;
const asyncOps = {} as Record<string, unknown>;
for (const group of Object.values(groups))
  for (const [name, op] of Object.entries(group))
    if (isOp(op)) {
      ops[name] = op.sync;
      asyncOps[name] = op.async;
    }

export const kernels = {
  /** The active backend: "cpu", or "cuda" when the CUDA build found a usable device. */
  backend: native.backend as 'cpu' | 'cuda',
  /** The CPU SIMD path chosen at run time: "avx512", "avx2" or "generic". */
  isa: native.isa as string,
  /** Size of the native thread pool (WST_DASH_THREADS or the core count). */
  get threads(): number {
    return native.getThreads();
  },
  set threads(n: number) {
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 1024)
      throw new RangeError(`threads must be an integer in [1, 1024], got ${String(n)}`);
    native.setThreads(n);
  },
  matmul: gemm.matmul.sync,
  attention: attention.attention.sync,
  sample: sampling.sample.sync,
  logprobs: losses.logprobs.sync,
  grpo: losses.grpo.sync,
  /** Float32Array -> bf16 bits (Uint16Array), for matmulBf16 / attentionBf16. */
  toBf16: gemm.toBf16,
  /** bf16 bits -> Float32Array. */
  fromBf16: gemm.fromBf16,
  /** Every op, synchronous (forward and backward). */
  ops: ops as SyncOps,
  /** Every op as a Promise that runs off the event loop. */
  async: asyncOps as AsyncOps,
};

export type Kernels = typeof kernels;
export type { MatmulOptions } from './gemm.js';
