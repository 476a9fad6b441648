// Tasks for the RL trainers: the built-in arith task and the GSM8K / MATH-500 loaders.
import { arith } from './arith.js';
import type { Example, Task } from './common.js';
import { gsm8k } from './gsm8k.js';
import { math500 } from './math500.js';

export type { Example, ExampleOptions, Split, Task } from './common.js';
export { defaultDataDir, makeRng, readJsonl } from './common.js';
export { DATA_SOURCES, TASK_FILES, ensureDataFile, ensureTaskData, type FetchDataOptions } from './fetch-data.js';
export {
  ARITH_DEFAULT_DIFFICULTY, ARITH_LEVELS, ARITH_VOCAB, arith, createArithTask, generateArith,
  type ArithExample, type ArithExampleOptions, type ArithOptions, type ArithTaskOptions,
} from './arith.js';
export { createGsm8kTask, gsm8k, gsm8kFinalAnswer, loadGsm8k, stripCalculatorAnnotations, type Gsm8kExample, type Gsm8kTaskOptions } from './gsm8k.js';
export { createMath500Task, loadMath500, math500, type Math500Example, type Math500TaskOptions } from './math500.js';

export type TaskName = 'arith' | 'gsm8k' | 'math500';

/** The built-in tasks by name. */
export const tasks: Readonly<Record<TaskName, Task<Example, any>>> = { arith, gsm8k, math500 };

export function getTask(name: string): Task<Example, any> {
  const t = (tasks as Record<string, Task<Example, any> | undefined>)[name];
  if (!t) throw new RangeError(`unknown task ${JSON.stringify(name)} (known: ${Object.keys(tasks).join(', ')})`);
  return t;
}
