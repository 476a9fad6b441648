// GEMM micro-kernels per SIMD path, shared by the driver (gemm.cpp, baseline flags) and the
// SIMD translation units (gemm_avx2.cpp, gemm_avx512.cpp). Declarations only: no inline
// code here, so nothing compiled with AVX flags can be merged into the baseline build.
#pragma once
#include <cstddef>

namespace wst {
namespace gemm_detail {

// Register tile: C[0:mr, 0:nr] (ldc) = alpha * sum_p A[p*mr + i] * B[p*ldb + j] + beta * C,
// p < kc. A is a packed panel of mr rows (k-major), B either a packed panel (ldb == NR,
// zero-padded to NR columns) or B itself (row-major, ldb its leading dim; then nr == NR).
// beta == 0: C is write-only. kern[mr] handles mr = 1..MR rows.
using MicroKernel = void (*)(long kc, const float* A, const float* B, long ldb, float* C, long ldc,
                             int nr, float alpha, float beta);

// Small-m transB path: C[i, j] = alpha * dot(A[i, 0:k], B[j, 0:k]) + beta * C[i, j] for
// i < m, j0 <= j < j1; A (m,k) lda, B (n,k) ldb, both row-major. beta == 0: C write-only.
using DotKernel = void (*)(int m, int j0, int j1, int k, float alpha, const float* A, long lda,
                           const float* B, long ldb, float beta, float* C, long ldc);

// Transposing copy: dst[p*ds + r] = src[r*ls + p] for r < rows, p < kc (rows <= ds). Packs an
// A panel from row-major A, or a B panel from B given as (n,k) (transB).
using TransposePack = void (*)(float* dst, long ds, const float* src, long ls, int rows, int kc);

// Straight copy with zero padding: dst[p*ds + r] = r < rows ? src[p*ls + r] : 0 for r < width,
// p < kc (rows <= width <= 2 vectors). Packs an A panel from A given as (k,m) (transA), or a B
// panel from row-major B.
using CopyPack = void (*)(float* dst, long ds, const float* src, long ls, int rows, int width, int kc);

// Runs `iters` iterations of independent FMA chains (fma_flops_per_iter flops each) and
// returns a value that depends on all of them (so the loop cannot be dropped).
using FmaLoop = float (*)(long iters);

struct KernelSet {
  const char* name;  // "avx512", "avx2" or "generic"
  int mr, nr;        // register tile
  int kc;            // k block: a B panel (kc x nr) and an A panel (mr x kc) stay in L1/L2
  MicroKernel kern[17];
  DotKernel dot;  // may be null
  TransposePack tpack;
  CopyPack cpack;  // may be null
  FmaLoop fma_loop;
  long fma_flops_per_iter;
};

const KernelSet* kernels_avx512();  // gemm_avx512.cpp
const KernelSet* kernels_avx2();    // gemm_avx2.cpp
const KernelSet* kernels_generic(); // gemm.cpp
const KernelSet& active_kernels();  // the path chosen at run time (see cpu_isa)

}  // namespace gemm_detail

// Bench hook: FMA throughput of the active SIMD path, in GFLOP/s summed over `threads`
// pool threads, each running the FMA loop for about `seconds`.
double fma_peak_gflops(double seconds, int threads);
// Bench hook: streaming read bandwidth in GB/s, summed over `threads` pool threads, each
// summing its own buffer of `bytes` repeatedly for about `seconds`.
double read_bandwidth_gbps(size_t bytes, double seconds, int threads);

}  // namespace wst
