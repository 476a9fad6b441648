// TEMPORARY stubs: replaced by the real kernels.
#include <cstdlib>
#include "../kernels.h"
#include "threadpool.h"

namespace wst {

void sample_tokens(int32_t* ids, float* logprobs, const float* logits, int N, int V,
                   const SamplingParams& params, const uint64_t* seeds, const uint64_t* counters) { std::abort(); }
float philox_uniform(uint64_t key, uint64_t counter) { std::abort(); }

}  // namespace wst
