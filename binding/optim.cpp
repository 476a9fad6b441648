#include <memory>

#include "util.h"

namespace wst::binding {
namespace {

// adamwUpdate({param, grad, m, v, lr, beta1?, beta2?, eps?, weightDecay?, step}, async): param,
// m, v updated in place.
Napi::Value AdamwUpdate(const Napi::CallbackInfo& info) {
  Args args(info);
  // The defaults of torch.optim.AdamW (src/native-api.ts AdamwArgs).
  double lr = args.number("lr"), beta1 = args.number("beta1", 0.9), beta2 = args.number("beta2", 0.999),
         eps = args.number("eps", 1e-8), wd = args.number("weightDecay", 0.01);
  int step = args.integer("step", 1);
  if (lr < 0) throw args.range_error("lr must be >= 0");
  if (beta1 < 0 || beta1 >= 1) throw args.range_error("beta1 must be in [0, 1)");
  if (beta2 < 0 || beta2 >= 1) throw args.range_error("beta2 must be in [0, 1)");
  if (!(eps > 0)) throw args.range_error("eps must be > 0");
  size_t n = 0;
  float* param = args.array<float>("param", kAnyLength, &n);
  const float* grad = args.array<float>("grad", n);
  float* m = args.array<float>("m", n);
  float* v = args.array<float>("v", n);
  return run_op(info, args, [=] { backend().adamw_update(param, grad, m, v, n, lr, beta1, beta2, eps, wd, step); });
}

// sumSquares({x}, async) -> number (float64)
Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  Args args(info);
  size_t n = 0;
  const float* x = args.array<float>("x", kAnyLength, &n);
  auto result = std::make_shared<double>(0.0);
  return run_op(
      info, args, [=] { *result = backend().sum_squares(x, n); },
      [result](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *result); });
}

// scaleInplace({x, s}, async): x *= s
Napi::Value ScaleInplace(const Napi::CallbackInfo& info) {
  Args args(info);
  float s = (float)args.number("s");
  size_t n = 0;
  float* x = args.array<float>("x", kAnyLength, &n);
  return run_op(info, args, [=] { backend().scale_inplace(x, n, s); });
}

}  // namespace

void register_optim(Napi::Env env, Napi::Object exports) {
  static const Export table[] = {
      {"adamwUpdate", AdamwUpdate}, {"sumSquares", SumSquares}, {"scaleInplace", ScaleInplace},
  };
  export_all(env, exports, table);
}

}  // namespace wst::binding
