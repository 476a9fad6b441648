// Tokenizers: a Hugging Face tokenizer.json (+ chat template) through @huggingface/tokenizers and
// @huggingface/jinja, the built-in character tokenizer, and models that carry them.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/models/config.js';
import { Model } from '../src/models/model.js';
import { CharTokenizer, loadTokenizer } from '../src/models/tokenizer.js';

const dir = mkdtempSync(path.join(tmpdir(), 'wst-tok-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const vocab = { '<unk>': 0, '<s>': 1, '</s>': 2, hello: 3, world: 4, the: 5, cat: 6, sat: 7, on: 8, mat: 9 };
function writeHfTokenizer(into: string): void {
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  writeFileSync(path.join(into, 'tokenizer.json'), JSON.stringify({
    version: '1.0', truncation: null, padding: null, added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: null, pre_tokenizer: { type: 'Whitespace' }, post_processor: null,
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordLevel', vocab, unk_token: '<unk>' },
  }));
  writeFileSync(path.join(into, 'tokenizer_config.json'), JSON.stringify({
    bos_token: '<s>', eos_token: '</s>',
    chat_template: "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
  }));
}

describe('tokenizers', () => {
  it('reads a Hugging Face tokenizer.json and renders its chat template', async () => {
    writeHfTokenizer(dir);
    const tok = await loadTokenizer(dir);
    expect(tok?.kind).toBe('hf');
    const ids = tok!.encode('the cat sat on the mat', { addSpecialTokens: false });
    expect(ids).toEqual([5, 6, 7, 8, 5, 9]);
    expect(tok!.decode(ids)).toBe('the cat sat on the mat');
    expect(tok!.encode('hello zebra', { addSpecialTokens: false })).toEqual([3, 0]);
    expect(tok!.applyChatTemplate([{ role: 'user', content: 'hello' }])).toBe('user: hello\nassistant:');
  });

  it('a model folder with a tokenizer generates text, and save() carries the tokenizer files', async () => {
    writeHfTokenizer(dir);
    const cfg = parseConfig({ model_type: 'llama', vocab_size: 10, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1,
      num_attention_heads: 2, num_key_value_heads: 1, bos_token_id: 1, eos_token_id: 2 });
    const m = Model.create(cfg, { seed: 1, std: 0.5, tokenizer: (await loadTokenizer(dir))! });
    await m.save(path.join(dir, 'model'));
    const again = await Model.load(path.join(dir, 'model'));
    expect(again.tokenizer?.kind).toBe('hf');
    const [g] = await again.generate(['the cat'], { maxNewTokens: 6, temperature: 0 });
    expect(g.promptIds).toEqual([1, 5, 6]);
    expect(g.text).toBe(again.tokenizer!.decode(g.ids));
  });

  it('the character tokenizer round-trips its alphabet, maps unknown characters to <unk>, and validates', () => {
    const tok = new CharTokenizer([...'ab1 =\n']);
    expect(tok.vocabSize).toBe(10);
    const ids = tok.encode('a1 = b\nz');
    expect(ids[ids.length - 1]).toBe(CharTokenizer.UNK);
    expect(tok.decode(ids)).toBe('a1 = b\n');
    expect(tok.encode('ab', { addSpecialTokens: true })[0]).toBe(CharTokenizer.BOS);
    expect(() => new CharTokenizer(['a', 'a'])).toThrow(/repeated/);
    expect(() => new CharTokenizer(['ab'])).toThrow(/single character/);
  });
});
