// GRPO loss with advantage filtering (TRL's GRPOTrainer loss, one fused pass).
// logprobs, old_logprobs, ref_logprobs (may be null), mask (S,T); advantages (S) ->
// grad (S,T) = d loss / d logprobs. For token t of sequence s with mask 1:
//   r = exp(lp - old);  obj = min(r A, clip(r, 1 - clip_low, 1 + clip_high) A) - beta KL,
//   KL = exp(ref - lp) - (ref - lp) - 1   (0 when beta == 0 or no ref)
//   loss = -sum obj / N(s), N by loss_type (see README "kernels.grpo" / src/kernels/losses.ts).
// Sequences with |A| <= filter_threshold are dropped: no loss, no grad, no normaliser count.
// All per-token math is in float64; sequences run in parallel and their sums are reduced in
// sequence order, so the result is the same for any thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../kernels.h"
#include "threadpool.h"

namespace wst {

GrpoResult grpo_loss(float* grad, const float* logprobs, const float* old_logprobs,
                     const float* ref_logprobs, const float* advantages, const float* mask,
                     int S, int T, const GrpoParams& params) {
  const size_t TT = (size_t)T;
  const bool use_kl = ref_logprobs != nullptr && params.beta != 0.0f;
  const double lo = 1.0 - (double)params.clip_low, hi = 1.0 + (double)params.clip_high;
  const double beta = params.beta;

  // Pass 1: which sequences are kept, and their unmasked token counts.
  std::vector<char> keep(S);
  std::vector<double> ntok(S, 0.0);
  int kept = 0;
  double kept_tokens = 0;
  for (int s = 0; s < S; s++) {
    keep[s] = std::fabs(advantages[s]) > params.filter_threshold;
    if (!keep[s]) continue;
    kept++;
    const float* m = mask + s * TT;
    double n = 0;
    for (size_t t = 0; t < TT; t++) n += m[t] != 0.0f;
    ntok[s] = n;
    kept_tokens += n;
  }

  GrpoResult res{0.0, kept, 0.0, 0.0, kept_tokens};
  if (kept == 0) {
    for (size_t i = 0; i < (size_t)S * TT; i++) grad[i] = 0.0f;
    return res;
  }

  // Per-sequence weight w_s: loss = -sum_s w_s sum_t obj_st.
  auto weight = [&](int s) -> double {
    switch (params.loss_type) {
      case GrpoLossType::grpo: return 1.0 / ((double)kept * std::max(ntok[s], 1.0));
      case GrpoLossType::bnpo: return 1.0 / std::max(kept_tokens, 1.0);
      case GrpoLossType::dr_grpo: return 1.0 / ((double)kept * (double)T);
      case GrpoLossType::dapo: return 1.0 / params.normalizer;
    }
    return 0.0;
  };

  // Pass 2: per-token objective and gradient; per-sequence sums.
  std::vector<double> obj_sum(S, 0.0), clip_count(S, 0.0), kl_sum(S, 0.0);
  size_t grain = std::max<size_t>(1, 16384 / std::max<size_t>(TT, 1));
  parallel_chunks((size_t)S, grain, [&](size_t s0, size_t s1) {
    for (size_t s = s0; s < s1; s++) {
      float* g = grad + s * TT;
      if (!keep[s]) {
        for (size_t t = 0; t < TT; t++) g[t] = 0.0f;
        continue;
      }
      const double A = advantages[s], w = weight((int)s);
      const float *lp = logprobs + s * TT, *old = old_logprobs + s * TT, *m = mask + s * TT;
      const float* ref = use_kl ? ref_logprobs + s * TT : nullptr;
      double osum = 0, clipped = 0, klsum = 0;
      for (size_t t = 0; t < TT; t++) {
        if (m[t] == 0.0f) {
          g[t] = 0.0f;
          continue;
        }
        const double r = std::exp((double)lp[t] - (double)old[t]);
        const double rc = r < lo ? lo : (r > hi ? hi : r);
        const double u = r * A, c = rc * A;  // unclipped and clipped surrogate
        // torch.min(u, c) backward: all to the smaller; on a tie half to each. d u/d lp = r A;
        // d c/d lp = r A inside [lo, hi] (clamp passes its bounds), else 0.
        const double dc = (r >= lo && r <= hi) ? r * A : 0.0;
        double obj, dobj;
        if (u < c) obj = u, dobj = r * A;
        else if (c < u) obj = c, dobj = dc;
        else obj = u, dobj = 0.5 * (r * A + dc);
        if ((r < lo && A < 0) || (r > hi && A > 0)) clipped += 1;
        if (use_kl) {
          const double d = (double)ref[t] - (double)lp[t], e = std::exp(d);
          const double kl = e - d - 1.0;
          obj -= beta * kl;
          dobj += beta * (e - 1.0);  // d(-beta KL)/d lp
          klsum += kl;
        }
        osum += obj;
        g[t] = (float)(-w * dobj);
      }
      obj_sum[s] = osum * w;
      clip_count[s] = clipped;
      kl_sum[s] = klsum;
    }
  });

  double loss = 0, clipped = 0, kl = 0;
  for (int s = 0; s < S; s++) {
    loss -= obj_sum[s];
    clipped += clip_count[s];
    kl += kl_sum[s];
  }
  res.loss = loss;
  if (kept_tokens > 0) {
    res.clip_fraction = clipped / kept_tokens;
    res.kl = use_kl ? kl / kept_tokens : 0.0;
  }
  return res;
}

}  // namespace wst
