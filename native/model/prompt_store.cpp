// The prompt store: prefill can keep the prompts' activations (Context::keep_prompts), and a
// training forward with the same parameters takes its shared-prefix rows from there instead of
// computing them again (the trainer scores the completions of the prompts it just generated from).
// Any parameter update drops the store.
#include "llama.h"

#include <algorithm>
#include <cstring>

#include "llama_internal.h"

namespace wst {

void LlamaModel::drop_prompt_store() {
  if (!prompts_) return;
  for (auto& part : prompts_->parts)
    if (part && spare_acts_.size() < 2 * (size_t)kLanes) spare_acts_.push_back(std::move(part));
  prompts_.reset();
}

int LlamaModel::stored_prompts() const {
  return prompts_ && prompts_->version == params_version_ ? (int)prompts_->entries.size() : 0;
}

bool LlamaModel::prefix_rows_from_store(const PrefixBatch& pre) {
  if (!be_->concurrent_pieces || !prompts_ || prompts_->version != params_version_ || pre.Tp <= 0) return false;
  // A prefix is found when a stored prompt begins with it (a trainer's prefix is its prompt less
  // the last token, whose logits score the first completion token): its first rows are the
  // prefix's, as attention is causal. Such prompts sort right at or after the prefix.
  std::vector<const PromptStore::Entry*> found(pre.Bp);
  for (int p = 0; p < pre.Bp; p++) {
    const int32_t* t = pre.tokens + (size_t)p * pre.Tp;
    const int len = pre.lengths[p];
    if (len <= 0) return false;
    auto it = prompts_->entries.lower_bound(std::vector<int32_t>(t, t + len));
    if (it == prompts_->entries.end() || it->first.size() < (size_t)len ||
        !std::equal(t, t + len, it->first.begin()) || !it->second.part)
      return false;
    found[p] = &it->second;
  }
  auto& a = A();
  const size_t C = cfg_.dim, I = cfg_.hidden, H = cfg_.n_heads, KVH = cfg_.n_kv_heads,
               Hq = H * cfg_.head_dim, Hk = KVH * cfg_.head_dim, Tp = pre.Tp;
  // Row blocks (prefix p's rows [0, len) of `width` floats; the pad rows [len, Tp) zeroed: they
  // feed nothing that is scored, so their gradient is zero whatever they hold, as long as finite).
  int len = 0;  // the rows of prefix p
  auto rows = [&](Buffer& dst, const Buffer& src_of_part, const PromptStore::Entry& e, int p, size_t width) {
    float* d = dst.data() + (size_t)p * Tp * width;
    const float* s = src_of_part.data() + (size_t)e.index * e.part->T * width;
    std::memcpy(d, s, (size_t)len * width * sizeof(float));
    std::memset(d + (size_t)len * width, 0, (Tp - len) * width * sizeof(float));
  };
  // The prefill computed the top layer's outputs for its prompts' last tokens only (its keys and
  // values for all): the prefix rows' top-layer outputs and final norm are zeros here, which the
  // backward never reads for prefix rows except as inputs times a zero gradient.
  auto zeros = [&](Buffer& dst, int p, size_t width) {
    std::memset(dst.data() + (size_t)p * Tp * width, 0, Tp * width * sizeof(float));
  };
  const int top = cfg_.n_layers - 1;
  for (int p = 0; p < pre.Bp; p++) {
    const PromptStore::Entry& e = *found[p];
    const Activations& s = *e.part;
    len = pre.lengths[p];
    for (int l = 0; l < cfg_.n_layers; l++) {
      // A layer's outputs: the stored rows, or zeros in the top layer.
      auto outputs = [&](Buffer& dst, const Buffer& src, size_t width) {
        if (l == top) zeros(dst, p, width);
        else rows(dst, src, e, p, width);
      };
      rows(a.x_in[l], s.x_in[l], e, p, C);
      rows(a.xn1[l], s.xn1[l], e, p, C);
      rows(a.rstd1[l], s.rstd1[l], e, p, 1);
      if (cfg_.qk_norm) {
        outputs(a.qpre[l], s.qpre[l], Hq);
        outputs(a.rstdq[l], s.rstdq[l], H);
        rows(a.kpre[l], s.kpre[l], e, p, Hk);
        rows(a.rstdk[l], s.rstdk[l], e, p, KVH);
      }
      outputs(a.q[l], s.q[l], Hq);
      rows(a.k[l], s.k[l], e, p, Hk);
      rows(a.v[l], s.v[l], e, p, Hk);
      outputs(a.att[l], s.att[l], Hq);
      outputs(a.x_mid[l], s.x_mid[l], C);
      outputs(a.xn2[l], s.xn2[l], C);
      outputs(a.rstd2[l], s.rstd2[l], 1);
      outputs(a.g[l], s.g[l], I);
      outputs(a.u[l], s.u[l], I);
      outputs(a.h[l], s.h[l], I);
      // lse is (B, H, T): per head, the prefix's len positions.
      for (size_t h = 0; h < H; h++) {
        float* d = a.lse[l].data() + ((size_t)p * H + h) * Tp;
        const size_t n = l == top ? 0 : (size_t)len;
        std::memcpy(d, s.lse[l].data() + ((size_t)e.index * H + h) * s.T, n * sizeof(float));
        std::memset(d + n, 0, (Tp - n) * sizeof(float));
      }
    }
    zeros(a.x_last, p, C);
    zeros(a.xf, p, C);
    zeros(a.rstdf, p, 1);
  }
  prompt_store_hits_++;
  return true;
}

}  // namespace wst
