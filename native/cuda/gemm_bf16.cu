// bf16 GEMM on tensor cores: C (m,n) = alpha * op(A) @ op(B) + beta * C, A and B bf16, fp32
// accumulation and fp32 C (kernels.h gemm_bf16; the CPU twin widens to fp32 and runs sgemm).
//
// sm_80-class kernel (mma.sync m16n8k16, ldmatrix, cp.async; see mma.cuh), which also runs on
// sm_89 and sm_90. On Hopper the (m,k) x (n,k)^T layout goes to the wgmma kernel in
// sm90/gemm_bf16_wgmma.cu instead.
//  - A 256-thread block owns a 128 x 256 tile of C; its 8 warps form 2 (m) x 4 (n), each warp a
//    64 x 64 tile = 4 x 8 mma tiles, 128 fp32 accumulators per thread.
//  - k advances 32 at a time through a STAGES-deep ring of shared-memory tiles filled by cp.async
//    (16-byte copies, zero-filled outside the matrix), so global loads run STAGES-1 tiles ahead
//    of the math. One __syncthreads per k-step.
//  - Tiles are stored as the operands lie in memory: op(A) as [m][k] (or [k][m] when transA), op(B)
//    as [n][k] when transB (a Linear weight) or [k][n]; ldmatrix (.trans where the layout is
//    k-outer) turns either into mma fragments. Rows are padded by 16 bytes so that the 8 rows an
//    ldmatrix phase reads fall in distinct banks (row strides of an odd number of 16-byte units).
//  - The 16-byte copies need every row start 16-byte aligned and whole 8-element chunks in
//    range: pointers 16-byte aligned, leading dims and the contiguous extents multiples of 8.
//    Other shapes take the same kernel with plain element loads (ALIGNED = false): slower, exact.
#include "common.cuh"
#include "cuda_kernels.h"
#include "mma.cuh"

namespace wst::cuda {
#if defined(WST_HAVE_SM90A) && !defined(WST_CUDA_EMULATOR)
namespace sm90 {  // native/cuda/sm90/gemm_bf16_wgmma.cu (sm_90a only)
bool gemm_bf16_tn(int m, int n, int k, float alpha, const uint16_t* A, long lda, const uint16_t* B,
                  long ldb, float beta, float* C, long ldc);
}
#endif
namespace {
using namespace cuda_detail;

constexpr int BM = 128, BN = 256, BK = 32, THREADS = 256, PAD = 8;

// Shared-memory geometry of one stage for a transposition pair.
template <bool TA, bool TB>
struct Layout {
  static constexpr int A_ROWS = TA ? BK : BM, A_COLS = (TA ? BM : BK) + PAD;
  static constexpr int B_ROWS = TB ? BN : BK, B_COLS = (TB ? BK : BN) + PAD;
  static constexpr int A_ELEMS = A_ROWS * A_COLS, B_ELEMS = B_ROWS * B_COLS;
  static constexpr int STAGE_ELEMS = A_ELEMS + B_ELEMS;
};

template <bool TA, bool TB, int STAGES>
constexpr size_t smem_bytes() {
  return (size_t)Layout<TA, TB>::STAGE_ELEMS * STAGES * sizeof(uint16_t);
}
constexpr size_t cmax(size_t a, size_t b) { return a > b ? a : b; }
// The most any transposition pair needs at 4 stages ([m][k] A with [n][k] B).
constexpr size_t kMaxSmem = cmax(cmax(smem_bytes<false, false, 4>(), smem_bytes<false, true, 4>()),
                                 cmax(smem_bytes<true, false, 4>(), smem_bytes<true, true, 4>()));

template <bool TA, bool TB, int STAGES, bool ALIGNED>
__global__ void __launch_bounds__(THREADS, 1)
gemm_bf16_kernel(int m, int n, int k, float alpha, const uint16_t* __restrict__ A, long lda,
                 const uint16_t* __restrict__ B, long ldb, float beta, float* __restrict__ C,
                 long ldc) {
  using L = Layout<TA, TB>;
  WST_DYNAMIC_SMEM(uint16_t, smem, kMaxSmem);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 64;  // warp tile origin inside the block tile
  const int bm = blockIdx.y * BM, bn = blockIdx.x * BN;
  const int ktiles = (k + BK - 1) / BK;

  auto stage_a = [&](int s) { return smem + (size_t)s * L::STAGE_ELEMS; };
  auto stage_b = [&](int s) { return smem + (size_t)s * L::STAGE_ELEMS + L::A_ELEMS; };
  auto load_stage = [&](int s, int kt) {
    const int k0 = kt * BK;
    if (TA) load_tile<uint16_t, BK, BM, L::A_COLS, ALIGNED, THREADS>(stage_a(s), A, lda, k0, bm, k, m);
    else load_tile<uint16_t, BM, BK, L::A_COLS, ALIGNED, THREADS>(stage_a(s), A, lda, bm, k0, m, k);
    if (TB) load_tile<uint16_t, BN, BK, L::B_COLS, ALIGNED, THREADS>(stage_b(s), B, ldb, bn, k0, n, k);
    else load_tile<uint16_t, BK, BN, L::B_COLS, ALIGNED, THREADS>(stage_b(s), B, ldb, k0, bn, k, n);
  };

  float acc[4][8][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < ktiles) load_stage(s, s);
    cp_async_commit();
  }

  for (int kt = 0; kt < ktiles; kt++) {
    cp_async_wait<STAGES - 2>();  // tile kt has landed (this thread's copies) ...
    __syncthreads();              // ... for every thread; and stage (kt-1) % STAGES is free
    {
      const int next = kt + STAGES - 1;
      if (next < ktiles) load_stage(next % STAGES, next);
      cp_async_commit();
    }
    const uint16_t* as = stage_a(kt % STAGES);
    const uint16_t* bs = stage_b(kt % STAGES);
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      uint32_t af[4][4], bf[4][4];
#pragma unroll
      for (int mt = 0; mt < 4; mt++) {
        const int r0 = wm + mt * 16;
        if (TA) {
          const int j = lane / 8;
          ldmatrix_x4_trans(af[mt], as + (kk + (j >> 1) * 8 + (lane & 7)) * L::A_COLS + r0 + (j & 1) * 8);
        } else {
          ldmatrix_x4(af[mt], as + (r0 + (lane % 16)) * L::A_COLS + kk + (lane / 16) * 8);
        }
      }
#pragma unroll
      for (int np = 0; np < 4; np++) {  // n tiles 2np, 2np + 1
        const int n0 = wn + np * 16, j = lane / 8;
        if (TB) ldmatrix_x4(bf[np], bs + (n0 + (j >> 1) * 8 + (lane & 7)) * L::B_COLS + kk + (j & 1) * 8);
        else ldmatrix_x4_trans(bf[np], bs + (kk + (j & 1) * 8 + (lane & 7)) * L::B_COLS + n0 + (j >> 1) * 8);
      }
#pragma unroll
      for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
          mma_bf16_16816(acc[mt][nt], af[mt], bf[nt / 2][(nt % 2) * 2], bf[nt / 2][(nt % 2) * 2 + 1]);
    }
  }
  cp_async_wait<0>();

  store_c_tiles(acc, C, ldc, bm + wm, bn + wn, m, n, alpha, beta);
}

template <bool TA, bool TB, int STAGES, bool ALIGNED>
void launch(dim3 grid, int m, int n, int k, float alpha, const uint16_t* A, long lda,
            const uint16_t* B, long ldb, float beta, float* C, long ldc) {
  constexpr size_t bytes = smem_bytes<TA, TB, STAGES>();
  auto kernel = gemm_bf16_kernel<TA, TB, STAGES, ALIGNED>;
  static bool configured = false;  // per instantiation; the attribute is per device function
  if (!configured) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes),
          "gemm_bf16 (shared memory)");
    configured = true;
  }
  WST_LAUNCH_SMEM(kernel, grid, THREADS, bytes, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <bool TA, bool TB>
void dispatch(int stages, bool aligned, dim3 grid, int m, int n, int k, float alpha,
              const uint16_t* A, long lda, const uint16_t* B, long ldb, float beta, float* C,
              long ldc) {
  if (stages >= 4) {
    if (aligned) launch<TA, TB, 4, true>(grid, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    else launch<TA, TB, 4, false>(grid, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    if (aligned) launch<TA, TB, 3, true>(grid, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    else launch<TA, TB, 3, false>(grid, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

// Stages the device's shared memory allows (4 on A100/H100, 3 on sm_89's 99 KB).
int pipeline_stages() {
  static const int stages = [] {
    int dev = 0, optin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
      return 3;
    return optin >= (int)kMaxSmem ? 4 : 3;
  }();
  return stages;
}

}  // namespace

void gemm_bf16(bool transA, bool transB, int m, int n, int k, float alpha, const uint16_t* A,
               int lda, const uint16_t* B, int ldb, float beta, float* C, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.0f) {  // C = beta C: the fp32 GEMM's scaling path does exactly this
    sgemm(false, false, m, n, 0, alpha, nullptr, 1, nullptr, 1, beta, C, ldc);
    return;
  }
  // The contiguous extent of each stored operand must be whole 16-byte chunks.
  const bool aligned = aligned16(A) && aligned16(B) && lda % 8 == 0 && ldb % 8 == 0 &&
                       (transA ? m : k) % 8 == 0 && (transB ? k : n) % 8 == 0;
#if defined(WST_HAVE_SM90A) && !defined(WST_CUDA_EMULATOR)
  // Hopper: wgmma for the Linear layout (A (m,k), B (n,k)), when the 16-byte rules hold.
  if (!transA && transB && aligned && sm90::gemm_bf16_tn(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc))
    return;
#endif
  dim3 grid((n + BN - 1) / BN, (m + BM - 1) / BM);
  if (grid.y > 65535) throw std::invalid_argument("wst-dash CUDA gemm_bf16: m too large");
  const int stages = pipeline_stages();
  if (transA) {
    if (transB) dispatch<true, true>(stages, aligned, grid, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    else dispatch<true, false>(stages, aligned, grid, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    if (transB) dispatch<false, true>(stages, aligned, grid, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    else dispatch<false, false>(stages, aligned, grid, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  check_launch("gemm_bf16");
}

}  // namespace wst::cuda
