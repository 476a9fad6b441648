#!/usr/bin/env node
// The CLI entry: runs the compiled CLI (dist/), or the TypeScript source through tsx in a
// development checkout that has not been compiled yet.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const compiled = path.join(root, 'dist', 'cli', 'main.js');
if (existsSync(compiled)) {
  await import(pathToFileURL(compiled).href);
} else {
  const { tsImport } = await import('tsx/esm/api');
  await tsImport(pathToFileURL(path.join(root, 'src', 'cli', 'main.ts')).href, import.meta.url);
}
