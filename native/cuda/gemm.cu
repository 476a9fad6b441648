// SGEMM on CUDA cores: C (m,n) = alpha * op(A) @ op(B) + beta * C, row-major (kernels.h).
//
// The classic shared-memory tiling: a 256-thread block owns a 128 x 128 tile of C and walks k in
// steps of 8. Each step stages op(A)[128 x 8] and op(B)[8 x 128] in shared memory (k-major, so the
// inner loop reads float4 rows), double-buffered so one barrier per step suffices, with the next
// step's global loads issued before the current step's math. Every thread accumulates an 8 x 8
// block of C in registers: rows {4ty..4ty+3, 64+4ty..64+4ty+3}, columns likewise with tx.
// Loads outside the matrix read 0 and stores outside are skipped, so any m, n, k, leading
// dimension and transposition works (no alignment assumptions on the pointers).
// Accumulation is fp32 with FMA, in k order per element (the CPU sums per k block; results agree
// to fp32 rounding, not bit for bit). No tensor cores here (gemm_bf16.cu has the bf16 mma path).
//
// Split-K: when the output has too few tiles to fill the GPU (decode and small prefills: m of
// 1..64 rows against a weight matrix), each tile's k range is cut into `splits` slices run as
// separate blocks (blockIdx.z), each writing alpha * its partial tile to scratch; a second kernel
// sums the slices in slice order and applies beta. Without it a 1-row GEMM is one block walking
// all of k, one memory latency per 8-wide k step. Deterministic: the split count depends only on
// the shape and the device's multiprocessor count.
#include "common.cuh"
#include "cuda_kernels.h"

namespace wst::cuda {
namespace {

constexpr int BM = 128, BN = 128, BKK = 8, THREADS = 256;

__global__ void __launch_bounds__(THREADS, 2)  // <= 128 registers: two blocks per SM
sgemm_kernel(bool transA, bool transB, int m, int n, int k, float alpha, const float* __restrict__ A,
             long lda, const float* __restrict__ B, long ldb, float beta, float* __restrict__ C,
             long ldc, int kchunk, float* __restrict__ partial) {
  __shared__ __align__(16) float As[2][BKK][BM];
  __shared__ __align__(16) float Bs[2][BKK][BN];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
  // This block's k slice [kbegin, kend) (the whole of k without split-K).
  const int kbegin = blockIdx.z * kchunk, kend = min(k, kbegin + kchunk);

  // Each thread moves 4 elements of each tile per step. Mapping e = tid + 256 r (r < 4):
  // along k when the source is contiguous along k, else along the m / n dimension.
  float ra[4], rb[4];
  auto load = [&](int k0) {
#pragma unroll
    for (int r = 0; r < 4; r++) {
      const int e = tid + THREADS * r;
      int i, p;
      if (transA) { p = e / BM; i = e % BM; } else { i = e / BKK; p = e % BKK; }
      const int gi = row0 + i, gp = k0 + p;
      float x = 0.0f;
      if (gi < m && gp < kend) x = transA ? A[(size_t)gp * lda + gi] : A[(size_t)gi * lda + gp];
      ra[r] = x;
      int j;
      if (transB) { j = e / BKK; p = e % BKK; } else { p = e / BN; j = e % BN; }
      const int gj = col0 + j;
      const int gq = k0 + p;
      float y = 0.0f;
      if (gj < n && gq < kend) y = transB ? B[(size_t)gj * ldb + gq] : B[(size_t)gq * ldb + gj];
      rb[r] = y;
    }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int r = 0; r < 4; r++) {
      const int e = tid + THREADS * r;
      int i, p;
      if (transA) { p = e / BM; i = e % BM; } else { i = e / BKK; p = e % BKK; }
      As[buf][p][i] = ra[r];
      int j;
      if (transB) { j = e / BKK; p = e % BKK; } else { p = e / BN; j = e % BN; }
      Bs[buf][p][j] = rb[r];
    }
  };

  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; i++)
#pragma unroll
    for (int j = 0; j < 8; j++) acc[i][j] = 0.0f;

  load(kbegin);
  int buf = 0;
  for (int k0 = kbegin; k0 < kend; k0 += BKK) {
    store(buf);
    __syncthreads();
    if (k0 + BKK < kend) load(k0 + BKK);  // in flight during the math below
#pragma unroll
    for (int p = 0; p < BKK; p++) {
      const float4 a0 = *reinterpret_cast<const float4*>(&As[buf][p][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&As[buf][p][64 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[buf][p][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[buf][p][64 + tx * 4]);
      const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 8; i++)
#pragma unroll
        for (int j = 0; j < 8; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    buf ^= 1;
  }

#pragma unroll
  for (int i = 0; i < 8; i++) {
    const int gi = row0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + (i - 4));
    if (gi >= m) continue;
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const int gj = col0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + (j - 4));
      if (gj >= n) continue;
      const float r = alpha * acc[i][j];
      if (partial) {  // split-K: this slice's share, summed by splitk_reduce_kernel
        partial[((size_t)blockIdx.z * m + gi) * n + gj] = r;
        continue;
      }
      float* c = C + (size_t)gi * ldc + gj;
      *c = beta == 0.0f ? r : r + beta * *c;  // beta == 0: C is write-only (NaN ignored)
    }
  }
}

// C = sum over slices s (in order) of partial[s] (+ beta C).
__global__ void splitk_reduce_kernel(int m, int n, int splits, const float* __restrict__ partial,
                                     float beta, float* __restrict__ C, long ldc) {
  const size_t total = (size_t)m * n;
  for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total;
       e += (size_t)gridDim.x * blockDim.x) {
    float s = partial[e];
    for (int z = 1; z < splits; z++) s += partial[(size_t)z * total + e];
    float* c = C + (e / n) * ldc + e % n;
    *c = beta == 0.0f ? s : s + beta * *c;
  }
}

// k == 0 or alpha == 0: C = beta * C (beta == 0 writes zeros, beta == 1 leaves C alone).
__global__ void scale_c_kernel(int m, int n, float beta, float* C, long ldc) {
  const size_t total = (size_t)m * n;
  for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total;
       e += (size_t)gridDim.x * blockDim.x) {
    float* c = C + (e / n) * ldc + e % n;
    *c = beta == 0.0f ? 0.0f : beta * *c;
  }
}

}  // namespace

void sgemm(bool transA, bool transB, int m, int n, int k, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  using namespace cuda_detail;
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.0f) {
    if (beta == 1.0f) return;
    WST_LAUNCH(scale_c_kernel, grid_for((size_t)m * n, 256), 256, m, n, beta, C, ldc);
    check_launch("sgemm (scale)");
    return;
  }
  dim3 grid((n + BN - 1) / BN, (m + BM - 1) / BM);
  if (grid.y > 65535) throw std::invalid_argument("wst-dash CUDA sgemm: m too large");
  // Split k when the tiles would not give every multiprocessor two blocks; slices of >= 64.
  const long tiles = (long)grid.x * grid.y, want = 2L * device_multiprocessors();
  int splits = 1;
  if (tiles < want) splits = (int)std::min<long>({(want + tiles - 1) / tiles, (k + 63) / 64, 64});
  if (splits > 1) {
    const int kchunk = ((k + splits - 1) / splits + BKK - 1) / BKK * BKK;
    splits = (k + kchunk - 1) / kchunk;
    grid.z = splits;
    float* partial = (float*)thread_scratch((size_t)splits * m * n * sizeof(float));
    WST_LAUNCH(sgemm_kernel, grid, THREADS, transA, transB, m, n, k, alpha, A, lda, B, ldb, beta,
               C, ldc, kchunk, partial);
    WST_LAUNCH(splitk_reduce_kernel, grid_for((size_t)m * n, 256), 256, m, n, splits, partial, beta, C, ldc);
  } else {
    WST_LAUNCH(sgemm_kernel, grid, THREADS, transA, transB, m, n, k, alpha, A, lda, B, ldb, beta,
               C, ldc, k, (float*)nullptr);
  }
  check_launch("sgemm");
}

}  // namespace wst::cuda
