// Reduced-precision ops on the CPU: the references for the tensor-core CUDA kernels. They widen
// the bf16 inputs to fp32 (exact), or round fp32 inputs to tf32, and run the fp32 kernel, so they
// inherit its threading and its tests.
#include <vector>

#include "../kernels.h"
#include "threadpool.h"

namespace wst {
namespace {

// Widens the (rows x cols, leading dim ld) bf16 matrix to a dense fp32 copy with the same ld.
std::vector<float> widen(const uint16_t* src, size_t rows, size_t cols, size_t ld) {
  std::vector<float> out(rows ? (rows - 1) * ld + cols : 0);
  for (size_t r = 0; r < rows; r++)
    for (size_t c = 0; c < cols; c++) out[r * ld + c] = bf16_to_float(src[r * ld + c]);
  return out;
}

}  // namespace

void gemm_bf16(bool transA, bool transB, int m, int n, int k, float alpha, const uint16_t* A,
               int lda, const uint16_t* B, int ldb, float beta, float* C, int ldc) {
  if (m <= 0 || n <= 0) return;
  const std::vector<float> a = k > 0 ? widen(A, transA ? k : m, transA ? m : k, lda) : std::vector<float>();
  const std::vector<float> b = k > 0 ? widen(B, transB ? n : k, transB ? k : n, ldb) : std::vector<float>();
  sgemm(transA, transB, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, C, ldc);
}

void cast_bf16(uint16_t* out, const float* in, size_t n) {
  parallel_chunks(n, size_t(1) << 15, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; i++) out[i] = float_to_bf16(in[i]);
  });
}

void sgemm_tf32(bool transA, bool transB, int m, int n, int k, float alpha, const float* A,
                int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  if (m <= 0 || n <= 0) return;
  auto rounded = [](const float* src, size_t rows, size_t cols, size_t ld) {
    std::vector<float> out(rows ? (rows - 1) * ld + cols : 0);
    for (size_t r = 0; r < rows; r++)
      for (size_t c = 0; c < cols; c++) out[r * ld + c] = round_to_tf32(src[r * ld + c]);
    return out;
  };
  const std::vector<float> a = k > 0 ? rounded(A, transA ? k : m, transA ? m : k, lda) : std::vector<float>();
  const std::vector<float> b = k > 0 ? rounded(B, transB ? n : k, transB ? k : n, ldb) : std::vector<float>();
  sgemm(transA, transB, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, C, ldc);
}

void attention_forward_bf16(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k,
                            const uint16_t* v, int B, int H, int KVH, int Tq, int Tk, int D,
                            bool causal) {
  const size_t nq = (size_t)B * Tq * H * D, nk = (size_t)B * Tk * KVH * D;
  const std::vector<float> qf = widen(q, 1, nq, nq), kf = widen(k, 1, nk, nk), vf = widen(v, 1, nk, nk);
  std::vector<float> of(nq);
  attention_forward(of.data(), lse, qf.data(), kf.data(), vf.data(), B, H, KVH, Tq, Tk, D, causal);
  for (size_t i = 0; i < nq; i++) out[i] = float_to_bf16(of[i]);
}

}  // namespace wst
