#include "llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <stdexcept>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "../cpu/threadpool.h"

namespace wst {

// ---- Buffer ---------------------------------------------------------------------------------

// Large host buffers (weights, gradients, AdamW state, activations, KV caches) ask for
// transparent huge pages before their first touch: the weight stream of a batch-1 decode step
// and the optimizer's passes are memory-bound, and 2 MiB pages spare the TLB walks and let the
// hardware prefetchers run across what would be 4 KiB page boundaries (batch-1 decode of a
// 126 MB model: +3-14% in same-process A/B pairs). Only the 2 MiB-aligned interior is advised;
// a no-op where THP is off.
static void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = 2u << 20;
  if (bytes < 2 * kHuge) return;
  uintptr_t b = ((uintptr_t)p + kHuge - 1) & ~(kHuge - 1), e = ((uintptr_t)p + bytes) & ~(kHuge - 1);
  if (e > b) madvise((void*)b, e - b, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

void Buffer::resize(const Backend* be, size_t n) {
  if (n <= cap_ && be == be_) {
    n_ = n;
    return;
  }
  release();
  be_ = be;
  ptr_ = n ? (float*)be->alloc(n * sizeof(float)) : nullptr;
  if (ptr_ && be->host_memory) advise_huge_pages(ptr_, n * sizeof(float));
  n_ = cap_ = n;
}

void Buffer::zero() {
  if (n_) be_->zero(ptr_, n_ * sizeof(float));
}

void Buffer::release() {
  if (ptr_) be_->free(ptr_);
  ptr_ = nullptr;
  n_ = cap_ = 0;
}

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

namespace {
// The lane that this thread works in (train_grpo_many's tasks), and whose model it is.
thread_local const LlamaModel* tl_lane_model = nullptr;
thread_local void* tl_lane = nullptr;
}  // namespace

// Puts this thread in `lane` of `model` for a scope, out of it again also when the work throws.
struct LaneScope {
  LaneScope(const LlamaModel* model, void* lane) {
    tl_lane_model = model;
    tl_lane = lane;
  }
  ~LaneScope() {
    tl_lane_model = nullptr;
    tl_lane = nullptr;
  }
};

LlamaModel::Activations& LlamaModel::A() {
  return tl_lane_model == this ? *static_cast<Lane*>(tl_lane)->acts : *acts_;
}

std::unique_ptr<LlamaModel::Activations>& LlamaModel::acts_owner() {
  return tl_lane_model == this ? static_cast<Lane*>(tl_lane)->acts : acts_;
}

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

void LlamaModel::drop_prompt_store() {
  if (!prompts_) return;
  for (auto& part : prompts_->parts)
    if (part && spare_acts_.size() < 2 * (size_t)kLanes) spare_acts_.push_back(std::move(part));
  prompts_.reset();
}

int LlamaModel::stored_prompts() const {
  return prompts_ && prompts_->version == params_version_ ? (int)prompts_->entries.size() : 0;
}

float* LlamaModel::G(size_t off) {
  return (tl_lane_model == this ? static_cast<Lane*>(tl_lane)->grads.data() : grads_.data()) + off;
}

// copy_rows from host offsets laid out as [dst x n | src x n | count x n].
static void copy_rows_staged(const Backend* be, Staged<int64_t>& st, float* dst, const float* src,
                             const std::vector<int64_t>& offs) {
  const int n = (int)(offs.size() / 3);
  if (n == 0) return;
  const int64_t* d = st.in(be, offs.data(), offs.size());
  be->copy_rows(dst, src, d, d + n, d + 2 * n, n);
}

// ---- Construction and parameters ------------------------------------------------------------

void LlamaModel::add_tensor(const std::string& name, std::vector<int64_t> shape) {
  TensorInfo t;
  t.name = name;
  t.shape = std::move(shape);
  t.size = 1;
  for (auto d : t.shape) t.size *= (size_t)d;
  t.offset = total_;
  total_ += (t.size + 15) / 16 * 16;  // 64-byte aligned tensors
  tensors_.push_back(std::move(t));
}

LlamaModel::LlamaModel(const Backend* backend, const LlamaConfig& cfg) : be_(backend), cfg_(cfg) {
  const int C = cfg.dim, V = cfg.vocab, I = cfg.hidden, Dh = cfg.head_dim;
  const int Hq = cfg.n_heads * Dh, Hk = cfg.n_kv_heads * Dh;
  add_tensor("model.embed_tokens.weight", {V, C});
  for (int l = 0; l < cfg.n_layers; l++) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    add_tensor(p + "input_layernorm.weight", {C});
    add_tensor(p + "self_attn.q_proj.weight", {Hq, C});
    add_tensor(p + "self_attn.k_proj.weight", {Hk, C});
    add_tensor(p + "self_attn.v_proj.weight", {Hk, C});
    if (cfg.qkv_bias) {
      add_tensor(p + "self_attn.q_proj.bias", {Hq});
      add_tensor(p + "self_attn.k_proj.bias", {Hk});
      add_tensor(p + "self_attn.v_proj.bias", {Hk});
    }
    if (cfg.qk_norm) {
      add_tensor(p + "self_attn.q_norm.weight", {Dh});
      add_tensor(p + "self_attn.k_norm.weight", {Dh});
    }
    add_tensor(p + "self_attn.o_proj.weight", {C, Hq});
    add_tensor(p + "post_attention_layernorm.weight", {C});
    add_tensor(p + "mlp.gate_proj.weight", {I, C});
    add_tensor(p + "mlp.up_proj.weight", {I, C});
    add_tensor(p + "mlp.down_proj.weight", {C, I});
  }
  add_tensor("model.norm.weight", {C});
  if (!cfg.tied_embeddings) add_tensor("lm_head.weight", {V, C});

  auto off = [&](const std::string& n) { return find(n) ? find(n)->offset : (size_t)-1; };
  embed_off_ = off("model.embed_tokens.weight");
  norm_off_ = off("model.norm.weight");
  lm_head_off_ = cfg.tied_embeddings ? embed_off_ : off("lm_head.weight");
  for (int l = 0; l < cfg.n_layers; l++) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    LayerOffsets o;
    o.attn_norm = off(p + "input_layernorm.weight");
    o.wq = off(p + "self_attn.q_proj.weight");
    o.wk = off(p + "self_attn.k_proj.weight");
    o.wv = off(p + "self_attn.v_proj.weight");
    o.bq = off(p + "self_attn.q_proj.bias");
    o.bk = off(p + "self_attn.k_proj.bias");
    o.bv = off(p + "self_attn.v_proj.bias");
    o.q_norm = off(p + "self_attn.q_norm.weight");
    o.k_norm = off(p + "self_attn.k_norm.weight");
    o.wo = off(p + "self_attn.o_proj.weight");
    o.ffn_norm = off(p + "post_attention_layernorm.weight");
    o.w_gate = off(p + "mlp.gate_proj.weight");
    o.w_up = off(p + "mlp.up_proj.weight");
    o.w_down = off(p + "mlp.down_proj.weight");
    layers_.push_back(o);
  }
  params_.resize(be_, total_);
  params_.zero();
  acts_ = std::make_unique<Activations>();
}

LlamaModel::~LlamaModel() = default;

const TensorInfo* LlamaModel::find(const std::string& name) const {
  for (auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

void LlamaModel::set_tensor(const TensorInfo& t, const float* host) {
  be_->upload(params_.data() + t.offset, host, t.size * sizeof(float));
  params_version_++;
}

void LlamaModel::get_tensor(const TensorInfo& t, float* host) const {
  be_->download(host, params_.data() + t.offset, t.size * sizeof(float));
}

void LlamaModel::get_grad(const TensorInfo& t, float* host) {
  ensure_grads();
  be_->download(host, grads_.data() + t.offset, t.size * sizeof(float));
}

void LlamaModel::init_random(uint64_t seed, float std) {
  params_version_++;
  // splitmix64 -> Box-Muller normals; norms start at 1, output projections are scaled by
  // 1/sqrt(2 * layers) (GPT-2 style) so the residual stream does not grow with depth.
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  auto next = [&] {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  auto uniform = [&] { return ((next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); };
  std::vector<float> host;
  for (auto& t : tensors_) {
    host.assign(t.size, 0.f);
    bool is_norm = t.name.find("norm") != std::string::npos;
    bool is_bias = t.name.find(".bias") != std::string::npos;
    bool is_out = t.name.find("o_proj") != std::string::npos || t.name.find("down_proj") != std::string::npos;
    double sd = std * (is_out ? 1.0 / std::sqrt(2.0 * std::max(1, cfg_.n_layers)) : 1.0);
    for (size_t i = 0; i < t.size; i++) {
      if (is_norm) host[i] = 1.f;
      else if (is_bias) host[i] = 0.f;
      else host[i] = (float)(sd * std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()));
    }
    set_tensor(t, host.data());
  }
}

size_t LlamaModel::activation_floats_per_token() const {
  const size_t C = cfg_.dim, I = cfg_.hidden, Hq = (size_t)cfg_.n_heads * cfg_.head_dim,
               Hk = (size_t)cfg_.n_kv_heads * cfg_.head_dim, V = cfg_.vocab;
  size_t per_layer = 4 * C + 2 + 2 * Hq + 2 * Hk + 3 * I + cfg_.n_heads +
                     (cfg_.qk_norm ? Hq + Hk + cfg_.n_heads + cfg_.n_kv_heads : 0);
  size_t scratch = 3 * C + 3 * Hq + 3 * Hk + 3 * I;
  return cfg_.n_layers * per_layer + 3 * C + 1 + V + 5 + scratch;
}

void LlamaModel::ensure_activations(int B, int T, size_t N) {
  auto& a = A();
  const size_t C = cfg_.dim, I = cfg_.hidden, V = cfg_.vocab,
               H = cfg_.n_heads, KVH = cfg_.n_kv_heads, Hq = H * cfg_.head_dim,
               Hk = KVH * cfg_.head_dim, L = cfg_.n_layers;
  a.B = B;
  a.T = T;
  a.N = N;
  for (auto* vec : {&a.x_in, &a.xn1, &a.rstd1, &a.qpre, &a.rstdq, &a.kpre, &a.rstdk, &a.q, &a.k,
                    &a.v, &a.att, &a.lse, &a.x_mid, &a.xn2, &a.rstd2, &a.g, &a.u, &a.h})
    if (vec->size() != L) {
      std::vector<Buffer> fresh(L);
      vec->swap(fresh);
    }
  for (size_t l = 0; l < L; l++) {
    a.x_in[l].resize(be_, N * C);
    a.xn1[l].resize(be_, N * C);
    a.rstd1[l].resize(be_, N);
    if (cfg_.qk_norm) {
      a.qpre[l].resize(be_, N * Hq);
      a.rstdq[l].resize(be_, N * H);
      a.kpre[l].resize(be_, N * Hk);
      a.rstdk[l].resize(be_, N * KVH);
    }
    a.q[l].resize(be_, N * Hq);
    a.k[l].resize(be_, N * Hk);
    a.v[l].resize(be_, N * Hk);
    a.att[l].resize(be_, N * Hq);
    a.lse[l].resize(be_, N * H);
    a.x_mid[l].resize(be_, N * C);
    a.xn2[l].resize(be_, N * C);
    a.rstd2[l].resize(be_, N);
    a.g[l].resize(be_, N * I);
    a.u[l].resize(be_, N * I);
    a.h[l].resize(be_, N * I);
  }
  a.x_last.resize(be_, N * C);
  a.xf.resize(be_, N * C);
  a.rstdf.resize(be_, N);
  a.logits.resize(be_, (size_t)B * T * V);  // the row tokens' logits only (prefix tokens have none)
  a.tmp.resize(be_, N * std::max(C, Hq));
  for (auto* b : {&a.lp, &a.lse_tok, &a.ent, &a.dlp}) b->resize(be_, N);
  if (a.ones.size() < N) {
    a.ones.resize(be_, N);
    const std::vector<float> one(N, 1.f);
    be_->upload(a.ones.data(), one.data(), N * sizeof(float));
  }
}

// out (N,out_dim) = in (N,in_dim) @ W^T (+ bias), W (out_dim,in_dim) as in Hugging Face Linear.
static void linear_forward(const Backend* be, float* out, const float* in, const float* W,
                           const float* bias, const float* ones, int N, int in_dim, int out_dim) {
  be->sgemm(false, true, N, out_dim, in_dim, 1.f, in, in_dim, W, in_dim, 0.f, out, out_dim);
  // out += ones (N,1) @ bias (1,out_dim)
  if (bias) be->sgemm(false, false, N, out_dim, 1, 1.f, ones, 1, bias, out_dim, 1.f, out, out_dim);
}

// Inverts linear_forward: din (N,in_dim) = dout @ W (+= when accumulate), dW += dout^T @ in,
// dbias += ones^T @ dout.
static void linear_backward(const Backend* be, float* din, float* dW, float* dbias,
                            const float* dout, const float* in, const float* W, const float* ones,
                            int N, int in_dim, int out_dim, bool accumulate_din) {
  if (din)
    be->sgemm(false, false, N, in_dim, out_dim, 1.f, dout, out_dim, W, in_dim,
              accumulate_din ? 1.f : 0.f, din, in_dim);
  be->sgemm(true, false, out_dim, in_dim, N, 1.f, dout, out_dim, in, in_dim, 1.f, dW, in_dim);
  if (dbias) be->sgemm(true, false, 1, out_dim, N, 1.f, ones, 1, dout, out_dim, 1.f, dbias, out_dim);
}

// ---- Forward ----------------------------------------------------------------------------------

void LlamaModel::forward(const int32_t* tokens, int B, int T, bool keep_logits, Context* sink,
                         const int* sink_slots, const PrefixBatch* pre, const int* sink_lengths) {
  if (pre && sink) throw std::invalid_argument("forward: a prefixed batch cannot fill a KV cache");
  if (sink_lengths && (!sink || keep_logits)) throw std::invalid_argument("forward: sink_lengths needs a sink and no logits");
  value_.pending = false;  // any forward replaces the activations value_backward needs
  const size_t Npre = pre ? (size_t)pre->Bp * pre->Tp : 0, Nrow = (size_t)B * T;
  ensure_activations(B, T, Npre + Nrow);
  auto& a = A();
  const int N = (int)(Npre + Nrow), C = cfg_.dim, V = cfg_.vocab, I = cfg_.hidden, H = cfg_.n_heads,
            KVH = cfg_.n_kv_heads, Dh = cfg_.head_dim, Hq = H * Dh, Hk = KVH * Dh;
  const float eps = cfg_.norm_eps;
  const float* ones = a.ones.data();
  // Transposed weights: built here when not in a lane (lanes' callers build them first).
  const bool wt = tl_lane_model == this ? transposed_ready() : ensure_decode_weights();
  a.positions.resize(N);
  a.prefixed = pre != nullptr;
  a.Npre = Npre;
  if (!pre) {
    for (size_t n = 0; n < Nrow; n++) a.positions[n] = (int32_t)(n % T);
    a.tok = a.st_tok.in(be_, tokens, Nrow);
  } else {
    plan_prefix(*pre, tokens, B, T);
    a.tok = a.st_tok.in(be_, a.tok_host.data(), (size_t)N);
  }
  a.pos = a.st_pos.in(be_, a.positions.data(), (size_t)N);
  // Prefix rows from the prompt store: the layers then compute rows [r0, N) only.
  a.prefix_reused = pre && !sink && prefix_rows_from_store(*pre);
  const size_t r0 = a.prefix_reused ? Npre : 0;
  const int Nf = N - (int)r0;
  // Cache rows of the sink: row b's T keys/values go to its slot's row of every layer's cache.
  std::vector<int64_t> sink_offs;
  const int64_t* sink_dev = nullptr;
  if (sink) {
    sink_offs.resize(3 * (size_t)B);
    for (int b = 0; b < B; b++) {
      const int slot = sink_slots ? sink_slots[b] : sink->active + b;
      sink_offs[b] = (int64_t)slot * sink->max_seq * Hk;
      sink_offs[B + b] = (int64_t)b * T * Hk;
      sink_offs[2 * B + b] = (int64_t)T * Hk;
    }
    sink_dev = st_rows_.in(be_, sink_offs.data(), sink_offs.size());
  }
  // Row r0 of an activation of `width` floats per token.
  auto at = [&](Buffer& b, size_t width) { return b.data() + r0 * width; };
  be_->embedding_forward(at(a.x_in[0], C), a.tok + r0, P(embed_off_), Nf, V, C);
  for (int l = 0; l < cfg_.n_layers; l++) {
    const LayerOffsets& o = layers_[l];
    if (sink_lengths && l == cfg_.n_layers - 1) {  // the cache needs every key; the caller, last tokens
      top_layer_last_tokens(B, T, sink_lengths, wt, sink, sink_dev);
      return;
    }
    const float* x = at(a.x_in[l], C);
    float* x_next = l + 1 < cfg_.n_layers ? at(a.x_in[l + 1], C) : at(a.x_last, C);
    keys_values_forward(l, r0, Nf, wt, sink, sink_dev, B);
    float* qdst = cfg_.qk_norm ? at(a.qpre[l], Hq) : at(a.q[l], Hq);
    linear_fwd(wt, qdst, at(a.xn1[l], C), o.wq, cfg_.qkv_bias ? P(o.bq) : nullptr, ones, Nf, C, Hq);
    if (cfg_.qk_norm) be_->rmsnorm_forward(at(a.q[l], Hq), at(a.rstdq[l], H), qdst, P(o.q_norm), Nf * H, Dh, eps);
    be_->rope_forward(at(a.q[l], Hq), at(a.q[l], Hq), a.pos + r0, Nf, H, Dh, cfg_.rope_theta);
    attention_layer_forward(l);
    float* tmp = at(a.tmp, C);
    linear_fwd(wt, tmp, at(a.att[l], Hq), o.wo, nullptr, ones, Nf, Hq, C);
    be_->residual_forward(at(a.x_mid[l], C), x, tmp, (size_t)Nf * C);
    be_->rmsnorm_forward(at(a.xn2[l], C), at(a.rstd2[l], 1), at(a.x_mid[l], C), P(o.ffn_norm), Nf, C, eps);
    linear_fwd(wt, at(a.g[l], I), at(a.xn2[l], C), o.w_gate, nullptr, ones, Nf, C, I);
    linear_fwd(wt, at(a.u[l], I), at(a.xn2[l], C), o.w_up, nullptr, ones, Nf, C, I);
    be_->swiglu_forward(at(a.h[l], I), at(a.g[l], I), at(a.u[l], I), Nf, I);
    linear_fwd(wt, tmp, at(a.h[l], I), o.w_down, nullptr, ones, Nf, I, C);
    be_->residual_forward(x_next, at(a.x_mid[l], C), tmp, (size_t)Nf * C);
  }
  be_->rmsnorm_forward(at(a.xf, C), at(a.rstdf, 1), at(a.x_last, C), P(norm_off_), Nf, C, eps);
  if (keep_logits)  // the row tokens only: prefix tokens predict nothing that is scored
    linear_fwd(wt, a.logits.data(), a.xf.data() + Npre * C, lm_head_off_, nullptr, ones,
                   (int)Nrow, C, V);
}

void LlamaModel::keys_values_forward(int l, size_t r0, int n, bool wt, Context* sink, const int64_t* sink_dev, int B) {
  auto& a = A();
  const int C = cfg_.dim, KVH = cfg_.n_kv_heads, Dh = cfg_.head_dim, Hk = KVH * Dh;
  const LayerOffsets& o = layers_[l];
  const bool bias = cfg_.qkv_bias;
  float* xn1 = a.xn1[l].data() + r0 * C;
  float* k = a.k[l].data() + r0 * Hk;
  be_->rmsnorm_forward(xn1, a.rstd1[l].data() + r0, a.x_in[l].data() + r0 * C, P(o.attn_norm), n, C, cfg_.norm_eps);
  float* kdst = cfg_.qk_norm ? a.kpre[l].data() + r0 * Hk : k;
  linear_fwd(wt, kdst, xn1, o.wk, bias ? P(o.bk) : nullptr, a.ones.data(), n, C, Hk);
  linear_fwd(wt, a.v[l].data() + r0 * Hk, xn1, o.wv, bias ? P(o.bv) : nullptr, a.ones.data(), n, C, Hk);
  if (cfg_.qk_norm) be_->rmsnorm_forward(k, a.rstdk[l].data() + r0 * KVH, kdst, P(o.k_norm), n * KVH, Dh, cfg_.norm_eps);
  be_->rope_forward(k, k, a.pos + r0, n, KVH, Dh, cfg_.rope_theta);
  if (sink) {  // row b's T keys / values to its slot (sink_dev: copy_rows offsets for B rows)
    be_->copy_rows(sink->kcache[l].data(), a.k[l].data(), sink_dev, sink_dev + B, sink_dev + 2 * B, B);
    be_->copy_rows(sink->vcache[l].data(), a.v[l].data(), sink_dev, sink_dev + B, sink_dev + 2 * B, B);
  }
}

void LlamaModel::top_layer_last_tokens(int B, int T, const int* lengths, bool wt, Context* sink,
                                       const int64_t* sink_dev) {
  auto& a = A();
  const int l = cfg_.n_layers - 1, N = B * T, C = cfg_.dim, I = cfg_.hidden, H = cfg_.n_heads,
            KVH = cfg_.n_kv_heads, Dh = cfg_.head_dim, Hq = H * Dh, Hk = KVH * Dh;
  const float eps = cfg_.norm_eps;
  const float* ones = a.ones.data();
  const LayerOffsets& o = layers_[l];
  const bool bias = cfg_.qkv_bias;
  keys_values_forward(l, 0, N, wt, sink, sink_dev, B);  // every token's: the cache needs them
  // The rest of the layer for row b's last token (position lengths[b] - 1) only: nothing reads
  // the other tokens' outputs (the caller keeps their keys and values, and the last token's
  // hidden state for the logits).
  for (auto* buf : {&a.c_x, &a.c_xn, &a.c_tmp, &a.c_xf}) buf->resize(be_, (size_t)B * C);
  for (auto* buf : {&a.c_q, &a.c_att}) buf->resize(be_, (size_t)B * Hq);
  for (auto* buf : {&a.c_g, &a.c_u, &a.c_h}) buf->resize(be_, (size_t)B * I);
  a.c_offs.resize(3 * (size_t)B);
  a.c_pos.resize(B);
  for (int b = 0; b < B; b++) {
    if (lengths[b] < 1 || lengths[b] > T) throw std::invalid_argument("forward: sink_lengths must be in 1..T");
    a.c_offs[b] = (int64_t)b * C;
    a.c_offs[B + b] = ((int64_t)b * T + lengths[b] - 1) * C;
    a.c_offs[2 * B + b] = C;
    a.c_pos[b] = lengths[b] - 1;
  }
  const int64_t* offs = a.st_c_offs.in(be_, a.c_offs.data(), a.c_offs.size());
  const int32_t* pos = a.st_c_pos.in(be_, a.c_pos.data(), (size_t)B);
  float *x = a.c_x.data(), *xn = a.c_xn.data(), *q = a.c_q.data(), *att = a.c_att.data(), *tmp = a.c_tmp.data();
  be_->copy_rows(x, a.x_in[l].data(), offs, offs + B, offs + 2 * B, B);
  be_->copy_rows(xn, a.xn1[l].data(), offs, offs + B, offs + 2 * B, B);
  linear_fwd(wt, cfg_.qk_norm ? att : q, xn, o.wq, bias ? P(o.bq) : nullptr, ones, B, C, Hq);
  if (cfg_.qk_norm) be_->rmsnorm_forward(q, nullptr, att, P(o.q_norm), B * H, Dh, eps);
  be_->rope_forward(q, q, pos, B, H, Dh, cfg_.rope_theta);
  for (int b = 0; b < B; b++)  // the last query over its row's lengths[b] keys
    be_->attention_forward(att + (size_t)b * Hq, nullptr, q + (size_t)b * Hq, a.k[l].data() + (size_t)b * T * Hk,
                           a.v[l].data() + (size_t)b * T * Hk, 1, H, KVH, 1, lengths[b], Dh, true);
  linear_fwd(wt, tmp, att, o.wo, nullptr, ones, B, Hq, C);
  be_->residual_forward(x, x, tmp, (size_t)B * C);
  be_->rmsnorm_forward(xn, nullptr, x, P(o.ffn_norm), B, C, eps);
  linear_fwd(wt, a.c_g.data(), xn, o.w_gate, nullptr, ones, B, C, I);
  linear_fwd(wt, a.c_u.data(), xn, o.w_up, nullptr, ones, B, C, I);
  be_->swiglu_forward(a.c_h.data(), a.c_g.data(), a.c_u.data(), B, I);
  linear_fwd(wt, tmp, a.c_h.data(), o.w_down, nullptr, ones, B, I, C);
  be_->residual_forward(x, x, tmp, (size_t)B * C);
  be_->rmsnorm_forward(a.c_xf.data(), nullptr, x, P(norm_off_), B, C, eps);
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

// Lays out a prefixed batch: tokens and positions of [prefixes | rows], the row groups (one per
// prefix, rows contiguous), and the copy_rows offsets that build each row's keys (prefix + own).
void LlamaModel::plan_prefix(const PrefixBatch& pre, const int32_t* tokens, int B, int T) {
  auto& a = A();
  const int Hk = cfg_.n_kv_heads * cfg_.head_dim;
  if (pre.Bp < 1 || pre.Tp < 0 || !pre.lengths || !pre.row_prefix || (pre.Tp > 0 && !pre.tokens))
    throw std::invalid_argument("prefix: needs Bp >= 1, Tp >= 0, tokens, lengths and row_prefix");
  const size_t Npre = (size_t)pre.Bp * pre.Tp, Nrow = (size_t)B * T;
  a.Bp = pre.Bp;
  a.Tp = pre.Tp;
  a.tok_host.resize(Npre + Nrow);
  if (Npre) std::memcpy(a.tok_host.data(), pre.tokens, Npre * sizeof(int32_t));
  std::memcpy(a.tok_host.data() + Npre, tokens, Nrow * sizeof(int32_t));
  for (int p = 0; p < pre.Bp; p++) {
    if (pre.lengths[p] < 0 || pre.lengths[p] > pre.Tp)
      throw std::invalid_argument("prefix: lengths[" + std::to_string(p) + "] must be in 0..Tp");
    for (int t = 0; t < pre.Tp; t++) a.positions[(size_t)p * pre.Tp + t] = t;
  }
  a.groups.clear();
  for (int b = 0; b < B; b++) {
    const int p = pre.row_prefix[b];
    if (p < 0 || p >= pre.Bp || (b > 0 && p < pre.row_prefix[b - 1]))
      throw std::invalid_argument("prefix: row_prefix must be non-decreasing values in 0..Bp-1");
    if (a.groups.empty() || a.groups.back().prefix != p) a.groups.push_back({p, b, 0, pre.lengths[p], 0});
    a.groups.back().nb++;
    for (int t = 0; t < T; t++) a.positions[Npre + (size_t)b * T + t] = pre.lengths[p] + t;
  }
  size_t off = 0;
  a.build_offs.assign(6 * (size_t)B, 0);
  a.own_offs.assign(3 * (size_t)B, 0);
  int64_t* bd = a.build_offs.data();
  int64_t* od = a.own_offs.data();
  const size_t nb2 = 2 * (size_t)B;
  for (auto& g : a.groups) {
    g.kfull_off = off;
    const int64_t row_floats = (int64_t)(g.len + T) * Hk;
    for (int r = 0; r < g.nb; r++) {
      const size_t b = (size_t)g.b0 + r;
      const int64_t dst = (int64_t)off + r * row_floats;
      bd[2 * b] = dst;  // the prefix's keys
      bd[nb2 + 2 * b] = (int64_t)g.prefix * pre.Tp * Hk;
      bd[2 * nb2 + 2 * b] = (int64_t)g.len * Hk;
      bd[2 * b + 1] = dst + (int64_t)g.len * Hk;  // then the row's own
      bd[nb2 + 2 * b + 1] = (int64_t)(Npre + b * T) * Hk;
      bd[2 * nb2 + 2 * b + 1] = (int64_t)T * Hk;
      od[b] = (int64_t)(Npre + b * T) * Hk;
      od[B + b] = dst + (int64_t)g.len * Hk;
      od[2 * B + b] = (int64_t)T * Hk;
    }
    off += (size_t)g.nb * row_floats;
  }
  a.kfull.resize(be_, off);
  a.vfull.resize(be_, off);
  a.build_dev = a.st_build.in(be_, a.build_offs.data(), a.build_offs.size());
  a.own_dev = a.st_own.in(be_, a.own_offs.data(), a.own_offs.size());
}

void LlamaModel::attention_layer_forward(int l) {
  auto& a = A();
  const int H = cfg_.n_heads, KVH = cfg_.n_kv_heads, Dh = cfg_.head_dim, Hq = H * Dh;
  float *att = a.att[l].data(), *lse = a.lse[l].data();
  const float *q = a.q[l].data(), *k = a.k[l].data(), *v = a.v[l].data();
  if (!a.prefixed) {
    be_->attention_forward(att, lse, q, k, v, a.B, H, KVH, a.T, a.T, Dh, true);
    return;
  }
  // The prefixes among themselves (causal), then each group's rows over [prefix keys | own keys]:
  // query t of a row sits at absolute position len + t = Tk - Tq + t, as attention_forward places it.
  if (a.Tp > 0 && !a.prefix_reused) be_->attention_forward(att, lse, q, k, v, a.Bp, H, KVH, a.Tp, a.Tp, Dh, true);
  const int n = 2 * a.B;
  be_->copy_rows(a.kfull.data(), k, a.build_dev, a.build_dev + n, a.build_dev + 2 * n, n);
  be_->copy_rows(a.vfull.data(), v, a.build_dev, a.build_dev + n, a.build_dev + 2 * n, n);
  for (auto& g : a.groups) {
    const size_t row0 = a.Npre + (size_t)g.b0 * a.T;
    be_->attention_forward(att + row0 * Hq, lse + row0 * H, q + row0 * Hq, a.kfull.data() + g.kfull_off,
                           a.vfull.data() + g.kfull_off, g.nb, H, KVH, a.T, g.len + a.T, Dh, true);
  }
}

// Inverts attention_layer_forward: dq, dk, dv (all N tokens) from datt; a prefix's dk / dv is the
// gradient of its own causal attention plus the sum over its rows of their prefix part.
void LlamaModel::attention_layer_backward(int l, bool prefix_outputs_unused) {
  auto& a = A();
  const int H = cfg_.n_heads, KVH = cfg_.n_kv_heads, Dh = cfg_.head_dim, Hq = H * Dh, Hk = KVH * Dh;
  const float *att = a.att[l].data(), *lse = a.lse[l].data();
  const float *q = a.q[l].data(), *k = a.k[l].data(), *v = a.v[l].data();
  float *dq = a.dq.data(), *dk = a.dk.data(), *dv = a.dv.data(), *datt = a.datt.data();
  if (!a.prefixed) {
    // att = attention(q, k, v)
    be_->attention_backward(dq, dk, dv, datt, q, k, v, att, lse, a.B, H, KVH, a.T, a.T, Dh, true);
    return;
  }
  // att[prefixes] = attention(q, k, v) over the prefixes: overwrites their dq, dk, dv. With no
  // gradient on the prefixes' outputs (datt zero there) that is all zeros: written directly.
  if (a.Tp > 0 && prefix_outputs_unused) {
    be_->zero(dq, a.Npre * Hq * sizeof(float));
    be_->zero(dk, a.Npre * Hk * sizeof(float));
    be_->zero(dv, a.Npre * Hk * sizeof(float));
  } else if (a.Tp > 0) {
    be_->attention_backward(dq, dk, dv, datt, q, k, v, att, lse, a.Bp, H, KVH, a.Tp, a.Tp, Dh, true);
  }
  // att[rows of g] = attention(q, kfull[g], vfull[g]): kfull holds the last layer's keys, rebuild.
  const int n = 2 * a.B;
  be_->copy_rows(a.kfull.data(), k, a.build_dev, a.build_dev + n, a.build_dev + 2 * n, n);
  be_->copy_rows(a.vfull.data(), v, a.build_dev, a.build_dev + n, a.build_dev + 2 * n, n);
  a.dkfull.resize(be_, a.kfull.size());
  a.dvfull.resize(be_, a.kfull.size());
  for (auto& g : a.groups) {
    const size_t row0 = a.Npre + (size_t)g.b0 * a.T;
    be_->attention_backward(dq + row0 * Hq, a.dkfull.data() + g.kfull_off, a.dvfull.data() + g.kfull_off,
                            datt + row0 * Hq, q + row0 * Hq, a.kfull.data() + g.kfull_off,
                            a.vfull.data() + g.kfull_off, att + row0 * Hq, lse + row0 * H, g.nb, H,
                            KVH, a.T, g.len + a.T, Dh, true);
  }
  // Own keys back in place; the prefix part summed over the group's rows (ones (1,nb) @ parts).
  const int64_t* od = a.own_dev;
  be_->copy_rows(dk, a.dkfull.data(), od, od + a.B, od + 2 * a.B, a.B);
  be_->copy_rows(dv, a.dvfull.data(), od, od + a.B, od + 2 * a.B, a.B);
  for (auto& g : a.groups) {
    if (g.len == 0) continue;
    const int cols = g.len * Hk, ld = (g.len + a.T) * Hk;
    float* dst_k = dk + (size_t)g.prefix * a.Tp * Hk;
    float* dst_v = dv + (size_t)g.prefix * a.Tp * Hk;
    be_->sgemm(false, false, 1, cols, g.nb, 1.f, a.ones.data(), g.nb, a.dkfull.data() + g.kfull_off, ld, 1.f, dst_k, cols);
    be_->sgemm(false, false, 1, cols, g.nb, 1.f, a.ones.data(), g.nb, a.dvfull.data() + g.kfull_off, ld, 1.f, dst_v, cols);
  }
}

void LlamaModel::forward_logits(const int32_t* tokens, int B, int T, float* logits_out) {
  forward(tokens, B, T, true, nullptr);
  be_->download(logits_out, A().logits.data(), (size_t)B * T * cfg_.vocab * sizeof(float));
}

void LlamaModel::score(const int32_t* tokens, const int32_t* targets, int B, int T,
                       float* logprobs_out, float* entropy_out, const PrefixBatch* prefix) {
  forward(tokens, B, T, true, nullptr, nullptr, prefix);
  auto& a = A();
  const int N = B * T;
  a.ids.resize(N);
  for (int n = 0; n < N; n++) a.ids[n] = targets[n] < 0 ? 0 : targets[n];
  const int32_t* ids = a.st_ids.in(be_, a.ids.data(), (size_t)N);
  be_->token_logprobs_forward(a.lp.data(), a.lse_tok.data(), entropy_out ? a.ent.data() : nullptr,
                              a.logits.data(), ids, N, cfg_.vocab);
  a.lp_host.resize(N);
  be_->download(a.lp_host.data(), a.lp.data(), (size_t)N * sizeof(float));
  if (entropy_out) {
    a.ent_host.resize(N);
    be_->download(a.ent_host.data(), a.ent.data(), (size_t)N * sizeof(float));
  }
  for (int n = 0; n < N; n++) {
    logprobs_out[n] = targets[n] < 0 ? 0.f : a.lp_host[n];
    if (entropy_out) entropy_out[n] = targets[n] < 0 ? 0.f : a.ent_host[n];
  }
}

// ---- Backward ---------------------------------------------------------------------------------

void LlamaModel::ensure_grads() {
  if (grads_.size() == total_) return;
  grads_.resize(be_, total_);
  grads_.zero();
}

void LlamaModel::zero_grad() {
  ensure_grads();
  grads_.zero();
}

// Backward from d logits (stored in place of the logits) into every parameter gradient (+=).
void LlamaModel::backward(const int32_t* tokens, int B, int T, const ValueRows* value_rows) {
  ensure_grads();
  auto& a = A();
  const int N = (int)a.N, Nrow = B * T, C = cfg_.dim, V = cfg_.vocab, I = cfg_.hidden,
            Hq = cfg_.n_heads * cfg_.head_dim, Hk = cfg_.n_kv_heads * cfg_.head_dim,
            H = cfg_.n_heads, KVH = cfg_.n_kv_heads, Dh = cfg_.head_dim;
  const size_t Npre = a.Npre;
  const float* ones = a.ones.data();
  for (auto* b : {&a.dres, &a.dxn, &a.dtmp}) b->resize(be_, (size_t)N * C);
  for (auto* b : {&a.dq, &a.datt}) b->resize(be_, (size_t)N * Hq);
  for (auto* b : {&a.dk, &a.dv, &a.dk2}) b->resize(be_, (size_t)N * Hk);
  for (auto* b : {&a.dI1, &a.dI2, &a.dI3}) b->resize(be_, (size_t)N * I);
  float *dres = a.dres.data(), *dxn = a.dxn.data(), *dtmp = a.dtmp.data();

  if (!value_rows) {
    // logits = xf[rows] @ Wlm^T (prefix tokens have no logits: no gradient from here)
    linear_backward(be_, dxn + Npre * C, G(lm_head_off_), nullptr, a.logits.data(), a.xf.data() + Npre * C,
                    P(lm_head_off_), ones, Nrow, C, V, false);
    if (Npre) be_->zero(dxn, Npre * C * sizeof(float));
  } else {
    // r = xf[row] . w: the gradient enters at the value rows only
    be_->zero(dxn, (size_t)N * C * sizeof(float));
    for (size_t i = 0; i < value_rows->rows.size(); i++)
      be_->upload(dxn + value_rows->rows[i] * C, value_rows->dxf.data() + i * C, (size_t)C * sizeof(float));
  }
  // xf = rmsnorm(x_last)
  be_->rmsnorm_backward(dres, G(norm_off_), dxn, a.x_last.data(), P(norm_off_), a.rstdf.data(), N, C);
  // The prefix rows [0, z) of dres are exactly zero until some layer's keys and values pass the
  // rows' gradient to them: in the top layer their MLP, output projection and query (whose
  // outputs reach no scored token) get zero gradients, so those ops run on rows [z, N) only and
  // the prefixes' own attention backward is skipped (dq, dk, dv of the prefixes start at zero).
  size_t z = Npre;
  for (int l = cfg_.n_layers - 1; l >= 0; l--) {
    const LayerOffsets& o = layers_[l];
    const int Nz = N - (int)z;
    // x_next = x_mid + h @ Wdown^T: dres flows to x_mid unchanged, and into the MLP.
    linear_backward(be_, a.dI3.data() + z * I, G(o.w_down), nullptr, dres + z * C, a.h[l].data() + z * I, P(o.w_down), ones, Nz, I, C, false);
    // h = silu(g) * u
    be_->swiglu_backward(a.dI1.data() + z * I, a.dI2.data() + z * I, a.dI3.data() + z * I, a.g[l].data() + z * I, a.u[l].data() + z * I, Nz, I);
    // g = xn2 @ Wgate^T, u = xn2 @ Wup^T
    linear_backward(be_, dxn + z * C, G(o.w_gate), nullptr, a.dI1.data() + z * I, a.xn2[l].data() + z * C, P(o.w_gate), ones, Nz, C, I, false);
    linear_backward(be_, dxn + z * C, G(o.w_up), nullptr, a.dI2.data() + z * I, a.xn2[l].data() + z * C, P(o.w_up), ones, Nz, C, I, true);
    // xn2 = rmsnorm(x_mid)
    be_->rmsnorm_backward(dtmp + z * C, G(o.ffn_norm), dxn + z * C, a.x_mid[l].data() + z * C, P(o.ffn_norm), a.rstd2[l].data() + z, Nz, C);
    be_->residual_forward(dres + z * C, dres + z * C, dtmp + z * C, (size_t)Nz * C);
    // x_mid = x_in + att @ Wo^T
    linear_backward(be_, a.datt.data() + z * Hq, G(o.wo), nullptr, dres + z * C, a.att[l].data() + z * Hq, P(o.wo), ones, Nz, Hq, C, false);
    if (z) be_->zero(a.datt.data(), z * Hq * sizeof(float));
    // att = attention(q, k, v) (attention_layer_forward)
    attention_layer_backward(l, z > 0);
    // q = rope(q), k = rope(k)
    be_->rope_backward(a.dq.data(), a.dq.data(), a.pos, N, H, Dh, cfg_.rope_theta);
    be_->rope_backward(a.dk.data(), a.dk.data(), a.pos, N, KVH, Dh, cfg_.rope_theta);
    float* dqpre = a.dq.data();
    float* dkpre = a.dk.data();
    if (cfg_.qk_norm) {  // q = rmsnorm_per_head(qpre), k likewise
      be_->rmsnorm_backward(a.datt.data(), G(o.q_norm), a.dq.data(), a.qpre[l].data(), P(o.q_norm), a.rstdq[l].data(), N * H, Dh);
      be_->rmsnorm_backward(a.dk2.data(), G(o.k_norm), a.dk.data(), a.kpre[l].data(), P(o.k_norm), a.rstdk[l].data(), N * KVH, Dh);
      dqpre = a.datt.data();
      dkpre = a.dk2.data();
    }
    // q/k/v = xn1 @ W^T (+ b); the queries of rows [0, z) have zero gradient
    const bool bias = cfg_.qkv_bias;
    linear_backward(be_, dxn + z * C, G(o.wq), bias ? G(o.bq) : nullptr, dqpre + z * Hq, a.xn1[l].data() + z * C, P(o.wq), ones, Nz, C, Hq, false);
    if (z) be_->zero(dxn, z * C * sizeof(float));
    linear_backward(be_, dxn, G(o.wk), bias ? G(o.bk) : nullptr, dkpre, a.xn1[l].data(), P(o.wk), ones, N, C, Hk, true);
    linear_backward(be_, dxn, G(o.wv), bias ? G(o.bv) : nullptr, a.dv.data(), a.xn1[l].data(), P(o.wv), ones, N, C, Hk, true);
    // xn1 = rmsnorm(x_in)
    be_->rmsnorm_backward(dtmp, G(o.attn_norm), dxn, a.x_in[l].data(), P(o.attn_norm), a.rstd1[l].data(), N, C);
    be_->residual_forward(dres, dres, dtmp, (size_t)N * C);
    z = 0;  // the keys' and values' gradient has reached every prefix row
  }
  // x_in[0] = embedding(tokens)
  (void)tokens;  // the forward's staged copy (a.tok) is what the backend reads
  be_->embedding_backward(G(embed_off_), dres, a.tok, N, V, C);
}

// ---- Value head (reward models) ----------------------------------------------------------------

void LlamaModel::value_forward(const int32_t* tokens, int B, int T, const int32_t* last, const float* w,
                               float* r_out, const PrefixBatch* prefix) {
  value_.pending = false;
  forward(tokens, B, T, false, nullptr, nullptr, prefix);
  auto& a = A();
  const int C = cfg_.dim;
  value_.h.resize((size_t)B * C);
  value_.rows.resize(B);
  for (int b = 0; b < B; b++) {
    if (last[b] < 0 || last[b] >= T) throw std::invalid_argument("value_forward: last position out of range");
    value_.rows[b] = a.Npre + (size_t)b * T + (size_t)last[b];
    float* h = value_.h.data() + (size_t)b * C;
    be_->download(h, a.xf.data() + value_.rows[b] * C, (size_t)C * sizeof(float));
    double r = 0;
    for (int c = 0; c < C; c++) r += (double)h[c] * w[c];
    r_out[b] = (float)r;
  }
  value_.B = B;
  value_.T = T;
  value_.pending = true;
}

void LlamaModel::value_backward(const float* dr, int n, const float* w, float* dw_out) {
  if (!value_.pending) throw std::logic_error("value_backward: call value_forward first (nothing ran between them)");
  if (n != value_.B) throw std::invalid_argument("value_backward: dr must have one value per row of value_forward");
  value_.pending = false;
  const int C = cfg_.dim, B = value_.B;
  ValueRows vr;
  vr.rows = value_.rows;
  vr.dxf.resize((size_t)B * C);
  for (int c = 0; c < C; c++) dw_out[c] = 0.f;
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++) {
      vr.dxf[(size_t)b * C + c] = dr[b] * w[c];
      dw_out[c] += dr[b] * value_.h[(size_t)b * C + c];
    }
  backward(nullptr, B, value_.T, &vr);
}

// ---- Train steps ------------------------------------------------------------------------------

TrainStepResult LlamaModel::train_sft(const int32_t* tokens, const int32_t* targets, int B, int T,
                                      const SftParams& p) {
  forward(tokens, B, T, true, nullptr);
  auto& a = A();
  const int N = B * T, V = cfg_.vocab;
  a.ids.resize(N);
  for (int n = 0; n < N; n++) a.ids[n] = targets[n] < 0 ? 0 : targets[n];
  const int32_t* ids = a.st_ids.in(be_, a.ids.data(), (size_t)N);
  be_->token_logprobs_forward(a.lp.data(), a.lse_tok.data(), a.ent.data(), a.logits.data(), ids, N, V);
  a.lp_host.resize(N);
  a.ent_host.resize(N);
  a.dlp_host.resize(N);
  be_->download(a.lp_host.data(), a.lp.data(), (size_t)N * sizeof(float));
  be_->download(a.ent_host.data(), a.ent.data(), (size_t)N * sizeof(float));
  TrainStepResult r;
  const float scale = (float)(-1.0 / p.normalizer);
  double sum = 0, ent = 0;
  for (int n = 0; n < N; n++) {
    bool on = targets[n] >= 0;
    a.dlp_host[n] = on ? scale : 0.f;
    if (on) {
      sum += a.lp_host[n];
      ent += a.ent_host[n];
      r.tokens += 1;
    }
  }
  be_->upload(a.dlp.data(), a.dlp_host.data(), (size_t)N * sizeof(float));
  r.loss = -sum / p.normalizer;
  r.entropy = r.tokens > 0 ? ent / r.tokens : 0;
  be_->token_logprobs_backward(a.logits.data(), a.dlp.data(), nullptr, a.logits.data(), ids,
                               a.lse_tok.data(), nullptr, N, V);
  backward(tokens, B, T);
  return r;
}

TrainStepResult LlamaModel::train_grpo(const int32_t* tokens, const int32_t* targets,
                                       const float* mask, const float* old_logprobs,
                                       const float* ref_logprobs, const float* advantages, int B,
                                       int T, const GrpoParams& p, float loss_scale,
                                       const PrefixBatch* prefix) {
  forward(tokens, B, T, true, nullptr, nullptr, prefix);
  auto& a = A();
  const int N = B * T, V = cfg_.vocab;
  a.ids.resize(N);
  a.mask.resize(N);
  for (int n = 0; n < N; n++) {
    a.ids[n] = targets[n] < 0 ? 0 : targets[n];
    a.mask[n] = targets[n] < 0 ? 0.f : (mask ? mask[n] : 1.f);
  }
  const int32_t* ids = a.st_ids.in(be_, a.ids.data(), (size_t)N);
  const float* mask_dev = a.st_mask.in(be_, a.mask.data(), (size_t)N);
  be_->token_logprobs_forward(a.lp.data(), a.lse_tok.data(), a.ent.data(), a.logits.data(), ids, N, V);
  TrainStepResult r;
  // No old log-probs: the policy's own, detached (num_iterations == 1, ratio exactly 1).
  const float* old = old_logprobs ? a.st_old.in(be_, old_logprobs, (size_t)N) : a.lp.data();
  const float* ref = a.st_ref.in(be_, ref_logprobs, (size_t)N);
  const float* adv = a.st_adv.in(be_, advantages, (size_t)B);
  r.grpo = be_->grpo_loss(a.dlp.data(), a.lp.data(), old, ref, adv, mask_dev, B, T, p);
  if (loss_scale != 1.f) be_->scale_inplace(a.dlp.data(), (size_t)N, loss_scale);
  r.loss = r.grpo.loss * loss_scale;
  a.ent_host.resize(N);
  be_->download(a.ent_host.data(), a.ent.data(), (size_t)N * sizeof(float));
  double ent = 0;
  for (int n = 0; n < N; n++)
    if (a.mask[n] != 0.f) {
      ent += a.ent_host[n];
      r.tokens += 1;
    }
  r.entropy = r.tokens > 0 ? ent / r.tokens : 0;
  be_->token_logprobs_backward(a.logits.data(), a.dlp.data(), nullptr, a.logits.data(), ids,
                               a.lse_tok.data(), nullptr, N, V);
  backward(tokens, B, T);
  return r;
}

int LlamaModel::lanes_for(int n) {
  const int L = std::min(n, kLanes);
  while (lanes_.size() < (size_t)L) lanes_.push_back(std::make_unique<Lane>());
  return L;
}

namespace {
// `items` sorted by cost, largest first (ties keep their order).
std::vector<int> by_cost(const std::vector<double>& cost, const std::vector<int>& items) {
  std::vector<int> order(items);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return cost[a] > cost[b]; });
  return order;
}
// items split into `parts` groups, largest first, each to the least loaded group (lowest index on ties).
std::vector<std::vector<int>> greedy_split(const std::vector<double>& cost, const std::vector<int>& items, int parts) {
  std::vector<std::vector<int>> out(parts);
  std::vector<double> load(parts, 0.0);
  for (int i : by_cost(cost, items)) {
    int best = 0;
    for (int p = 1; p < parts; p++)
      if (load[p] < load[best]) best = p;
    out[best].push_back(i);
    load[best] += cost[i];
  }
  for (auto& g : out) std::sort(g.begin(), g.end());  // a lane runs its tasks in index order
  return out;
}
}  // namespace

std::vector<std::vector<int>> LlamaModel::deal_lanes(const std::vector<double>& cost, int n_lanes) {
  const int n = (int)cost.size();
  std::vector<int> all(n);
  for (int i = 0; i < n; i++) all[i] = i;
  if (n_lanes < 4) return greedy_split(cost, all, n_lanes);
  std::vector<std::vector<int>> lanes;
  for (auto& half : greedy_split(cost, all, 2))
    for (auto& lane : greedy_split(cost, half, n_lanes / 2)) lanes.push_back(std::move(lane));
  return lanes;
}

std::vector<std::vector<int>> LlamaModel::plan_slots(const std::vector<double>& lane_cost, int threads) {
  const int L = (int)lane_cost.size();
  std::vector<int> all(L);
  for (int j = 0; j < L; j++) all[j] = j;
  if (threads >= L) {
    std::vector<std::vector<int>> one;
    for (int j : by_cost(lane_cost, all)) one.push_back({j});  // the longest lane starts first
    return one;
  }
  if (threads == 2 && L == 4) return {{0, 1}, {2, 3}};  // deal_lanes' halves
  return greedy_split(lane_cost, all, std::max(1, threads));
}

void LlamaModel::in_lanes(int n, const std::function<void(int)>& fn, const std::vector<double>& cost) {
  const int L = lanes_for(n);
  const std::vector<double> c = cost.empty() ? std::vector<double>(n, 1.0) : cost;
  const std::vector<std::vector<int>> lanes = deal_lanes(c, L);
  auto lane_work = [&](int j) {
    LaneScope scope(this, lanes_[j].get());
    for (int t : lanes[j]) fn(t);
  };
  if (L == 1) {
    lane_work(0);  // alone: its ops use every thread
    return;
  }
  std::vector<double> lane_cost(L, 0.0);
  for (int j = 0; j < L; j++)
    for (int t : lanes[j]) lane_cost[j] += c[t];
  const std::vector<std::vector<int>> slots = plan_slots(lane_cost, num_threads());
  parallel_for((int)slots.size(), [&](int s) {
    for (int j : slots[s]) lane_work(j);
  });
}

std::vector<TrainStepResult> LlamaModel::train_grpo_many(const std::vector<GrpoMicroBatch>& mbs) {
  std::vector<TrainStepResult> out(mbs.size());
  auto run = [&](int i) {
    const GrpoMicroBatch& m = mbs[i];
    out[i] = train_grpo(m.tokens, m.targets, m.mask, m.old_logprobs, m.ref_logprobs, m.advantages,
                        m.B, m.T, m.params, m.loss_scale, m.prefix);
  };
  if (!be_->concurrent_pieces) {  // one device queue: nothing to gain from lanes
    for (size_t i = 0; i < mbs.size(); i++) run((int)i);
    return out;
  }
  ensure_grads();
  ensure_decode_weights();  // before the lanes (their forwards only read it)
  // Each lane accumulates its micro-batches into its own gradient; the lanes' sums are then added
  // in lane order: the same sum for any thread count. Lanes are dealt by the micro-batches' token
  // counts (deal_lanes), so that the threads finish together.
  const int L = lanes_for((int)mbs.size());
  for (int j = 0; j < L; j++) {
    Lane& lane = *lanes_[j];
    if (lane.grads.size() != total_) {
      lane.grads.resize(be_, total_);
      lane.grads_zero = false;
    }
    if (!lane.grads_zero) lane.grads.zero();
    lane.grads_zero = false;  // until the sum below has cleared it (not if a micro-batch throws)
  }
  // A micro-batch's cost: the tokens it computes (rows x padded length, plus its prefixes).
  std::vector<double> cost(mbs.size());
  for (size_t i = 0; i < mbs.size(); i++)
    cost[i] = (double)mbs[i].B * mbs[i].T + (mbs[i].prefix ? (double)mbs[i].prefix->Bp * mbs[i].prefix->Tp : 0.0);
  in_lanes((int)mbs.size(), run, cost);
  // grads += lane 0 + lane 1 + ... (added in lane order, element by element), and each lane's
  // gradient cleared for the next call in the same pass.
  float* lg[kLanes];
  for (int j = 0; j < L; j++) lg[j] = lanes_[j]->grads.data();
  float* g = grads_.data();
  parallel_chunks(total_, 1 << 14, [&](size_t i0, size_t i1) {
    for (int j = 0; j < L; j++) {
      float* l = lg[j];
      for (size_t i = i0; i < i1; i++) g[i] += l[i];
      std::memset(l + i0, 0, (i1 - i0) * sizeof(float));
    }
  });
  for (int j = 0; j < L; j++) lanes_[j]->grads_zero = true;
  return out;
}

double LlamaModel::optimizer_step(const OptimizerParams& p) {
  params_version_++;
  drop_prompt_store();  // stale now
  ensure_grads();
  if (m_.size() != total_) {
    m_.resize(be_, total_);
    v_.resize(be_, total_);
    m_.zero();
    v_.zero();
  }
  double norm = std::sqrt(be_->sum_squares(grads_.data(), total_));
  if (p.max_grad_norm > 0 && norm > p.max_grad_norm)
    be_->scale_inplace(grads_.data(), total_, (float)(p.max_grad_norm / (norm + 1e-6)));
  step_++;
  for (auto& t : tensors_) {
    // No weight decay on norms and biases (1-D tensors), as is usual for transformers.
    double wd = t.shape.size() == 1 ? 0.0 : p.weight_decay;
    be_->adamw_update(params_.data() + t.offset, grads_.data() + t.offset, m_.data() + t.offset,
                      v_.data() + t.offset, t.size, p.lr, p.beta1, p.beta2, p.eps, wd, step_);
  }
  grads_.zero();
  return norm;
}

void LlamaModel::get_optimizer_state(float* m, float* v) {
  if (m_.size() != total_) {
    std::memset(m, 0, total_ * sizeof(float));
    std::memset(v, 0, total_ * sizeof(float));
    return;
  }
  be_->download(m, m_.data(), total_ * sizeof(float));
  be_->download(v, v_.data(), total_ * sizeof(float));
}

void LlamaModel::set_optimizer_state(const float* m, const float* v) {
  m_.resize(be_, total_);
  v_.resize(be_, total_);
  be_->upload(m_.data(), m, total_ * sizeof(float));
  be_->upload(v_.data(), v, total_ * sizeof(float));
}

// ---- Generation ---------------------------------------------------------------------------------

std::unique_ptr<LlamaModel::Context> LlamaModel::create_context(int max_batch, int max_seq) {
  auto ctx = std::make_unique<Context>();
  ctx->max_batch = max_batch;
  ctx->max_seq = max_seq;
  const size_t Hk = (size_t)cfg_.n_kv_heads * cfg_.head_dim, Hq = (size_t)cfg_.n_heads * cfg_.head_dim;
  ctx->kcache.resize(cfg_.n_layers);
  ctx->vcache.resize(cfg_.n_layers);
  for (int l = 0; l < cfg_.n_layers; l++) {
    ctx->kcache[l].resize(be_, (size_t)max_batch * max_seq * Hk);
    ctx->vcache[l].resize(be_, (size_t)max_batch * max_seq * Hk);
  }
  ctx->row_of_slot.assign(max_batch, -1);
  ctx->lengths.assign(max_batch, 0);
  ctx->last_token.assign(max_batch, 0);
  ctx->logits.resize(be_, (size_t)max_batch * cfg_.vocab);
  const size_t Bm = max_batch, C = cfg_.dim, I = cfg_.hidden;
  ctx->x.resize(be_, Bm * C);
  ctx->xn.resize(be_, Bm * C);
  ctx->q.resize(be_, Bm * Hq);
  ctx->k.resize(be_, Bm * Hk);
  ctx->v.resize(be_, Bm * Hk);
  ctx->att.resize(be_, Bm * Hq);
  ctx->tmp.resize(be_, Bm * std::max(C, Hq));
  ctx->g.resize(be_, Bm * I);
  ctx->u.resize(be_, Bm * I);
  ctx->h.resize(be_, Bm * I);
  ctx->ones.resize(be_, Bm);
  const std::vector<float> one(Bm, 1.f);
  be_->upload(ctx->ones.data(), one.data(), Bm * sizeof(float));
  ctx->positions.resize(max_batch);
  ctx->slot_lengths_plus1.resize(max_batch);
  return ctx;
}

void LlamaModel::prefill(Context& ctx, const int32_t* prompt_tokens, const int64_t* offsets, int B) {
  // Unique prompts: source[b] is the first row with the same tokens as row b.
  std::vector<int> source(B), uniq;
  std::map<std::vector<int32_t>, int> seen;
  for (int b = 0; b < B; b++) {
    std::vector<int32_t> key(prompt_tokens + offsets[b], prompt_tokens + offsets[b + 1]);
    auto it = seen.emplace(std::move(key), b).first;
    source[b] = it->second;
    if (it->second == b) uniq.push_back(b);
  }
  const int U = (int)uniq.size();
  std::vector<int> index_of(B, -1);
  for (int i = 0; i < U; i++) index_of[uniq[i]] = i;
  const int C = cfg_.dim, V = cfg_.vocab;
  const size_t Hk = (size_t)cfg_.n_kv_heads * cfg_.head_dim;
  // On the CPU the prompt store (see prefill in llama.h) takes each part's activations: entries
  // are made here, before the parts run concurrently, and each part fills in its own.
  const int parts = be_->concurrent_pieces ? (U + kPrefillPromptsPerPart - 1) / kPrefillPromptsPerPart : 1;
  // The store's size: every part's rows (its prompts padded to its longest).
  size_t new_rows = 0;
  for (int j = 0; j < parts; j++) {
    const int i0 = j * kPrefillPromptsPerPart, i1 = std::min(U, i0 + kPrefillPromptsPerPart);
    int64_t T = 0;
    for (int i = i0; i < i1; i++) T = std::max<int64_t>(T, offsets[uniq[i] + 1] - offsets[uniq[i]]);
    new_rows += (size_t)(i1 - i0) * (size_t)T;
  }
  if (prompts_ && prompts_->version != params_version_) drop_prompt_store();
  const bool keep = ctx.keep_prompts && be_->concurrent_pieces && U > 0 &&
                    ((prompts_ ? prompts_->rows : 0) + new_rows) * activation_floats_per_token() * sizeof(float) <=
                        prompt_store_max_bytes_;
  std::vector<PromptStore::Entry*> entry_of(U, nullptr);
  // Each part then runs in activations of its own (a spare set of an earlier store, sized for a
  // prefill part already, or a new one), which go to the store; the lanes keep theirs.
  std::vector<std::unique_ptr<Activations>> part_acts(keep ? parts : 0);
  size_t part_base = 0;
  if (keep) {
    for (auto& r : part_acts) {
      if (spare_acts_.empty()) {
        r = std::make_unique<Activations>();
      } else {
        r = std::move(spare_acts_.back());
        spare_acts_.pop_back();
      }
    }
    if (!prompts_) {
      prompts_ = std::make_unique<PromptStore>();
      prompts_->version = params_version_;
    }
    part_base = prompts_->parts.size();
    prompts_->parts.resize(part_base + parts);
    for (int i = 0; i < U; i++) {
      const int b = uniq[i];
      auto ins = prompts_->entries.emplace(std::vector<int32_t>(prompt_tokens + offsets[b], prompt_tokens + offsets[b + 1]),
                                           PromptStore::Entry{nullptr, 0, 0});
      if (ins.second) entry_of[i] = &ins.first->second;  // a prompt already stored keeps its entry
    }
    prompts_->rows += new_rows;
  }
  // Unique prompts [i0, i1): forward into their cache slots, then the logits of each one's last
  // token into ctx.tmp rows [i0, i1) (hidden state) and the context's logits of every row that
  // shares it.
  auto prefill_part = [&](int i0, int i1) {
    const int n = i1 - i0;
    // With keep: this thread's activations are the part's until the end of the part (also when
    // it throws), then the store takes them.
    struct Swapped {
      std::unique_ptr<Activations>& owner;
      std::unique_ptr<Activations>& other;
      bool on;
      ~Swapped() {
        if (on) std::swap(owner, other);
      }
    } swapped{acts_owner(), keep ? part_acts[i0 / kPrefillPromptsPerPart] : acts_owner(), keep};
    if (keep) std::swap(swapped.owner, swapped.other);
    int T = 0;
    for (int i = i0; i < i1; i++) T = std::max<int>(T, (int)(offsets[uniq[i] + 1] - offsets[uniq[i]]));
    std::vector<int32_t> padded((size_t)n * T, 0);
    std::vector<int> slots(n), lens(n);
    for (int i = 0; i < n; i++) {
      const int b = uniq[i0 + i];
      std::copy(prompt_tokens + offsets[b], prompt_tokens + offsets[b + 1], padded.begin() + (size_t)i * T);
      slots[i] = ctx.active + b;
      lens[i] = (int)(offsets[b + 1] - offsets[b]);
    }
    // The top layer's outputs for each prompt's last token only (its logits are all we need).
    forward(padded.data(), n, T, false, &ctx, slots.data(), nullptr, lens.data());
    auto& a = A();
    std::vector<int64_t> offs(3 * (size_t)n);
    for (int i = 0; i < n; i++) {
      offs[i] = (int64_t)(i0 + i) * C;
      offs[n + i] = (int64_t)i * C;
      offs[2 * n + i] = C;
    }
    copy_rows_staged(be_, a.st_build, ctx.tmp.data(), a.c_xf.data(), offs);
    // Logits into the activations' logits buffer (free here), then to the rows' context logits.
    linear_fwd(transposed_ready(), a.logits.data(), ctx.tmp.data() + (size_t)i0 * C, lm_head_off_, nullptr, a.ones.data(), n, C, V);
    std::vector<int> rows;  // the rows whose prompt is in this part
    for (int b = 0; b < B; b++)
      if (index_of[source[b]] >= i0 && index_of[source[b]] < i1) rows.push_back(b);
    const size_t R = rows.size();
    offs.assign(3 * R, V);
    for (size_t r = 0; r < R; r++) {
      offs[r] = (int64_t)(ctx.active + rows[r]) * V;
      offs[R + r] = (int64_t)(index_of[source[rows[r]]] - i0) * V;
    }
    copy_rows_staged(be_, a.st_own, ctx.logits.data(), a.logits.data(), offs);
    if (keep) {  // the part's activations to the store, the thread's own back
      std::unique_ptr<Activations>& part = swapped.other;
      std::swap(swapped.owner, part);
      swapped.on = false;
      for (int i = 0; i < n; i++)
        if (PromptStore::Entry* e = entry_of[i0 + i])
          *e = {part.get(), i, (int)(offsets[uniq[i0 + i] + 1] - offsets[uniq[i0 + i]])};
      prompts_->parts[part_base + i0 / kPrefillPromptsPerPart] = std::move(part);
    }
  };
  // On the CPU, the prompts go in parts of kPrefillPromptsPerPart that run concurrently, each
  // single-threaded in its own activations (a lane): a few prompts' ops are too small for op-level
  // threading. The parts do not depend on the thread count, so neither do the results.
  ensure_decode_weights();  // before the lanes (their forwards only read it)
  if (parts <= 1)
    prefill_part(0, U);
  else
    in_lanes(parts, [&](int j) {
      prefill_part(j * kPrefillPromptsPerPart, std::min(U, (j + 1) * kPrefillPromptsPerPart));
    });
  std::vector<int64_t> kv;  // cache rows copied from the row that computed a shared prompt
  std::vector<int> kv_rows;
  for (int b = 0; b < B; b++) {
    const int slot = ctx.active + b, src = source[b];
    const int len = (int)(offsets[b + 1] - offsets[b]);
    if (src != b) kv_rows.push_back(b);
    ctx.lengths[slot] = len;
    ctx.row_of_slot[slot] = ctx.rows() - B + b;
  }
  ctx.group_of_row.resize(ctx.rows(), -1);
  ctx.shared_of_row.resize(ctx.rows(), 0);
  for (int b = 0; b < B; b++) {
    const int row = ctx.rows() - B + b;
    ctx.group_of_row[row] = ctx.next_group + index_of[source[b]];
    ctx.shared_of_row[row] = (int32_t)(offsets[b + 1] - offsets[b]);
  }
  ctx.next_group += U;
  if (!kv_rows.empty()) {
    const size_t R = kv_rows.size();
    kv.resize(3 * R);
    for (size_t i = 0; i < R; i++) {
      const int b = kv_rows[i];
      kv[i] = (int64_t)(ctx.active + b) * ctx.max_seq * Hk;
      kv[R + i] = (int64_t)(ctx.active + source[b]) * ctx.max_seq * Hk;
      kv[2 * R + i] = (offsets[b + 1] - offsets[b]) * (int64_t)Hk;
    }
    for (int l = 0; l < cfg_.n_layers; l++) {
      copy_rows_staged(be_, st_rows_, ctx.kcache[l].data(), ctx.kcache[l].data(), kv);
      copy_rows_staged(be_, st_rows_, ctx.vcache[l].data(), ctx.vcache[l].data(), kv);
    }
  }
  ctx.active += B;
}

int LlamaModel::Context::add_row(uint64_t seed, int max_new_tokens) {
  seeds.push_back(seed);
  generated.push_back(0);
  max_new.push_back(max_new_tokens);
  out_tokens.emplace_back();
  out_logprobs.emplace_back();
  finished.push_back(0);
  reported.push_back(0);
  return rows() - 1;
}

void LlamaModel::Context::finish_slots(const std::vector<uint8_t>& done, const Backend* be, int n_layers,
                                       size_t row_floats, int vocab) {
  // Slot by slot from the last: a finished slot takes the last active slot's row (cache rows
  // included). Played on indices first (src[s]: the slot whose row ends in s), then the cache
  // rows move in one batch: every destination is a finished slot below the new active count and
  // every source an active slot at or above it, so the copies never overlap.
  const int B = active;
  std::vector<int> src(B);
  for (int s = 0; s < B; s++) src[s] = s;
  int act = B;
  for (int s = B - 1; s >= 0; s--) {
    if (!done[s]) continue;
    finished[row_of_slot[s]] = 1;
    if (s != act - 1) src[s] = src[act - 1];
    act--;
  }
  std::vector<int64_t> offs;
  std::vector<int> moved;
  for (int s = 0; s < act; s++)
    if (src[s] != s) moved.push_back(s);
  const size_t M = moved.size();
  if (M) {
    offs.resize(3 * M);
    for (size_t i = 0; i < M; i++) {
      const int d = moved[i], from = src[d];
      offs[i] = (int64_t)d * max_seq * (int64_t)row_floats;
      offs[M + i] = (int64_t)from * max_seq * (int64_t)row_floats;
      offs[2 * M + i] = (int64_t)lengths[from] * (int64_t)row_floats;
    }
    for (int l = 0; l < n_layers; l++) {
      copy_rows_staged(be, st_rows, kcache[l].data(), kcache[l].data(), offs);
      copy_rows_staged(be, st_rows, vcache[l].data(), vcache[l].data(), offs);
    }
    // The moved rows' next-token logits too: between decode calls (a row stopped from the caller's
    // side, finishRow) they are what the next call samples from.
    for (size_t i = 0; i < M; i++) {
      offs[i] = (int64_t)moved[i] * vocab;
      offs[M + i] = (int64_t)src[moved[i]] * vocab;
      offs[2 * M + i] = vocab;
    }
    copy_rows_staged(be, st_rows, logits.data(), logits.data(), offs);
    for (int d : moved) {  // sources are above act: not yet overwritten
      row_of_slot[d] = row_of_slot[src[d]];
      lengths[d] = lengths[src[d]];
      last_token[d] = last_token[src[d]];
    }
  }
  for (int s = act; s < B; s++) row_of_slot[s] = -1;
  active = act;
}

bool LlamaModel::ensure_decode_weights() {
  if (!be_->transposed_decode_weights || total_ > kDecodeWtMaxParams) return false;
  if (decode_wt_version_ == params_version_) return true;
  decode_wt_.resize(be_, total_);
  // Every matrix (out, in) of the model: the linear weights, the embedding (the tied lm_head).
  std::vector<const TensorInfo*> mats;
  for (const TensorInfo& t : tensors_)
    if (t.shape.size() == 2) mats.push_back(&t);
  const float* src = params_.data();
  float* dst = decode_wt_.data();
  parallel_for((int)mats.size(), [&](int i) {
    const size_t off = mats[i]->offset;
    const int rows = (int)mats[i]->shape[0], cols = (int)mats[i]->shape[1];
    for (int r0 = 0; r0 < rows; r0 += 32)
      for (int c0 = 0; c0 < cols; c0 += 32)
        for (int r = r0; r < std::min(rows, r0 + 32); r++)
          for (int c = c0; c < std::min(cols, c0 + 32); c++)
            dst[off + (size_t)c * rows + r] = src[off + (size_t)r * cols + c];
  });
  decode_wt_version_ = params_version_;
  return true;
}

bool LlamaModel::transposed_ready() const {
  return be_->transposed_decode_weights && decode_wt_version_ == params_version_ && decode_wt_.size() == total_;
}

void LlamaModel::linear_fwd(bool transposed, float* out, const float* in, size_t w, const float* bias,
                               const float* ones, int n, int in_dim, int out_dim) {
  if (!transposed) {
    linear_forward(be_, out, in, P(w), bias, ones, n, in_dim, out_dim);
    return;
  }
  // The packed path's products in the same order as linear_forward's (same bits for n > 16; below
  // that, linear_forward takes the dot kernel, this the register tile: last bits differ).
  be_->sgemm(false, false, n, out_dim, in_dim, 1.f, in, in_dim, decode_wt_.data() + w, out_dim, 0.f, out, out_dim);
  if (bias) be_->sgemm(false, false, n, out_dim, 1, 1.f, ones, 1, bias, out_dim, 1.f, out, out_dim);
}

// One decode step of the active slots [s0, s0 + n): their tokens last_token[s] at positions[s],
// keys / values appended to the cache, next-token logits into ctx.logits. Reads only these slots'
// rows of the context's buffers (a shard of the step; see decode).
void LlamaModel::decode_rows(Context& ctx, int s0, int A, bool wt) {
  const int C = cfg_.dim, V = cfg_.vocab, I = cfg_.hidden, H = cfg_.n_heads, KVH = cfg_.n_kv_heads,
            Dh = cfg_.head_dim, Hq = H * Dh, Hk = KVH * Dh;
  const float eps = cfg_.norm_eps;
  const size_t W = std::max(C, Hq);  // ctx.tmp's row stride
  const float* ones = ctx.ones.data();
  float *x = ctx.x.data() + (size_t)s0 * C, *xn = ctx.xn.data() + (size_t)s0 * C,
        *q = ctx.q.data() + (size_t)s0 * Hq, *k = ctx.k.data() + (size_t)s0 * Hk,
        *v = ctx.v.data() + (size_t)s0 * Hk, *att = ctx.att.data() + (size_t)s0 * Hq,
        *tmp = ctx.tmp.data() + s0 * W, *g = ctx.g.data() + (size_t)s0 * I,
        *u = ctx.u.data() + (size_t)s0 * I, *h = ctx.h.data() + (size_t)s0 * I,
        *logits = ctx.logits.data() + (size_t)s0 * V;
  const size_t cache_off = (size_t)s0 * ctx.max_seq * Hk;
  // Host-side scratch of this shard (thread_local: shards run concurrently).
  thread_local std::vector<int64_t> append;
  thread_local std::vector<int32_t> members, group_start, group_len;
  append.resize(3 * (size_t)A);
  for (int s = 0; s < A; s++) {
    append[s] = ((int64_t)s * ctx.max_seq + ctx.lengths[s0 + s]) * Hk;
    append[A + s] = (int64_t)s * Hk;
    append[2 * A + s] = Hk;
  }
  // The slots grouped by shared prompt (slots of one group in slot order): a hint only the CPU
  // kernel uses, so a device backend is not sent it.
  const bool grouped = be_->host_memory;
  group_start.clear();
  group_len.clear();
  if (grouped) {
    members.resize(A);
    for (int s = 0; s < A; s++) members[s] = s;
    auto group = [&](int s) { return ctx.group_of_row[ctx.row_of_slot[s0 + s]]; };
    std::stable_sort(members.begin(), members.end(), [&](int a, int b) { return group(a) < group(b); });
    for (int i = 0; i < A; i++)
      if (i == 0 || group(members[i]) != group(members[i - 1])) {
        group_start.push_back(i);
        group_len.push_back(ctx.shared_of_row[ctx.row_of_slot[s0 + members[i]]]);
      }
  }
  const int n_groups = grouped ? (int)group_start.size() : 0;
  group_start.push_back(A);
  // Staged copies only exist for device backends, which always take one shard.
  const int32_t* mem = grouped ? ctx.st_members.in(be_, members.data(), A) : nullptr;
  const int32_t* gstart = grouped ? ctx.st_gstart.in(be_, group_start.data(), n_groups + 1) : nullptr;
  const int32_t* glen = grouped ? ctx.st_glen.in(be_, group_len.data(), n_groups) : nullptr;
  const int32_t* pos = ctx.st_pos.in(be_, ctx.positions.data() + s0, A);
  const int32_t* lens = ctx.st_len.in(be_, ctx.slot_lengths_plus1.data() + s0, A);
  const int64_t* app = ctx.st_rows.in(be_, append.data(), append.size());
  be_->embedding_forward(x, ctx.st_last.in(be_, ctx.last_token.data() + s0, A), P(embed_off_), A, V, C);
  for (int l = 0; l < cfg_.n_layers; l++) {
    const LayerOffsets& o = layers_[l];
    float *kc = ctx.kcache[l].data() + cache_off, *vc = ctx.vcache[l].data() + cache_off;
    be_->rmsnorm_forward(xn, nullptr, x, P(o.attn_norm), A, C, eps);
    const bool bias = cfg_.qkv_bias;
    linear_fwd(wt, q, xn, o.wq, bias ? P(o.bq) : nullptr, ones, A, C, Hq);
    linear_fwd(wt, k, xn, o.wk, bias ? P(o.bk) : nullptr, ones, A, C, Hk);
    linear_fwd(wt, v, xn, o.wv, bias ? P(o.bv) : nullptr, ones, A, C, Hk);
    if (cfg_.qk_norm) {  // per-head norms, through scratch (rmsnorm does not promise aliasing)
      be_->rmsnorm_forward(att, nullptr, q, P(o.q_norm), A * H, Dh, eps);
      be_->rmsnorm_forward(tmp, nullptr, k, P(o.k_norm), A * KVH, Dh, eps);
      be_->copy(q, att, (size_t)A * Hq * sizeof(float));
      be_->copy(k, tmp, (size_t)A * Hk * sizeof(float));
    }
    be_->rope_forward(q, q, pos, A, H, Dh, cfg_.rope_theta);
    be_->rope_forward(k, k, pos, A, KVH, Dh, cfg_.rope_theta);
    be_->copy_rows(kc, k, app, app + A, app + 2 * A, A);
    be_->copy_rows(vc, v, app, app + A, app + 2 * A, A);
    be_->attention_decode_shared(att, q, kc, vc, lens, A, H, KVH, ctx.max_seq, Dh, mem, gstart, glen, n_groups);
    linear_fwd(wt, tmp, att, o.wo, nullptr, ones, A, Hq, C);
    be_->residual_forward(x, x, tmp, (size_t)A * C);
    be_->rmsnorm_forward(xn, nullptr, x, P(o.ffn_norm), A, C, eps);
    linear_fwd(wt, g, xn, o.w_gate, nullptr, ones, A, C, I);
    linear_fwd(wt, u, xn, o.w_up, nullptr, ones, A, C, I);
    be_->swiglu_forward(h, g, u, A, I);
    linear_fwd(wt, tmp, h, o.w_down, nullptr, ones, A, I, C);
    be_->residual_forward(x, x, tmp, (size_t)A * C);
  }
  be_->rmsnorm_forward(xn, nullptr, x, P(norm_off_), A, C, eps);
  linear_fwd(wt, logits, xn, lm_head_off_, nullptr, ones, A, C, V);
}

int LlamaModel::decode(Context& ctx, int n_steps) {
  const int V = cfg_.vocab, Hk = cfg_.n_kv_heads * cfg_.head_dim;
  std::vector<int32_t> ids;
  std::vector<float> lps;
  std::vector<uint64_t> seeds, counters;
  for (int step = 0; step < n_steps && ctx.active > 0; step++) {
    const int B = ctx.active;
    ids.resize(B);
    lps.resize(B);
    seeds.resize(B);
    counters.resize(B);
    for (int s = 0; s < B; s++) {
      int row = ctx.row_of_slot[s];
      seeds[s] = ctx.seeds[row];
      counters[s] = (uint64_t)ctx.generated[row];
    }
    int32_t* ids_dev = ctx.st_ids.out(be_, ids.data(), B);
    float* lps_dev = ctx.st_lps.out(be_, lps.data(), B);
    be_->sample_tokens(ids_dev, lps_dev, ctx.logits.data(), B, V, ctx.sampling,
                       ctx.st_seeds.in(be_, seeds.data(), B), ctx.st_counters.in(be_, counters.data(), B));
    ctx.st_ids.fetch(be_, ids.data(), B);
    ctx.st_lps.fetch(be_, lps.data(), B);
    std::vector<uint8_t> done(B, 0);
    for (int s = 0; s < B; s++) {
      int row = ctx.row_of_slot[s];
      ctx.out_tokens[row].push_back(ids[s]);
      ctx.out_logprobs[row].push_back(lps[s]);
      ctx.generated[row]++;
      ctx.last_token[s] = ids[s];
      bool stop = std::find(ctx.stop_ids.begin(), ctx.stop_ids.end(), ids[s]) != ctx.stop_ids.end();
      done[s] = stop || ctx.generated[row] >= ctx.max_new[row] || ctx.lengths[s] >= ctx.max_seq;
    }
    ctx.finish_slots(done, be_, cfg_.n_layers, (size_t)Hk, V);
    const int A = ctx.active;
    if (A == 0) break;
    // One decode step for the A rows still active: token last_token[s] at position lengths[s].
    for (int s = 0; s < A; s++) {
      ctx.positions[s] = ctx.lengths[s];
      ctx.slot_lengths_plus1[s] = ctx.lengths[s] + 1;
    }
    // On the CPU, the rows are split into shards of about kDecodeRowsPerShard consecutive slots
    // that run concurrently, each single-threaded: a decode step's ops are too small to split op by
    // op (2 threads gave ~1.2x). The shards depend on the row count only (matrix shapes change a
    // row's last bits), so the results do not depend on the thread count.
    const int S = be_->concurrent_pieces ? (A + kDecodeRowsPerShard - 1) / kDecodeRowsPerShard : 1;
    const bool wt = ensure_decode_weights();
    if (S == 1) {
      decode_rows(ctx, 0, A, wt);
    } else {
      parallel_for(S, [&](int j) {
        const int s0 = (int)((int64_t)A * j / S), s1 = (int)((int64_t)A * (j + 1) / S);
        decode_rows(ctx, s0, s1 - s0, wt);
      });
    }
    for (int s = 0; s < A; s++) ctx.lengths[s]++;
  }
  return ctx.active;
}

}  // namespace wst
