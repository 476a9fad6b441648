// TEMPORARY stubs: replaced by the real kernels.
#include <cstdlib>
#include "../kernels.h"
#include "threadpool.h"

namespace wst {

void softmax_forward(float* probs, const float* logits, int N, int V) { std::abort(); }
void log_softmax_forward(float* out, const float* logits, int N, int V) { std::abort(); }
void token_logprobs_forward(float* logprob, float* lse, float* entropy, const float* logits,
                            const int32_t* ids, int N, int V) { std::abort(); }
void token_logprobs_backward(float* dlogits, const float* dlogprob, const float* dentropy,
                             const float* logits, const int32_t* ids, const float* lse,
                             const float* entropy, int N, int V) { std::abort(); }
void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                          int N, int V) { std::abort(); }
void crossentropy_backward(float* dlogits, const float* dlosses, const float* logits,
                           const int32_t* targets, const float* lse, int N, int V) { std::abort(); }

}  // namespace wst
