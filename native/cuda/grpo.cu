// GRPO loss with advantage filtering on CUDA: the same loss, gradient and statistics as
// native/cpu/grpo.cpp (read its header for the formula). All on device data:
//  - grpo, dr_grpo, dapo with S <= 4096 (the usual case): ONE fused kernel, one block per
//    sequence. Each block counts the kept sequences from the advantages (S floats, cached) and
//    its sequence's unmasked tokens (a first pass over the mask row), derives w_s, then computes
//    every token's objective and gradient (fp32 per token, float64 sums; see grpo_token) and
//    writes -w_s d obj/d lp, 16 bytes at a time. HBM traffic: the four inputs read once (the
//    mask row's second read mostly hits L2) and the gradient written once; dropped sequences only
//    write zeros.
//  - bnpo (its weight needs the token count of ALL sequences first) or S > 4096: three kernels —
//    per-sequence counts, weights, then per (sequence, 1024-token chunk) tokens.
//  - then one block reduces the per-sequence partials -> GrpoResult (each thread sums whole
//    sequences in order, then a fixed tree), so results are deterministic.
// Equal to the CPU up to fp32 rounding per token (same clip decisions) and the order of the sums. grpo_loss copies the result back to the
// host (synchronises); grpo_loss_async leaves it in device memory.
#include "common.cuh"
#include "cuda_kernels.h"

namespace wst::cuda {
namespace {
using namespace cuda_detail;

constexpr int kThreads = 256, kChunk = 1024;
constexpr int kRowThreads = 512, kFusedMaxSequences = 4096;
int g_path = 0;  // grpo_set_path: 0 automatic, 1 fused, 2 three-kernel

// This thread's share of the nonzero entries of a mask row (16-byte loads when aligned).
__device__ __forceinline__ int count_unmasked(const float* mrow, int T) {
  int n = 0;
  if (((uintptr_t)mrow & 15u) == 0 && T % 4 == 0) {
    for (int t = 4 * threadIdx.x; t < T; t += 4 * blockDim.x) {
      const float4 m4 = *reinterpret_cast<const float4*>(mrow + t);
      n += (m4.x != 0.0f) + (m4.y != 0.0f) + (m4.z != 0.0f) + (m4.w != 0.0f);
    }
  } else {
    for (int t = threadIdx.x; t < T; t += blockDim.x) n += mrow[t] != 0.0f;
  }
  return n;
}

__global__ void grpo_count_kernel(int* keep, double* ntok, const float* advantages,
                                  const float* mask, int S, int T, float thr) {
  __shared__ int shi[32];
  for (int s = blockIdx.x; s < S; s += gridDim.x) {
    const bool k = fabsf(advantages[s]) > thr;
    int n = k ? count_unmasked(mask + (size_t)s * T, T) : 0;
    n = block_sum(n, shi);  // block-uniform call (k is the same for every thread)
    if (threadIdx.x == 0) {
      keep[s] = k;
      ntok[s] = k ? (double)n : 0.0;
    }
  }
}

__device__ __forceinline__ double grpo_weight(int loss_type, int kept, double ntok_s,
                                               double total_tok, int T, double normalizer) {
  switch (loss_type) {
    case 0: return 1.0 / ((double)kept * fmax(ntok_s, 1.0));  // grpo
    case 1: return 1.0 / fmax(total_tok, 1.0);                // bnpo
    case 2: return 1.0 / ((double)kept * (double)T);          // dr_grpo
    default: return 1.0 / normalizer;                         // dapo
  }
}

__global__ void grpo_weights_kernel(double* weight, const int* keep, const double* ntok, int S,
                                    int T, int loss_type, double normalizer) {
  __shared__ int shi[32];
  __shared__ double shd[32];
  int kept = 0;
  double tok = 0;  // integer-valued: exact in any order
  for (int s = threadIdx.x; s < S; s += blockDim.x) {
    kept += keep[s];
    tok += ntok[s];
  }
  kept = block_sum(kept, shi);
  tok = block_sum(tok, shd);
  for (int s = threadIdx.x; s < S; s += blockDim.x)
    weight[s] = keep[s] ? grpo_weight(loss_type, kept, ntok[s], tok, T, normalizer) : 0.0;
}

// A thread's sums over its few tokens (a handful to a few dozen) in fp32; the block sums are
// float64. Kept small: the fused kernel must fit 32 registers for full occupancy.
struct TokenSums {
  float objective = 0, kl = 0;
  int clipped = 0;
};

struct TokenParams {
  float A, w, lo, hi, beta;  // advantage, weight, clip range, KL coefficient
  float clip_low, clip_high;  // for the clip range in double, near a bound (as the CPU forms it)
  bool use_kl;
};

// KL = e^d - d - 1 in float without the cancellation near d = 0 (series to d^9, then direct).
__device__ __forceinline__ float kl_k3(float d) {
  if (fabsf(d) < 0.5f) {
    float p = 1.0f / 362880.0f;
    p = fmaf(p, d, 1.0f / 40320.0f);
    p = fmaf(p, d, 1.0f / 5040.0f);
    p = fmaf(p, d, 1.0f / 720.0f);
    p = fmaf(p, d, 1.0f / 120.0f);
    p = fmaf(p, d, 1.0f / 24.0f);
    p = fmaf(p, d, 1.0f / 6.0f);
    p = fmaf(p, d, 0.5f);
    return d * d * p;
  }
  return expm1f(d) - d;
}

// One token: the gradient -w d obj/d lp (returned) and the sums. Per-token math in fp32 (the
// CPU twin uses float64): lp - old and ref - lp are exact in fp32 when the two are close
// (Sterbenz), the ratio is recomputed in double within 1e-5 of a clip bound so that the clip
// decision matches the CPU's, and the min(u, c) branch follows from that decision and the sign
// of A (for r below the range, u < c iff A > 0; above it, u > c iff A > 0).
__device__ __forceinline__ float grpo_token(TokenSums& acc, float lp, float old, float ref, float m,
                                            const TokenParams& p) {
  if (m == 0.0f) return 0.0f;
  float r = expf(lp - old);
  bool below, above;
  if (fabsf(r - p.lo) < 1e-5f * p.lo || fabsf(r - p.hi) < 1e-5f * p.hi) {
    const double rd = exp((double)lp - (double)old);
    below = rd < 1.0 - (double)p.clip_low;
    above = rd > 1.0 + (double)p.clip_high;
    r = (float)rd;
  } else {
    below = r < p.lo;
    above = r > p.hi;
  }
  const float rA = r * p.A;
  float obj, dobj;
  if (below && p.A < 0.0f) obj = p.lo * p.A, dobj = 0.0f;       // clipped surrogate is smaller
  else if (above && p.A > 0.0f) obj = p.hi * p.A, dobj = 0.0f;
  else obj = rA, dobj = rA;                                      // inside, or unclipped smaller
  if ((below && p.A < 0.0f) || (above && p.A > 0.0f)) acc.clipped += 1;
  if (p.use_kl) {
    const float d = ref - lp, kl = kl_k3(d);
    obj -= p.beta * kl;
    dobj += p.beta * expm1f(d);  // d(-beta KL)/d lp
    acc.kl += kl;
  }
  acc.objective += obj;
  return -p.w * dobj;
}

// Tokens [t0, t1) of one kept sequence (row pointers), strided over the block's threads:
// writes the gradient and accumulates this thread's sums. 16-byte vectors when every row pointer
// is 16-byte aligned and t0, t1 are multiples of 4 (the usual case), else one token at a time.
__device__ __forceinline__ void grpo_tokens(TokenSums& acc, float* __restrict__ grad,
                                            const float* __restrict__ logprobs,
                                            const float* __restrict__ old_logprobs,
                                            const float* __restrict__ ref_logprobs,
                                            const float* __restrict__ mask, int t0, int t1,
                                            const TokenParams& p) {
  const bool vec = ((((uintptr_t)grad | (uintptr_t)logprobs | (uintptr_t)old_logprobs |
                      (uintptr_t)(ref_logprobs ? ref_logprobs : logprobs) | (uintptr_t)mask) & 15u) == 0) &&
                   t0 % 4 == 0 && t1 % 4 == 0;
  if (vec) {
    struct Group {
      float4 lp, od, mk, rf;
    };
    auto load = [&](int t) {
      Group g;
      g.lp = *reinterpret_cast<const float4*>(logprobs + t);
      g.od = *reinterpret_cast<const float4*>(old_logprobs + t);
      g.mk = *reinterpret_cast<const float4*>(mask + t);
      g.rf = p.use_kl ? *reinterpret_cast<const float4*>(ref_logprobs + t) : g.lp;
      return g;
    };
    auto finish = [&](int t, const Group& q) {
      float4 g;
      g.x = grpo_token(acc, q.lp.x, q.od.x, q.rf.x, q.mk.x, p);
      g.y = grpo_token(acc, q.lp.y, q.od.y, q.rf.y, q.mk.y, p);
      g.z = grpo_token(acc, q.lp.z, q.od.z, q.rf.z, q.mk.z, p);
      g.w = grpo_token(acc, q.lp.w, q.od.w, q.rf.w, q.mk.w, p);
      *reinterpret_cast<float4*>(grad + t) = g;
    };
    // One group per thread per iteration: the fused kernel runs 4 blocks of 512 threads per SM
    // (full occupancy, <= 32 registers), which keeps enough bytes in flight.
    for (int t = t0 + 4 * threadIdx.x; t < t1; t += 4 * blockDim.x) finish(t, load(t));
  } else {
    for (int t = t0 + threadIdx.x; t < t1; t += blockDim.x)
      grad[t] = grpo_token(acc, logprobs[t], old_logprobs[t], p.use_kl ? ref_logprobs[t] : 0.0f,
                           mask[t], p);
  }
}

__device__ __forceinline__ void write_sums(double* out, const TokenSums& acc, double* sh) {
  const double objective = block_sum((double)acc.objective, sh);
  const double clipped = block_sum((double)acc.clipped, sh);
  const double kl = block_sum((double)acc.kl, sh);
  if (threadIdx.x == 0) {
    out[0] = objective;
    out[1] = clipped;
    out[2] = kl;
  }
}

// partial[(s * nchunk + c) * 3 + {0,1,2}] = objective sum, clipped count, KL sum of the chunk.
__global__ void grpo_token_kernel(float* grad, double* partial, const float* logprobs,
                                  const float* old_logprobs, const float* ref_logprobs,
                                  const float* advantages, const float* mask, const int* keep,
                                  const double* weight, int S, int T, int nchunk, double lo,
                                  double hi, double beta, bool use_kl) {
  __shared__ double sh[32];
  const int s = blockIdx.y, c = blockIdx.x;
  const size_t base = (size_t)s * T;
  const int t0 = c * kChunk, t1 = min(T, t0 + kChunk);
  double* out = partial + ((size_t)s * nchunk + c) * 3;
  if (!keep[s]) {  // dropped: zero gradient, no work
    for (int t = t0 + threadIdx.x; t < t1; t += blockDim.x) grad[base + t] = 0.0f;
    if (threadIdx.x == 0) out[0] = out[1] = out[2] = 0.0;
    return;
  }
  TokenSums acc;
  const TokenParams tp{advantages[s], (float)weight[s], (float)lo, (float)hi, (float)beta,
                       (float)(1.0 - lo), (float)(hi - 1.0), use_kl};
  grpo_tokens(acc, grad + base, logprobs + base, old_logprobs + base,
              use_kl ? ref_logprobs + base : nullptr, mask + base, t0, t1, tp);
  write_sums(out, acc, sh);
}

// The fused path (loss types grpo, dr_grpo, dapo): block (c, s) does tokens
// [c * chunk, (c + 1) * chunk) of sequence s, after counting the sequence's whole mask row for its
// weight. grpo_loss uses one block per sequence (chunk = T): on an H200 (ncu), 512 sequences of
// 8192 tokens ran in 36.7 us at 43 % of DRAM bandwidth, while 2048-token chunks (4 blocks per
// sequence, each re-counting the row) took 50 us. (The chunk parameter stays: dropping it changed
// the register allocation of the kernel measured above, at its 32-register cap.)
// 4 x 512 threads per SM (full occupancy, <= 32 registers); sm_89 holds 1536 threads per SM.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 890
#define WST_GRPO_ROW_MIN_BLOCKS 3
#else
#define WST_GRPO_ROW_MIN_BLOCKS 4
#endif
__global__ void __launch_bounds__(kRowThreads, WST_GRPO_ROW_MIN_BLOCKS) grpo_row_kernel(float* grad, double* partial, double* weight, int* keep,
                                double* ntok, const float* logprobs, const float* old_logprobs,
                                const float* ref_logprobs, const float* advantages,
                                const float* mask, int S, int T, int chunk, float thr,
                                int loss_type, double normalizer, double lo, double hi,
                                double beta, bool use_kl) {
  __shared__ double sh[32];
  __shared__ int shi[32];
  const int s = blockIdx.y, c = blockIdx.x, nchunk = gridDim.x;
  const int t0 = c * chunk, t1 = min(T, t0 + chunk);
  const size_t base = (size_t)s * T;
  const bool k = fabsf(advantages[s]) > thr;
  double* out = partial + ((size_t)s * nchunk + c) * 3;
  if (!k) {
    for (int t = t0 + threadIdx.x; t < t1; t += blockDim.x) grad[base + t] = 0.0f;
    if (threadIdx.x == 0) out[0] = out[1] = out[2] = 0.0;
    if (threadIdx.x == 0 && c == 0) {
      keep[s] = 0;
      ntok[s] = 0.0;
      weight[s] = 0.0;
    }
    return;
  }
  int kept = 0, n = 0;
  for (int i = threadIdx.x; i < S; i += blockDim.x) kept += fabsf(advantages[i]) > thr;
  n = count_unmasked(mask + base, T);
  kept = block_sum(kept, shi);
  n = block_sum(n, shi);
  const double w = grpo_weight(loss_type, kept, (double)n, 0.0, T, normalizer);
  if (threadIdx.x == 0 && c == 0) {
    keep[s] = 1;
    ntok[s] = (double)n;
    weight[s] = w;
  }
  TokenSums acc;
  const TokenParams tp{advantages[s], (float)w, (float)lo, (float)hi, (float)beta, (float)(1.0 - lo),
                       (float)(hi - 1.0), use_kl};
  grpo_tokens(acc, grad + base, logprobs + base, old_logprobs + base,
              use_kl ? ref_logprobs + base : nullptr, mask + base, t0, t1, tp);
  write_sums(out, acc, sh);
}

// One block: per sequence s (threads stride over s), loss -= w_s * (sum of its chunk partials),
// clipped and KL summed, kept and kept tokens from keep/ntok; then fixed-order block sums.
__global__ void grpo_final_kernel(GrpoResult* res, const double* partial, const double* weight,
                                  const int* keep, const double* ntok, int S, int nchunk,
                                  bool use_kl) {
  __shared__ double sh[32];
  __shared__ int shi[32];
  double loss = 0, clipped = 0, kl = 0, tok = 0;
  int kept = 0;
  for (int s = threadIdx.x; s < S; s += blockDim.x) {
    double o = 0, c = 0, k = 0;
    for (int j = 0; j < nchunk; j++) {
      const double* p = partial + ((size_t)s * nchunk + j) * 3;
      o += p[0];
      c += p[1];
      k += p[2];
    }
    loss -= o * weight[s];
    clipped += c;
    kl += k;
    kept += keep[s];
    tok += ntok[s];
  }
  loss = block_sum(loss, sh);
  clipped = block_sum(clipped, sh);
  kl = block_sum(kl, sh);
  tok = block_sum(tok, sh);
  kept = block_sum(kept, shi);
  if (threadIdx.x == 0) {
    GrpoResult r;
    r.kept = kept;
    r.kept_tokens = tok;
    r.loss = kept ? loss : 0.0;
    r.clip_fraction = tok > 0 ? clipped / tok : 0.0;
    r.kl = (tok > 0 && use_kl) ? kl / tok : 0.0;
    *res = r;
  }
}

size_t align8(size_t n) { return (n + 7) / 8 * 8; }

}  // namespace

void grpo_loss_async(GrpoResult* device_result, float* grad, const float* logprobs,
                     const float* old_logprobs, const float* ref_logprobs,
                     const float* advantages, const float* mask, int S, int T,
                     const GrpoParams& params) {
  if (S <= 0) {
    check(cudaMemset(device_result, 0, sizeof(GrpoResult)), "grpo_loss (empty)");
    return;
  }
  if (S > 65535) throw std::invalid_argument("wst-dash CUDA grpo_loss: too many sequences");
  const bool use_kl = ref_logprobs != nullptr && params.beta != 0.0f;
  const double lo = 1.0 - (double)params.clip_low, hi = 1.0 + (double)params.clip_high;
  const bool fused = g_path == 1 || (g_path == 0 && params.loss_type != GrpoLossType::bnpo &&
                                     S <= kFusedMaxSequences);
  if (fused && params.loss_type == GrpoLossType::bnpo)
    throw std::invalid_argument("grpo_loss: the fused path cannot do bnpo");
  const int row_chunk = std::max(T, 4);  // one block per sequence (see grpo_row_kernel)
  const int nchunk = fused ? std::max(1, (T + row_chunk - 1) / row_chunk)
                           : (T > 0 ? (T + kChunk - 1) / kChunk : 0);
  // Scratch: weight (S) | ntok (S) | partial (S nchunk 3) | keep (S)
  const size_t off_w = 0, off_n = off_w + align8(S * 8), off_p = off_n + align8(S * 8);
  const size_t off_k = off_p + align8((size_t)S * std::max(nchunk, 1) * 3 * 8);
  char* scratch = (char*)thread_scratch(off_k + align8((size_t)S * 4));
  double* weight = (double*)(scratch + off_w);
  double* ntok = (double*)(scratch + off_n);
  double* partial = (double*)(scratch + off_p);
  int* keep = (int*)(scratch + off_k);
  const float* ref = use_kl ? ref_logprobs : nullptr;

  if (fused) {
    WST_LAUNCH(grpo_row_kernel, dim3(nchunk, S), kRowThreads, grad, partial, weight, keep, ntok,
               logprobs, old_logprobs, ref, advantages, mask, S, T, row_chunk, params.filter_threshold,
               (int)params.loss_type, params.normalizer, lo, hi, (double)params.beta, use_kl);
  } else {
    WST_LAUNCH(grpo_count_kernel, (unsigned)S, kThreads, keep, ntok, advantages, mask, S, T,
               params.filter_threshold);
    WST_LAUNCH(grpo_weights_kernel, 1, 1024, weight, keep, ntok, S, T, (int)params.loss_type,
               params.normalizer);
    if (nchunk > 0)
      WST_LAUNCH(grpo_token_kernel, dim3(nchunk, S), kThreads, grad, partial, logprobs,
                 old_logprobs, ref, advantages, mask, keep, weight, S, T, nchunk, lo, hi,
                 (double)params.beta, use_kl);
  }
  WST_LAUNCH(grpo_final_kernel, 1, 1024, device_result, partial, weight, keep, ntok, S, nchunk,
             use_kl);
  check_launch("grpo_loss");
}

void grpo_set_path(int path) { g_path = path; }

GrpoResult grpo_loss(float* grad, const float* logprobs, const float* old_logprobs,
                     const float* ref_logprobs, const float* advantages, const float* mask,
                     int S, int T, const GrpoParams& params) {
  GrpoResult res{0.0, 0, 0.0, 0.0, 0.0};
  if (S <= 0) return res;
  GrpoResult* dres = (GrpoResult*)thread_result_slot(sizeof(GrpoResult));
  grpo_loss_async(dres, grad, logprobs, old_logprobs, ref_logprobs, advantages, mask, S, T, params);
  check(cudaMemcpy(&res, dres, sizeof(GrpoResult), cudaMemcpyDeviceToHost), "grpo_loss (copy)");
  return res;
}

}  // namespace wst::cuda
