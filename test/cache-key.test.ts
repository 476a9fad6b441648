// Content-keyed caches: the key follows the options, the code and the engine (binary, ISA path).
import { describe, expect, it } from 'vitest';
import { kernels } from '../src/index.js';
import { contentKey, engineFingerprint, SFT_MODULES } from '../src/rl/cache-key.js';
import { builtinSftEntry } from '../src/rl/builtin.js';

describe('content keys of the built-in caches', () => {
  it('change with the options and name the ISA path and backend that run', () => {
    const a = contentKey({ x: 1 }, SFT_MODULES), b = contentKey({ x: 2 }, SFT_MODULES);
    expect(a).toMatch(/^[0-9a-f]{12}$/);
    expect(a).not.toBe(b);
    expect(contentKey({ x: 1 }, SFT_MODULES)).toBe(a);
    expect(contentKey({ x: 1 }, [...SFT_MODULES, 'rl/race'])).not.toBe(a); // more code, another key
    const e = engineFingerprint();
    expect(e.isa).toBe(kernels.isa);
    expect(e.backend).toBe(kernels.backend);
    expect(e.addon).toMatch(/^[0-9a-f]{16}$/);
  });
  it('refuse a module that does not exist, and key the SFT entry by its options', () => {
    expect(() => contentKey({}, ['rl/no-such-module'])).toThrow(/module rl\/no-such-module not found/);
    expect(builtinSftEntry().dir).not.toBe(builtinSftEntry({ steps: 10 }).dir);
    expect(builtinSftEntry({ device: 'cuda' }).dir).not.toBe(builtinSftEntry().dir);
  });
});
