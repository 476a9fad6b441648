// The model's private parts shared by its implementation files (llama.cpp: the graph and the
// train steps; generation.cpp: KV caches, prefill and decode; lanes.cpp: CPU lanes;
// prompt_store.cpp: prompts' activations kept for training): the saved activations, a lane, the
// prompt store, and the GEMM and copy helpers the layers use.
#pragma once
#include <map>
#include <memory>
#include <vector>

#include "llama.h"

namespace wst {

// ---- Activations saved by the forward for the backward --------------------------------------

struct LlamaModel::Activations {
  int B = 0, T = 0;
  // Per layer. x_in[l] is the residual stream entering layer l, x_mid[l] after attention.
  std::vector<Buffer> x_in, xn1, rstd1, qpre, rstdq, kpre, rstdk, q, k, v, att, lse, x_mid, xn2,
      rstd2, g, u, h;
  Buffer x_last, xf, rstdf, logits, tmp;
  // Per token: log-prob of the target, its log-sum-exp, entropy, and the loss gradient.
  Buffer lp, lse_tok, ent, dlp, ones;
  // Backward scratch.
  Buffer dres, dxn, dtmp, dq, dk, dv, datt, dk2, dI1, dI2, dI3;
  std::vector<int32_t> positions, ids;
  std::vector<float> mask, lp_host, ent_host, dlp_host;
  // The host arrays as the backend sees them; tok and pos are kept for the backward.
  Staged<int32_t> st_tok, st_ids, st_pos;
  Staged<float> st_mask, st_old, st_ref, st_adv;
  const int32_t* tok = nullptr;
  const int32_t* pos = nullptr;
  size_t N = 0;  // tokens of the batch: B*T rows, after Npre prefix tokens when prefixed
  // Shared-prefix layout of the current batch (forward plans it, backward reuses it). Tokens are
  // [prefix tokens (Bp*Tp) | row tokens (B*T)]; the rows of group g read kfull at g.kfull_off:
  // per row, its prefix's keys (len) followed by its own (T).
  struct RowGroup {
    int prefix, b0, nb, len;
    size_t kfull_off;
  };
  bool prefixed = false;
  bool prefix_reused = false;  // the prefix rows came from the prompt store (forward skipped them)
  int Bp = 0, Tp = 0;
  size_t Npre = 0;
  std::vector<RowGroup> groups;
  std::vector<int32_t> tok_host;
  // copy_rows offsets [dst | src | count]: k -> kfull (2 per row), dkfull -> dk (1 per row).
  std::vector<int64_t> build_offs, own_offs;
  Staged<int64_t> st_build, st_own;
  const int64_t* build_dev = nullptr;
  const int64_t* own_dev = nullptr;
  Buffer kfull, vfull, dkfull, dvfull;
  // A cache-filling forward's top layer for each row's last token only (top_layer_last_tokens):
  // (B, ...) each; c_xf holds those tokens' final hidden states.
  Buffer c_x, c_xn, c_q, c_att, c_tmp, c_g, c_u, c_h, c_xf;
  std::vector<int64_t> c_offs;
  std::vector<int32_t> c_pos;
  Staged<int64_t> st_c_offs;
  Staged<int32_t> st_c_pos;
};

struct LlamaModel::Lane {
  std::unique_ptr<Activations> acts = std::make_unique<Activations>();
  Buffer grads;
  bool grads_zero = false;  // left zeroed by the last train_grpo_many (which adds and clears them)
};

// Prompts' activations from prefill, for training forwards with the same parameters. Each prefill
// part's whole Activations is kept (moved, not copied); a prompt is row `index` of its part, whose
// rows are padded to part->T tokens.
struct LlamaModel::PromptStore {
  uint64_t version = 0;  // params_version_ of every entry
  std::vector<std::unique_ptr<Activations>> parts;
  struct Entry {
    const Activations* part;
    int index, len;
  };
  std::map<std::vector<int32_t>, Entry> entries;
  size_t rows = 0;  // activation rows held (the parts' padded prompts)
};

// copy_rows from host offsets laid out as [dst x n | src x n | count x n].
// Whether the calling thread works in one of `model`'s lanes (lanes.cpp).
bool in_lane_of(const LlamaModel* model);

inline void copy_rows_staged(const Backend* be, Staged<int64_t>& st, float* dst, const float* src,
                             const std::vector<int64_t>& offs) {
  const int n = (int)(offs.size() / 3);
  if (n == 0) return;
  const int64_t* d = st.in(be, offs.data(), offs.size());
  be->copy_rows(dst, src, d, d + n, d + 2 * n, n);
}

// out (N,out_dim) = in (N,in_dim) @ W^T (+ bias), W (out_dim,in_dim) as in Hugging Face Linear.
inline void linear_forward(const Backend* be, float* out, const float* in, const float* W,
                           const float* bias, const float* ones, int N, int in_dim, int out_dim) {
  be->sgemm(false, true, N, out_dim, in_dim, 1.f, in, in_dim, W, in_dim, 0.f, out, out_dim);
  // out += ones (N,1) @ bias (1,out_dim)
  if (bias) be->sgemm(false, false, N, out_dim, 1, 1.f, ones, 1, bias, out_dim, 1.f, out, out_dim);
}

// Inverts linear_forward: din (N,in_dim) = dout @ W (+= when accumulate), dW += dout^T @ in,
// dbias += ones^T @ dout.
inline void linear_backward(const Backend* be, float* din, float* dW, float* dbias,
                            const float* dout, const float* in, const float* W, const float* ones,
                            int N, int in_dim, int out_dim, bool accumulate_din) {
  if (din)
    be->sgemm(false, false, N, in_dim, out_dim, 1.f, dout, out_dim, W, in_dim,
              accumulate_din ? 1.f : 0.f, din, in_dim);
  be->sgemm(true, false, out_dim, in_dim, N, 1.f, dout, out_dim, in, in_dim, 1.f, dW, in_dim);
  if (dbias) be->sgemm(true, false, 1, out_dim, N, 1.f, ones, 1, dout, out_dim, 1.f, dbias, out_dim);
}

}  // namespace wst
