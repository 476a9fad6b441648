// TEMPORARY stubs: replaced by the real kernels.
#include <cstdlib>
#include "../kernels.h"
#include "threadpool.h"

namespace wst {

void adamw_update(float* param, const float* grad, float* m, float* v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int step) { std::abort(); }
double sum_squares(const float* x, size_t n) { std::abort(); }
void scale_inplace(float* x, size_t n, float s) { std::abort(); }

}  // namespace wst
