// The Llama family (Llama/Mistral/SmolLM/TinyLlama, Qwen2 with q/k/v biases, Qwen3 with per-head
// q/k RMSNorm) built from the ops of the backend seam. Weights, gradients, AdamW state,
// activations and KV caches all live here, on the backend; entry points are whole steps:
// forward/score, train step (forward -> log-probs -> loss gradient -> backward -> accumulate),
// optimizer step, and batched generation (prefill + decode with sampling inside).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../backend.h"

namespace wst {

struct LlamaConfig {
  int vocab = 0, dim = 0, hidden = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  float rope_theta = 10000.f, norm_eps = 1e-5f;
  bool tied_embeddings = false, qkv_bias = false, qk_norm = false;
  // Mixed precision: every linear layer's GEMM (forward and backward, the LM head included) takes
  // bf16 inputs (the weights' bf16 copy, the activations and gradients cast per call) with fp32
  // accumulation and fp32 outputs, as torch's bf16 autocast does; the master weights, gradients,
  // AdamW state, norms, attention, softmax, log-probs and losses stay fp32.
  bool bf16 = false;
};

struct TensorInfo {
  std::string name;          // Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;
  size_t offset = 0, size = 0;  // in floats, inside the flat parameter buffer
};

// A device buffer of floats owned through the backend.
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Backend* be, size_t n) { resize(be, n); }
  ~Buffer() { release(); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : be_(o.be_), ptr_(o.ptr_), n_(o.n_), cap_(o.cap_) {
    o.ptr_ = nullptr;
    o.n_ = o.cap_ = 0;
  }
  void resize(const Backend* be, size_t n);  // contents undefined after a growth
  void zero();
  float* data() const { return ptr_; }
  size_t size() const { return n_; }
 private:
  void release();
  const Backend* be_ = nullptr;
  float* ptr_ = nullptr;
  size_t n_ = 0, cap_ = 0;
};

// Host data that an op reads or writes, in the backend's memory: on a host-memory backend the host
// pointer itself (no copy), else a grow-only device buffer that is uploaded to / downloaded from.
template <class T>
class Staged {
 public:
  Staged() = default;
  ~Staged() {
    if (ptr_) be_->free(ptr_);
  }
  Staged(const Staged&) = delete;
  Staged& operator=(const Staged&) = delete;
  const T* in(const Backend* be, const T* host, size_t n) {
    if (be->host_memory) return host;
    if (!host || n == 0) return nullptr;
    T* p = reserve(be, n);
    be->upload(p, host, n * sizeof(T));
    return p;
  }
  T* out(const Backend* be, T* host_out, size_t n) { return be->host_memory ? host_out : reserve(be, n); }
  void fetch(const Backend* be, T* host_out, size_t n) {
    if (!be->host_memory && n) be->download(host_out, ptr_, n * sizeof(T));
  }

 private:
  T* reserve(const Backend* be, size_t n) {
    if (n > cap_ || be != be_) {
      if (ptr_) be_->free(ptr_);
      ptr_ = nullptr;
      cap_ = 0;
      be_ = be;
      ptr_ = (T*)be->alloc(n * sizeof(T));
      cap_ = n;
    }
    return ptr_;
  }
  const Backend* be_ = nullptr;
  T* ptr_ = nullptr;
  size_t cap_ = 0;
};

// Shared prompt prefixes of a scoring / training batch (the G completions of a GRPO group share
// one prompt): prefix p is tokens[p*Tp .. p*Tp + lengths[p]) (right-padded to Tp), and batch row b
// continues prefix row_prefix[b] (non-decreasing in b): its T tokens sit at absolute positions
// lengths[row_prefix[b]] + t and attend to that prefix's keys, then causally to their own. The
// prefix is computed once per group; its gradient is the sum over the rows that read it. Same
// log-probs and gradients as the rows written out in full (prefix + row), up to rounding.
struct PrefixBatch {
  const int32_t* tokens = nullptr;      // (Bp, Tp)
  int Bp = 0, Tp = 0;
  const int32_t* lengths = nullptr;     // (Bp), each in 0..Tp
  const int32_t* row_prefix = nullptr;  // (B), each in 0..Bp-1, non-decreasing
};

struct SftParams {
  double normalizer;  // loss = -sum(logprob of targets) / normalizer (the caller's token count)
};

struct TrainStepResult {
  double loss = 0, tokens = 0, entropy = 0;  // entropy: mean over loss tokens
  GrpoResult grpo{};
};

// One GRPO micro-batch of train_grpo_many: the arguments of train_grpo.
struct GrpoMicroBatch {
  const int32_t* tokens = nullptr;
  const int32_t* targets = nullptr;
  const float* mask = nullptr;
  const float* old_logprobs = nullptr;
  const float* ref_logprobs = nullptr;
  const float* advantages = nullptr;
  int B = 0, T = 0;
  GrpoParams params{};
  float loss_scale = 1.f;
  const PrefixBatch* prefix = nullptr;
};

struct OptimizerParams {
  double lr, beta1, beta2, eps, weight_decay, max_grad_norm;  // max_grad_norm <= 0: no clipping
};

// A Llama-family model (Llama, Qwen2, Qwen3) over a Backend. Implemented by concern: llama.cpp
// (parameters, the graph's forward and backward per layer, the loss heads, train steps, the
// optimizer), generation.cpp (contexts, prefill, decode), lanes.cpp (train_grpo_many's CPU lanes),
// prompt_store.cpp (prompts' activations kept for training); llama_internal.h holds their shared
// private parts.
class LlamaModel {
 public:
  LlamaModel(const Backend* backend, const LlamaConfig& cfg);
  ~LlamaModel();
  const LlamaConfig& config() const { return cfg_; }
  const Backend* backend() const { return be_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  size_t num_params() const { return params_.size(); }
  float* params() {  // the caller may write: the decode weights are rebuilt
    params_version_++;
    return params_.data();
  }
  std::mutex& mutex() { return mu_; }

  void init_random(uint64_t seed, float std);
  void set_tensor(const TensorInfo& t, const float* host);
  void get_tensor(const TensorInfo& t, float* host) const;
  // The accumulated gradient of a tensor (zeros before the first backward).
  void get_grad(const TensorInfo& t, float* host);

  // Logits for every position. tokens (B,T) right-padded -> logits (B,T,V) on the host.
  void forward_logits(const int32_t* tokens, int B, int T, float* logits_out);
  // Teacher-forced log-probs: tokens (B,T), targets (B,T) (target at position t is scored by the
  // logits at t; < 0 means "not scored", giving 0) -> logprobs (B,T), entropy (B,T) (nullable).
  // prefix (nullable): the rows continue shared prompt prefixes (see PrefixBatch).
  void score(const int32_t* tokens, const int32_t* targets, int B, int T, float* logprobs_out,
             float* entropy_out, const PrefixBatch* prefix = nullptr);
  // One micro-batch: forward, loss gradient, backward; gradients ACCUMULATE (+=).
  // SFT: targets (B,T), loss = -sum logprob(targets) / normalizer.
  TrainStepResult train_sft(const int32_t* tokens, const int32_t* targets, int B, int T,
                            const SftParams& p);
  // GRPO: loss from kernels' grpo_loss on the target log-probs; mask = (targets >= 0) * mask.
  // old_logprobs null: the current log-probs, detached (ratio 1), as TRL does for one iteration.
  // loss_scale multiplies this micro-batch's loss and gradient (accumulation weighting).
  TrainStepResult train_grpo(const int32_t* tokens, const int32_t* targets, const float* mask,
                             const float* old_logprobs, const float* ref_logprobs,
                             const float* advantages, int B, int T, const GrpoParams& p,
                             float loss_scale = 1.f, const PrefixBatch* prefix = nullptr);
  // Value head (reward models: Hugging Face *ForSequenceClassification with one label): the
  // backbone's final hidden state at row b's position last[b], dotted with w (C, owned by the
  // caller) -> r (B). tokens (B,T) right-padded; prefix as in score. Keeps the activations and the
  // B hidden rows for value_backward, which must come next on this model.
  void value_forward(const int32_t* tokens, int B, int T, const int32_t* last, const float* w,
                     float* r_out, const PrefixBatch* prefix = nullptr);
  // Given dL/dr (B): accumulates (+=) the backbone's gradient (dL/dxf[b, last[b]] = dr[b] * w)
  // and writes dL/dw = sum_b dr[b] * h_b into dw_out (C).
  void value_backward(const float* dr, int n, const float* w, float* dw_out);
  // Several micro-batches of one optimizer step at once. On the CPU they are dealt round-robin to
  // kLanes lanes (each its own activations and zeroed gradient buffer) that run concurrently,
  // each single-threaded, and the lanes' gradients are then added to the accumulated gradient in
  // lane order: small micro-batches (DASH's kept completions of a shared prompt) scale far better
  // that way than op by op. The same bits for any thread count; equal to train_grpo called per
  // micro-batch up to float rounding. Memory: kLanes activation sets and gradient buffers.
  // Other backends run them one after the other.
  std::vector<TrainStepResult> train_grpo_many(const std::vector<GrpoMicroBatch>& mbs);
  // Tasks (cost[i], largest first, each to the least loaded part) dealt to n_lanes lanes: for 4
  // lanes, two halves of nearly equal cost, each split in two the same way (so two threads, each
  // running one half, or four, each running one lane, are balanced). Ties go to the lower index;
  // a lane lists its tasks in index order. Depends on the costs only (train_grpo_many's bits).
  static std::vector<std::vector<int>> deal_lanes(const std::vector<double>& cost, int n_lanes);
  // The lanes grouped for `threads` pool tasks (bits-neutral): two threads take deal_lanes' two
  // halves; otherwise the largest lane first, each to the least loaded group.
  static std::vector<std::vector<int>> plan_slots(const std::vector<double>& lane_cost, int threads);
  // Clip, AdamW, zero the gradients. Returns the global gradient norm before clipping.
  double optimizer_step(const OptimizerParams& p);
  void zero_grad();
  int step() const { return step_; }
  void set_step(int s) { step_ = s; }
  // Optimizer state (m, v) on the host; allocated on first use.
  void get_optimizer_state(float* m, float* v);
  void set_optimizer_state(const float* m, const float* v);
  bool has_optimizer_state() const { return m_.size() != 0; }
  size_t activation_floats_per_token() const;

  // ---- generation --------------------------------------------------------------------------
  struct Context;
  std::unique_ptr<Context> create_context(int max_batch, int max_seq);
  // Prefill B prompts (ragged; prompt b is prompt_tokens[offsets[b]..offsets[b+1])) into the
  // context's rows and leave, for each row, the logits of its last prompt token. Identical
  // prompts (the G completions of a GRPO group) are computed once and their KV rows copied.
  //
  // The top layer runs for each prompt's last token only (every token's key and value still go to
  // the cache). With ctx.keep_prompts (CPU only), the prompts' activations stay in the model's
  // prompt store until the parameters change: a prefixed training forward (train_grpo / score with
  // a PrefixBatch) whose prefixes all begin stored prompts copies their rows instead of recomputing
  // them (the same values: prefix rows depend on the prefix alone; their top-layer outputs, which
  // no scored token reads, come as zeros). DASH's training step runs right after its generation
  // with the same weights, so its prompts' forward is paid once per step.
  void prefill(Context& ctx, const int32_t* prompt_tokens, const int64_t* offsets, int B);
  // Prompts held by the store for the current parameters (0 when it is empty or stale).
  int stored_prompts() const;
  // Prefixed training forwards that took their prefix rows from the store, since construction.
  int64_t prompt_store_hits() const { return prompt_store_hits_; }
  // The store's limit in bytes (default kPromptStoreMaxBytes).
  void set_prompt_store_limit(size_t bytes) { prompt_store_max_bytes_ = bytes; }
  // Decode up to n_steps tokens per active row: sample (per-row seed, counter = tokens generated
  // so far), append, stop on stop ids / max_new / context end, run one decode step for the rows
  // still active. Finished rows leave the batch (their cache slot is reused).
  // Returns the number of rows still active.
  int decode(Context& ctx, int n_steps);

 private:
  struct LayerOffsets {
    size_t attn_norm, wq, wk, wv, bq, bk, bv, q_norm, k_norm, wo, ffn_norm, w_gate, w_up, w_down;
  };
  struct Activations;
  struct Lane;
  struct PromptStore;
  // The activations that A() returns, as the owning pointer (a keeping prefill swaps a part's own in).
  std::unique_ptr<Activations>& acts_owner();
  // Fills the prefix rows [0, Npre) of every saved activation from the prompt store, when every
  // prefix of `pre` is stored for the current parameters; false (nothing written) otherwise.
  bool prefix_rows_from_store(const PrefixBatch& pre);
  // The store holds at most this many bytes of activations (activation_floats_per_token per
  // padded prompt row, an upper bound of a prefill's forward buffers): a prefill that would pass
  // it keeps nothing, and its training computes as usual. The tiny built-in model's DASH step
  // keeps ~20 MB. Up to 2 * kLanes stale parts are kept for the next prefill (spare_acts_).
  static constexpr size_t kPromptStoreMaxBytes = (size_t)512 << 20;
  // The activations and gradient that this thread's work uses: a lane's inside train_grpo_many's
  // tasks, else the model's own.
  Activations& A();
  float* G(size_t off);
  void add_tensor(const std::string& name, std::vector<int64_t> shape);
  // Sizes every activation for N tokens (B*T rows plus any prefix tokens).
  void ensure_activations(int B, int T, size_t N);
  // cache_sink: write each row's k/v into the context's cache, row b at slot sink_slots[b]
  // (default: active + b). prefix: shared prompt prefixes (no cache_sink then); logits are kept
  // for the B*T row tokens only.
  // sink_lengths (with a cache sink, no logits): row b's last token is lengths[b] - 1; the top
  // layer then computes every token's key and value but the rest only for the last tokens
  // (top_layer_last_tokens), whose final hidden states are left in the activations' c_xf (B, C).
  // The other tokens' top-layer outputs are not computed (their activations are left as they were).
  void forward(const int32_t* tokens, int B, int T, bool keep_logits, Context* cache_sink,
               const int* sink_slots = nullptr, const PrefixBatch* prefix = nullptr,
               const int* sink_lengths = nullptr);
  void top_layer_last_tokens(int B, int T, const int* lengths, bool transposed_weights, Context* sink,
                             const int64_t* sink_dev);
  // Layer l's attention norm, keys and values for activation rows [r0, r0 + n), and with a sink
  // the B rows' keys / values into its cache (sink_dev: the copy_rows offsets).
  void keys_values_forward(int l, size_t r0, int n, bool transposed_weights, Context* sink,
                           const int64_t* sink_dev, int B);
  // value_rows (nullable): the gradient enters as dL/dxf at these rows (value heads) instead of
  // through the LM head's logits.
  struct ValueRows {
    std::vector<size_t> rows;  // activation rows (prefix rows first, then b * T + t)
    std::vector<float> dxf;    // rows.size() * C
  };
  void backward(const int32_t* tokens, int B, int T, const ValueRows* value_rows = nullptr);
  // Attention of the layer's q, k, v (forward) and its gradient (backward), with or without
  // shared prefixes (the layout planned by forward).
  void plan_prefix(const PrefixBatch& prefix, const int32_t* tokens, int B, int T);
  void attention_layer_forward(int l);
  // Lanes of train_grpo_many and prefill (fixed: results must not depend on the thread count).
  static constexpr int kLanes = 4;
  // Decode rows per concurrent shard, about (see decode).
  static constexpr int kDecodeRowsPerShard = 32;
  // Unique prompts per concurrent prefill part (see prefill).
  static constexpr int kPrefillPromptsPerPart = 4;
  // Runs fn(0..n-1) on the thread pool in up to kLanes lanes (each its own activations): lane j
  // runs the tasks lanes[j] one after the other. Which lane holds which task is decided by the
  // tasks' costs alone (deal_lanes), never by the thread count, so the results do not depend on
  // it; the threads then take whole lanes, balanced by cost (plan_slots).
  void in_lanes(int n, const std::function<void(int)>& fn, const std::vector<double>& cost = {});
  // Lanes for n tasks (min(n, kLanes)), created on first use.
  int lanes_for(int n);
  void decode_rows(Context& ctx, int s0, int n_rows, bool transposed_weights);
  // The plain CPU backend: lanes, shards and transposed decode weights apply there only.
  // On the CPU, forward passes (decode, prefill, training) read each linear weight transposed
  // (in, out): decode's GEMM takes it in place (see gemm.cpp, "direct"), larger ones pack it by a
  // straight copy instead of a transposing one. Rebuilt when the parameters changed
  // (params_version_), for models up to kDecodeWtMaxParams. Not thread-safe: called outside lanes
  // and shards (forward calls it only when not in a lane); inside them, transposed_ready() says
  // whether the copy is current.
  static constexpr size_t kDecodeWtMaxParams = (size_t)1 << 24;
  bool ensure_decode_weights();
  bool transposed_ready() const;
  // out (n, out_dim) = in (n, in_dim) @ W^T (+ bias), W at params offset w; through the transposed
  // copy when `transposed` (the same bits as without for n > 16, where both take the packed GEMM).
  void linear_fwd(bool transposed, float* out, const float* in, size_t w, const float* bias,
                  const float* ones, int n, int in_dim, int out_dim);
  // Inverts linear_fwd: din (n, in_dim) = dout @ W (+= when accumulate_din; none when din is
  // null), dW += dout^T @ in at gradient offset w, dbias += ones^T @ dout.
  void linear_bwd(float* din, size_t w, float* dbias, const float* dout, const float* in, const float* ones,
                  int n, int in_dim, int out_dim, bool accumulate_din);
  // bf16 (cfg_.bf16): the weights' bf16 copy, current for params_version_ (ensure_decode_weights
  // refreshes it, outside lanes and shards), and x (n) cast into scratch `slot` (0 or 1; per
  // thread where pieces run concurrently).
  void ensure_bf16_weights();
  const uint16_t* W16(size_t off) const { return reinterpret_cast<const uint16_t*>(w16_.data()) + off; }
  const uint16_t* to_bf16(int slot, const float* x, size_t n);
  // prefix_outputs_unused: no gradient reaches the prefix rows' attention outputs (the top
  // layer), so the prefixes' own attention backward is all zeros and is skipped.
  void attention_layer_backward(int l, bool prefix_outputs_unused = false);
  void ensure_grads();
  double loss_tokens_entropy(const float* mask, int N);
  const float* P(size_t off) const { return params_.data() + off; }

  const Backend* be_;
  LlamaConfig cfg_;
  std::vector<TensorInfo> tensors_;
  std::vector<LayerOffsets> layers_;
  size_t embed_off_ = 0, norm_off_ = 0, lm_head_off_ = 0;
  size_t total_ = 0;
  Buffer params_, grads_, m_, v_;
  Buffer decode_wt_;  // transposed linear weights at their params offsets (ensure_decode_weights)
  uint64_t params_version_ = 1, decode_wt_version_ = 0;
  Buffer w16_, cast16_[2];  // bf16 weights (total_ halves) and cast scratch (device backends)
  uint64_t w16_version_ = 0;
  int step_ = 0;
  std::unique_ptr<Activations> acts_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::unique_ptr<PromptStore> prompts_;
  // Activations of a stale store's parts (sized for prefill parts already): the next keeping
  // prefill runs its parts in them, so that a DASH step allocates no activation sets.
  std::vector<std::unique_ptr<Activations>> spare_acts_;
  void drop_prompt_store();
  std::atomic<int64_t> prompt_store_hits_{0};
  size_t prompt_store_max_bytes_ = kPromptStoreMaxBytes;
  Staged<int64_t> st_rows_;  // row-copy offsets (copy_rows)
  // value_forward's state for value_backward: the hidden rows, their activation rows, B and T.
  struct ValueState {
    std::vector<float> h;
    std::vector<size_t> rows;
    int B = 0, T = 0;
    bool pending = false;
  } value_;
  std::mutex mu_;
};

struct LlamaModel::Context {
  int max_batch, max_seq;
  std::vector<Buffer> kcache, vcache;  // per layer (max_batch, max_seq, KVH, Dh)
  // Per slot state; slots [0, active) are the rows still generating.
  int active = 0;
  std::vector<int> row_of_slot;        // slot -> caller's row index
  std::vector<int32_t> lengths;        // tokens in the cache per slot
  std::vector<int32_t> last_token;     // per slot
  Buffer logits;                       // (max_batch, V): next-token logits per slot
  // Per caller row:
  std::vector<uint64_t> seeds;
  std::vector<int> generated;          // tokens generated so far
  std::vector<int> max_new;
  std::vector<std::vector<int32_t>> out_tokens;
  std::vector<std::vector<float>> out_logprobs;
  std::vector<uint8_t> finished;
  std::vector<int> reported;           // tokens already handed to the caller
  // Rows prefilled together from the same prompt share a group: their cache rows hold identical
  // keys / values at [0, prompt length), which decode reads once per group.
  std::vector<int32_t> group_of_row, shared_of_row;
  int32_t next_group = 0;
  // prefill keeps its prompts' activations in the model's prompt store (see prefill).
  bool keep_prompts = false;
  std::vector<int32_t> stop_ids;
  SamplingParams sampling{1.f, 0, 1.f, 0.f};
  // Decode scratch, (max_batch, ...) each.
  Buffer x, xn, q, k, v, att, tmp, g, u, h, ones;
  std::vector<int32_t> positions, slot_lengths_plus1;
  // The host arrays above as the backend sees them (see Staged), and row-copy offsets.
  Staged<int32_t> st_ids, st_last, st_pos, st_len;
  Staged<float> st_lps;
  Staged<uint64_t> st_seeds, st_counters;
  Staged<int64_t> st_rows;
  Staged<int32_t> st_members, st_gstart, st_glen;
  // Caller rows so far (row indices 0..rows()-1).
  int rows() const { return (int)seeds.size(); }
  // A caller row for the next prefill: its sampling seed and most new tokens; returns its index.
  int add_row(uint64_t seed, int max_new_tokens);
  // The slots with done[s] leave: from the last slot down, each takes the last active slot's row
  // (cache rows included; the moves are batched).
  void finish_slots(const std::vector<uint8_t>& done, const Backend* be, int n_layers, size_t row_floats,
                    int vocab);
};

}  // namespace wst
