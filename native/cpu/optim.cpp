// Optimiser kernels: AdamW (torch.optim.AdamW's formulation), sum of squares, in-place scale.
#include <cstring>
#include <cmath>
#include <vector>

#include "../kernels.h"
#include "threadpool.h"

namespace wst {
namespace {
constexpr size_t kElemGrain = size_t(1) << 15;  // elements per task (and per partial sum)
}

// param, grad, m, v (n). Transcribes torch.optim.AdamW (single-tensor path), step >= 1:
//   param *= 1 - lr * weight_decay
//   m = lerp(m, grad, 1 - beta1)                  (torch: exp_avg.lerp_(grad, 1 - beta1))
//   v = beta2 * v + (1 - beta2) * grad^2
//   denom = sqrt(v) / sqrt(1 - beta2^step) + eps
//   param -= lr / (1 - beta1^step) * m / denom
// The scalar factors are computed in double (as Python does) and applied in float.
namespace {
struct AdamwConsts {
  float decay, w1, w1c, b2, w2, step_size, bc2_sqrt, eps;
  bool decayed, lerp_small;
};

// A plain function over its own arguments: nothing it stores can alias the constants, so the
// loop vectorises.
void adamw_chunk(float* param, const float* grad, float* m, float* v, size_t b, size_t e,
                 const AdamwConsts k) {
  for (size_t i = b; i < e; i++) {
    float g = grad[i];
    float p = k.decayed ? param[i] * k.decay : param[i];
    float mi = k.lerp_small ? m[i] + k.w1 * (g - m[i]) : g - (g - m[i]) * k.w1c;
    float vi = v[i] * k.b2 + (k.w2 * g) * g;
    float denom = std::sqrt(vi) / k.bc2_sqrt + k.eps;
    m[i] = mi;
    v[i] = vi;
    param[i] = p - k.step_size * (mi / denom);
  }
}
}  // namespace

void adamw_update(float* param, const float* grad, float* m, float* v, size_t n, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int step) {
  const double bc1 = 1.0 - std::pow(beta1, (double)step);
  const double bc2 = 1.0 - std::pow(beta2, (double)step);
  AdamwConsts k;
  k.decay = (float)(1.0 - lr * weight_decay);
  k.w1 = (float)(1.0 - beta1);
  k.w1c = 1.0f - k.w1;
  k.b2 = (float)beta2;
  k.w2 = (float)(1.0 - beta2);
  k.step_size = (float)(lr / bc1);
  k.bc2_sqrt = (float)std::sqrt(bc2);
  k.eps = (float)eps;
  k.decayed = weight_decay != 0.0;
  // torch's lerp picks its formula by the weight's size; follow it so results round alike.
  k.lerp_small = std::fabs(k.w1) < 0.5f;
  parallel_chunks(n, kElemGrain, [=](size_t b, size_t e) { adamw_chunk(param, grad, m, v, b, e, k); });
}

// Σ x[i]^2 in double. Fixed chunks of kElemGrain elements, each summed with eight lanes in a
// fixed order; the chunk sums are then added in chunk order.
double sum_squares(const float* x, size_t n) {
  if (n == 0) return 0.0;
  size_t n_chunks = (n + kElemGrain - 1) / kElemGrain;
  std::vector<double> partial(n_chunks);
  parallel_chunks(n, kElemGrain, [&](size_t s, size_t e) {
    const float* X = x;
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = s;
    for (; i + 8 <= e; i += 8)
      for (int j = 0; j < 8; j++) acc[j] += (double)X[i + j] * (double)X[i + j];
    for (int j = 0; i < e; i++, j++) acc[j] += (double)X[i] * (double)X[i];
    partial[s / kElemGrain] =
        ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

// Row copies (kernels.h): count[i] floats from src + src_off[i] to dst + dst_off[i].
// Large batches of rows (a shared prompt's KV rows copied to its group, slot moves) go over the
// pool: the ranges do not overlap, so the order does not matter.
void copy_rows(float* dst, const float* src, const int64_t* dst_off, const int64_t* src_off,
               const int64_t* count, int n) {
  auto one = [&](int i) {
    if (count[i] > 0) std::memcpy(dst + dst_off[i], src + src_off[i], (size_t)count[i] * sizeof(float));
  };
  int64_t total = 0;
  for (int i = 0; i < n; i++) total += count[i] > 0 ? count[i] : 0;
  if (n < 2 || total < ((int64_t)1 << 16)) {
    for (int i = 0; i < n; i++) one(i);
    return;
  }
  parallel_for(n, one);
}

// x (n) *= s
void scale_inplace(float* x, size_t n, float s) {
  parallel_chunks(n, kElemGrain, [&](size_t b, size_t e) {
    float* X = x;
    for (size_t i = b; i < e; i++) X[i] *= s;
  });
}

}  // namespace wst
