// The SwiGLU loops compiled for AVX2 + FMA (selected when cpu_isa() is "avx2").
#define WST_VEC_BYTES 32
#include "layers_vec_impl.h"

namespace wst::detail {
const SwigluLoops& swiglu_loops_avx2() { return kLoops; }
}  // namespace wst::detail
