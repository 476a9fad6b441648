// GRPO loss with advantage filtering on CUDA: the same loss, gradient and statistics as
// native/cpu/grpo.cpp (read its header for the formula). Four small kernels, all on device data:
//   1. per sequence: keep = |A| > filter_threshold and its unmasked token count (dropped
//      sequences never read their mask);
//   2. one block: kept, kept_tokens and the per-sequence weight w_s of the loss type;
//   3. per (sequence, 1024-token chunk): per-token objective and gradient in float64, block sums
//      of objective, clip count and KL; dropped sequences only write their zero gradient;
//   4. one thread: the sums in sequence order (chunk order inside a sequence) -> GrpoResult.
// Deterministic (fixed launch shapes, ordered final sums); equal to the CPU up to the order of the
// float64 sums. The result is copied back to the host, so this op synchronises.
#include "common.cuh"
#include "cuda_kernels.h"

namespace wst::cuda {
namespace {
using namespace cuda_detail;

constexpr int kThreads = 256, kChunk = 1024;

__global__ void grpo_count_kernel(int* keep, double* ntok, const float* advantages,
                                  const float* mask, int S, int T, float thr) {
  __shared__ int shi[32];
  for (int s = blockIdx.x; s < S; s += gridDim.x) {
    const bool k = fabsf(advantages[s]) > thr;
    int n = 0;
    if (k)
      for (int t = threadIdx.x; t < T; t += blockDim.x) n += mask[(size_t)s * T + t] != 0.0f;
    n = block_sum(n, shi);  // block-uniform call (k is the same for every thread)
    if (threadIdx.x == 0) {
      keep[s] = k;
      ntok[s] = k ? (double)n : 0.0;
    }
  }
}

struct Totals {
  int kept;
  double kept_tokens;
};

__global__ void grpo_weights_kernel(double* weight, Totals* totals, const int* keep,
                                    const double* ntok, int S, int T, int loss_type,
                                    double normalizer) {
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
  for (int s = threadIdx.x; s < S; s += blockDim.x) {
    double w = 0.0;
    switch (loss_type) {
      case 0: w = 1.0 / ((double)kept * fmax(ntok[s], 1.0)); break;  // grpo
      case 1: w = 1.0 / fmax(tok, 1.0); break;                        // bnpo
      case 2: w = 1.0 / ((double)kept * (double)T); break;            // dr_grpo
      case 3: w = 1.0 / normalizer; break;                            // dapo
    }
    weight[s] = keep[s] ? w : 0.0;
  }
  if (threadIdx.x == 0) *totals = {kept, tok};
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
  const double A = advantages[s], w = weight[s];
  double osum = 0, clipped = 0, klsum = 0;
  for (int t = t0 + threadIdx.x; t < t1; t += blockDim.x) {
    const size_t e = base + t;
    if (mask[e] == 0.0f) {
      grad[e] = 0.0f;
      continue;
    }
    const double lp = logprobs[e];
    const double r = exp(lp - (double)old_logprobs[e]);
    const double rc = r < lo ? lo : (r > hi ? hi : r);
    const double u = r * A, cl = rc * A;  // unclipped and clipped surrogate
    // torch.min(u, c) backward: all to the smaller; on a tie half to each. d u/d lp = r A;
    // d c/d lp = r A inside [lo, hi] (clamp passes its bounds), else 0.
    const double dc = (r >= lo && r <= hi) ? r * A : 0.0;
    double obj, dobj;
    if (u < cl) obj = u, dobj = r * A;
    else if (cl < u) obj = cl, dobj = dc;
    else obj = u, dobj = 0.5 * (r * A + dc);
    if ((r < lo && A < 0) || (r > hi && A > 0)) clipped += 1;
    if (use_kl) {
      const double d = (double)ref_logprobs[e] - lp, ex = exp(d);
      const double kl = ex - d - 1.0;
      obj -= beta * kl;
      dobj += beta * (ex - 1.0);  // d(-beta KL)/d lp
      klsum += kl;
    }
    osum += obj;
    grad[e] = (float)(-w * dobj);
  }
  osum = block_sum(osum, sh);
  clipped = block_sum(clipped, sh);
  klsum = block_sum(klsum, sh);
  if (threadIdx.x == 0) {
    out[0] = osum;
    out[1] = clipped;
    out[2] = klsum;
  }
}

__global__ void grpo_final_kernel(GrpoResult* res, const double* partial, const double* weight,
                                  const Totals* totals, int S, int nchunk, bool use_kl) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double loss = 0, clipped = 0, kl = 0;
  for (int s = 0; s < S; s++) {
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
  }
  GrpoResult r;
  r.kept = totals->kept;
  r.kept_tokens = totals->kept_tokens;
  r.loss = r.kept ? loss : 0.0;
  r.clip_fraction = r.kept_tokens > 0 ? clipped / r.kept_tokens : 0.0;
  r.kl = (r.kept_tokens > 0 && use_kl) ? kl / r.kept_tokens : 0.0;
  *res = r;
}

size_t align8(size_t n) { return (n + 7) / 8 * 8; }

}  // namespace

GrpoResult grpo_loss(float* grad, const float* logprobs, const float* old_logprobs,
                     const float* ref_logprobs, const float* advantages, const float* mask,
                     int S, int T, const GrpoParams& params) {
  GrpoResult res{0.0, 0, 0.0, 0.0, 0.0};
  if (S <= 0) return res;
  const bool use_kl = ref_logprobs != nullptr && params.beta != 0.0f;
  const int nchunk = T > 0 ? (T + kChunk - 1) / kChunk : 0;
  // Scratch: weight (S) | ntok (S) | partial (S nchunk 3) | result | totals | keep (S)
  const size_t off_w = 0, off_n = off_w + align8(S * 8), off_p = off_n + align8(S * 8);
  const size_t off_r = off_p + align8((size_t)S * nchunk * 3 * 8);
  const size_t off_t = off_r + align8(sizeof(GrpoResult));
  const size_t off_k = off_t + align8(sizeof(Totals));
  char* scratch = (char*)thread_scratch(off_k + align8((size_t)S * 4));
  double* weight = (double*)(scratch + off_w);
  double* ntok = (double*)(scratch + off_n);
  double* partial = (double*)(scratch + off_p);
  GrpoResult* dres = (GrpoResult*)(scratch + off_r);
  Totals* totals = (Totals*)(scratch + off_t);
  int* keep = (int*)(scratch + off_k);

  WST_LAUNCH(grpo_count_kernel, (unsigned)std::min(S, 65535), kThreads, keep, ntok, advantages, mask, S,
                                                                 T, params.filter_threshold);
  WST_LAUNCH(grpo_weights_kernel, 1, 1024, weight, totals, keep, ntok, S, T, (int)params.loss_type,
                                   params.normalizer);
  if (nchunk > 0) {
    if (S > 65535) throw std::invalid_argument("wst-dash CUDA grpo_loss: too many sequences");
    WST_LAUNCH(grpo_token_kernel, dim3(nchunk, S), kThreads, 
        grad, partial, logprobs, old_logprobs, use_kl ? ref_logprobs : nullptr, advantages, mask,
        keep, weight, S, T, nchunk, 1.0 - (double)params.clip_low, 1.0 + (double)params.clip_high,
        (double)params.beta, use_kl);
  }
  WST_LAUNCH(grpo_final_kernel, 1, 32, dres, partial, weight, totals, S, nchunk, use_kl);
  check_launch("grpo_loss");
  check(cudaMemcpy(&res, dres, sizeof(GrpoResult), cudaMemcpyDeviceToHost), "grpo_loss (copy)");
  return res;
}

}  // namespace wst::cuda
