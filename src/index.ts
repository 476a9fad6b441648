export { kernels } from './kernels/index.js';
export type { Kernels, MatmulOptions } from './kernels/index.js';
export { answers } from './rl/answers.js';
export * as tasks from './rl/tasks/index.js';
export { runCheckAnswers } from './rl/check-answers.js';
export { Model, loadModel } from './models/model.js';
export type { Generation, GenerateOptions, ModelConfig, ScoreOptions, StepResult, StreamChunk } from './models/model.js';
export { CharTokenizer, loadTokenizer, type Tokenizer } from './models/tokenizer.js';
export { downloadModel, isHubId, resolveModelPath, type HubOptions } from './models/hub.js';
// RL: the trainer loop, environments, algorithm presets.
export { evaluate, groupAdvantages, learningRate, trainRl, trainSft, correctnessReward } from './rl/trainer.js';
export type { EvalResult, RlOptions, RlResult, SftOptions, StepMetrics } from './rl/trainer.js';
export { mapLimit, taskEnvironment, type Environment, type EnvironmentResult, type RewardFn, type Rollout, type ScoreContext } from './rl/environment.js';
export { DASH_TAU, PRESETS, TASK_MAX_NEW_TOKENS, type Algorithm, type AlgorithmPreset } from './rl/presets.js';
// WST: a teacher trained on a frozen student's outcome.
export * as wst from './wst/index.js';
