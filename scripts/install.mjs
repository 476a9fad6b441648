#!/usr/bin/env node
// `npm install` hook: use a matching prebuild from prebuilds/<platform>-<arch>/ when one loads,
// otherwise build from source with cmake-js. WST_DASH_BUILD_FROM_SOURCE=1 (or CI=true) always builds.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const forceSource = process.env.WST_DASH_BUILD_FROM_SOURCE === '1' || process.env.CI === 'true';

if (!forceSource && existsSync(path.join(root, 'prebuilds'))) {
  try {
    const file = require('node-gyp-build').resolve(root);
    require(file);
    console.log(`wst-dash: using prebuild ${path.relative(root, file)}`);
    process.exit(0);
  } catch (err) {
    console.log(`wst-dash: no usable prebuild (${err.message.split('\n')[0]}); building from source`);
  }
}
console.log('wst-dash: building the native addon from source (cmake-js; a few minutes on 2 cores)');
const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'build-native.mjs')], { cwd: root, stdio: 'inherit' });
// Installed as a dependency: keep only the addons, not the object files and CMake's work folders.
if (r.status === 0 && root.split(path.sep).includes('node_modules')) {
  const release = path.join(root, 'build', 'Release');
  for (const entry of readdirSync(path.join(root, 'build'))) if (entry !== 'Release') rmSync(path.join(root, 'build', entry), { recursive: true, force: true });
  for (const entry of readdirSync(release, { recursive: true })) {
    const file = path.join(release, String(entry));
    if (statSync(file).isFile() && !file.endsWith('.node')) rmSync(file, { force: true });
  }
}
process.exit(r.status ?? 1);
