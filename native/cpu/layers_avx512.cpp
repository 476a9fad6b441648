// The SwiGLU loops compiled for AVX-512 (selected when cpu_isa() is "avx512").
#define WST_VEC_BYTES 64
#include "layers_vec_impl.h"

namespace wst::detail {
const SwigluLoops& swiglu_loops_avx512() { return kLoops; }
}  // namespace wst::detail
