#include "util.h"

namespace wst::binding {
namespace {

// heads and kvHeads; heads must be a multiple of kvHeads.
void head_fields(const Args& args, int& H, int& KVH) {
  H = args.integer("heads", 1);
  KVH = args.integer("kvHeads", 1);
  if (H % KVH != 0)
    throw args.range_error("kvHeads must divide heads (" + std::to_string(H) + " heads, " + std::to_string(KVH) + " kvHeads)");
}

// The fields batch, heads, kvHeads, seqQ, seqK, headDim, causal; sizes of q (B,Tq,H,D), k and v
// (B,Tk,KVH,D) and lse (B,H,Tq).
struct AttnDims {
  int B, H, KVH, Tq, Tk, D;
  bool causal;
  size_t nq, nk, nlse;
};
AttnDims attn_dims(const Args& args) {
  AttnDims d;
  d.B = args.integer("batch", 1);
  head_fields(args, d.H, d.KVH);
  d.Tq = args.integer("seqQ", 1);
  d.Tk = args.integer("seqK", 1);
  d.D = args.integer("headDim", 1);
  d.causal = args.flag("causal");
  // Task and row counts are ints in the kernels.
  if ((int64_t)d.B * d.H * d.Tq > INT32_MAX || (int64_t)d.B * d.KVH * d.Tk > INT32_MAX)
    throw args.range_error("attention is too large (batch * heads * seq > 2^31)");
  d.nq = checked_size(args.env(), {d.B, d.Tq, d.H, d.D});
  d.nk = checked_size(args.env(), {d.B, d.Tk, d.KVH, d.D});
  d.nlse = checked_size(args.env(), {d.B, d.H, d.Tq});
  return d;
}

// The forward with element type T for out/q/k/v (float, or uint16_t bf16 bits); lse float or
// null. ({out, lse?, q, k, v, batch, heads, kvHeads, seqQ, seqK, headDim, causal?}, async)
template <class T, class Run>
Napi::Value attention_forward_call(const Napi::CallbackInfo& info, Run run) {
  Args args(info);
  const AttnDims d = attn_dims(args);
  T* out = args.array<T>("out", d.nq);
  float* lse = args.optional_array<float>("lse", d.nlse);
  const T* q = args.array<T>("q", d.nq);
  const T* k = args.array<T>("k", d.nk);
  const T* v = args.array<T>("v", d.nk);
  return run_op(info, args, [=] { run(out, lse, q, k, v, d.B, d.H, d.KVH, d.Tq, d.Tk, d.D, d.causal); });
}

Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  return attention_forward_call<float>(info, [](auto... args) { backend().attention_forward(args...); });
}

// The same with bf16 bits (Uint16Array) for out, q, k, v.
Napi::Value AttentionForwardBf16(const Napi::CallbackInfo& info) {
  return attention_forward_call<uint16_t>(info, [](auto... args) { backend().attention_forward_bf16(args...); });
}

// attentionBackward({dq, dk, dv, dout, q, k, v, out, lse, batch, heads, kvHeads, seqQ, seqK,
// headDim, causal?}, async)
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  const AttnDims d = attn_dims(args);
  float* dq = args.array<float>("dq", d.nq);
  float* dk = args.array<float>("dk", d.nk);
  float* dv = args.array<float>("dv", d.nk);
  const float* dout = args.array<float>("dout", d.nq);
  const float* q = args.array<float>("q", d.nq);
  const float* k = args.array<float>("k", d.nk);
  const float* v = args.array<float>("v", d.nk);
  const float* out = args.array<float>("out", d.nq);
  const float* lse = args.array<float>("lse", d.nlse);
  return run_op(info, args, [=] {
    backend().attention_backward(dq, dk, dv, dout, q, k, v, out, lse, d.B, d.H, d.KVH, d.Tq, d.Tk, d.D, d.causal);
  });
}

// attentionDecode({out, q, kCache, vCache, lengths, batch, heads, kvHeads, maxSeq, headDim}, async)
Napi::Value AttentionDecode(const Napi::CallbackInfo& info) {
  Args args(info);
  int B = args.integer("batch", 1), H, KVH;
  head_fields(args, H, KVH);
  int maxT = args.integer("maxSeq", 1), D = args.integer("headDim", 1);
  size_t nq = checked_size(info.Env(), {B, H, D}), nc = checked_size(info.Env(), {B, maxT, KVH, D});
  float* out = args.array<float>("out", nq);
  const float* q = args.array<float>("q", nq);
  const float* kc = args.array<float>("kCache", nc);
  const float* vc = args.array<float>("vCache", nc);
  const int32_t* lengths = args.array<int32_t>("lengths", (size_t)B);
  for (int b = 0; b < B; b++)
    if (lengths[b] < 1 || lengths[b] > maxT)
      throw args.range_error("lengths[" + std::to_string(b) + "] = " + std::to_string(lengths[b]) +
                             " is outside [1, " + std::to_string(maxT) + "]");
  // A private copy: the checked lengths cannot change under an async run.
  std::vector<int32_t> lens(lengths, lengths + B);
  return run_op(info, args, [=] { backend().attention_decode(out, q, kc, vc, lens.data(), B, H, KVH, maxT, D); });
}

}  // namespace

void register_attention(Napi::Env env, Napi::Object exports) {
  static const Export table[] = {
      {"attentionForward", AttentionForward},
      {"attentionForwardBf16", AttentionForwardBf16},
      {"attentionBackward", AttentionBackward},
      {"attentionDecode", AttentionDecode},
  };
  export_all(env, exports, table);
}

}  // namespace wst::binding
