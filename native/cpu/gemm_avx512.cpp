// AVX-512 GEMM micro-kernels (compiled with -mavx512f/bw/dq/vl -mfma; chosen at run time).
// Self-contained on purpose: only <immintrin.h> and internal-linkage code, so nothing here can
// be merged by the linker into code that runs on a machine without AVX-512.
// GCC 12's AVX-512 headers trip -Wuninitialized on their own _mm512_undefined_* (GCC PR105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "gemm_kernels.h"

namespace wst {
namespace gemm_detail {
namespace {

#ifndef WST_GEMM_AVX512_KC
#define WST_GEMM_AVX512_KC 512
#endif
constexpr int MR = 14, NR = 32, KC = WST_GEMM_AVX512_KC;

// Register tile MR_ x 32: 2 zmm accumulators per row, B row loaded once per k step, A
// broadcast from the packed panel. With MR_ = 14: 28 accumulators + 2 B + 1 broadcast.
template <int MR_>
void kern(long kc, const float* A, const float* B, long ldb, float* C, long ldc, int nr,
          float alpha, float beta) {
  __m512 c0[MR_], c1[MR_];
#pragma GCC unroll 16
  for (int i = 0; i < MR_; i++) c0[i] = c1[i] = _mm512_setzero_ps();
  for (long p = 0; p < kc; p++) {
    __m512 b0 = _mm512_loadu_ps(B), b1 = _mm512_loadu_ps(B + 16);
#pragma GCC unroll 16
    for (int i = 0; i < MR_; i++) {
      __m512 a = _mm512_set1_ps(A[i]);
      c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
    }
    A += MR_;
    B += ldb;
  }
  __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
  __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
#pragma GCC unroll 16
  for (int i = 0; i < MR_; i++) {
    float* c = C + i * ldc;
    __m512 r0 = _mm512_mul_ps(va, c0[i]), r1 = _mm512_mul_ps(va, c1[i]);
    if (beta != 0.0f) {
      r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, c), r0);
      r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, c + 16), r1);
    }
    _mm512_mask_storeu_ps(c, m0, r0);
    _mm512_mask_storeu_ps(c + 16, m1, r1);
  }
}

// Fixed-order horizontal sum.
float hsum(__m512 v) {
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));  // + the other 256-bit half
  __m256 h = _mm512_castps512_ps256(v);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// IB rows of A against JB rows of B, vectorised along k (16 lanes, masked tail), then a fixed
// horizontal reduction: the order depends only on k.
template <int IB, int JB>
void dot_tile(int k, float alpha, const float* A, long lda, const float* B, long ldb, float beta,
              float* C, long ldc) {
  __m512 acc[IB][JB];
#pragma GCC unroll 4
  for (int i = 0; i < IB; i++)
#pragma GCC unroll 4
    for (int j = 0; j < JB; j++) acc[i][j] = _mm512_setzero_ps();
  int p = 0;
  for (; p + 16 <= k; p += 16) {
    __m512 b[JB];
#pragma GCC unroll 4
    for (int j = 0; j < JB; j++) b[j] = _mm512_loadu_ps(B + j * ldb + p);
#pragma GCC unroll 4
    for (int i = 0; i < IB; i++) {
      __m512 a = _mm512_loadu_ps(A + i * lda + p);
#pragma GCC unroll 4
      for (int j = 0; j < JB; j++) acc[i][j] = _mm512_fmadd_ps(a, b[j], acc[i][j]);
    }
  }
  if (p < k) {
    __mmask16 mk = (__mmask16)((1u << (k - p)) - 1);
    __m512 b[JB];
#pragma GCC unroll 4
    for (int j = 0; j < JB; j++) b[j] = _mm512_maskz_loadu_ps(mk, B + j * ldb + p);
#pragma GCC unroll 4
    for (int i = 0; i < IB; i++) {
      __m512 a = _mm512_maskz_loadu_ps(mk, A + i * lda + p);
#pragma GCC unroll 4
      for (int j = 0; j < JB; j++) acc[i][j] = _mm512_fmadd_ps(a, b[j], acc[i][j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < IB; i++)
#pragma GCC unroll 4
    for (int j = 0; j < JB; j++) {
      float s = alpha * hsum(acc[i][j]);
      float* c = C + i * ldc + j;
      *c = beta == 0.0f ? s : s + beta * *c;
    }
}

template <int IB>
void dot_rows(int j0, int j1, int k, float alpha, const float* A, long lda, const float* B,
              long ldb, float beta, float* C, long ldc) {
  int j = j0;
  for (; j + 4 <= j1; j += 4) dot_tile<IB, 4>(k, alpha, A, lda, B + j * ldb, ldb, beta, C + j, ldc);
  switch (j1 - j) {
    case 3: dot_tile<IB, 3>(k, alpha, A, lda, B + j * ldb, ldb, beta, C + j, ldc); break;
    case 2: dot_tile<IB, 2>(k, alpha, A, lda, B + j * ldb, ldb, beta, C + j, ldc); break;
    case 1: dot_tile<IB, 1>(k, alpha, A, lda, B + j * ldb, ldb, beta, C + j, ldc); break;
    default: break;
  }
}

void dot(int m, int j0, int j1, int k, float alpha, const float* A, long lda, const float* B,
         long ldb, float beta, float* C, long ldc) {
  // Columns in blocks of 64 so the B rows stay in L1 while every row of A passes over them.
  for (int jb = j0; jb < j1; jb += 64) {
    int je = jb + 64 < j1 ? jb + 64 : j1;
    int i = 0;
    for (; i + 4 <= m; i += 4) dot_rows<4>(jb, je, k, alpha, A + i * lda, lda, B, ldb, beta, C + i * ldc, ldc);
    switch (m - i) {
      case 3: dot_rows<3>(jb, je, k, alpha, A + i * lda, lda, B, ldb, beta, C + i * ldc, ldc); break;
      case 2: dot_rows<2>(jb, je, k, alpha, A + i * lda, lda, B, ldb, beta, C + i * ldc, ldc); break;
      case 1: dot_rows<1>(jb, je, k, alpha, A + i * lda, lda, B, ldb, beta, C + i * ldc, ldc); break;
      default: break;
    }
  }
}

// 8x8 transpose of r[0..7] (rows) into columns, in place.
void transpose8(__m256 r[8]) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

void tpack(float* dst, long ds, const float* src, long ls, int rows, int kc) {
  for (int r0 = 0; r0 < rows; r0 += 8) {
    const int rr = rows - r0 < 8 ? rows - r0 : 8;
    const float* s[8];
    for (int i = 0; i < 8; i++) s[i] = src + (long)(r0 + (i < rr ? i : rr - 1)) * ls;
    const __mmask8 smask = (__mmask8)((1u << rr) - 1);
    int p = 0;
    for (; p + 8 <= kc; p += 8) {
      __m256 v[8];
      for (int i = 0; i < 8; i++) v[i] = _mm256_loadu_ps(s[i] + p);
      transpose8(v);
      if (rr == 8)
        for (int q = 0; q < 8; q++) _mm256_storeu_ps(dst + (long)(p + q) * ds + r0, v[q]);
      else
        for (int q = 0; q < 8; q++) _mm256_mask_storeu_ps(dst + (long)(p + q) * ds + r0, smask, v[q]);
    }
    for (; p < kc; p++)
      for (int i = 0; i < rr; i++) dst[(long)p * ds + r0 + i] = s[i][p];
  }
}

void cpack(float* dst, long ds, const float* src, long ls, int rows, int width, int kc) {
  const __mmask16 l0 = rows >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rows) - 1);
  const __mmask16 l1 = rows >= 32 ? (__mmask16)0xFFFF : rows > 16 ? (__mmask16)((1u << (rows - 16)) - 1) : 0;
  const __mmask16 s0 = width >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << width) - 1);
  const __mmask16 s1 = width >= 32 ? (__mmask16)0xFFFF : width > 16 ? (__mmask16)((1u << (width - 16)) - 1) : 0;
  for (int p = 0; p < kc; p++) {
    const float* s = src + (long)p * ls;
    float* d = dst + (long)p * ds;
    _mm512_mask_storeu_ps(d, s0, _mm512_maskz_loadu_ps(l0, s));
    if (s1) _mm512_mask_storeu_ps(d + 16, s1, _mm512_maskz_loadu_ps(l1, s + 16));
  }
}

constexpr int FMA_CHAINS = 16;
float fma_loop(long iters) {
  __m512 acc[FMA_CHAINS];
  for (int j = 0; j < FMA_CHAINS; j++) acc[j] = _mm512_set1_ps(0.5f + 0.01f * j);
  const __m512 x = _mm512_set1_ps(0.9999f), y = _mm512_set1_ps(0.0001f);
  for (long it = 0; it < iters; it++) {
#pragma GCC unroll 16
    for (int j = 0; j < FMA_CHAINS; j++) acc[j] = _mm512_fmadd_ps(acc[j], x, y);
  }
  __m512 s = acc[0];
  for (int j = 1; j < FMA_CHAINS; j++) s = _mm512_add_ps(s, acc[j]);
  return hsum(s);
}

const KernelSet kSet = {
    "avx512", MR, NR, KC,
    {nullptr, kern<1>, kern<2>, kern<3>, kern<4>, kern<5>, kern<6>, kern<7>, kern<8>, kern<9>,
     kern<10>, kern<11>, kern<12>, kern<13>, kern<14>, nullptr, nullptr},
    dot, tpack, cpack, fma_loop, 2L * 16 * FMA_CHAINS};

}  // namespace

const KernelSet* kernels_avx512() { return &kSet; }

}  // namespace gemm_detail
}  // namespace wst
