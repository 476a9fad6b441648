// Tiny models for trainer tests (random weights, seeded).
import { parseConfig } from '../src/models/config.js';
import { Model } from '../src/models/model.js';
import { CharTokenizer } from '../src/models/tokenizer.js';
import { ARITH_VOCAB } from '../src/rl/tasks/arith.js';

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
