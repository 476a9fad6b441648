// Softmax family over rows of logits (N,V): softmax, log-softmax, the fused per-token
// log-prob gather (with the entropy of the full distribution) and cross-entropy, forward and
// backward. Rows run in parallel, each row on one thread in a fixed order (so results do not
// depend on the thread count): one pass for the max, one for sum-exp, then the gather or the
// write. Backwards recompute p = exp(z - lse) from the logits (the softmax is never stored)
// and may write over the logits. The row loops are in softmax_rows_impl.h, one copy per SIMD
// path; this file holds the baseline copy and picks one at run time.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../kernels.h"
#define WST_VEC_BYTES 16  // the baseline copy: SSE2 on x86-64, NEON on arm64
#include "softmax_rows_impl.h"
#include "threadpool.h"

namespace wst {
namespace detail {
const SoftmaxRows& softmax_rows_generic() { return kRows; }
}  // namespace detail

namespace {

const detail::SoftmaxRows& rows() {
  static const detail::SoftmaxRows* table = [] {
#ifdef WST_HAVE_X86_SIMD
    const char* isa = cpu_isa();
    if (std::strcmp(isa, "avx512") == 0) return &detail::softmax_rows_avx512();
    if (std::strcmp(isa, "avx2") == 0) return &detail::softmax_rows_avx2();
#endif
    return &detail::softmax_rows_generic();
  }();
  return *table;
}

// fn(r) for every row; tasks of about 32k elements, a size fixed by V alone.
template <class F>
void for_rows(int N, int V, F&& fn) {
  size_t grain = std::max<size_t>(1, 32768 / (size_t)std::max(V, 1));
  parallel_chunks((size_t)N, grain, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) fn(r);
  });
}

struct RowStats {
  double lse;
  double entropy;  // only when asked for
};

// lse = m + log(sum exp(z - m)); H = lse - sum p z = log(s1) - s2 / s1 with s2 = sum e (z - m).
RowStats row_stats(const detail::SoftmaxRows& k, const float* z, int V, bool entropy) {
  float m = k.max(z, V);
  double s1 = 0, s2 = 0;
  k.sumexp(z, V, m, nullptr, &s1, entropy ? &s2 : nullptr);
  double log_s1 = std::log(s1);
  return {(double)m + log_s1, entropy ? log_s1 - s2 / s1 : 0.0};
}

}  // namespace

// probs (N,V) = softmax(logits) row-wise
void softmax_forward(float* probs, const float* logits, int N, int V) {
  const auto& k = rows();
  for_rows(N, V, [&](size_t r) {
    const float* z = logits + r * V;
    float* p = probs + r * V;
    double s1;
    k.sumexp(z, V, k.max(z, V), p, &s1, nullptr);  // p = exp(z - max)
    k.scale(p, p, V, (float)(1.0 / s1));
  });
}

// out (N,V) = logits - lse row-wise
void log_softmax_forward(float* out, const float* logits, int N, int V) {
  const auto& k = rows();
  for_rows(N, V, [&](size_t r) {
    const float* z = logits + r * V;
    k.shift(out + r * V, z, V, (float)row_stats(k, z, V, false).lse);
  });
}

// logprob[r] = z[r, ids[r]] - lse[r]; entropy[r] = -sum_v p_v log p_v
void token_logprobs_forward(float* logprob, float* lse, float* entropy, const float* logits,
                            const int32_t* ids, int N, int V) {
  const auto& k = rows();
  for_rows(N, V, [&](size_t r) {
    const float* z = logits + r * V;
    RowStats s = row_stats(k, z, V, entropy != nullptr);
    logprob[r] = (float)((double)z[ids[r]] - s.lse);
    lse[r] = (float)s.lse;
    if (entropy) entropy[r] = (float)s.entropy;
  });
}

// Inverts: logprob = z[id] - lse and H = -sum p log p, with p_v = exp(z_v - lse):
// dz_v = dlogprob * (1[v==id] - p_v) + dentropy * (-p_v * (log p_v + H))
//      = p_v * (a + b * log p_v) + dlogprob * 1[v==id],  a = -dlogprob - dentropy*H, b = -dentropy
void token_logprobs_backward(float* dlogits, const float* dlogprob, const float* dentropy,
                             const float* logits, const int32_t* ids, const float* lse,
                             const float* entropy, int N, int V) {
  const auto& k = rows();
  for_rows(N, V, [&](size_t r) {
    const float* z = logits + r * V;
    float* dz = dlogits + r * V;
    float g = dlogprob[r], dH = dentropy ? dentropy[r] : 0.0f, H = 0.0f;
    if (dentropy) H = entropy ? entropy[r] : (float)row_stats(k, z, V, true).entropy;
    k.grad(dz, z, V, lse[r], -g - dH * H, -dH);  // reads z[v] before writing dz[v]
    dz[ids[r]] += g;
  });
}

// losses[r] = lse[r] - z[r, t] for t = targets[r] >= 0, else 0
void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                          int N, int V) {
  const auto& k = rows();
  for_rows(N, V, [&](size_t r) {
    const float* z = logits + r * V;
    RowStats s = row_stats(k, z, V, false);
    lse[r] = (float)s.lse;
    losses[r] = targets[r] < 0 ? 0.0f : (float)(s.lse - (double)z[targets[r]]);
  });
}

// Inverts: loss = lse - z[t]  ->  dz_v = dloss * (p_v - 1[v==t]); rows with t < 0 get 0.
void crossentropy_backward(float* dlogits, const float* dlosses, const float* logits,
                           const int32_t* targets, const float* lse, int N, int V) {
  const auto& k = rows();
  for_rows(N, V, [&](size_t r) {
    float* dz = dlogits + r * V;
    int t = targets[r];
    if (t < 0) {
      std::memset(dz, 0, sizeof(float) * (size_t)V);
      return;
    }
    float g = dlosses[r];
    k.grad(dz, logits + r * V, V, lse[r], g, 0.0f);
    dz[t] -= g;
  });
}

}  // namespace wst
