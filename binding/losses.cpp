// Bindings of the softmax family, the fused token log-prob gather, cross-entropy and the GRPO
// loss. Output fields first, as in kernels.h.
#include <memory>

#include "util.h"

namespace wst::binding {
namespace {

// The shape (rows, vocab) of a call's logits.
Matrix rows_vocab(const Args& args) { return matrix_fields(args, "rows", "vocab", 1); }

// softmaxForward({probs, logits, rows, vocab}, async) and logSoftmaxForward({out, logits, rows,
// vocab}, async): one row-wise op of the backend from logits to an output of the same shape.
template <decltype(&Backend::softmax_forward) Op>
Napi::Value RowsOp(const Napi::CallbackInfo& info, const char* out_name) {
  Args args(info);
  const auto [N, V, nv] = rows_vocab(args);
  float* out = args.array<float>(out_name, nv);
  const float* logits = args.array<float>("logits", nv);
  return run_op(info, args, [=] { (backend().*Op)(out, logits, N, V); });
}
Napi::Value SoftmaxForward(const Napi::CallbackInfo& info) { return RowsOp<&Backend::softmax_forward>(info, "probs"); }
Napi::Value LogSoftmaxForward(const Napi::CallbackInfo& info) { return RowsOp<&Backend::log_softmax_forward>(info, "out"); }

// tokenLogprobsForward({logprob, lse, entropy?, logits, ids, rows, vocab}, async)
Napi::Value TokenLogprobsForward(const Napi::CallbackInfo& info) {
  Args args(info);
  const auto [N, V, nv] = rows_vocab(args);
  float* logprob = args.array<float>("logprob", (size_t)N);
  float* lse = args.array<float>("lse", (size_t)N);
  float* entropy = args.optional_array<float>("entropy", (size_t)N);
  const float* logits = args.array<float>("logits", nv);
  const int32_t* ids = args.array<int32_t>("ids", (size_t)N);
  check_ids(info.Env(), ids, (size_t)N, V, "ids", false);
  return run_op(info, args, [=] { backend().token_logprobs_forward(logprob, lse, entropy, logits, ids, N, V); });
}

// tokenLogprobsBackward({dlogits, dlogprob, dentropy?, logits, ids, lse, entropy?, rows, vocab},
// async). dlogits may be logits itself (in place).
Napi::Value TokenLogprobsBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  const auto [N, V, nv] = rows_vocab(args);
  float* dlogits = args.array<float>("dlogits", nv);
  const float* dlogprob = args.array<float>("dlogprob", (size_t)N);
  const float* dentropy = args.optional_array<float>("dentropy", (size_t)N);
  const float* logits = args.array<float>("logits", nv);
  const int32_t* ids = args.array<int32_t>("ids", (size_t)N);
  const float* lse = args.array<float>("lse", (size_t)N);
  const float* entropy = args.optional_array<float>("entropy", (size_t)N);
  check_ids(info.Env(), ids, (size_t)N, V, "ids", false);
  return run_op(info, args, [=] {
    backend().token_logprobs_backward(dlogits, dlogprob, dentropy, logits, ids, lse, entropy, N, V);
  });
}

// crossentropyForward({losses, lse, logits, targets, rows, vocab}, async); targets < 0 are ignored.
Napi::Value CrossentropyForward(const Napi::CallbackInfo& info) {
  Args args(info);
  const auto [N, V, nv] = rows_vocab(args);
  float* losses = args.array<float>("losses", (size_t)N);
  float* lse = args.array<float>("lse", (size_t)N);
  const float* logits = args.array<float>("logits", nv);
  const int32_t* targets = args.array<int32_t>("targets", (size_t)N);
  check_ids(info.Env(), targets, (size_t)N, V, "targets", true);
  return run_op(info, args, [=] { backend().crossentropy_forward(losses, lse, logits, targets, N, V); });
}

// crossentropyBackward({dlogits, dlosses, logits, targets, lse, rows, vocab}, async). dlogits
// may be logits itself (in place).
Napi::Value CrossentropyBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  const auto [N, V, nv] = rows_vocab(args);
  float* dlogits = args.array<float>("dlogits", nv);
  const float* dlosses = args.array<float>("dlosses", (size_t)N);
  const float* logits = args.array<float>("logits", nv);
  const int32_t* targets = args.array<int32_t>("targets", (size_t)N);
  const float* lse = args.array<float>("lse", (size_t)N);
  check_ids(info.Env(), targets, (size_t)N, V, "targets", true);
  return run_op(info, args, [=] { backend().crossentropy_backward(dlogits, dlosses, logits, targets, lse, N, V); });
}

}  // namespace

const char* const kGrpoLossTypes[4] = {"grpo", "bnpo", "dr_grpo", "dapo"};

GrpoParams grpo_params(const Args& args) {
  GrpoParams p;
  p.clip_low = (float)args.number("clipLow", 0.2);
  p.clip_high = (float)args.number("clipHigh", 0.2);
  p.beta = (float)args.number("beta", 0.0);
  // Absent or null: no filtering (-1 natively).
  p.filter_threshold = args.present("filterThreshold") ? (float)args.number("filterThreshold") : -1.0f;
  p.loss_type = args.present("lossType") ? (GrpoLossType)args.choice("lossType", kGrpoLossTypes) : GrpoLossType::grpo;
  p.normalizer = args.number("normalizer", 0.0);
  if (p.clip_low < 0 || p.clip_low >= 1) throw args.range_error(args.field("clipLow") + " must be in [0, 1)");
  if (p.clip_high < 0) throw args.range_error(args.field("clipHigh") + " must be >= 0");
  if (p.beta < 0) throw args.range_error(args.field("beta") + " must be >= 0");
  if (p.filter_threshold < 0 && p.filter_threshold != -1.0f)
    throw args.range_error(args.field("filterThreshold") + " must be >= 0 (or null: no filtering)");
  if (p.loss_type == GrpoLossType::dapo && !(p.normalizer > 0))
    throw args.range_error(args.field("normalizer") + " must be > 0 for the dapo loss");
  return p;
}

namespace {

// grpoLoss({grad, logprobs, oldLogprobs, refLogprobs?, advantages, mask, seqs, tokens, clipLow,
//           clipHigh, beta, filterThreshold?, lossType, normalizer}, async)
//   -> { loss, kept, clipFraction, kl, keptTokens }
Napi::Value GrpoLoss(const Napi::CallbackInfo& info) {
  Args args(info);
  int S = args.integer("seqs", 0), T = args.integer("tokens", 0);
  GrpoParams p = grpo_params(args);
  size_t st = checked_size(info.Env(), {S, T});
  float* grad = args.array<float>("grad", st);
  const float* lp = args.array<float>("logprobs", st);
  const float* old = args.array<float>("oldLogprobs", st);
  const float* ref = args.optional_array<float>("refLogprobs", st);
  const float* adv = args.array<float>("advantages", (size_t)S);
  const float* mask = args.array<float>("mask", st);
  auto result = std::make_shared<GrpoResult>();
  return run_op(
      info, args,
      [=] { *result = backend().grpo_loss(grad, lp, old, ref, adv, mask, S, T, p); },
      [result](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("loss", result->loss);
        o.Set("kept", result->kept);
        o.Set("clipFraction", result->clip_fraction);
        o.Set("kl", result->kl);
        o.Set("keptTokens", result->kept_tokens);
        return o;
      });
}

}  // namespace

void register_losses(Napi::Env env, Napi::Object exports) {
  static const Export table[] = {
      {"softmaxForward", SoftmaxForward},
      {"logSoftmaxForward", LogSoftmaxForward},
      {"tokenLogprobsForward", TokenLogprobsForward},
      {"tokenLogprobsBackward", TokenLogprobsBackward},
      {"crossentropyForward", CrossentropyForward},
      {"crossentropyBackward", CrossentropyBackward},
      {"grpoLoss", GrpoLoss},
  };
  export_all(env, exports, table);
}

}  // namespace wst::binding
