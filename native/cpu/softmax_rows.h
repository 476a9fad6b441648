// Row primitives of the softmax family (internal to native/cpu/softmax*.cpp).
// One table per SIMD path: softmax.cpp (baseline), softmax_avx2.cpp, softmax_avx512.cpp all
// compile the same source (softmax_rows_impl.h) with different flags; softmax.cpp picks one
// table at run time from cpu_isa(). Each primitive walks one row in a fixed order, so a
// row's result never depends on the thread count.
#pragma once
#include <cstdint>

namespace wst::detail {

struct SoftmaxRows {
  // max_v x[v]
  float (*max)(const float* x, int n);
  // s1 = sum_v exp(x[v] - m); s2 = sum_v exp(x[v] - m) * (x[v] - m) when s2 != null (terms with
  // exp == 0 count 0, so -inf logits are fine). out != null also receives exp(x[v] - m).
  void (*sumexp)(const float* x, int n, float m, float* out, double* s1, double* s2);
  // out[v] = x[v] * s (out may alias x)
  void (*scale)(float* out, const float* x, int n, float s);
  // out[v] = x[v] - c (out may alias x)
  void (*shift)(float* out, const float* x, int n, float c);
  // out[v] = p_v * (a + b * (x[v] - lse)), p_v = exp(x[v] - lse); 0 where p_v == 0.
  // The shared core of every softmax backward here. out may alias x.
  void (*grad)(float* out, const float* x, int n, float lse, float a, float b);
};

const SoftmaxRows& softmax_rows_generic();
const SoftmaxRows& softmax_rows_avx2();
const SoftmaxRows& softmax_rows_avx512();

}  // namespace wst::detail
