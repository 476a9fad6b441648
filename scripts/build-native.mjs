#!/usr/bin/env node
// Builds the native addon(s) with cmake-js into build/Release. Used by `npm install` when no
// prebuild matches, by `npm run build:native`, and by scripts/prebuild.mjs (`npm pack`).
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const cmakeJs = path.join(path.dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
const args = [cmakeJs, process.argv.includes('--rebuild') ? 'rebuild' : 'compile',
  '--parallel', String(availableParallelism()), '--log-level', 'warn'];
const outIndex = process.argv.indexOf('--out'); // a side build directory (default: build/)
if (outIndex > 0 && process.argv[outIndex + 1]) args.push('--out', path.resolve(process.argv[outIndex + 1]));
const cudaFlag = process.env.WST_DASH_CUDA; // "off" skips the CUDA addon even when nvcc exists
if (cudaFlag) args.push(`--CDWST_DASH_CUDA=${cudaFlag.toUpperCase() === 'OFF' ? 'OFF' : 'ON'}`);
const result = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (result.status !== 0) {
  console.error('wst-dash: native build failed (needs cmake >= 3.18 and a C++17 compiler)');
  process.exit(result.status ?? 1);
}
