// fp32 GEMM on tf32 tensor cores: C (m,n) = alpha * op(A) @ op(B) + beta * C with A and B rounded
// to tf32 (cvt.rna), fp32 accumulation (kernels.h sgemm_tf32; the CPU twin rounds, then sgemm).
//
//  - A 256-thread block owns a 128 x 128 tile of C; its 8 warps form 2 (m) x 4 (n), each a 64 x 32
//    tile = 4 x 4 mma.m16n8k8 tiles (64 fp32 accumulators per thread).
//  - k advances 16 at a time through a 3-stage ring of fp32 tiles filled by cp.async (16-byte
//    chunks of 4 floats, zero-filled outside the matrices); operands are stored as they lie in
//    memory ([m][k] or [k][m], [n][k] or [k][n]). Fragments are read with plain shared loads and
//    rounded to tf32 in registers. Row strides are padded (k-inner rows: 16 + 4 floats; m/n-inner
//    rows: 128 + 8) so that the 32 lanes of a fragment load hit 32 different banks.
//  - The 16-byte copies need 16-byte aligned pointers, leading dims that are multiples of 4 and
//    contiguous extents that are multiples of 4; other shapes use plain element loads
//    (ALIGNED = false).
#include "common.cuh"
#include "cuda_kernels.h"
#include "mma.cuh"

namespace wst::cuda {
namespace {
using namespace cuda_detail;

constexpr int BM = 128, BN = 128, BK = 16, THREADS = 256, STAGES = 3;
constexpr int KPAD = 4, MPAD = 8;

template <bool TA, bool TB>
struct Layout {
  static constexpr int A_ROWS = TA ? BK : BM, A_COLS = TA ? BM + MPAD : BK + KPAD;
  static constexpr int B_ROWS = TB ? BN : BK, B_COLS = TB ? BK + KPAD : BN + MPAD;
  static constexpr int A_ELEMS = A_ROWS * A_COLS, B_ELEMS = B_ROWS * B_COLS;
  static constexpr int STAGE_ELEMS = A_ELEMS + B_ELEMS;
};
constexpr size_t cmax(size_t a, size_t b) { return a > b ? a : b; }
constexpr size_t kMaxSmem =
    sizeof(float) * STAGES *
    cmax(cmax(Layout<false, false>::STAGE_ELEMS, Layout<false, true>::STAGE_ELEMS),
         cmax(Layout<true, false>::STAGE_ELEMS, Layout<true, true>::STAGE_ELEMS));
static_assert(kMaxSmem <= 99 * 1024, "the ring must fit sm_89's 99 KB of shared memory per block");

template <bool TA, bool TB, bool ALIGNED>
__global__ void __launch_bounds__(THREADS)
sgemm_tf32_kernel(int m, int n, int k, float alpha, const float* __restrict__ A, long lda,
                  const float* __restrict__ B, long ldb, float beta, float* __restrict__ C,
                  long ldc) {
  using L = Layout<TA, TB>;
  WST_DYNAMIC_SMEM(float, smem, kMaxSmem);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
  const int bm = blockIdx.y * BM, bn = blockIdx.x * BN;
  const int ktiles = (k + BK - 1) / BK;
  auto stage_a = [&](int s) { return smem + (size_t)s * L::STAGE_ELEMS; };
  auto stage_b = [&](int s) { return smem + (size_t)s * L::STAGE_ELEMS + L::A_ELEMS; };
  auto load_stage = [&](int s, int kt) {
    const int k0 = kt * BK;
    if (TA) load_tile<float, BK, BM, L::A_COLS, ALIGNED, THREADS>(stage_a(s), A, lda, k0, bm, k, m);
    else load_tile<float, BM, BK, L::A_COLS, ALIGNED, THREADS>(stage_a(s), A, lda, bm, k0, m, k);
    if (TB) load_tile<float, BN, BK, L::B_COLS, ALIGNED, THREADS>(stage_b(s), B, ldb, bn, k0, n, k);
    else load_tile<float, BK, BN, L::B_COLS, ALIGNED, THREADS>(stage_b(s), B, ldb, k0, bn, k, n);
  };
  // op(A)[row][kk] and op(B)[kk][col] inside a stage.
  auto a_at = [&](const float* as, int row, int kk) { return TA ? as[kk * L::A_COLS + row] : as[row * L::A_COLS + kk]; };
  auto b_at = [&](const float* bs, int kk, int col) { return TB ? bs[col * L::B_COLS + kk] : bs[kk * L::B_COLS + col]; };

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < ktiles) load_stage(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < ktiles; kt++) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();  // tile kt visible to all; stage (kt - 1) % STAGES no longer read
    {
      const int next = kt + STAGES - 1;
      if (next < ktiles) load_stage(next % STAGES, next);
      cp_async_commit();
    }
    const float* as = stage_a(kt % STAGES);
    const float* bs = stage_b(kt % STAGES);
#pragma unroll
    for (int kk = 0; kk < BK; kk += 8) {
      uint32_t af[4][4], bf[4][2];
#pragma unroll
      for (int mt = 0; mt < 4; mt++) {
        const int r = wm + mt * 16 + g;
        af[mt][0] = to_tf32(a_at(as, r, kk + t));
        af[mt][1] = to_tf32(a_at(as, r + 8, kk + t));
        af[mt][2] = to_tf32(a_at(as, r, kk + t + 4));
        af[mt][3] = to_tf32(a_at(as, r + 8, kk + t + 4));
      }
#pragma unroll
      for (int nt = 0; nt < 4; nt++) {
        const int c = wn + nt * 8 + g;
        bf[nt][0] = to_tf32(b_at(bs, kk + t, c));
        bf[nt][1] = to_tf32(b_at(bs, kk + t + 4, c));
      }
#pragma unroll
      for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++) mma_tf32_1688(acc[mt][nt], af[mt], bf[nt][0], bf[nt][1]);
    }
  }
  cp_async_wait<0>();

  store_c_tiles(acc, C, ldc, bm + wm, bn + wn, m, n, alpha, beta);
}

template <bool TA, bool TB, bool ALIGNED>
void launch(dim3 grid, int m, int n, int k, float alpha, const float* A, long lda, const float* B,
            long ldb, float beta, float* C, long ldc) {
  constexpr size_t bytes = sizeof(float) * STAGES * Layout<TA, TB>::STAGE_ELEMS;
  auto kernel = sgemm_tf32_kernel<TA, TB, ALIGNED>;
  static bool configured = false;
  if (!configured) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes),
          "sgemm_tf32 (shared memory)");
    configured = true;
  }
  WST_LAUNCH_SMEM(kernel, grid, THREADS, bytes, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <bool TA, bool TB>
void dispatch(bool aligned, dim3 grid, int m, int n, int k, float alpha, const float* A, long lda,
              const float* B, long ldb, float beta, float* C, long ldc) {
  if (aligned) launch<TA, TB, true>(grid, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  else launch<TA, TB, false>(grid, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace

void sgemm_tf32(bool transA, bool transB, int m, int n, int k, float alpha, const float* A, int lda,
                const float* B, int ldb, float beta, float* C, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.0f) {  // C = beta C, as the fp32 GEMM does it
    sgemm(false, false, m, n, 0, alpha, nullptr, 1, nullptr, 1, beta, C, ldc);
    return;
  }
  const bool aligned = aligned16(A) && aligned16(B) && lda % 4 == 0 && ldb % 4 == 0 &&
                       (transA ? m : k) % 4 == 0 && (transB ? k : n) % 4 == 0;
  dim3 grid((n + BN - 1) / BN, (m + BM - 1) / BM);
  if (grid.y > 65535) throw std::invalid_argument("wst-dash CUDA sgemm_tf32: m too large");
  if (transA) {
    if (transB) dispatch<true, true>(aligned, grid, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    else dispatch<true, false>(aligned, grid, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    if (transB) dispatch<false, true>(aligned, grid, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    else dispatch<false, false>(aligned, grid, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  check_launch("sgemm_tf32");
}

}  // namespace wst::cuda
