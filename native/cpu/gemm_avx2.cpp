// AVX2 + FMA GEMM micro-kernels (compiled with -mavx2 -mfma; chosen at run time).
// Self-contained on purpose: only <immintrin.h> and internal-linkage code, so nothing here can
// be merged by the linker into code that runs on a machine without AVX2.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "gemm_kernels.h"

namespace wst {
namespace gemm_detail {
namespace {

#ifndef WST_GEMM_AVX2_KC
#define WST_GEMM_AVX2_KC 384
#endif
constexpr int MR = 6, NR = 16, KC = WST_GEMM_AVX2_KC;

// Lane masks: kMaskTable + 8 - n selects the first n (0..8) of 8 lanes.
alignas(32) const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

// Register tile MR_ x 16: 2 ymm accumulators per row (12 with MR_ = 6) + 2 B + 1 broadcast.
template <int MR_>
void kern(long kc, const float* A, const float* B, long ldb, float* C, long ldc, int nr,
          float alpha, float beta) {
  __m256 c0[MR_], c1[MR_];
#pragma GCC unroll 8
  for (int i = 0; i < MR_; i++) c0[i] = c1[i] = _mm256_setzero_ps();
  for (long p = 0; p < kc; p++) {
    __m256 b0 = _mm256_loadu_ps(B), b1 = _mm256_loadu_ps(B + 8);
#pragma GCC unroll 8
    for (int i = 0; i < MR_; i++) {
      __m256 a = _mm256_broadcast_ss(A + i);
      c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
    }
    A += MR_;
    B += ldb;
  }
  __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  if (nr == NR) {
#pragma GCC unroll 8
    for (int i = 0; i < MR_; i++) {
      float* c = C + i * ldc;
      __m256 r0 = _mm256_mul_ps(va, c0[i]), r1 = _mm256_mul_ps(va, c1[i]);
      if (beta != 0.0f) {
        r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c), r0);
        r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c + 8), r1);
      }
      _mm256_storeu_ps(c, r0);
      _mm256_storeu_ps(c + 8, r1);
    }
    return;
  }
  // Partial tile (nr < 16 columns): the same arithmetic, with masked loads and stores.
  const __m256i m0 = _mm256_loadu_si256((const __m256i*)(kMaskTable + 8 - (nr < 8 ? nr : 8)));
  const __m256i m1 = _mm256_loadu_si256((const __m256i*)(kMaskTable + 8 - (nr > 8 ? nr - 8 : 0)));
#pragma GCC unroll 8
  for (int i = 0; i < MR_; i++) {
    float* c = C + i * ldc;
    __m256 r0 = _mm256_mul_ps(va, c0[i]), r1 = _mm256_mul_ps(va, c1[i]);
    if (beta != 0.0f) {
      r0 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(c, m0), r0);
      r1 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(c + 8, m1), r1);
    }
    _mm256_maskstore_ps(c, m0, r0);
    _mm256_maskstore_ps(c + 8, m1, r1);
  }
}

float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// IB rows of A against JB rows of B, vectorised along k (8 lanes, masked tail), then a fixed
// horizontal reduction: the order depends only on k.
template <int IB, int JB>
void dot_tile(int k, float alpha, const float* A, long lda, const float* B, long ldb, float beta,
              float* C, long ldc) {
  __m256 acc[IB][JB];
#pragma GCC unroll 4
  for (int i = 0; i < IB; i++)
#pragma GCC unroll 4
    for (int j = 0; j < JB; j++) acc[i][j] = _mm256_setzero_ps();
  int p = 0;
  for (; p + 8 <= k; p += 8) {
    __m256 b[JB];
#pragma GCC unroll 4
    for (int j = 0; j < JB; j++) b[j] = _mm256_loadu_ps(B + j * ldb + p);
#pragma GCC unroll 4
    for (int i = 0; i < IB; i++) {
      __m256 a = _mm256_loadu_ps(A + i * lda + p);
#pragma GCC unroll 4
      for (int j = 0; j < JB; j++) acc[i][j] = _mm256_fmadd_ps(a, b[j], acc[i][j]);
    }
  }
  if (p < k) {
    __m256i mk = _mm256_loadu_si256((const __m256i*)(kMaskTable + 8 - (k - p)));
    __m256 b[JB];
#pragma GCC unroll 4
    for (int j = 0; j < JB; j++) b[j] = _mm256_maskload_ps(B + j * ldb + p, mk);
#pragma GCC unroll 4
    for (int i = 0; i < IB; i++) {
      __m256 a = _mm256_maskload_ps(A + i * lda + p, mk);
#pragma GCC unroll 4
      for (int j = 0; j < JB; j++) acc[i][j] = _mm256_fmadd_ps(a, b[j], acc[i][j]);
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
  for (; j + 3 <= j1; j += 3) dot_tile<IB, 3>(k, alpha, A, lda, B + j * ldb, ldb, beta, C + j, ldc);
  switch (j1 - j) {
    case 2: dot_tile<IB, 2>(k, alpha, A, lda, B + j * ldb, ldb, beta, C + j, ldc); break;
    case 1: dot_tile<IB, 1>(k, alpha, A, lda, B + j * ldb, ldb, beta, C + j, ldc); break;
    default: break;
  }
}

void dot(int m, int j0, int j1, int k, float alpha, const float* A, long lda, const float* B,
         long ldb, float beta, float* C, long ldc) {
  for (int jb = j0; jb < j1; jb += 48) {
    int je = jb + 48 < j1 ? jb + 48 : j1;
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
    const __m256i smask = _mm256_loadu_si256((const __m256i*)(kMaskTable + 8 - rr));
    int p = 0;
    for (; p + 8 <= kc; p += 8) {
      __m256 v[8];
      for (int i = 0; i < 8; i++) v[i] = _mm256_loadu_ps(s[i] + p);
      transpose8(v);
      if (rr == 8)
        for (int q = 0; q < 8; q++) _mm256_storeu_ps(dst + (long)(p + q) * ds + r0, v[q]);
      else
        for (int q = 0; q < 8; q++) _mm256_maskstore_ps(dst + (long)(p + q) * ds + r0, smask, v[q]);
    }
    for (; p < kc; p++)
      for (int i = 0; i < rr; i++) dst[(long)p * ds + r0 + i] = s[i][p];
  }
}

void cpack(float* dst, long ds, const float* src, long ls, int rows, int width, int kc) {
  auto mask = [](int n) { return _mm256_loadu_si256((const __m256i*)(kMaskTable + 8 - (n < 0 ? 0 : n > 8 ? 8 : n))); };
  const __m256i l0 = mask(rows), l1 = mask(rows - 8), s0 = mask(width), s1 = mask(width - 8);
  const bool two = width > 8;
  for (int p = 0; p < kc; p++) {
    const float* s = src + (long)p * ls;
    float* d = dst + (long)p * ds;
    _mm256_maskstore_ps(d, s0, _mm256_maskload_ps(s, l0));
    if (two) _mm256_maskstore_ps(d + 8, s1, _mm256_maskload_ps(s + 8, l1));
  }
}

constexpr int FMA_CHAINS = 12;
float fma_loop(long iters) {
  __m256 acc[FMA_CHAINS];
  for (int j = 0; j < FMA_CHAINS; j++) acc[j] = _mm256_set1_ps(0.5f + 0.01f * j);
  const __m256 x = _mm256_set1_ps(0.9999f), y = _mm256_set1_ps(0.0001f);
  for (long it = 0; it < iters; it++) {
#pragma GCC unroll 16
    for (int j = 0; j < FMA_CHAINS; j++) acc[j] = _mm256_fmadd_ps(acc[j], x, y);
  }
  __m256 s = acc[0];
  for (int j = 1; j < FMA_CHAINS; j++) s = _mm256_add_ps(s, acc[j]);
  return hsum(s);
}

const KernelSet kSet = {
    "avx2", MR, NR, KC,
    {nullptr, kern<1>, kern<2>, kern<3>, kern<4>, kern<5>, kern<6>, nullptr, nullptr, nullptr,
     nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr},
    dot, tpack, cpack, fma_loop, 2L * 8 * FMA_CHAINS};

}  // namespace

const KernelSet* kernels_avx2() { return &kSet; }

}  // namespace gemm_detail
}  // namespace wst
