// The package as a user installs it: `npm pack`, then `npm install ./wst-dash-*.tgz` in an empty
// project, then `import { trainRl } from 'wst-dash'` type-checked and run.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from './run-cli.js';
import { tinyTextModelFolder } from './tiny-models.js';

const run = promisify(execFile);
const tmp = mkdtempSync(path.join(tmpdir(), 'wst-pack-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const npm = (args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env) => run('npm', args, { cwd, maxBuffer: 1 << 26, env: { ...env, npm_config_yes: 'true' } });

const USER_PROGRAM = `import { Model, PRESETS, tasks, trainRl, type RlOptions, type RlResult } from 'wst-dash';

// Installed as a dependency, the data sets live in the cache's data folder unless told otherwise.
console.error(tasks.defaultDataDir());

const policy = await Model.load(process.argv[2]);
const options: RlOptions = {
  ...PRESETS.dash, task: tasks.arith, policy, steps: 1, promptsPerStep: 2, groupSize: 2, microBatch: 4,
  maxNewTokens: 6, seed: 0, lr: 1e-3,
};
const result: RlResult = await trainRl(options);
console.log(JSON.stringify({ steps: result.steps.length, reward: result.steps[0].reward }));
`;

describe('the npm package', () => {
  it('carries the prebuilt addon and no tests; installs without compiling; import { trainRl } type-checks and runs', { timeout: 240_000 }, async () => {
    // What `npm pack` runs first (prepack): an incremental build, then the stripped prebuild(s).
    await run(process.execPath, [path.join(repoRoot, 'scripts/prebuild.mjs')], { cwd: repoRoot, maxBuffer: 1 << 26 });
    const { stdout } = await npm(['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], repoRoot);
    const [pack] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
    const files = pack.files.map((f) => f.path);
    expect(files).toContain('prebuilds/linux-x64/wst-dash.node');
    expect(files).toContain('dist/index.js');
    expect(files).toContain('dist/index.d.ts');
    expect(files).toContain('scripts/install.mjs');
    expect(files.filter((f) => f.startsWith('native/tests/') || f.startsWith('build/') || f.startsWith('test/'))).toEqual([]);

    // As on a user's machine: CI=true (or WST_DASH_BUILD_FROM_SOURCE=1) would force a build from source.
    const { CI: _ci, WST_DASH_BUILD_FROM_SOURCE: _src, ...userEnv } = process.env;
    const project = path.join(tmp, 'project');
    mkdirSync(project);
    writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'user-project', version: '1.0.0', type: 'module', private: true }));
    // The dependencies come from npm's cache when `npm ci` filled it (CI), else from the registry.
    await npm(['install', path.join(tmp, pack.filename), '--prefer-offline', '--no-audit', '--no-fund'], project, userEnv);
    const installed = path.join(project, 'node_modules', 'wst-dash');
    // npm 11 runs a dependency's install script only once approved: run it as it would.
    const hook = await run(process.execPath, [path.join(installed, 'scripts/install.mjs')], { cwd: installed, env: userEnv });
    expect(hook.stdout.trim()).toBe('wst-dash: using prebuild prebuilds/linux-x64/wst-dash.node');
    expect(existsSync(path.join(installed, 'build'))).toBe(false); // nothing compiled
    expect(readdirSync(path.join(installed, 'native'))).not.toContain('tests');

    writeFileSync(path.join(project, 'train.mts'), USER_PROGRAM);
    writeFileSync(path.join(project, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { target: 'es2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, skipLibCheck: true, outDir: 'out',
        typeRoots: [path.join(repoRoot, 'node_modules/@types')], types: ['node'] },
      files: ['train.mts'],
    }));
    await run(process.execPath, [path.join(repoRoot, 'node_modules/typescript/bin/tsc'), '-p', project], { cwd: project });
    const model = await tinyTextModelFolder(tmp, 'policy', 16, 1);
    const cache = path.join(tmp, 'cache');
    const r = await run(process.execPath, [path.join(project, 'out', 'train.mjs'), model], { cwd: project, env: { ...process.env, WST_DASH_CACHE: cache, WST_DASH_DATA: '' } });
    expect(r.stderr.trim()).toBe(path.join(cache, 'data'));
    const res = JSON.parse(r.stdout.trim()) as { steps: number; reward: number };
    expect(res.steps).toBe(1);
    expect(res.reward).toBeGreaterThanOrEqual(0);
    expect(res.reward).toBeLessThanOrEqual(1);
  });
});
