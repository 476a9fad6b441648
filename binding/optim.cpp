#include <memory>

#include "util.h"

namespace wst::binding {
namespace {

// adamwUpdate(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step, async):
// param, m, v updated in place.
Napi::Value AdamwUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  double lr = number_arg(info, 4, "lr"), beta1 = number_arg(info, 5, "beta1"),
         beta2 = number_arg(info, 6, "beta2"), eps = number_arg(info, 7, "eps"),
         wd = number_arg(info, 8, "weightDecay");
  int step = int_arg(info, 9, "step", 1);
  bool async = bool_arg(info, 10, "async");
  if (lr < 0) throw Napi::RangeError::New(env, "lr must be >= 0");
  if (beta1 < 0 || beta1 >= 1) throw Napi::RangeError::New(env, "beta1 must be in [0, 1)");
  if (beta2 < 0 || beta2 >= 1) throw Napi::RangeError::New(env, "beta2 must be in [0, 1)");
  if (!(eps > 0)) throw Napi::RangeError::New(env, "eps must be > 0");
  size_t n = 0;
  float* param = array_arg<float>(info, 0, "param", kAnyLength, keep, false, &n);
  const float* grad = array_arg<float>(info, 1, "grad", n, keep);
  float* m = array_arg<float>(info, 2, "m", n, keep);
  float* v = array_arg<float>(info, 3, "v", n, keep);
  return run_op(info, async, keep, [=] {
    backend().adamw_update(param, grad, m, v, n, lr, beta1, beta2, eps, wd, step);
  });
}

// sumSquares(x, async) -> number (float64)
Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  std::vector<Napi::Value> keep;
  bool async = bool_arg(info, 1, "async");
  size_t n = 0;
  const float* x = array_arg<float>(info, 0, "x", kAnyLength, keep, false, &n);
  auto result = std::make_shared<double>(0.0);
  return run_op(
      info, async, keep, [=] { *result = backend().sum_squares(x, n); },
      [result](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *result); });
}

// scaleInplace(x, s, async): x *= s
Napi::Value ScaleInplace(const Napi::CallbackInfo& info) {
  std::vector<Napi::Value> keep;
  float s = (float)number_arg(info, 1, "s");
  bool async = bool_arg(info, 2, "async");
  size_t n = 0;
  float* x = array_arg<float>(info, 0, "x", kAnyLength, keep, false, &n);
  return run_op(info, async, keep, [=] { backend().scale_inplace(x, n, s); });
}

}  // namespace

void register_optim(Napi::Env env, Napi::Object exports) {
  exports.Set("adamwUpdate", Napi::Function::New(env, AdamwUpdate));
  exports.Set("sumSquares", Napi::Function::New(env, SumSquares));
  exports.Set("scaleInplace", Napi::Function::New(env, ScaleInplace));
}

}  // namespace wst::binding
