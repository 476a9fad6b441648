// The demo's report folder: report.md beside the race's JSON, plot and per-step metrics.
import { copyFile } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../models/atomic.js';
import { raceTable, type RaceResult } from './race.js';

export async function writeDemoReport(r: RaceResult, outDir: string): Promise<string> {
  const metrics = path.join(outDir, 'metrics.jsonl');
  // One metrics.jsonl for the whole demo (the per-arm files stay beside it).
  const { readFile } = await import('node:fs/promises');
  const lines: string[] = [];
  for (const f of r.files.metrics) {
    const arm = path.basename(f).replace(/^metrics-|\.jsonl$/g, '');
    for (const l of (await readFile(f, 'utf8')).split('\n').filter(Boolean)) lines.push(JSON.stringify({ arm, ...JSON.parse(l) }));
  }
  await writeFileAtomic(metrics, lines.join('\n') + '\n');
  const md = [
    '# wst-dash demo: DASH vs GRPO on the built-in task',
    '',
    `Task: ${r.task}. Model: the built-in character-level Llama, SFT warm-started${r.sft.cached ? ' (cached)' : ` in ${r.sft.seconds.toFixed(0)} s`}.`,
    `Each arm starts from the same SFT model and runs the same ${String(r.settings.steps)} optimizer steps with the same seeds and prompts`,
    `(${String(r.settings.promptsPerStep)} prompts × ${String(r.settings.groupSize)} completions per step, backprop micro-batch ${String(r.settings.microBatch)}).`,
    `Held-out accuracy is greedy, on ${String(r.settings.evalProblems)} unseen problems; evaluation time is not counted as training time.`,
    '',
    raceTable(r),
    '',
    '![accuracy vs wall time](accuracy-vs-time.svg)',
    '',
    '## The arms',
    ...Object.values(r.arms).map((a) => `- **${a!.name}**: ${a!.description}.`),
    '',
    'Files: `bench-dash.json` (all numbers), `metrics.jsonl` (one line per optimizer step and evaluation, per arm), `accuracy-vs-time.svg`.',
    '',
  ].join('\n');
  const file = path.join(outDir, 'report.md');
  await writeFileAtomic(file, md);
  void copyFile;
  return file;
}
