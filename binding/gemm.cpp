#include "util.h"

namespace wst::binding {
namespace {

// sgemm(a, b, c, m, n, k, transA, transB, alpha, beta, async)
// C (m,n) = alpha * op(A) @ op(B) + beta * C with tight leading dimensions.
Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int m = int_arg(info, 3, "m", 0), n = int_arg(info, 4, "n", 0), k = int_arg(info, 5, "k", 0);
  bool transA = bool_arg(info, 6, "transA"), transB = bool_arg(info, 7, "transB");
  float alpha = (float)number_arg(info, 8, "alpha"), beta = (float)number_arg(info, 9, "beta");
  bool async = bool_arg(info, 10, "async");
  const float* a = array_arg<float>(info, 0, "a", checked_size(env, {m, k}), keep);
  const float* b = array_arg<float>(info, 1, "b", checked_size(env, {k, n}), keep);
  float* c = array_arg<float>(info, 2, "c", checked_size(env, {m, n}), keep);
  int lda = transA ? m : k, ldb = transB ? k : n;
  return run_op(info, async, keep, [=] {
    backend().sgemm(transA, transB, m, n, k, alpha, a, lda > 0 ? lda : 1, b, ldb > 0 ? ldb : 1,
                    beta, c, n > 0 ? n : 1);
  });
}

}  // namespace

void register_gemm(Napi::Env env, Napi::Object exports) {
  exports.Set("sgemm", Napi::Function::New(env, Sgemm));
}

}  // namespace wst::binding
