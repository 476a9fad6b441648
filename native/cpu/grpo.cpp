// TEMPORARY stubs: replaced by the real kernels.
#include <cstdlib>
#include "../kernels.h"
#include "threadpool.h"

namespace wst {

GrpoResult grpo_loss(float* grad, const float* logprobs, const float* old_logprobs,
                     const float* ref_logprobs, const float* advantages, const float* mask,
                     int S, int T, const GrpoParams& params) { std::abort(); }

}  // namespace wst
