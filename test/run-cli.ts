// Running the CLI as a user runs it (a child process through tsx), and a scoped cache folder.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** ../shared beside the repository (or $WST_DASH_SHARED): fixtures and data sets, when present. */
export const sharedDir = path.resolve(process.env.WST_DASH_SHARED ?? path.join(repoRoot, '../shared'));

const run = promisify(execFile);

/** `wst-dash ...args` with its exit code, stdout and stderr (never throws on a non-zero exit). */
export async function runCli(args: readonly string[], env: Record<string, string> = {}): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/cli/main.ts'), ...args],
      { cwd: repoRoot, maxBuffer: 1 << 26, env: { ...process.env, ...env } });
    return { stdout, stderr, code: 0 };
  } catch (e) {
    const err = e as { stdout: string; stderr: string; code: number };
    return { stdout: err.stdout, stderr: err.stderr, code: err.code };
  }
}

/** Runs `fn` with $WST_DASH_CACHE set to `dir`, then restores it. */
export async function withCacheDir<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const prev = process.env.WST_DASH_CACHE;
  process.env.WST_DASH_CACHE = dir;
  try {
    return await fn();
  } finally {
    if (prev === undefined) delete process.env.WST_DASH_CACHE;
    else process.env.WST_DASH_CACHE = prev;
  }
}
