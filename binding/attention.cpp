#include "util.h"

namespace wst::binding {
namespace {

struct AttnDims {
  int B, H, KVH, Tq, Tk, D;
};

// heads, kvHeads from info[i], info[i + 1]; heads must be a multiple of kvHeads.
void head_args(const Napi::CallbackInfo& info, size_t i, int& H, int& KVH) {
  H = int_arg(info, i, "heads", 1);
  KVH = int_arg(info, i + 1, "kvHeads", 1);
  if (H % KVH != 0)
    throw Napi::RangeError::New(info.Env(), "kvHeads must divide heads (" + std::to_string(H) +
                                                " heads, " + std::to_string(KVH) + " kvHeads)");
}

// (B, H, KVH, Tq, Tk, D) from info[i..i+5].
AttnDims dims_arg(const Napi::CallbackInfo& info, size_t i) {
  AttnDims d;
  d.B = int_arg(info, i, "batch", 1);
  head_args(info, i + 1, d.H, d.KVH);
  d.Tq = int_arg(info, i + 3, "seqQ", 1);
  d.Tk = int_arg(info, i + 4, "seqK", 1);
  d.D = int_arg(info, i + 5, "headDim", 1);
  // Task and row counts are ints in the kernels.
  if ((int64_t)d.B * d.H * d.Tq > INT32_MAX || (int64_t)d.B * d.KVH * d.Tk > INT32_MAX)
    throw Napi::RangeError::New(info.Env(), "attention is too large (batch * heads * seq > 2^31)");
  return d;
}

// The forward with element type T for out/q/k/v (float, or uint16_t bf16 bits); lse float or null.
// Arguments: (out, lse, q, k, v, B, H, KVH, Tq, Tk, D, causal, async).
template <class T, class Run>
Napi::Value attention_forward_call(const Napi::CallbackInfo& info, Run run) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  const AttnDims d = dims_arg(info, 5);
  bool causal = bool_arg(info, 11, "causal"), async = bool_arg(info, 12, "async");
  size_t nq = checked_size(env, {d.B, d.Tq, d.H, d.D}), nk = checked_size(env, {d.B, d.Tk, d.KVH, d.D});
  T* out = array_arg<T>(info, 0, "out", nq, keep);
  float* lse = array_arg<float>(info, 1, "lse", checked_size(env, {d.B, d.H, d.Tq}), keep, true);
  const T* q = array_arg<T>(info, 2, "q", nq, keep);
  const T* k = array_arg<T>(info, 3, "k", nk, keep);
  const T* v = array_arg<T>(info, 4, "v", nk, keep);
  return run_op(info, async, keep, [=] { run(out, lse, q, k, v, d.B, d.H, d.KVH, d.Tq, d.Tk, d.D, causal); });
}

// attentionForward(out, lse, q, k, v, B, H, KVH, Tq, Tk, D, causal, async)
Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  return attention_forward_call<float>(info, [](auto... args) { backend().attention_forward(args...); });
}

// attentionForwardBf16(...): the same with bf16 bits (Uint16Array) for out, q, k, v.
Napi::Value AttentionForwardBf16(const Napi::CallbackInfo& info) {
  return attention_forward_call<uint16_t>(info, [](auto... args) { backend().attention_forward_bf16(args...); });
}

// attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, B, H, KVH, Tq, Tk, D, causal, async)
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  const AttnDims d = dims_arg(info, 9);
  bool causal = bool_arg(info, 15, "causal"), async = bool_arg(info, 16, "async");
  size_t nq = checked_size(env, {d.B, d.Tq, d.H, d.D}), nk = checked_size(env, {d.B, d.Tk, d.KVH, d.D});
  float* dq = array_arg<float>(info, 0, "dq", nq, keep);
  float* dk = array_arg<float>(info, 1, "dk", nk, keep);
  float* dv = array_arg<float>(info, 2, "dv", nk, keep);
  const float* dout = array_arg<float>(info, 3, "dout", nq, keep);
  const float* q = array_arg<float>(info, 4, "q", nq, keep);
  const float* k = array_arg<float>(info, 5, "k", nk, keep);
  const float* v = array_arg<float>(info, 6, "v", nk, keep);
  const float* out = array_arg<float>(info, 7, "out", nq, keep);
  const float* lse = array_arg<float>(info, 8, "lse", checked_size(env, {d.B, d.H, d.Tq}), keep);
  return run_op(info, async, keep, [=] {
    backend().attention_backward(dq, dk, dv, dout, q, k, v, out, lse, d.B, d.H, d.KVH, d.Tq, d.Tk,
                                 d.D, causal);
  });
}

// attentionDecode(out, q, kCache, vCache, lengths, B, H, KVH, maxT, D, async)
Napi::Value AttentionDecode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int B = int_arg(info, 5, "batch", 1), H, KVH;
  head_args(info, 6, H, KVH);
  int maxT = int_arg(info, 8, "maxSeq", 1), D = int_arg(info, 9, "headDim", 1);
  bool async = bool_arg(info, 10, "async");
  size_t nq = checked_size(env, {B, H, D}), nc = checked_size(env, {B, maxT, KVH, D});
  float* out = array_arg<float>(info, 0, "out", nq, keep);
  const float* q = array_arg<float>(info, 1, "q", nq, keep);
  const float* kc = array_arg<float>(info, 2, "kCache", nc, keep);
  const float* vc = array_arg<float>(info, 3, "vCache", nc, keep);
  const int32_t* lengths = array_arg<int32_t>(info, 4, "lengths", (size_t)B, keep);
  for (int b = 0; b < B; b++)
    if (lengths[b] < 1 || lengths[b] > maxT)
      throw Napi::RangeError::New(env, "lengths[" + std::to_string(b) + "] = " +
                                           std::to_string(lengths[b]) + " is outside [1, " +
                                           std::to_string(maxT) + "]");
  // A private copy: the checked lengths cannot change under an async run.
  std::vector<int32_t> lens(lengths, lengths + B);
  return run_op(info, async, keep, [=] {
    backend().attention_decode(out, q, kc, vc, lens.data(), B, H, KVH, maxT, D);
  });
}

}  // namespace

void register_attention(Napi::Env env, Napi::Object exports) {
  exports.Set("attentionForward", Napi::Function::New(env, AttentionForward));
  exports.Set("attentionForwardBf16", Napi::Function::New(env, AttentionForwardBf16));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward));
  exports.Set("attentionDecode", Napi::Function::New(env, AttentionDecode));
}

}  // namespace wst::binding
