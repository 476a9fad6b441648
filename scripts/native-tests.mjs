#!/usr/bin/env node
// Runs the native test program (no Node inside it): CPU kernels against float64 references, and
// every CUDA twin against the CPU kernel — on the GPU when one is usable (wst_native_tests) and on
// the CPU emulator of the CUDA subset (wst_native_tests_emu). Part of `npm test`.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = process.env.WST_DASH_NATIVE_TESTS_DIR ?? path.join(root, 'build');
const programs = [['wst_native_tests'], ['wst_native_tests_emu', '--gpu-only']];
let ran = 0;
for (const [name, ...args] of programs) {
  const exe = path.join(dir, name);
  if (!existsSync(exe)) continue;
  console.log(`native tests: ${path.relative(root, exe)} ${args.join(' ')}`);
  const r = spawnSync(exe, args, { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  const lines = r.stdout.trimEnd().split('\n');
  const failed = lines.filter((l) => l.startsWith('FAIL'));
  console.log([...failed, ...lines.slice(-2)].join('\n'));
  if (r.status !== 0) process.exit(r.status ?? 1);
  ran++;
}
if (ran === 0) console.log(`native tests: skipped (no test programs in ${dir}; they are built by \`npm run build:native\`, not shipped in prebuilds)`);
