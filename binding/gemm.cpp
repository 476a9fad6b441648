#include <algorithm>

#include "util.h"
#include "../native/cpu/gemm_kernels.h"

namespace wst::binding {
namespace {

// C (m,n) = alpha * op(A) @ op(B) + beta * C with tight leading dimensions; A and B of element
// type T (float, or uint16_t bf16 bits), C float. Arguments:
// (a, b, c, m, n, k, transA, transB, alpha, beta, async).
template <class T, class Run>
Napi::Value gemm_call(const Napi::CallbackInfo& info, Run run) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int m = int_arg(info, 3, "m", 0), n = int_arg(info, 4, "n", 0), k = int_arg(info, 5, "k", 0);
  bool transA = bool_arg(info, 6, "transA"), transB = bool_arg(info, 7, "transB");
  float alpha = (float)number_arg(info, 8, "alpha"), beta = (float)number_arg(info, 9, "beta");
  bool async = bool_arg(info, 10, "async");
  const T* a = array_arg<T>(info, 0, "a", checked_size(env, {m, k}), keep);
  const T* b = array_arg<T>(info, 1, "b", checked_size(env, {k, n}), keep);
  float* c = array_arg<float>(info, 2, "c", checked_size(env, {m, n}), keep);
  const int lda = std::max(transA ? m : k, 1), ldb = std::max(transB ? k : n, 1), ldc = std::max(n, 1);
  return run_op(info, async, keep, [=] { run(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc); });
}

// sgemm(a, b, c, m, n, k, transA, transB, alpha, beta, async)
Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  return gemm_call<float>(info, [](auto... args) { backend().sgemm(args...); });
}

// sgemmTf32(a, b, c, m, n, k, transA, transB, alpha, beta, async): fp32 in/out, tf32 products.
Napi::Value SgemmTf32(const Napi::CallbackInfo& info) {
  return gemm_call<float>(info, [](auto... args) { backend().sgemm_tf32(args...); });
}

// gemmBf16(a Uint16Array, b Uint16Array, c Float32Array, m, n, k, transA, transB, alpha, beta, async)
// bf16 bits in, fp32 C: tensor cores on the CUDA backend, fp32 on the CPU.
Napi::Value GemmBf16(const Napi::CallbackInfo& info) {
  return gemm_call<uint16_t>(info, [](auto... args) { backend().gemm_bf16(args...); });
}

// measureFmaPeak(seconds, threads): GFLOP/s of the active SIMD path's FMA loop, summed over
// `threads` pool threads running at once (for `bench kernels`; set the pool size first).
Napi::Value MeasureFmaPeak(const Napi::CallbackInfo& info) {
  double seconds = number_arg(info, 0, "seconds");
  if (seconds <= 0 || seconds > 60) throw Napi::RangeError::New(info.Env(), "seconds must be in (0, 60]");
  int threads = int_arg(info, 1, "threads", 1, 1024);
  return Napi::Number::New(info.Env(), fma_peak_gflops(seconds, threads));
}

// measureReadBandwidth(bytes, seconds, threads): GB/s of a streaming sum over a buffer of
// `bytes` per thread (the reference for memory-bound kernels in `bench kernels`).
Napi::Value MeasureReadBandwidth(const Napi::CallbackInfo& info) {
  double bytes = number_arg(info, 0, "bytes");
  if (bytes < 4096 || bytes > (double)(1ull << 34)) throw Napi::RangeError::New(info.Env(), "bytes must be in [4096, 2^34]");
  double seconds = number_arg(info, 1, "seconds");
  if (seconds <= 0 || seconds > 60) throw Napi::RangeError::New(info.Env(), "seconds must be in (0, 60]");
  int threads = int_arg(info, 2, "threads", 1, 1024);
  return Napi::Number::New(info.Env(), read_bandwidth_gbps((size_t)bytes, seconds, threads));
}

}  // namespace

void register_gemm(Napi::Env env, Napi::Object exports) {
  exports.Set("sgemm", Napi::Function::New(env, Sgemm));
  exports.Set("gemmBf16", Napi::Function::New(env, GemmBf16));
  exports.Set("sgemmTf32", Napi::Function::New(env, SgemmTf32));
  exports.Set("measureFmaPeak", Napi::Function::New(env, MeasureFmaPeak));
  exports.Set("measureReadBandwidth", Napi::Function::New(env, MeasureReadBandwidth));
}

}  // namespace wst::binding
