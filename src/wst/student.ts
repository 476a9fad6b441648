// The frozen student: answers a batch of (instruction, query) requests. A local model of this
// engine answers a whole batch in one batched generate (CPU or CUDA); an OpenAI-compatible
// server is the other backend (the same interface). The student is never trained.
import type { Model } from '../models/model.js';
import { studentPrompt, type WstTemplates } from './templates.js';

export interface StudentRequest {
  /** null: no instruction. */
  instruction: string | null;
  query: string;
}

export interface StudentAnswer {
  text: string;
  promptTokens: number;
  completionTokens: number;
}

export interface AnswerOptions {
  /** Answers per request (K). Default 1. */
  samples?: number;
  /** 0: greedy (the default). */
  temperature?: number;
  /** Sampling seed; answer k of request i draws with its own stream. */
  seed?: number;
  maxTokens?: number;
}

export interface StudentStats {
  requests: number;
  /** Requests answered from this process's de-duplication (same prompt, greedy). */
  deduplicated: number;
  promptTokens: number;
  completionTokens: number;
  seconds: number;
}

export interface Student {
  readonly name: string;
  /** One array of `samples` answers per request, in order. */
  answer(requests: readonly StudentRequest[], options?: AnswerOptions): Promise<StudentAnswer[][]>;
  /** Running totals (for per-step metrics: take differences). */
  readonly stats: StudentStats;
}

export interface LocalStudentOptions {
  templates: WstTemplates;
  /** Stop strings of the student's answer (default: none; EOS always stops). */
  stop?: readonly string[];
  /** Rows decoded together (default 256). */
  batchSize?: number;
  /** Default answer length (default 64). */
  maxTokens?: number;
}

/** A 32-bit seed per (call seed, request, sample): integer mixing, exact for any seed size. */
export function mixSeed(seed: number, i: number, k: number): number {
  let h = Math.imul((seed % 4294967296) >>> 0 ^ 0x9e3779b9, 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ i ^ (h >>> 15), 0xc2b2ae35) >>> 0;
  h = Math.imul(h ^ k ^ (h >>> 13), 0x27d4eb2f) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * A frozen local model as the student. Greedy answers of identical prompts are computed once per
 * call (G instructions of a group often coincide), which changes no answer.
 */
export function localStudent(model: Model, options: LocalStudentOptions): Student {
  const stats: StudentStats = { requests: 0, deduplicated: 0, promptTokens: 0, completionTokens: 0, seconds: 0 };
  return {
    name: 'local',
    stats,
    async answer(requests, o = {}) {
      const samples = o.samples ?? 1, temperature = o.temperature ?? 0;
      if (!Number.isInteger(samples) || samples < 1) throw new RangeError(`samples must be a positive integer, got ${samples}`);
      if (!(temperature >= 0)) throw new RangeError(`temperature must be >= 0, got ${temperature}`);
      const t0 = performance.now();
      const prompts = requests.map((r) => studentPrompt(options.templates, r.instruction, r.query));
      // Rows to generate: one per distinct prompt when greedy, else one per (request, sample).
      const rows: string[] = [], seeds: number[] = [];
      const rowOf: number[][] = [];
      const seen = new Map<string, number>();
      prompts.forEach((p, i) => {
        const mine: number[] = [];
        for (let k = 0; k < samples; k++) {
          if (temperature === 0) {
            let row = seen.get(p);
            if (row === undefined) {
              row = rows.push(p) - 1;
              seeds.push(0);
              seen.set(p, row);
            } else stats.deduplicated++;
            mine.push(row);
          } else {
            mine.push(rows.push(p) - 1);
            seeds.push(mixSeed(o.seed ?? 0, i, k));
          }
        }
        rowOf.push(mine);
      });
      const gens = rows.length === 0 ? [] : await model.generate(rows, {
        temperature, seed: seeds, maxNewTokens: o.maxTokens ?? options.maxTokens ?? 64, batchSize: options.batchSize ?? 256,
        stop: options.stop as string[] | undefined, stepsPerCall: 64,
      });
      const out = rowOf.map((mine) => mine.map((row) => {
        const g = gens[row];
        return { text: g.text ?? '', promptTokens: g.promptIds.length, completionTokens: g.ids.length };
      }));
      stats.requests += requests.length;
      for (const g of gens) {
        stats.promptTokens += g.promptIds.length;
        stats.completionTokens += g.ids.length;
      }
      stats.seconds += (performance.now() - t0) / 1000;
      return out;
    },
  };
}
