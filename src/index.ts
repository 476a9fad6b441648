export { kernels } from './kernels/index.js';
export type { Kernels, MatmulOptions } from './kernels/index.js';
