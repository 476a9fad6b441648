// The softmax row primitives compiled for AVX2 + FMA (selected when cpu_isa() is "avx2").
#define WST_VEC_BYTES 32
#include "softmax_rows_impl.h"

namespace wst::detail {
const SoftmaxRows& softmax_rows_avx2() { return kRows; }
}  // namespace wst::detail
