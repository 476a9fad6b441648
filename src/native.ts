// Loads the native addon. The CPU build is always there (built by `npm install`, or a prebuild
// under prebuilds/ picked by node-gyp-build); the CUDA build is a separate .node, loaded only
// when a usable device exists (or when WST_DASH_BACKEND=cuda forces it).
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';

const require = createRequire(import.meta.url);
import { packageRoot } from './paths.js';
export { packageRoot };

import type { NativeAddon } from './native-api.js';
export type { NativeAddon };

/** The file the addon was loaded from (caches key their content on it: the engine's bits). */
export let nativeFile = '';

function loadCpu(): NativeAddon {
  // WST_DASH_ADDON points at a specific build (e.g. a side build directory during development).
  if (process.env.WST_DASH_ADDON) return require((nativeFile = path.resolve(process.env.WST_DASH_ADDON)));
  const local = path.join(packageRoot, 'build', 'Release', 'wst_dash.node');
  if (existsSync(local)) return require((nativeFile = local));
  const nodeGypBuild = require('node-gyp-build') as ((dir: string) => NativeAddon) & { resolve?: (dir: string) => string };
  try {
    nativeFile = nodeGypBuild.resolve?.(packageRoot) ?? '';
    return nodeGypBuild(packageRoot);
  } catch (err) {
    throw new Error(
      `wst-dash: no native addon found (looked for build/Release/wst_dash.node and prebuilds/). ` +
        `Run \`npm run build:native\`. Cause: ${(err as Error).message}`,
    );
  }
}

function loadCuda(): NativeAddon | undefined {
  // A local build first, else the package's prebuild.
  const file = [
    path.join(packageRoot, 'build', 'Release', 'cuda', 'wst_dash_cuda.node'),
    path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`, 'cuda', 'wst_dash_cuda.node'),
  ].find((f) => existsSync(f));
  if (!file) return undefined;
  try {
    const addon = require(file) as NativeAddon;
    if ((addon.deviceCount?.() ?? 0) <= 0) return undefined;
    nativeFile = file;
    return addon;
  } catch {
    return undefined;
  }
}

function load(): NativeAddon {
  const wanted = process.env.WST_DASH_BACKEND;
  if (wanted !== undefined && wanted !== 'cpu' && wanted !== 'cuda')
    throw new RangeError(`WST_DASH_BACKEND must be "cpu" or "cuda", got "${wanted}"`);
  if (wanted === 'cpu') return loadCpu();
  const cuda = loadCuda();
  if (cuda) return cuda;
  if (wanted === 'cuda') throw new Error('WST_DASH_BACKEND=cuda but no CUDA build or no usable CUDA device');
  return loadCpu();
}

export const native: NativeAddon = load();
