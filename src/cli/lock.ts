// One run per output folder: a lock file holding the writer's pid. A lock whose pid is gone
// (a killed run) is stale and taken over.
import { openSync, readFileSync, rmSync, writeSync, closeSync } from 'node:fs';
import path from 'node:path';
import { UsageError } from './args.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes `dir`/.wst-dash.lock for this process; returns the release function. */
export function lockOutDir(dir: string): () => void {
  const file = path.join(dir, '.wst-dash.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      const release = () => {
        try {
          if (readFileSync(file, 'utf8') === String(process.pid)) rmSync(file, { force: true });
        } catch {
          // already gone
        }
      };
      process.once('exit', release);
      return release;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(readFileSync(file, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid))
        throw new UsageError(`--out ${dir} is in use by another run (pid ${pid}); wait for it, or use another --out`);
      rmSync(file, { force: true }); // stale: its writer is gone
    }
  }
  throw new UsageError(`--out ${dir}: could not take the lock ${file}`);
}
