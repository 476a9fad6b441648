// Generation: contexts (KV caches and row slots), prefill (the prompts' forward filling the
// caches, in parts on the CPU), decode (one token per active row per step, in shards on the CPU;
// transposed weights for the batch-1 GEMVs where the backend wants them) and the rows' lifecycle.
#include "llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "../cpu/threadpool.h"
#include "llama_internal.h"

namespace wst {

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
  if (cfg_.bf16) {  // the bf16 GEMMs read the bf16 copy instead
    ensure_bf16_weights();
    return false;
  }
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
  return !cfg_.bf16 && be_->transposed_decode_weights && decode_wt_version_ == params_version_ && decode_wt_.size() == total_;
}

void LlamaModel::linear_fwd(bool transposed, float* out, const float* in, size_t w, const float* bias,
                               const float* ones, int n, int in_dim, int out_dim) {
  if (cfg_.bf16) {
    be_->gemm_bf16(false, true, n, out_dim, in_dim, 1.f, to_bf16(0, in, (size_t)n * in_dim), in_dim, W16(w), in_dim,
                   0.f, out, out_dim);
    if (bias) be_->sgemm(false, false, n, out_dim, 1, 1.f, ones, 1, bias, out_dim, 1.f, out, out_dim);
    return;
  }
  if (!transposed) {
    linear_forward(be_, out, in, P(w), bias, ones, n, in_dim, out_dim);
    return;
  }
  // The packed path's products in the same order as linear_forward's (same bits for n > 16; below
  // that, linear_forward takes the dot kernel, this the register tile: last bits differ).
  be_->sgemm(false, false, n, out_dim, in_dim, 1.f, in, in_dim, decode_wt_.data() + w, out_dim, 0.f, out, out_dim);
  if (bias) be_->sgemm(false, false, n, out_dim, 1, 1.f, ones, 1, bias, out_dim, 1.f, out, out_dim);
}

void LlamaModel::linear_bwd(float* din, size_t w, float* dbias, const float* dout, const float* in,
                            const float* ones, int n, int in_dim, int out_dim, bool accumulate_din) {
  if (!cfg_.bf16) {
    linear_backward(be_, din, G(w), dbias, dout, in, P(w), ones, n, in_dim, out_dim, accumulate_din);
    return;
  }
  const uint16_t* d16 = to_bf16(0, dout, (size_t)n * out_dim);
  const uint16_t* x16 = to_bf16(1, in, (size_t)n * in_dim);
  if (din)
    be_->gemm_bf16(false, false, n, in_dim, out_dim, 1.f, d16, out_dim, W16(w), in_dim, accumulate_din ? 1.f : 0.f,
                   din, in_dim);
  be_->gemm_bf16(true, false, out_dim, in_dim, n, 1.f, d16, out_dim, x16, in_dim, 1.f, G(w), in_dim);
  if (dbias) be_->sgemm(true, false, 1, out_dim, n, 1.f, ones, 1, dout, out_dim, 1.f, dbias, out_dim);
}

void LlamaModel::ensure_bf16_weights() {
  if (w16_version_ == params_version_ && w16_.size() == (total_ + 1) / 2) return;
  w16_.resize(be_, (total_ + 1) / 2);
  be_->cast_bf16(reinterpret_cast<uint16_t*>(w16_.data()), params_.data(), total_);
  w16_version_ = params_version_;
}

const uint16_t* LlamaModel::to_bf16(int slot, const float* x, size_t n) {
  uint16_t* dst;
  if (be_->concurrent_pieces) {  // host memory, lanes and shards at once: scratch per thread
    thread_local std::vector<uint16_t> scratch[2];
    scratch[slot].resize(n);
    dst = scratch[slot].data();
  } else {
    cast16_[slot].resize(be_, (n + 1) / 2);
    dst = reinterpret_cast<uint16_t*>(cast16_[slot].data());
  }
  be_->cast_bf16(dst, x, n);
  return dst;
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
