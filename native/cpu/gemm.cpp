// TEMPORARY naive GEMM (the fast BLIS-style one replaces it).
#include "../kernels.h"
#include "threadpool.h"

namespace wst {

void sgemm(bool transA, bool transB, int m, int n, int k, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  parallel_chunks((size_t)m, 16, [&](size_t r0, size_t r1) {
    for (size_t i = r0; i < r1; i++)
      for (int j = 0; j < n; j++) {
        float acc = 0;
        for (int p = 0; p < k; p++) {
          float a = transA ? A[(size_t)p * lda + i] : A[i * lda + p];
          float b = transB ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
          acc += a * b;
        }
        float& c = C[i * ldc + j];
        c = alpha * acc + (beta == 0 ? 0 : beta * c);
      }
  });
}

const char* cpu_isa() { return "generic"; }

}  // namespace wst
