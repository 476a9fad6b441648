// The softmax row primitives compiled for AVX-512 (selected when cpu_isa() is "avx512").
#define WST_VEC_BYTES 64
#include "softmax_rows_impl.h"

namespace wst::detail {
const SoftmaxRows& softmax_rows_avx512() { return kRows; }
}  // namespace wst::detail
