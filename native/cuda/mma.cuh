// Tensor-core building blocks for the bf16 kernels (sm_80+: cp.async, ldmatrix, mma.sync), with
// a CPU version of each for the emulator of the native tests (native/tests/emu/), so the fragment
// layouts below are exercised without a GPU. Layouts (PTX ISA, mma.m16n8k16, bf16 in, fp32 acc);
// g = lane / 4, t = lane % 4, "pair" = two bf16 in one 32-bit register, low half first:
//   A 16x16 (row):  a0 = A[g][2t..2t+1]   a1 = A[g+8][2t..]   a2 = A[g][2t+8..]   a3 = A[g+8][2t+8..]
//   B 16x8  (col):  b0 = B[2t..2t+1][g]   b1 = B[2t+8..][g]
//   C 16x8  (fp32): c0,c1 = C[g][2t, 2t+1]   c2,c3 = C[g+8][2t, 2t+1]
// ldmatrix.x4: lanes 8j..8j+7 give the row addresses of 8x8 matrix j (16 contiguous bytes each);
// register j of lane l receives M_j[l/4][2(l%4)..+1], or with .trans M_j[2(l%4)..+1][l/4].
#pragma once
#include <cstdint>
#include <cstring>

#include "common.cuh"

namespace wst::cuda_detail {

// bf16 <-> fp32 (bf16 is the top half of an fp32; round to nearest even, NaN kept quiet).
__device__ __forceinline__ float bf16_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
__device__ __forceinline__ uint16_t f32_to_bf16(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);  // NaN stays NaN
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return (uint32_t)f32_to_bf16(lo) | ((uint32_t)f32_to_bf16(hi) << 16);
}

#ifndef WST_CUDA_EMULATOR

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}
// 16-byte global -> shared copy, bypassing L1; with `full` false it writes 16 zero bytes.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool full) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(full ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}
// fp32 -> tf32 (round to nearest, ties away: cvt.rna.tf32.f32), kept in a 32-bit register.
__device__ __forceinline__ uint32_t to_tf32(float f) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(f));
  return r;
}
// c += a @ b for one m16n8k8 tf32 tile. Layout: a0 = A[g][t], a1 = A[g+8][t], a2 = A[g][t+4],
// a3 = A[g+8][t+4]; b0 = B[t][g], b1 = B[t+4][g]; c as for m16n8k16.
__device__ __forceinline__ void mma_tf32_1688(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                              uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// c += a @ b for one m16n8k16 tile.
__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#else  // ---- emulator: the same contracts on the CPU (warp-wide ops via warp_exchange) ---------

inline void cp_async_16(void* smem, const void* gmem, bool full) {
  if (full) std::memcpy(smem, gmem, 16);
  else std::memset(smem, 0, 16);
}
inline void cp_async_commit() {}
template <int N>
inline void cp_async_wait() {}

inline uint16_t emu_half(uint32_t r, int hi) { return (uint16_t)(hi ? r >> 16 : r & 0xffffu); }

inline void ldmatrix_emu(uint32_t (&r)[4], const void* smem, bool trans) {
  uint64_t rows[32];
  ::wst_emu::warp_exchange((uint64_t)(uintptr_t)smem, rows);
  const int l = ::wst_emu::lane_id();
  for (int j = 0; j < 4; j++) {
    auto at = [&](int row, int col) {
      uint16_t v;
      std::memcpy(&v, (const char*)(uintptr_t)rows[8 * j + row] + 2 * col, 2);
      return (uint32_t)v;
    };
    const int a = l / 4, b = 2 * (l % 4);
    r[j] = trans ? at(b, a) | (at(b + 1, a) << 16) : at(a, b) | (at(a, b + 1) << 16);
  }
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* smem) { ldmatrix_emu(r, smem, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) { ldmatrix_emu(r, smem, true); }

inline void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  uint64_t a01[32], a23[32], bb[32];
  ::wst_emu::warp_exchange((uint64_t)a[0] | ((uint64_t)a[1] << 32), a01);
  ::wst_emu::warp_exchange((uint64_t)a[2] | ((uint64_t)a[3] << 32), a23);
  ::wst_emu::warp_exchange((uint64_t)b0 | ((uint64_t)b1 << 32), bb);
  auto A = [&](int row, int k) {  // a0 a1 a2 a3 = (row g, k lo) (g+8, lo) (g, hi) (g+8, hi)
    const int lane = (row % 8) * 4 + (k % 8) / 2, reg = (row / 8) + 2 * (k / 8);
    const uint64_t w = reg < 2 ? a01[lane] : a23[lane];
    return bf16_to_f32(emu_half((uint32_t)(reg % 2 ? w >> 32 : w), k % 2));
  };
  auto B = [&](int k, int n) {
    const int lane = n * 4 + (k % 8) / 2;
    return bf16_to_f32(emu_half((uint32_t)(k / 8 ? bb[lane] >> 32 : bb[lane]), k % 2));
  };
  const int l = ::wst_emu::lane_id(), g = l / 4, t = l % 4;
  for (int e = 0; e < 4; e++) {
    const int row = g + (e / 2) * 8, col = 2 * t + e % 2;
    float s = c[e];
    for (int k = 0; k < 16; k++) s += A(row, k) * B(k, col);
    c[e] = s;
  }
}

inline uint32_t to_tf32(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  return u;
}

inline void mma_tf32_1688(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  uint64_t a01[32], a23[32], bb[32];
  ::wst_emu::warp_exchange((uint64_t)a[0] | ((uint64_t)a[1] << 32), a01);
  ::wst_emu::warp_exchange((uint64_t)a[2] | ((uint64_t)a[3] << 32), a23);
  ::wst_emu::warp_exchange((uint64_t)b0 | ((uint64_t)b1 << 32), bb);
  auto A = [&](int row, int k) {  // a0 a1 a2 a3 = (g, t) (g+8, t) (g, t+4) (g+8, t+4)
    const int lane = (row % 8) * 4 + k % 4, reg = row / 8 + 2 * (k / 4);
    const uint64_t w = reg < 2 ? a01[lane] : a23[lane];
    return __uint_as_float((uint32_t)(reg % 2 ? w >> 32 : w));
  };
  auto B = [&](int k, int n) {  // b0 b1 = (t, g) (t+4, g)
    const uint64_t w = bb[n * 4 + k % 4];
    return __uint_as_float((uint32_t)(k / 4 ? w >> 32 : w));
  };
  const int l = ::wst_emu::lane_id(), g = l / 4, t = l % 4;
  for (int e = 0; e < 4; e++) {
    const int row = g + (e / 2) * 8, col = 2 * t + e % 2;
    float s = c[e];
    for (int k = 0; k < 8; k++) s += A(row, k) * B(k, col);
    c[e] = s;
  }
}

#endif

// ---- shared by the tensor-core GEMMs (gemm_bf16.cu, gemm_tf32.cu) ------------------------------

inline bool aligned16(const void* p) { return ((uintptr_t)p & 15u) == 0; }

// Rows [r0, r0 + ROWS) x cols [c0, c0 + COLS) of a row-major matrix of T with rows x cols valid
// elements -> sh (row stride SH_COLS elements), zero outside, in 16-byte chunks spread over the
// block's THREADS threads. ALIGNED: every chunk is whole and 16-byte aligned (cp.async, in flight
// until cp_async_wait); else plain element loads.
template <class T, int ROWS, int COLS, int SH_COLS, bool ALIGNED, int THREADS>
__device__ __forceinline__ void load_tile(T* sh, const T* g, long ld, int r0, int c0, int rows,
                                          int cols) {
  constexpr int PER = 16 / (int)sizeof(T), CHUNKS = ROWS * COLS / PER;
  static_assert(CHUNKS % THREADS == 0, "tile chunks must divide among the threads");
#pragma unroll
  for (int i = 0; i < CHUNKS / THREADS; i++) {
    const int chunk = threadIdx.x + i * THREADS;
    const int r = chunk / (COLS / PER), c = (chunk % (COLS / PER)) * PER;
    const int gr = r0 + r, gc = c0 + c;
    T* dst = sh + r * SH_COLS + c;
    if (ALIGNED) {
      const bool in = gr < rows && gc < cols;  // whole chunk in range (cols % PER == 0)
      cp_async_16(dst, in ? g + (size_t)gr * ld + gc : g, in);
    } else {
#pragma unroll
      for (int e = 0; e < PER; e++) dst[e] = (gr < rows && gc + e < cols) ? g[(size_t)gr * ld + gc + e] : T(0);
    }
  }
}

// C = alpha * acc + beta * C (beta == 0: C write-only) for a warp's MT x NT grid of m16n8
// accumulators (the mma C layout) whose top-left corner is (row0, col0); bounds-checked.
template <int MT, int NT>
__device__ __forceinline__ void store_c_tiles(const float (&acc)[MT][NT][4], float* C, long ldc,
                                              int row0, int col0, int m, int n, float alpha,
                                              float beta) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int half = 0; half < 2; half++) {
      const int row = row0 + mt * 16 + g + half * 8;
      if (row >= m) continue;
      float* crow = C + (size_t)row * ldc;
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        const int col = col0 + nt * 8 + 2 * t;
#pragma unroll
        for (int e = 0; e < 2; e++) {
          if (col + e >= n) continue;
          const float r = alpha * acc[mt][nt][half * 2 + e];
          crow[col + e] = beta == 0.0f ? r : r + beta * crow[col + e];
        }
      }
    }
}

}  // namespace wst::cuda_detail
