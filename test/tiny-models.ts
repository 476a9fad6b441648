// Tiny models for trainer tests (random weights, seeded).
import { parseConfig } from '../src/models/config.js';
import { Model } from '../src/models/model.js';
import { CharTokenizer } from '../src/models/tokenizer.js';
import { ARITH_VOCAB } from '../src/rl/tasks/arith.js';
import path from 'node:path';

/** A very small char-level Llama over the arith alphabet (random weights). */
export function tinyArithModel(seed = 3): Model {
  const tok = new CharTokenizer([...ARITH_VOCAB]);
  const config = parseConfig({
    model_type: 'llama', vocab_size: tok.vocabSize, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 256, rms_norm_eps: 1e-5,
    rope_theta: 10000, tie_word_embeddings: true, bos_token_id: CharTokenizer.BOS, eos_token_id: CharTokenizer.EOS,
  });
  return Model.create(config, { seed, std: 0.3, tokenizer: tok });
}

/** A tiny char-level Llama over printable ASCII and the line end, saved as an HF folder `dir`/`name`. */
export async function tinyTextModelFolder(dir: string, name: string, hidden: number, seed: number): Promise<string> {
  const chars = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).concat(['\n']);
  const tok = new CharTokenizer(chars);
  const config = parseConfig({
    model_type: 'llama', vocab_size: tok.vocabSize, hidden_size: hidden, intermediate_size: 2 * hidden, num_hidden_layers: 1,
    num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 2048, rms_norm_eps: 1e-5, rope_theta: 10000,
    tie_word_embeddings: true, bos_token_id: CharTokenizer.BOS, eos_token_id: CharTokenizer.EOS,
  });
  const out = path.join(dir, name);
  await Model.create(config, { seed, std: 0.2, tokenizer: tok }).save(out);
  return out;
}
