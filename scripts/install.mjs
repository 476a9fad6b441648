#!/usr/bin/env node
// `npm install` hook: use a matching prebuild from prebuilds/<platform>-<arch>/ when one loads,
// otherwise build from source with cmake-js. WST_DASH_BUILD_FROM_SOURCE=1 (or CI=true) always builds.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
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
const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'build-native.mjs')], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
