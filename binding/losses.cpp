// Bindings of the softmax family, the fused token log-prob gather, cross-entropy and the GRPO
// loss. Outputs come first, as in kernels.h; the last argument is `async`.
#include <memory>

#include "util.h"

namespace wst::binding {
namespace {

// softmaxForward(probs, logits, N, V, async)
Napi::Value SoftmaxForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int N = int_arg(info, 2, "N", 0), V = int_arg(info, 3, "V", 1);
  bool async = bool_arg(info, 4, "async");
  size_t nv = checked_size(env, {N, V});
  float* probs = array_arg<float>(info, 0, "probs", nv, keep);
  const float* logits = array_arg<float>(info, 1, "logits", nv, keep);
  return run_op(info, async, keep, [=] { backend().softmax_forward(probs, logits, N, V); });
}

// logSoftmaxForward(out, logits, N, V, async)
Napi::Value LogSoftmaxForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int N = int_arg(info, 2, "N", 0), V = int_arg(info, 3, "V", 1);
  bool async = bool_arg(info, 4, "async");
  size_t nv = checked_size(env, {N, V});
  float* out = array_arg<float>(info, 0, "out", nv, keep);
  const float* logits = array_arg<float>(info, 1, "logits", nv, keep);
  return run_op(info, async, keep, [=] { backend().log_softmax_forward(out, logits, N, V); });
}

// tokenLogprobsForward(logprob, lse, entropy | null, logits, ids, N, V, async)
Napi::Value TokenLogprobsForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int N = int_arg(info, 5, "N", 0), V = int_arg(info, 6, "V", 1);
  bool async = bool_arg(info, 7, "async");
  float* logprob = array_arg<float>(info, 0, "logprob", (size_t)N, keep);
  float* lse = array_arg<float>(info, 1, "lse", (size_t)N, keep);
  float* entropy = array_arg<float>(info, 2, "entropy", (size_t)N, keep, true);
  const float* logits = array_arg<float>(info, 3, "logits", checked_size(env, {N, V}), keep);
  const int32_t* ids = array_arg<int32_t>(info, 4, "ids", (size_t)N, keep);
  check_ids(env, ids, (size_t)N, V, "ids", false);
  return run_op(info, async, keep, [=] {
    backend().token_logprobs_forward(logprob, lse, entropy, logits, ids, N, V);
  });
}

// tokenLogprobsBackward(dlogits, dlogprob, dentropy | null, logits, ids, lse, entropy | null,
//                       N, V, async). dlogits may be logits itself (in place).
Napi::Value TokenLogprobsBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int N = int_arg(info, 7, "N", 0), V = int_arg(info, 8, "V", 1);
  bool async = bool_arg(info, 9, "async");
  size_t nv = checked_size(env, {N, V});
  float* dlogits = array_arg<float>(info, 0, "dlogits", nv, keep);
  const float* dlogprob = array_arg<float>(info, 1, "dlogprob", (size_t)N, keep);
  const float* dentropy = array_arg<float>(info, 2, "dentropy", (size_t)N, keep, true);
  const float* logits = array_arg<float>(info, 3, "logits", nv, keep);
  const int32_t* ids = array_arg<int32_t>(info, 4, "ids", (size_t)N, keep);
  const float* lse = array_arg<float>(info, 5, "lse", (size_t)N, keep);
  const float* entropy = array_arg<float>(info, 6, "entropy", (size_t)N, keep, true);
  check_ids(env, ids, (size_t)N, V, "ids", false);
  return run_op(info, async, keep, [=] {
    backend().token_logprobs_backward(dlogits, dlogprob, dentropy, logits, ids, lse, entropy, N, V);
  });
}

// crossentropyForward(losses, lse, logits, targets, N, V, async); targets < 0 are ignored.
Napi::Value CrossentropyForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int N = int_arg(info, 4, "N", 0), V = int_arg(info, 5, "V", 1);
  bool async = bool_arg(info, 6, "async");
  float* losses = array_arg<float>(info, 0, "losses", (size_t)N, keep);
  float* lse = array_arg<float>(info, 1, "lse", (size_t)N, keep);
  const float* logits = array_arg<float>(info, 2, "logits", checked_size(env, {N, V}), keep);
  const int32_t* targets = array_arg<int32_t>(info, 3, "targets", (size_t)N, keep);
  check_ids(env, targets, (size_t)N, V, "targets", true);
  return run_op(info, async, keep, [=] {
    backend().crossentropy_forward(losses, lse, logits, targets, N, V);
  });
}

// crossentropyBackward(dlogits, dlosses, logits, targets, lse, N, V, async).
// dlogits may be logits itself (in place).
Napi::Value CrossentropyBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int N = int_arg(info, 5, "N", 0), V = int_arg(info, 6, "V", 1);
  bool async = bool_arg(info, 7, "async");
  size_t nv = checked_size(env, {N, V});
  float* dlogits = array_arg<float>(info, 0, "dlogits", nv, keep);
  const float* dlosses = array_arg<float>(info, 1, "dlosses", (size_t)N, keep);
  const float* logits = array_arg<float>(info, 2, "logits", nv, keep);
  const int32_t* targets = array_arg<int32_t>(info, 3, "targets", (size_t)N, keep);
  const float* lse = array_arg<float>(info, 4, "lse", (size_t)N, keep);
  check_ids(env, targets, (size_t)N, V, "targets", true);
  return run_op(info, async, keep, [=] {
    backend().crossentropy_backward(dlogits, dlosses, logits, targets, lse, N, V);
  });
}

// grpoLoss(grad, logprobs, oldLogprobs, refLogprobs | null, advantages, mask, S, T, clipLow,
//          clipHigh, beta, filterThreshold, lossType (0 grpo, 1 bnpo, 2 dr_grpo, 3 dapo),
//          normalizer, async) -> { loss, kept, clipFraction, kl, keptTokens }
Napi::Value GrpoLoss(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int S = int_arg(info, 6, "S", 0), T = int_arg(info, 7, "T", 0);
  GrpoParams p;
  p.clip_low = (float)number_arg(info, 8, "clipLow");
  p.clip_high = (float)number_arg(info, 9, "clipHigh");
  p.beta = (float)number_arg(info, 10, "beta");
  p.filter_threshold = (float)number_arg(info, 11, "filterThreshold");
  p.loss_type = (GrpoLossType)int_arg(info, 12, "lossType", 0, 3);
  p.normalizer = number_arg(info, 13, "normalizer");
  bool async = bool_arg(info, 14, "async");
  if (p.clip_low < 0 || p.clip_low >= 1)
    throw Napi::RangeError::New(env, "clipLow must be in [0, 1)");
  if (p.clip_high < 0) throw Napi::RangeError::New(env, "clipHigh must be >= 0");
  if (p.beta < 0) throw Napi::RangeError::New(env, "beta must be >= 0");
  // -1: no filtering (src/kernels/losses.ts maps null / omitted to it); any other negative is an error.
  if (p.filter_threshold < 0 && p.filter_threshold != -1.0f) throw Napi::RangeError::New(env, "filterThreshold must be >= 0 (or -1: no filtering)");
  if (p.loss_type == GrpoLossType::dapo && !(p.normalizer > 0))
    throw Napi::RangeError::New(env, "normalizer must be > 0 for dapo");
  size_t st = checked_size(env, {S, T});
  float* grad = array_arg<float>(info, 0, "grad", st, keep);
  const float* lp = array_arg<float>(info, 1, "logprobs", st, keep);
  const float* old = array_arg<float>(info, 2, "oldLogprobs", st, keep);
  const float* ref = array_arg<float>(info, 3, "refLogprobs", st, keep, true);
  const float* adv = array_arg<float>(info, 4, "advantages", (size_t)S, keep);
  const float* mask = array_arg<float>(info, 5, "mask", st, keep);
  auto result = std::make_shared<GrpoResult>();
  return run_op(
      info, async, keep,
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
  exports.Set("softmaxForward", Napi::Function::New(env, SoftmaxForward));
  exports.Set("logSoftmaxForward", Napi::Function::New(env, LogSoftmaxForward));
  exports.Set("tokenLogprobsForward", Napi::Function::New(env, TokenLogprobsForward));
  exports.Set("tokenLogprobsBackward", Napi::Function::New(env, TokenLogprobsBackward));
  exports.Set("crossentropyForward", Napi::Function::New(env, CrossentropyForward));
  exports.Set("crossentropyBackward", Napi::Function::New(env, CrossentropyBackward));
  exports.Set("grpoLoss", Napi::Function::New(env, GrpoLoss));
}

}  // namespace wst::binding
