// Tokenizers. A model folder may carry:
//  - tokenizer.json (+ tokenizer_config.json): a Hugging Face tokenizer, run by @huggingface/tokenizers,
//    with the chat template rendered by @huggingface/jinja;
//  - wst-tokenizer.json: wst-dash's character-level tokenizer (the built-in tasks' models);
//  - nothing: the model works in token-id space (like the stories260K fixture).
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from './atomic.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface Tokenizer {
  readonly kind: 'hf' | 'char';
  readonly vocabSize: number;
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
  /** Renders chat messages to a prompt string (the model's chat template when it has one). */
  applyChatTemplate(messages: ChatMessage[], options?: { addGenerationPrompt?: boolean }): string;
  /** Writes the tokenizer's files into a model folder. */
  save(dir: string): Promise<void>;
}

/** Character-level tokenizer: ids 0..3 are <pad>, <s>, </s>, <unk>; then one id per character. */
export class CharTokenizer implements Tokenizer {
  readonly kind = 'char' as const;
  static readonly FILE = 'wst-tokenizer.json';
  static readonly PAD = 0;
  static readonly BOS = 1;
  static readonly EOS = 2;
  static readonly UNK = 3;
  private readonly index = new Map<string, number>();

  constructor(readonly chars: readonly string[]) {
    chars.forEach((c, i) => {
      if ([...c].length !== 1) throw new RangeError(`chars[${i}] must be a single character, got ${JSON.stringify(c)}`);
      if (this.index.has(c)) throw new RangeError(`chars[${i}] ${JSON.stringify(c)} is repeated`);
      this.index.set(c, i + 4);
    });
  }

  static fromText(text: string): CharTokenizer {
    return new CharTokenizer([...new Set([...text])].sort());
  }

  get vocabSize(): number {
    return this.chars.length + 4;
  }

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    const ids = [...text].map((c) => this.index.get(c) ?? CharTokenizer.UNK);
    return options.addSpecialTokens ? [CharTokenizer.BOS, ...ids] : ids;
  }

  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    let out = '';
    for (const id of ids) {
      if (id >= 4 && id < this.vocabSize) out += this.chars[id - 4];
      else if (!(options.skipSpecialTokens ?? true)) out += ['<pad>', '<s>', '</s>', '<unk>'][id] ?? '';
    }
    return out;
  }

  applyChatTemplate(messages: ChatMessage[]): string {
    return messages.map((m) => m.content).join('\n');
  }

  async save(dir: string): Promise<void> {
    const json = JSON.stringify({ type: 'wst-dash-char', version: 1, chars: this.chars });
    await writeFileAtomic(path.join(dir, CharTokenizer.FILE), json);
  }
}

/** A Hugging Face tokenizer.json (+ tokenizer_config.json and its chat template). */
export class HfTokenizer implements Tokenizer {
  readonly kind = 'hf' as const;
  private constructor(
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    private readonly tok: any,
    private readonly json: string,
    private readonly configJson: string | undefined,
    private readonly template: ((messages: ChatMessage[], addGenerationPrompt: boolean) => string) | undefined,
    private readonly unkId: number | undefined,
  ) {}

  static async load(dir: string): Promise<HfTokenizer> {
    const { Tokenizer: HfTok } = await import('@huggingface/tokenizers');
    const json = await readFile(path.join(dir, 'tokenizer.json'), 'utf8');
    const cfgFile = path.join(dir, 'tokenizer_config.json');
    const configJson = existsSync(cfgFile) ? await readFile(cfgFile, 'utf8') : undefined;
    let parsed: unknown, cfg: Record<string, unknown> = {};
    try {
      parsed = JSON.parse(json);
      if (configJson) cfg = JSON.parse(configJson);
    } catch (err) {
      throw new Error(`${dir}: tokenizer files are not valid JSON: ${(err as Error).message}`);
    }
    const tok = new HfTok(parsed as never, cfg as never);
    let template: HfTokenizer['template'];
    if (typeof cfg.chat_template === 'string') {
      const { Template } = await import('@huggingface/jinja');
      const compiled = new Template(cfg.chat_template);
      const special = (k: string) => {
        const v = cfg[k];
        return typeof v === 'string' ? v : (v as { content?: string } | undefined)?.content ?? '';
      };
      template = (messages, addGenerationPrompt) =>
        compiled.render({ messages, add_generation_prompt: addGenerationPrompt, bos_token: special('bos_token'), eos_token: special('eos_token') });
    }
    // The id pieces without a vocabulary entry map to (some models' encoders leave them undefined).
    const model = (parsed as { model?: { unk_token?: string; vocab?: unknown } }).model;
    let unkId: number | undefined;
    if (model?.unk_token !== undefined && model.vocab && !Array.isArray(model.vocab))
      unkId = (model.vocab as Record<string, number>)[model.unk_token];
    return new HfTokenizer(tok, json, configJson, template, unkId);
  }

  get vocabSize(): number {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const model = (this.tok as any).model;
    return model?.vocab?.length ?? model?.tokens_to_ids?.size ?? 0;
  }

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    const ids: (number | undefined)[] = this.tok.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
    return ids.map((id) => {
      if (id !== undefined) return id;
      if (this.unkId === undefined) throw new RangeError(`the tokenizer has no id for a piece of ${JSON.stringify(text.slice(0, 80))} and no unk token`);
      return this.unkId;
    });
  }

  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    return this.tok.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? true });
  }

  applyChatTemplate(messages: ChatMessage[], options: { addGenerationPrompt?: boolean } = {}): string {
    if (!this.template) return messages.map((m) => m.content).join('\n');
    return this.template(messages, options.addGenerationPrompt ?? true);
  }

  async save(dir: string): Promise<void> {
    await writeFileAtomic(path.join(dir, 'tokenizer.json'), this.json);
    if (this.configJson !== undefined) await writeFileAtomic(path.join(dir, 'tokenizer_config.json'), this.configJson);
  }
}

/** The tokenizer of a model folder, or undefined when it has none (token-id space). */
export async function loadTokenizer(dir: string): Promise<Tokenizer | undefined> {
  const charFile = path.join(dir, CharTokenizer.FILE);
  if (existsSync(charFile)) {
    const raw = JSON.parse(await readFile(charFile, 'utf8')) as { type?: string; chars?: unknown };
    if (raw.type !== 'wst-dash-char' || !Array.isArray(raw.chars))
      throw new Error(`${charFile}: not a wst-dash character tokenizer`);
    return new CharTokenizer(raw.chars as string[]);
  }
  if (existsSync(path.join(dir, 'tokenizer.json'))) return HfTokenizer.load(dir);
  return undefined;
}
