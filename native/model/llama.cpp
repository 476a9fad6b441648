// The Llama graph (llm.c style: per layer, a forward that saves what the backward needs, and the
// backward that inverts it), the loss heads (LM log-probs, the reward models' value head), the
// train steps and the optimizer. Generation (KV caches, prefill, decode) is in generation.cpp, the
// CPU lanes of train_grpo_many in lanes.cpp, the prompt store in prompt_store.cpp.
#include "llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "llama_internal.h"

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
  const bool wt = in_lane_of(this) ? transposed_ready() : ensure_decode_weights();
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
    linear_bwd(dxn + Npre * C, lm_head_off_, nullptr, a.logits.data(), a.xf.data() + Npre * C, ones, Nrow, C, V, false);
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
    linear_bwd(a.dI3.data() + z * I, o.w_down, nullptr, dres + z * C, a.h[l].data() + z * I, ones, Nz, I, C, false);
    // h = silu(g) * u
    be_->swiglu_backward(a.dI1.data() + z * I, a.dI2.data() + z * I, a.dI3.data() + z * I, a.g[l].data() + z * I, a.u[l].data() + z * I, Nz, I);
    // g = xn2 @ Wgate^T, u = xn2 @ Wup^T
    linear_bwd(dxn + z * C, o.w_gate, nullptr, a.dI1.data() + z * I, a.xn2[l].data() + z * C, ones, Nz, C, I, false);
    linear_bwd(dxn + z * C, o.w_up, nullptr, a.dI2.data() + z * I, a.xn2[l].data() + z * C, ones, Nz, C, I, true);
    // xn2 = rmsnorm(x_mid)
    be_->rmsnorm_backward(dtmp + z * C, G(o.ffn_norm), dxn + z * C, a.x_mid[l].data() + z * C, P(o.ffn_norm), a.rstd2[l].data() + z, Nz, C);
    be_->residual_forward(dres + z * C, dres + z * C, dtmp + z * C, (size_t)Nz * C);
    // x_mid = x_in + att @ Wo^T
    linear_bwd(a.datt.data() + z * Hq, o.wo, nullptr, dres + z * C, a.att[l].data() + z * Hq, ones, Nz, Hq, C, false);
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
    linear_bwd(dxn + z * C, o.wq, bias ? G(o.bq) : nullptr, dqpre + z * Hq, a.xn1[l].data() + z * C, ones, Nz, C, Hq, false);
    if (z) be_->zero(dxn, z * C * sizeof(float));
    linear_bwd(dxn, o.wk, bias ? G(o.bk) : nullptr, dkpre, a.xn1[l].data(), ones, N, C, Hk, true);
    linear_bwd(dxn, o.wv, bias ? G(o.bv) : nullptr, a.dv.data(), a.xn1[l].data(), ones, N, C, Hk, true);
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

}  // namespace wst
