#include <algorithm>

#include "util.h"
#include "../native/cpu/gemm_kernels.h"

namespace wst::binding {
namespace {

// C (m,n) = alpha * op(A) @ op(B) + beta * C with tight leading dimensions; A and B of element
// type T (float, or uint16_t bf16 bits), C float. ({a, b, c, m, n, k, transA?, transB?, alpha,
// beta}, async)
template <class T, class Run>
Napi::Value gemm_call(const Napi::CallbackInfo& info, Run run) {
  Args args(info);
  Napi::Env env = info.Env();
  int m = args.integer("m", 0), n = args.integer("n", 0), k = args.integer("k", 0);
  bool transA = args.flag("transA"), transB = args.flag("transB");
  float alpha = (float)args.number("alpha"), beta = (float)args.number("beta");
  const T* a = args.array<T>("a", checked_size(env, {m, k}));
  const T* b = args.array<T>("b", checked_size(env, {k, n}));
  float* c = args.array<float>("c", checked_size(env, {m, n}));
  const int lda = std::max(transA ? m : k, 1), ldb = std::max(transB ? k : n, 1), ldc = std::max(n, 1);
  return run_op(info, args, [=] { run(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc); });
}

Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  return gemm_call<float>(info, [](auto... args) { backend().sgemm(args...); });
}

// fp32 in/out, tf32 products.
Napi::Value SgemmTf32(const Napi::CallbackInfo& info) {
  return gemm_call<float>(info, [](auto... args) { backend().sgemm_tf32(args...); });
}

// bf16 bits in (Uint16Array a, b), fp32 C: tensor cores on the CUDA backend, fp32 on the CPU.
Napi::Value GemmBf16(const Napi::CallbackInfo& info) {
  return gemm_call<uint16_t>(info, [](auto... args) { backend().gemm_bf16(args...); });
}

// castBf16({out: Uint16Array(n), x: Float32Array(n)}, async): bf16 bits, round to nearest even.
Napi::Value CastBf16(const Napi::CallbackInfo& info) {
  Args args(info);
  size_t n = 0;
  const float* x = args.array<float>("x", kAnyLength, &n);
  uint16_t* out = args.array<uint16_t>("out", n);
  return run_op(info, args, [=] { backend().cast_bf16(out, x, n); });
}

double seconds_field(const Args& args) {
  double seconds = args.number("seconds");
  if (seconds <= 0 || seconds > 60) throw args.range_error("seconds must be in (0, 60]");
  return seconds;
}

// measureFmaPeak({seconds, threads}): GFLOP/s of the active SIMD path's FMA loop, summed over
// `threads` pool threads running at once (for `bench kernels`; set the pool size first).
Napi::Value MeasureFmaPeak(const Napi::CallbackInfo& info) {
  Args args(info);
  double seconds = seconds_field(args);
  int threads = args.integer("threads", 1, 1024);
  return Napi::Number::New(info.Env(), fma_peak_gflops(seconds, threads));
}

// measureReadBandwidth({bytes, seconds, threads}): GB/s of a streaming sum over a buffer of
// `bytes` per thread (the reference for memory-bound kernels in `bench kernels`).
Napi::Value MeasureReadBandwidth(const Napi::CallbackInfo& info) {
  Args args(info);
  double bytes = args.number("bytes");
  if (bytes < 4096 || bytes > (double)(1ull << 34)) throw args.range_error("bytes must be in [4096, 2^34]");
  double seconds = seconds_field(args);
  int threads = args.integer("threads", 1, 1024);
  return Napi::Number::New(info.Env(), read_bandwidth_gbps((size_t)bytes, seconds, threads));
}

}  // namespace

void register_gemm(Napi::Env env, Napi::Object exports) {
  static const Export table[] = {
      {"sgemm", Sgemm}, {"gemmBf16", GemmBf16}, {"sgemmTf32", SgemmTf32}, {"castBf16", CastBf16},
      {"measureFmaPeak", MeasureFmaPeak}, {"measureReadBandwidth", MeasureReadBandwidth},
  };
  export_all(env, exports, table);
}

}  // namespace wst::binding
