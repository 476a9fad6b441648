// Atomic file and directory writes: write to a temporary sibling, fsync, then rename into place, so a
// reader never sees a half-written file and a crash leaves either the old file or the new one.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';

function tempSibling(target: string, suffix: string): string {
  const dir = path.dirname(target);
  return path.join(dir, `.${path.basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}.${suffix}`);
}

/** fsync a directory so a rename inside it is durable; a no-op where directories cannot be opened (Windows). */
async function fsyncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await fsp.open(dir, 'r');
    await fh.sync();
  } catch {
    // Some platforms or file systems refuse fsync on a directory; the rename itself is still atomic.
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/**
 * Writes `file` atomically. `content` is either the bytes to write or a function that writes through the
 * given file handle (for large files written piecewise). The temporary file lives in the same directory
 * (so the rename never crosses file systems) and is removed if anything fails.
 */
export async function writeFileAtomic(
  file: string,
  content: string | Uint8Array | ((fh: FileHandle) => Promise<void>),
): Promise<void> {
  const tmp = tempSibling(file, 'tmp');
  let fh: FileHandle | undefined;
  try {
    fh = await fsp.open(tmp, 'wx', 0o644);
    if (typeof content === 'function') await content(fh);
    else await fh.writeFile(content);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fsp.rename(tmp, file);
  } catch (err) {
    await fh?.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await fsyncDir(path.dirname(file));
}

/**
 * Writes a whole directory "atomically": `fill(tmpDir)` writes the files into a fresh temporary sibling
 * directory, every file in it is fsynced, and the directory is renamed to `dir`. If `dir` already exists it
 * is first moved aside and removed only after the new directory is in place, so at every moment `dir` is
 * either the complete old directory or the complete new one (there is a brief instant in which it does not
 * exist: POSIX has no atomic replace of a non-empty directory). On failure the temporary directory is removed
 * and any existing `dir` is left untouched.
 */
export async function writeDirAtomic(dir: string, fill: (tmpDir: string) => Promise<void>): Promise<void> {
  const target = path.resolve(dir);
  await fsp.mkdir(path.dirname(target), { recursive: true });
  const tmp = tempSibling(target, 'tmpdir');
  await fsp.mkdir(tmp);
  try {
    await fill(tmp);
    await syncTree(tmp);
  } catch (err) {
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
  let old: string | undefined;
  try {
    const st = await fsp.lstat(target).catch(() => undefined);
    if (st) {
      if (!st.isDirectory()) throw new Error(`${target} exists and is not a directory`);
      old = tempSibling(target, 'old');
      await fsp.rename(target, old);
    }
    await fsp.rename(tmp, target);
  } catch (err) {
    if (old) await fsp.rename(old, target).catch(() => undefined);
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
  await fsyncDir(path.dirname(target));
  if (old) await fsp.rm(old, { recursive: true, force: true });
}

async function syncTree(dir: string): Promise<void> {
  for (const entry of await fsp.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) await syncTree(p);
    else if (entry.isFile()) {
      const fh = await fsp.open(p, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
  }
  await fsyncDir(dir);
}
