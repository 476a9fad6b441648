export { kernels } from './kernels/index.js';
export type { Kernels, MatmulOptions } from './kernels/index.js';
export { answers } from './rl/answers.js';
export * as tasks from './rl/tasks/index.js';
export { runCheckAnswers } from './rl/check-answers.js';
export { Model, loadModel } from './models/model.js';
export type { Generation, GenerateOptions, ModelConfig, ScoreOptions, StepResult, StreamChunk } from './models/model.js';
export { CharTokenizer, loadTokenizer, type Tokenizer } from './models/tokenizer.js';
