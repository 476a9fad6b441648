// Elementwise SwiGLU loops (internal to native/cpu/layers*.cpp). layers.cpp (baseline),
// layers_avx2.cpp and layers_avx512.cpp compile the same source (layers_vec_impl.h) with
// different flags; layers.cpp picks one table at run time from cpu_isa(). Each element's
// result depends only on its inputs, never on the thread count or the chunking.
#pragma once
#include <cstddef>

namespace wst::detail {

struct SwigluLoops {
  // out[i] = silu(gate[i]) * up[i]
  void (*forward)(float* out, const float* gate, const float* up, size_t n);
  // dup[i] = dout[i] * silu(gate[i]); dgate[i] = dout[i] * up[i] * silu'(gate[i])
  void (*backward)(float* dgate, float* dup, const float* dout, const float* gate,
                   const float* up, size_t n);
};

const SwigluLoops& swiglu_loops_generic();
const SwigluLoops& swiglu_loops_avx2();
const SwigluLoops& swiglu_loops_avx512();

}  // namespace wst::detail
