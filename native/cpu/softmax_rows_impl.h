// The softmax row primitives (see softmax_rows.h), written once with GCC/Clang vector
// extensions and compiled per SIMD path with the register width of that path: define
// WST_VEC_BYTES (16 SSE2, 32 AVX2, 64 AVX-512) before including. Include exactly once per
// translation unit; every definition is in an anonymous namespace so the differently-compiled
// copies never merge.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "softmax_rows.h"

#ifndef WST_VEC_BYTES
#error "define WST_VEC_BYTES before including softmax_rows_impl.h"
#endif

namespace wst::detail {
namespace {

typedef float vf __attribute__((vector_size(WST_VEC_BYTES)));
typedef int32_t vi __attribute__((vector_size(WST_VEC_BYTES)));
constexpr int W = WST_VEC_BYTES / 4;
// Float lane sums are moved into float64 every kBlock elements: each float partial holds at
// most kBlock / W terms, so a 152k-entry row loses no more than a short float sum would.
constexpr int kBlock = 512;

inline vf load(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline vf splat(float s) { return vf{} + s; }
// The first n (< W) lanes from p, the rest `fill`.
inline vf load_part(const float* p, int n, float fill) {
  float t[W];
  for (int i = 0; i < W; i++) t[i] = i < n ? p[i] : fill;
  return load(t);
}
inline void store_part(float* p, vf v, int n) {
  float t[W];
  store(t, v);
  for (int i = 0; i < n; i++) p[i] = t[i];
}

// exp(x), Cephes-style: x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-7 polynomial
// (about 1 ulp), times 2^n built in the exponent bits. Exactly 0 below -87.3 (where expf
// turns subnormal), NaN stays NaN. Inputs here are <= ~0 (logits minus max or lse).
inline vf vexp(vf x) {
  const vf lo = splat(-87.3f), hi = splat(88.0f);
  const vi under = x < lo;
  x = under ? lo : x;
  x = x > hi ? hi : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  vf t = x * 1.44269504088896341f + magic;
  vf n = t - magic;
  vi ni = (vi)t - (vi)splat(magic);
  vf r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  vf y = p * (r * r) + r + 1.0f;
  y = y * (vf)((ni + 127) << 23);
  return under ? splat(0.0f) : y;
}

// NaN wins: once a lane holds NaN it keeps it (v > NaN is false), and NaN is taken on sight.
inline vf vmax_nan(vf v, vf acc) { return (v > acc) | (v != v) ? v : acc; }

float row_max(const float* x, int n) {
  vf acc0 = splat(-INFINITY), acc1 = acc0;  // two chains for instruction-level parallelism
  int i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    acc0 = vmax_nan(load(x + i), acc0);
    acc1 = vmax_nan(load(x + i + W), acc1);
  }
  for (; i + W <= n; i += W) acc0 = vmax_nan(load(x + i), acc0);
  if (i < n) acc0 = vmax_nan(load_part(x + i, n - i, -INFINITY), acc0);
  acc0 = vmax_nan(acc1, acc0);
  float t[W];
  store(t, acc0);
  float m = t[0];
  for (int l = 1; l < W; l++) m = (t[l] > m) | (t[l] != t[l]) ? t[l] : m;
  return m;
}

// e = exp(x - m) for one vector; a1 += e, a2 += e (x - m) (0 where e == 0).
template <bool Out, bool S2>
inline void sumexp_step(vf x, vf vm, float* out, vf& a1, vf& a2) {
  const vf zero = splat(0.0f);
  vf z = x - vm, e = vexp(z);
  if (Out) store(out, e);
  a1 += e;
  if (S2) a2 += e == zero ? zero : e * z;
}

template <bool Out, bool S2>
void sumexp_t(const float* x, int n, float m, float* out, double* s1, double* s2) {
  const vf vm = splat(m), zero = splat(0.0f);
  double d1[W] = {}, d2[W] = {};
  int i = 0;
  while (i < n) {
    const int end = n - i > kBlock ? i + kBlock : n;
    vf a1 = zero, a2 = zero, b1 = zero, b2 = zero;
    for (; i + 2 * W <= end; i += 2 * W) {
      sumexp_step<Out, S2>(load(x + i), vm, Out ? out + i : nullptr, a1, a2);
      sumexp_step<Out, S2>(load(x + i + W), vm, Out ? out + i + W : nullptr, b1, b2);
    }
    for (; i + W <= end; i += W) sumexp_step<Out, S2>(load(x + i), vm, Out ? out + i : nullptr, a1, a2);
    if (i < end) {  // only in the last block (kBlock is a multiple of 2W)
      float t[W];
      sumexp_step<Out, S2>(load_part(x + i, end - i, -INFINITY), vm, t, a1, a2);
      if (Out) std::memcpy(out + i, t, sizeof(float) * (size_t)(end - i));
      i = end;
    }
    a1 += b1;
    a2 += b2;
    float t1[W], t2[W];
    store(t1, a1);
    store(t2, a2);
    for (int l = 0; l < W; l++) {
      d1[l] += t1[l];
      if (S2) d2[l] += t2[l];
    }
  }
  double r1 = 0, r2 = 0;
  for (int l = 0; l < W; l++) {
    r1 += d1[l];
    r2 += d2[l];
  }
  *s1 = r1;
  if (S2) *s2 = r2;
}

void row_sumexp(const float* x, int n, float m, float* out, double* s1, double* s2) {
  if (out) {
    if (s2) sumexp_t<true, true>(x, n, m, out, s1, s2);
    else sumexp_t<true, false>(x, n, m, out, s1, s2);
  } else {
    if (s2) sumexp_t<false, true>(x, n, m, out, s1, s2);
    else sumexp_t<false, false>(x, n, m, out, s1, s2);
  }
}

void row_scale(float* out, const float* x, int n, float s) {
  int i = 0;
  for (; i + W <= n; i += W) store(out + i, load(x + i) * s);
  if (i < n) store_part(out + i, load_part(x + i, n - i, 0.0f) * s, n - i);
}

void row_shift(float* out, const float* x, int n, float c) {
  int i = 0;
  for (; i + W <= n; i += W) store(out + i, load(x + i) - c);
  if (i < n) store_part(out + i, load_part(x + i, n - i, 0.0f) - c, n - i);
}

inline vf grad_lanes(vf x, float lse, float a, float b) {
  const vf zero = splat(0.0f);
  vf z = x - lse, p = vexp(z);
  vf g = p * (a + b * z);
  return p == zero ? zero : g;
}

void row_grad(float* out, const float* x, int n, float lse, float a, float b) {
  int i = 0;
  for (; i + W <= n; i += W) store(out + i, grad_lanes(load(x + i), lse, a, b));
  if (i < n) store_part(out + i, grad_lanes(load_part(x + i, n - i, 0.0f), lse, a, b), n - i);
}

const SoftmaxRows kRows = {row_max, row_sumexp, row_scale, row_shift, row_grad};

}  // namespace
}  // namespace wst::detail
