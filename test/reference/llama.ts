// An independent float64 reference of the Hugging Face Llama / Qwen2 / Qwen3 forward pass, written
// directly from the transformers modelling code (not from the engine): used to check the engine's
// logits and, by central finite differences, its gradients.
import type { ModelConfig } from '../../src/models/config.js';

export type Weights = Map<string, Float64Array | Float32Array>;

function matvecT(W: ArrayLike<number>, x: Float64Array, out: number, inp: number, bias?: ArrayLike<number>): Float64Array {
  // y = W x, W (out, inp) row-major (a Linear layer)
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = bias ? bias[o] : 0;
    const row = o * inp;
    for (let i = 0; i < inp; i++) s += W[row + i] * x[i];
    y[o] = s;
  }
  return y;
}

function rmsnorm(x: Float64Array, w: ArrayLike<number>, eps: number, off = 0, n = x.length): Float64Array {
  let ss = 0;
  for (let i = 0; i < n; i++) ss += x[off + i] * x[off + i];
  const r = 1 / Math.sqrt(ss / n + eps);
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) y[i] = x[off + i] * r * w[i];
  return y;
}

function rope(x: Float64Array, heads: number, D: number, pos: number, theta: number): void {
  const half = D / 2;
  for (let h = 0; h < heads; h++)
    for (let i = 0; i < half; i++) {
      // transformers computes inv_freq in float32, and the angle in float32
      const invFreq = Math.fround(1 / Math.fround(Math.pow(theta, Math.fround((2 * i) / D))));
      const ang = Math.fround(Math.fround(pos) * invFreq);
      const c = Math.cos(ang), s = Math.sin(ang);
      const a = x[h * D + i], b = x[h * D + half + i];
      x[h * D + i] = a * c - b * s;
      x[h * D + half + i] = b * c + a * s;
    }
}

/** Logits (T, V) for one sequence, in float64. */
export function referenceLogits(cfg: ModelConfig, w: Weights, tokens: readonly number[]): Float64Array[] {
  const C = cfg.hiddenSize, H = cfg.numHeads, KVH = cfg.numKvHeads, D = cfg.headDim, I = cfg.intermediateSize, V = cfg.vocabSize;
  const get = (n: string) => {
    const t = w.get(n);
    if (!t) throw new Error(`reference: missing ${n}`);
    return t;
  };
  const T = tokens.length;
  const emb = get('model.embed_tokens.weight');
  let xs = tokens.map((t) => Float64Array.from(emb.subarray(t * C, (t + 1) * C)));
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const ks: Float64Array[] = [], vs: Float64Array[] = [], qs: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const xn = rmsnorm(xs[t], get(p + 'input_layernorm.weight'), cfg.rmsNormEps);
      let q = matvecT(get(p + 'self_attn.q_proj.weight'), xn, H * D, C, cfg.attentionBias ? get(p + 'self_attn.q_proj.bias') : undefined);
      let k = matvecT(get(p + 'self_attn.k_proj.weight'), xn, KVH * D, C, cfg.attentionBias ? get(p + 'self_attn.k_proj.bias') : undefined);
      const v = matvecT(get(p + 'self_attn.v_proj.weight'), xn, KVH * D, C, cfg.attentionBias ? get(p + 'self_attn.v_proj.bias') : undefined);
      if (cfg.qkNorm) {
        const qn = new Float64Array(H * D), kn = new Float64Array(KVH * D);
        for (let h = 0; h < H; h++) qn.set(rmsnorm(q, get(p + 'self_attn.q_norm.weight'), cfg.rmsNormEps, h * D, D), h * D);
        for (let h = 0; h < KVH; h++) kn.set(rmsnorm(k, get(p + 'self_attn.k_norm.weight'), cfg.rmsNormEps, h * D, D), h * D);
        q = qn;
        k = kn;
      }
      rope(q, H, D, t, cfg.ropeTheta);
      rope(k, KVH, D, t, cfg.ropeTheta);
      qs.push(q);
      ks.push(k);
      vs.push(v);
    }
    const next: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const att = new Float64Array(H * D);
      for (let h = 0; h < H; h++) {
        const kh = Math.floor((h * KVH) / H);
        const scores = new Float64Array(t + 1);
        let max = -Infinity;
        for (let j = 0; j <= t; j++) {
          let s = 0;
          for (let d = 0; d < D; d++) s += qs[t][h * D + d] * ks[j][kh * D + d];
          scores[j] = s / Math.sqrt(D);
          max = Math.max(max, scores[j]);
        }
        let sum = 0;
        for (let j = 0; j <= t; j++) sum += (scores[j] = Math.exp(scores[j] - max));
        for (let j = 0; j <= t; j++)
          for (let d = 0; d < D; d++) att[h * D + d] += (scores[j] / sum) * vs[j][kh * D + d];
      }
      const o = matvecT(get(p + 'self_attn.o_proj.weight'), att, C, H * D);
      const xm = new Float64Array(C);
      for (let c = 0; c < C; c++) xm[c] = xs[t][c] + o[c];
      const xn2 = rmsnorm(xm, get(p + 'post_attention_layernorm.weight'), cfg.rmsNormEps);
      const g = matvecT(get(p + 'mlp.gate_proj.weight'), xn2, I, C);
      const u = matvecT(get(p + 'mlp.up_proj.weight'), xn2, I, C);
      const hdn = new Float64Array(I);
      for (let i = 0; i < I; i++) hdn[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
      const d = matvecT(get(p + 'mlp.down_proj.weight'), hdn, C, I);
      for (let c = 0; c < C; c++) xm[c] += d[c];
      next.push(xm);
    }
    xs = next;
  }
  // A reward model (scoreHead): one output, score.weight on the final hidden state.
  if (cfg.scoreHead) return xs.map((x) => matvecT(get('score.weight'), rmsnorm(x, get('model.norm.weight'), cfg.rmsNormEps), 1, C));
  const head = cfg.tieWordEmbeddings ? emb : get('lm_head.weight');
  return xs.map((x) => matvecT(head, rmsnorm(x, get('model.norm.weight'), cfg.rmsNormEps), V, C));
}

/** Mean negative log-likelihood of tokens[from..] (each predicted from its prefix), float64. */
export function referenceLoss(cfg: ModelConfig, w: Weights, tokens: readonly number[], from: number): number {
  const logits = referenceLogits(cfg, w, tokens);
  let total = 0, n = 0;
  for (let t = from - 1; t < tokens.length - 1; t++) {
    const row = logits[t];
    let max = -Infinity;
    for (const z of row) max = Math.max(max, z);
    let s = 0;
    for (const z of row) s += Math.exp(z - max);
    total -= row[tokens[t + 1]] - max - Math.log(s);
    n++;
  }
  return total / n;
}
