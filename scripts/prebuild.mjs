#!/usr/bin/env node
// `npm pack` (prepack): the package carries prebuilt addons so that installing it compiles nothing.
//   prebuilds/<platform>-<arch>/wst-dash.node            the CPU addon (node-gyp-build finds it)
//   prebuilds/<platform>-<arch>/cuda/wst_dash_cuda.node  the CUDA addon, when this machine built one
// Both are N-API 8 (one binary for every Node >= 20) and choose their SIMD path at run time, so a
// build from any x86-64 machine serves all of them. Builds (incrementally) first, then copies and
// strips the symbols.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const build = spawnSync(process.execPath, [path.join(root, 'scripts', 'build-native.mjs')], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
rmSync(dir, { recursive: true, force: true });
const copies = [
  ['build/Release/wst_dash.node', 'wst-dash.node'],
  ['build/Release/cuda/wst_dash_cuda.node', 'cuda/wst_dash_cuda.node'],
];
for (const [from, to] of copies) {
  const src = path.join(root, from);
  if (!existsSync(src)) continue;
  const dst = path.join(dir, to);
  mkdirSync(path.dirname(dst), { recursive: true });
  copyFileSync(src, dst);
  spawnSync('strip', ['--strip-unneeded', dst], { stdio: 'ignore' }); // smaller; harmless when strip is missing
  console.error(`wst-dash: prebuild ${path.relative(root, dst)} (${(statSync(dst).size / 1e6).toFixed(1)} MB)`);
}
if (!existsSync(path.join(dir, 'wst-dash.node'))) {
  console.error('wst-dash: no CPU addon was built; nothing to package');
  process.exit(1);
}
