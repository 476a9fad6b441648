// TEMPORARY stubs: replaced by the real kernels.
#include <cstdlib>
#include "../kernels.h"
#include "threadpool.h"

namespace wst {

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int B, int H, int KVH, int Tq, int Tk, int D, bool causal) { std::abort(); }
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse, int B,
                        int H, int KVH, int Tq, int Tk, int D, bool causal) { std::abort(); }
void attention_decode(float* out, const float* q, const float* kcache, const float* vcache,
                      const int32_t* lengths, int B, int H, int KVH, int maxT, int D) { std::abort(); }

}  // namespace wst
