// The SwiGLU loops (see layers_vec.h), written once with GCC/Clang vector extensions and
// compiled per SIMD path: define WST_VEC_BYTES (16 SSE2, 32 AVX2, 64 AVX-512) before
// including. Include exactly once per translation unit; everything sits in an anonymous
// namespace so the differently-compiled copies never merge.
#pragma once
#include <cstdint>
#include <cstring>

#include "layers_vec.h"

#ifndef WST_VEC_BYTES
#error "define WST_VEC_BYTES before including layers_vec_impl.h"
#endif

namespace wst::detail {
namespace {

typedef float vf __attribute__((vector_size(WST_VEC_BYTES)));
typedef int32_t vi __attribute__((vector_size(WST_VEC_BYTES)));
constexpr int W = WST_VEC_BYTES / 4;

inline vf load(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline vf splat(float s) { return vf{} + s; }
inline vf load_part(const float* p, size_t n) {
  float t[W] = {};
  for (size_t i = 0; i < n; i++) t[i] = p[i];
  return load(t);
}
inline void store_part(float* p, vf v, size_t n) {
  float t[W];
  store(t, v);
  for (size_t i = 0; i < n; i++) p[i] = t[i];
}

// exp(x) for all x, Cephes-style: x = k ln2 + r, |r| <= ln2/2, exp(r) by a degree-7
// polynomial (about 1 ulp), scaled by 2^k through the exponent bits. Below -87.3 the result
// is 0 (expf is subnormal there), above 88.7 it is +inf, NaN stays NaN.
inline vf vexp(vf x) {
  const vf lo = splat(-87.3f), hi = splat(88.7f);
  const vi under = x < lo, over = x > hi;
  vf xc = under ? lo : x;
  xc = over ? hi : xc;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  vf t = xc * 1.44269504088896341f + magic;
  vf k = t - magic;
  vi ki = (vi)t - (vi)splat(magic);
  vf r = xc - k * 0.693359375f;
  r = r + k * 2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  vf y = p * (r * r) + r + 1.0f;
  // 2^k in two halves so that k = 128 (x near 88.7) does not overflow the exponent field.
  vi k1 = ki >> 1, k2 = ki - k1;
  y = y * (vf)((k1 + 127) << 23) * (vf)((k2 + 127) << 23);
  y = under ? splat(0.0f) : y;
  return over ? splat(__builtin_inff()) : y;
}

inline vf silu_fwd(vf g, vf u) { return g / (1.0f + vexp(-g)) * u; }

void forward(float* out, const float* gate, const float* up, size_t n) {
  size_t i = 0;
  for (; i + W <= n; i += W) store(out + i, silu_fwd(load(gate + i), load(up + i)));
  if (i < n) store_part(out + i, silu_fwd(load_part(gate + i, n - i), load_part(up + i, n - i)), n - i);
}

// Forward: out = g * sig(g) * u
//   dup = dout * g * sig(g);  dgate = dout * u * sig(g) * (1 + g * (1 - sig(g)))
inline void silu_bwd(vf d, vf g, vf u, vf& dg, vf& du) {
  vf sg = 1.0f / (1.0f + vexp(-g));
  du = d * (g * sg);
  dg = d * u * (sg * (1.0f + g * (1.0f - sg)));
}

void backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
              size_t n) {
  size_t i = 0;
  vf dg, du;
  for (; i + W <= n; i += W) {
    silu_bwd(load(dout + i), load(gate + i), load(up + i), dg, du);
    store(dgate + i, dg);
    store(dup + i, du);
  }
  if (i < n) {
    size_t m = n - i;
    silu_bwd(load_part(dout + i, m), load_part(gate + i, m), load_part(up + i, m), dg, du);
    store_part(dgate + i, dg, m);
    store_part(dup + i, du, m);
  }
}

const SwigluLoops kLoops = {forward, backward};

}  // namespace
}  // namespace wst::detail
