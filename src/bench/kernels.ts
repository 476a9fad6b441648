// TODO(helper): the kernel benchmark.
export interface KernelBenchOptions { json: boolean; quick: boolean; threads?: number; out?: string }
export async function runKernelBench(_opts: KernelBenchOptions): Promise<void> {
  throw new Error('not implemented yet');
}
