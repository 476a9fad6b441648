// wst-dash kernel contract: every op the engine runs, as plain C++ over raw pointers.
//
// One signature per op; the CPU backend (native/cpu/) implements them all and is the
// reference for every other backend (native/cuda/). All tensors are fp32 row-major and
// contiguous unless a leading dimension is given. Shapes are in the comment above each op,
// llm.c style. Kernels assume valid input: validation lives at the boundary (binding/, src/).
//
// Determinism: every CPU kernel gives bit-identical results for any thread count. Parallel
// loops split work into chunks whose boundaries do not depend on the number of threads, and
// reductions across chunks are summed in chunk order.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace wst {

// ---------------------------------------------------------------------------------------
// GEMM. C (m,n) = alpha * op(A) @ op(B) + beta * C, row-major.
// op(A) is (m,k): A is (m,k) with leading dim lda, or (k,m) when transA.
// op(B) is (k,n): B is (k,n) with leading dim ldb, or (n,k) when transB.
// beta == 0 means C is write-only (its old contents, even NaN, are ignored).
void sgemm(bool transA, bool transB, int m, int n, int k, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc);

// bf16 storage: the top 16 bits of an IEEE float (bfloat16), held as uint16_t.
inline float bf16_to_float(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t float_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// out (n) = bf16(in (n)): float_to_bf16 of each element (round to nearest even; NaN stays NaN).
// The bf16 model casts its weights and each GEMM's fp32 inputs with it.
void cast_bf16(uint16_t* out, const float* in, size_t n);

// The fp32 GEMM on tf32 tensor cores: A and B rounded to tf32 (10-bit mantissa, round to nearest,
// ties away from zero, as cvt.rna.tf32.f32), fp32 accumulation. Products of tf32 values are exact
// in fp32, so the CPU twin (round, then sgemm) differs from the GPU only by the order of the sums;
// against the exact fp32 product the error is ~1e-3 relative.
void sgemm_tf32(bool transA, bool transB, int m, int n, int k, float alpha, const float* A,
                int lda, const float* B, int ldb, float beta, float* C, int ldc);
inline float round_to_tf32(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;  // finite: round
  std::memcpy(&f, &u, 4);
  return f;
}

// The same GEMM with bf16 A and B (fp32 accumulation, fp32 C): what tensor cores compute.
// Every bf16 x bf16 product is exact in fp32, so the CPU result differs from the GPU only by
// the order of the fp32 sums.
void gemm_bf16(bool transA, bool transB, int m, int n, int k, float alpha, const uint16_t* A,
               int lda, const uint16_t* B, int ldb, float beta, float* C, int ldc);

// ---------------------------------------------------------------------------------------
// Causal grouped-query attention.
// q (B,Tq,H,D), k (B,Tk,KVH,D), v (B,Tk,KVH,D) -> out (B,Tq,H,D), lse (B,H,Tq)
// Head h reads kv head h / (H / KVH) (i.e. floor(h*KVH/H)); scale = 1/sqrt(D).
// With causal, query i sits at absolute position Tk - Tq + i and sees keys 0..that position.
// lse (log-sum-exp of the scaled scores per query row) is saved for the backward; may be null.
// Never materialises a Tq x Tk matrix (tiled, online softmax).
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int B, int H, int KVH, int Tq, int Tk, int D, bool causal);
// The same forward on bf16 q, k, v, with bf16 out (lse stays fp32). The math is attention_forward
// on the bf16 values with fp32 scores, softmax and sums; an implementation may round the
// probabilities to bf16 before they multiply V (the CUDA kernel does, as FlashAttention does), so
// CPU and GPU agree to bf16 precision (~1e-2 relative), not bit for bit.
void attention_forward_bf16(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k,
                            const uint16_t* v, int B, int H, int KVH, int Tq, int Tk, int D,
                            bool causal);
// dout (B,Tq,H,D) -> dq (B,Tq,H,D), dk (B,Tk,KVH,D), dv (B,Tk,KVH,D), all overwritten.
// Needs out and lse from the forward.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse, int B,
                        int H, int KVH, int Tq, int Tk, int D, bool causal);
// One decode step per batch row against a KV cache.
// q (B,H,D), kcache/vcache (B,maxT,KVH,D), lengths (B) -> out (B,H,D)
// Row b's query sees cache positions 0..lengths[b]-1 (its own key already written there).
void attention_decode(float* out, const float* q, const float* kcache, const float* vcache,
                      const int32_t* lengths, int B, int H, int KVH, int maxT, int D);
// attention_decode for rows that share a prompt (the G completions of a GRPO group): the same
// result, given that the slots members[group_start[i] .. group_start[i+1]) of group i hold
// identical keys and values at positions [0, shared_len[i]) (shared_len[i] < their lengths).
// Every slot 0..B-1 is in exactly one group (singletons too). The CPU reads the shared positions
// once per group (from its first member) for all its rows' queries, then each row's own keys, so
// a row gets the same bits alone or in a group; an implementation may ignore the grouping.
// members null or n_groups 0: no grouping (attention_decode).
void attention_decode_shared(float* out, const float* q, const float* kcache, const float* vcache,
                             const int32_t* lengths, int B, int H, int KVH, int maxT, int D,
                             const int32_t* members, const int32_t* group_start,
                             const int32_t* shared_len, int n_groups);

// ---------------------------------------------------------------------------------------
// RMSNorm. inp (N,C), weight (C) -> out (N,C), rstd (N) saved for backward (may be null).
// out = inp * rstd * weight, rstd = 1/sqrt(mean(inp^2) + eps). out may alias inp.
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps);
// dout (N,C) -> dinp (N,C) overwritten, dweight (C) accumulated (+=). dinp may alias dout.
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C);

// RoPE, Hugging Face rotate-half convention. inp (N,H,D), positions (N) -> out (N,H,D).
// inv_freq[i] = theta^(-2i/D), angle = pos * inv_freq[i] for i < D/2;
// out[:D/2] = x1*cos - x2*sin, out[D/2:] = x2*cos + x1*sin. out may alias inp.
void rope_forward(float* out, const float* inp, const int32_t* positions, int N, int H, int D,
                  float theta);
// dout (N,H,D) -> dinp (N,H,D) (the inverse rotation). dinp may alias dout.
void rope_backward(float* dinp, const float* dout, const int32_t* positions, int N, int H, int D,
                   float theta);

// SwiGLU. gate (N,C), up (N,C) -> out (N,C) = silu(gate) * up
void swiglu_forward(float* out, const float* gate, const float* up, int N, int C);
// dout (N,C) -> dgate, dup (N,C), overwritten.
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                     const float* up, int N, int C);

// Embedding. ids (N), table (V,C) -> out (N,C)
void embedding_forward(float* out, const int32_t* ids, const float* table, int N, int V, int C);
// dout (N,C) -> dtable (V,C) accumulated (+=), deterministic for repeated ids.
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int N, int V, int C);

// Residual add. a, b (n) -> out (n) = a + b. out may alias a or b.
void residual_forward(float* out, const float* a, const float* b, size_t n);
// dout (n) -> da += dout, db += dout.
void residual_backward(float* da, float* db, const float* dout, size_t n);

// ---------------------------------------------------------------------------------------
// Softmax family over rows of logits (N,V).
void softmax_forward(float* probs, const float* logits, int N, int V);
void log_softmax_forward(float* out, const float* logits, int N, int V);
// Per-token log-prob gather, fused: logits (N,V), ids (N) -> logprob (N), lse (N),
// entropy (N) of the full distribution (may be null). Never stores the softmax.
void token_logprobs_forward(float* logprob, float* lse, float* entropy, const float* logits,
                            const int32_t* ids, int N, int V);
// d logits from d logprob (and d entropy, may be null), recomputing p from logits and lse:
// dlogits[v] = dlogprob * (1[v==id] - p_v) + dentropy * (-p_v * (log p_v + H)).
// dlogits (N,V) overwritten. dlogits may alias logits (in place, saves a [N,V] buffer).
void token_logprobs_backward(float* dlogits, const float* dlogprob, const float* dentropy,
                             const float* logits, const int32_t* ids, const float* lse,
                             const float* entropy, int N, int V);
// Cross-entropy: losses (N) = -log softmax(logits)[targets]; targets < 0 are ignored (loss 0).
void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                          int N, int V);
// dlogits (N,V) = dlosses[r] * (p - onehot(target)); rows with target < 0 get 0.
// dlogits may alias logits.
void crossentropy_backward(float* dlogits, const float* dlosses, const float* logits,
                           const int32_t* targets, const float* lse, int N, int V);

// ---------------------------------------------------------------------------------------
// Sampling. logits (N,V) -> ids (N), logprobs (N) (log-prob of the drawn token under the
// filtered, temperature-scaled distribution; may be null).
// temperature 0 -> argmax (lowest index on ties). Else p = softmax(logits / T), then
// top-k (k <= 0: off), then top-p over the renormalised survivors (>= 1: off), then min-p
// (keep p >= minP * pmax; <= 0: off). The draw uses Philox4x32-10 keyed by seeds[r] with
// counter (counters[r], r-independent), so a row's draw depends only on its logits, seed
// and counter: never on batch composition or thread count.
// Precisely: NaN logits count as -inf. Canonical order = logit descending, ties by lower
// index. Weights w = exp((x - max) / T) in fp32 (exp to ~1 ulp; w_max = 1); when
// the max is +inf, the +inf tokens get w = 1 and the rest 0. Every filter keeps a prefix of
// the canonical order: top-k the first k; top-p the shortest prefix whose mass reaches
// top_p * (mass of the top-k survivors); min-p the tokens with w >= min_p. Tokens with
// w = 0 are never kept. With Z the kept mass and u = philox_uniform(seeds[r], counters[r]),
// the drawn token is the first kept token (canonical order) whose cumulative mass exceeds
// u * Z; logprobs[r] = (x - max) / T - log Z for it.
// logprobs at temperature 0 are 0 (the greedy choice is a point mass). A row with no logit
// above -inf (all -inf or NaN) has no distribution: ids[r] = 0, logprobs[r] = NaN.
struct SamplingParams {
  float temperature;
  int top_k;
  float top_p;
  float min_p;
};
void sample_tokens(int32_t* ids, float* logprobs, const float* logits, int N, int V,
                   const SamplingParams& params, const uint64_t* seeds, const uint64_t* counters);
// Philox4x32-10 uniform in [0,1) from (key, counter): exposed for tests and the CUDA twin.
// Key words (lo32(key), hi32(key)), counter words (lo32(counter), hi32(counter), 0, 0);
// u = (output word 0 >> 8) * 2^-24.
float philox_uniform(uint64_t key, uint64_t counter);

// ---------------------------------------------------------------------------------------
// GRPO loss with advantage filtering.
// logprobs, old_logprobs, ref_logprobs (may be null), mask (S,T); advantages (S) ->
// grad (S,T) = d loss / d logprobs (0 where masked or dropped). See README "kernels.grpo".
enum class GrpoLossType : int { grpo = 0, bnpo = 1, dr_grpo = 2, dapo = 3 };
struct GrpoParams {
  float clip_low, clip_high, beta, filter_threshold;
  GrpoLossType loss_type;
  double normalizer;  // dapo only: global token count
};
struct GrpoResult {
  double loss;
  int kept;             // sequences with |A| > filter_threshold
  double clip_fraction; // fraction of kept, unmasked tokens where the clip was active
  double kl;            // mean KL over kept, unmasked tokens (0 without ref or beta == 0)
  double kept_tokens;
};
GrpoResult grpo_loss(float* grad, const float* logprobs, const float* old_logprobs,
                     const float* ref_logprobs, const float* advantages, const float* mask,
                     int S, int T, const GrpoParams& params);

// ---------------------------------------------------------------------------------------
// Optimiser. AdamW exactly as torch.optim.AdamW computes it; step counts from 1.
// param (n) *= 1 - lr * weight_decay        (decoupled decay, applied first)
// m = beta1 * m + (1 - beta1) * grad;  v = beta2 * v + (1 - beta2) * grad^2
// param -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
// The hyperparameters are double, as Python passes them: torch forms 1 - beta2 etc. in double
// before rounding to float (1 - float(0.999) would be 1.3e-5 off).
void adamw_update(float* param, const float* grad, float* m, float* v, size_t n, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int step);
// Sum of squares in float64, deterministic chunked reduction.
double sum_squares(const float* x, size_t n);
// x *= s
void scale_inplace(float* x, size_t n, float s);
// Row copies (KV-cache writes, slot moves): for i < n, count[i] floats from src + src_off[i] to
// dst + dst_off[i]. Destination ranges must not overlap each other or any source range.
void copy_rows(float* dst, const float* src, const int64_t* dst_off, const int64_t* src_off,
               const int64_t* count, int n);

// ---------------------------------------------------------------------------------------
// Threads: one fixed pool, sized from WST_DASH_THREADS or the core count.
int num_threads();
void set_num_threads(int n);
const char* cpu_isa();  // "avx512", "avx2" or "generic": the SIMD path chosen at run time

}  // namespace wst
