// Softmax family on CUDA: softmax, log-softmax, fused token log-probs (+ entropy) and
// cross-entropy, forward and backward. Semantics as native/cpu/softmax.cpp.
// One block per row (grid-stride over rows): a pass for the max (NaN wins, as on the CPU), a pass
// for sum exp(z - max) accumulated in double, then the write or gather. Backwards recompute
// p = exp(z - lse) from the logits and may overwrite them (each element is read, then written,
// by the same thread). Block size is fixed by V, so each row's result is deterministic.
#include "common.cuh"
#include "cuda_kernels.h"

namespace wst::cuda {
namespace {
using namespace cuda_detail;

struct Stats {
  float m;
  double s1, s2;  // sum exp(z - m), sum exp(z - m) (z - m)
};

// Block-wide: every thread returns the row's stats. Needs sh (>= 32 doubles), shf (>= 32 floats).
__device__ Stats row_stats(const float* z, int V, bool want_s2, double* sh, float* shf) {
  float m = -INFINITY;
  for (int v = threadIdx.x; v < V; v += blockDim.x) m = max_nan(m, z[v]);
  m = block_reduce(m, shf, MaxNanOp{}, -INFINITY);
  double s1 = 0, s2 = 0;
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    const float d = z[v] - m, e = expf(d);
    s1 += e;
    if (want_s2 && e != 0.0f) s2 += (double)e * (double)d;
  }
  s1 = block_sum(s1, sh);
  if (want_s2) s2 = block_sum(s2, sh);
  return {m, s1, s2};
}

// lse = m + log(s1); H = log(s1) - s2 / s1.
__device__ __forceinline__ double stats_lse(const Stats& s) { return (double)s.m + log(s.s1); }
__device__ __forceinline__ double stats_entropy(const Stats& s) { return log(s.s1) - s.s2 / s.s1; }

__global__ void softmax_kernel(float* probs, const float* logits, int N, int V) {
  __shared__ double sh[32];
  __shared__ float shf[32];
  for (int r = blockIdx.x; r < N; r += gridDim.x) {
    const float* z = logits + (size_t)r * V;
    float* p = probs + (size_t)r * V;
    const Stats s = row_stats(z, V, false, sh, shf);
    const float inv = (float)(1.0 / s.s1);
    for (int v = threadIdx.x; v < V; v += blockDim.x) p[v] = expf(z[v] - s.m) * inv;
  }
}

__global__ void log_softmax_kernel(float* out, const float* logits, int N, int V) {
  __shared__ double sh[32];
  __shared__ float shf[32];
  for (int r = blockIdx.x; r < N; r += gridDim.x) {
    const float* z = logits + (size_t)r * V;
    const float lse = (float)stats_lse(row_stats(z, V, false, sh, shf));
    for (int v = threadIdx.x; v < V; v += blockDim.x) out[(size_t)r * V + v] = z[v] - lse;
  }
}

__global__ void token_logprobs_fwd_kernel(float* logprob, float* lse, float* entropy,
                                          const float* logits, const int32_t* ids, int N, int V) {
  __shared__ double sh[32];
  __shared__ float shf[32];
  for (int r = blockIdx.x; r < N; r += gridDim.x) {
    const float* z = logits + (size_t)r * V;
    const Stats s = row_stats(z, V, entropy != nullptr, sh, shf);
    if (threadIdx.x == 0) {
      const double l = stats_lse(s);
      logprob[r] = (float)((double)z[ids[r]] - l);
      lse[r] = (float)l;
      if (entropy) entropy[r] = (float)stats_entropy(s);
    }
  }
}

// dz_v = p_v * (a + b * (z_v - lse)) (0 where p_v == 0), plus `onehot` at v == id.
// token_logprobs: a = -dlogprob - dentropy * H, b = -dentropy, onehot = +dlogprob.
// crossentropy:   a = dloss, b = 0, onehot = -dloss.
__device__ __forceinline__ void write_grad(float* dz, const float* z, int V, float lse, float a,
                                           float b, int id, float onehot) {
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    const float zl = z[v] - lse, p = expf(zl);
    float g = p == 0.0f ? 0.0f : p * (a + b * zl);
    if (v == id) g += onehot;
    dz[v] = g;
  }
}

// Inverts: logprob = z[id] - lse and H = -sum p log p, with p_v = exp(z_v - lse):
// dz_v = dlogprob * (1[v==id] - p_v) + dentropy * (-p_v * (log p_v + H))
__global__ void token_logprobs_bwd_kernel(float* dlogits, const float* dlogprob,
                                          const float* dentropy, const float* logits,
                                          const int32_t* ids, const float* lse,
                                          const float* entropy, int N, int V) {
  __shared__ double sh[32];
  __shared__ float shf[32];
  for (int r = blockIdx.x; r < N; r += gridDim.x) {
    const float* z = logits + (size_t)r * V;
    const float g = dlogprob[r], dH = dentropy ? dentropy[r] : 0.0f;
    float H = 0.0f;
    if (dentropy) {
      if (entropy) H = entropy[r];
      else H = (float)stats_entropy(row_stats(z, V, true, sh, shf));  // block-uniform branch
    }
    write_grad(dlogits + (size_t)r * V, z, V, lse[r], -g - dH * H, -dH, ids[r], g);
    __syncthreads();  // the next row's reductions reuse sh
  }
}

__global__ void crossentropy_fwd_kernel(float* losses, float* lse, const float* logits,
                                        const int32_t* targets, int N, int V) {
  __shared__ double sh[32];
  __shared__ float shf[32];
  for (int r = blockIdx.x; r < N; r += gridDim.x) {
    const float* z = logits + (size_t)r * V;
    const Stats s = row_stats(z, V, false, sh, shf);
    if (threadIdx.x == 0) {
      const double l = stats_lse(s);
      const int t = targets[r];
      lse[r] = (float)l;
      losses[r] = t < 0 ? 0.0f : (float)(l - (double)z[t]);
    }
  }
}

// Inverts: loss = lse - z[t]  ->  dz_v = dloss * (p_v - 1[v==t]); rows with t < 0 get 0.
__global__ void crossentropy_bwd_kernel(float* dlogits, const float* dlosses, const float* logits,
                                        const int32_t* targets, const float* lse, int N, int V) {
  for (int r = blockIdx.x; r < N; r += gridDim.x) {
    float* dz = dlogits + (size_t)r * V;
    const int t = targets[r];
    if (t < 0) {
      for (int v = threadIdx.x; v < V; v += blockDim.x) dz[v] = 0.0f;
      continue;
    }
    const float g = dlosses[r];
    write_grad(dz, logits + (size_t)r * V, V, lse[r], g, 0.0f, t, -g);
  }
}

int threads_for(int V) { return V >= 8192 ? 1024 : 256; }
unsigned rows_grid(int N) { return (unsigned)(N < 65535 ? N : 65535); }

}  // namespace

void softmax_forward(float* probs, const float* logits, int N, int V) {
  if (N <= 0 || V <= 0) return;
  WST_LAUNCH(softmax_kernel, rows_grid(N), threads_for(V), probs, logits, N, V);
  check_launch("softmax_forward");
}

void log_softmax_forward(float* out, const float* logits, int N, int V) {
  if (N <= 0 || V <= 0) return;
  WST_LAUNCH(log_softmax_kernel, rows_grid(N), threads_for(V), out, logits, N, V);
  check_launch("log_softmax_forward");
}

void token_logprobs_forward(float* logprob, float* lse, float* entropy, const float* logits,
                            const int32_t* ids, int N, int V) {
  if (N <= 0 || V <= 0) return;
  WST_LAUNCH(token_logprobs_fwd_kernel, rows_grid(N), threads_for(V), logprob, lse, entropy, logits, ids,
                                                              N, V);
  check_launch("token_logprobs_forward");
}

void token_logprobs_backward(float* dlogits, const float* dlogprob, const float* dentropy,
                             const float* logits, const int32_t* ids, const float* lse,
                             const float* entropy, int N, int V) {
  if (N <= 0 || V <= 0) return;
  WST_LAUNCH(token_logprobs_bwd_kernel, rows_grid(N), threads_for(V), dlogits, dlogprob, dentropy, logits,
                                                              ids, lse, entropy, N, V);
  check_launch("token_logprobs_backward");
}

void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                          int N, int V) {
  if (N <= 0 || V <= 0) return;
  WST_LAUNCH(crossentropy_fwd_kernel, rows_grid(N), threads_for(V), losses, lse, logits, targets, N, V);
  check_launch("crossentropy_forward");
}

void crossentropy_backward(float* dlogits, const float* dlosses, const float* logits,
                           const int32_t* targets, const float* lse, int N, int V) {
  if (N <= 0 || V <= 0) return;
  WST_LAUNCH(crossentropy_bwd_kernel, rows_grid(N), threads_for(V), dlogits, dlosses, logits, targets, lse,
                                                            N, V);
  check_launch("crossentropy_backward");
}

}  // namespace wst::cuda
