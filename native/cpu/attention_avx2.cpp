// Attention micro-kernels for AVX2 + FMA (selected when cpu_isa() is "avx2"); see attention.cpp
// for what each computes. Self-contained: intrinsics and file-local helpers only, so nothing
// compiled with these flags can be merged into the baseline build.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace wst {
namespace attn {

using ScoresFn = void (*)(float*, const float*, const float*, int, int);
using ScoresRmFn = void (*)(float*, const float*, const float*, long, int, int, int);
using AccumFn = void (*)(float* const*, float, const float*, long, long, int, int, const float*,
                         long, int);
using FwdSoftmaxFn = void (*)(float*, int, const int*, float*, float*, float*);
using BwdProbsFn = void (*)(float*, int, const int*, const float*);
using BwdDsFn = void (*)(float*, const float*, int, const float*);
struct Kernels {
  ScoresFn scores;
  ScoresRmFn scores_rm;
  AccumFn accum;
  FwdSoftmaxFn fwd_softmax;
  BwdProbsFn bwd_probs;
  BwdDsFn bwd_ds;
};
const Kernels& kernels_avx2();

namespace {

constexpr int BK = 64;

// All-ones in lanes [0, n), n clamped to [0, 8].
inline __m256i lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// exp(x), Cephes-style (see attention_avx512.cpp), 2^n built in the exponent bits; inputs
// clamped to [-87.3, 88], so the smallest result is about 1e-38 (callers mask what must be 0).
inline __m256 vexp(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  x = _mm256_min_ps(x, _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// NR rows of S, columns [c0, c0 + 32): 4 x NR accumulators.
template <int NR>
inline void scores_rows(float* S, const float* A, const float* Bt, int D, int c0) {
  __m256 acc[NR][4];
  for (int r = 0; r < NR; r++)
    for (int c = 0; c < 4; c++) acc[r][c] = _mm256_setzero_ps();
  for (int d = 0; d < D; d++) {
    const float* b = Bt + (size_t)d * BK + c0;
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    const __m256 b2 = _mm256_loadu_ps(b + 16), b3 = _mm256_loadu_ps(b + 24);
    for (int r = 0; r < NR; r++) {
      const __m256 a = _mm256_broadcast_ss(A + (size_t)r * D + d);
      acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
      acc[r][2] = _mm256_fmadd_ps(a, b2, acc[r][2]);
      acc[r][3] = _mm256_fmadd_ps(a, b3, acc[r][3]);
    }
  }
  for (int r = 0; r < NR; r++)
    for (int c = 0; c < 4; c++) _mm256_storeu_ps(S + (size_t)r * BK + c0 + 8 * c, acc[r][c]);
}

void scores(float* S, const float* A, const float* Bt, int R, int D) {
  for (int c0 = 0; c0 < BK; c0 += 32) {
    int r = 0;
    for (; r + 3 <= R; r += 3) scores_rows<3>(S + (size_t)r * BK, A + (size_t)r * D, Bt, D, c0);
    if (R - r == 2) scores_rows<2>(S + (size_t)r * BK, A + (size_t)r * D, Bt, D, c0);
    if (R - r == 1) scores_rows<1>(S + (size_t)r * BK, A + (size_t)r * D, Bt, D, c0);
  }
}

// S[r][j] = dot(A[r], Bm[j]) for up to 4 rows: each key row is read once for all of them.
template <int NR>
inline void scores_rm_rows(float* S, const float* A, const float* Bm, long ldb, int nk, int D) {
  for (int j = 0; j < nk; j++) {
    const float* b = Bm + j * ldb;
    __m256 acc[NR];
    for (int r = 0; r < NR; r++) acc[r] = _mm256_setzero_ps();
    for (int d = 0; d < D; d += 8) {
      const __m256i mk = lanes(D - d);
      const __m256 bv = _mm256_maskload_ps(b + d, mk);
      for (int r = 0; r < NR; r++)
        acc[r] = _mm256_fmadd_ps(_mm256_maskload_ps(A + (size_t)r * D + d, mk), bv, acc[r]);
    }
    for (int r = 0; r < NR; r++) S[(size_t)r * BK + j] = hsum(acc[r]);
  }
  for (int r = 0; r < NR; r++)
    for (int j = nk; j < BK; j++) S[(size_t)r * BK + j] = 0.0f;
}

void scores_rm(float* S, const float* A, const float* Bm, long ldb, int nk, int R, int D) {
  int r = 0;
  for (; r + 4 <= R; r += 4) scores_rm_rows<4>(S + (size_t)r * BK, A + (size_t)r * D, Bm, ldb, nk, D);
  float* s = S + (size_t)r * BK;
  const float* a = A + (size_t)r * D;
  switch (R - r) {
    case 3: scores_rm_rows<3>(s, a, Bm, ldb, nk, D); break;
    case 2: scores_rm_rows<2>(s, a, Bm, ldb, nk, D); break;
    case 1: scores_rm_rows<1>(s, a, Bm, ldb, nk, D); break;
    default: break;
  }
}

// NR rows of C, columns [c0, c0 + 8 NV) (the last vector masked by `last`). Every element is
// summed over k in order, then C += alpha * sum: the same bits for any NR.
template <int NR, int NV>
inline void accum_rows(float* const* C, float alpha, const float* P, long prow, long pcol, int K,
                       const float* Bm, long ldb, int c0, __m256i last) {
  __m256 acc[NR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) acc[r][v] = _mm256_setzero_ps();
  for (int k = 0; k < K; k++) {
    const float* b = Bm + k * ldb + c0;
    __m256 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV - 1; v++) bv[v] = _mm256_loadu_ps(b + 8 * v);
    bv[NV - 1] = _mm256_maskload_ps(b + 8 * (NV - 1), last);
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++) {
      const __m256 p = _mm256_broadcast_ss(P + r * prow + k * pcol);
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(p, bv[v], acc[r][v]);
    }
  }
  const __m256 al = _mm256_set1_ps(alpha);
#pragma GCC unroll 8
  for (int r = 0; r < NR; r++) {
    float* c = C[r] + c0;
#pragma GCC unroll 4
    for (int v = 0; v < NV - 1; v++)
      _mm256_storeu_ps(c + 8 * v, _mm256_fmadd_ps(al, acc[r][v], _mm256_loadu_ps(c + 8 * v)));
    float* cl = c + 8 * (NV - 1);
    _mm256_maskstore_ps(cl, last, _mm256_fmadd_ps(al, acc[r][NV - 1], _mm256_maskload_ps(cl, last)));
  }
}

// The M rows in blocks of NR (NR * NV accumulators: at least 8 independent FMA chains, enough to
// cover the FMA latency even at head dim 8, where one vector holds a whole row), then the rest.
template <int NR, int NV>
inline void accum_tail(int rem, float* const* C, float alpha, const float* P, long prow, long pcol,
                       int K, const float* Bm, long ldb, int c0, __m256i last) {
  if constexpr (NR > 0) {
    if (rem == NR) accum_rows<NR, NV>(C, alpha, P, prow, pcol, K, Bm, ldb, c0, last);
    else accum_tail<NR - 1, NV>(rem, C, alpha, P, prow, pcol, K, Bm, ldb, c0, last);
  }
}

template <int NR, int NV>
inline void accum_cols(float* const* C, float alpha, const float* P, long prow, long pcol, int M,
                       int K, const float* Bm, long ldb, int c0, __m256i last) {
  int m = 0;
  for (; m + NR <= M; m += NR) accum_rows<NR, NV>(C + m, alpha, P + m * prow, prow, pcol, K, Bm, ldb, c0, last);
  if (m < M) accum_tail<NR - 1, NV>(M - m, C + m, alpha, P + m * prow, prow, pcol, K, Bm, ldb, c0, last);
}

void accum(float* const* C, float alpha, const float* P, long prow, long pcol, int M, int K,
           const float* Bm, long ldb, int D) {
  for (int c0 = 0; c0 < D; c0 += 32) {
    const int w = D - c0 < 32 ? D - c0 : 32;
    const int nv = (w + 7) / 8;
    const __m256i last = lanes(w - 8 * (nv - 1));
    switch (nv) {
      case 4: accum_cols<2, 4>(C, alpha, P, prow, pcol, M, K, Bm, ldb, c0, last); break;
      case 3: accum_cols<3, 3>(C, alpha, P, prow, pcol, M, K, Bm, ldb, c0, last); break;
      case 2: accum_cols<4, 2>(C, alpha, P, prow, pcol, M, K, Bm, ldb, c0, last); break;
      default: accum_cols<8, 1>(C, alpha, P, prow, pcol, M, K, Bm, ldb, c0, last); break;
    }
  }
}

void fwd_softmax(float* S, int R, const int* nvis, float* m, float* l, float* corr) {
  for (int r = 0; r < R; r++) {
    float* s = S + (size_t)r * BK;
    const int n = nvis[r];
    if (n <= 0) {
      for (int c = 0; c < 8; c++) _mm256_storeu_ps(s + 8 * c, _mm256_setzero_ps());
      corr[r] = 1.0f;
      continue;
    }
    __m256 mv = _mm256_set1_ps(m[r]);
    for (int c = 0; c < 8; c++)
      mv = _mm256_blendv_ps(mv, _mm256_max_ps(mv, _mm256_loadu_ps(s + 8 * c)),
                            _mm256_castsi256_ps(lanes(n - 8 * c)));
    const float mx = hmax(mv);
    corr[r] = __builtin_expf(m[r] - mx);  // m_old = -inf -> 0
    const __m256 mxv = _mm256_set1_ps(mx);
    __m256 sum = _mm256_setzero_ps();
    for (int c = 0; c < 8; c++) {
      const __m256 p = _mm256_and_ps(_mm256_castsi256_ps(lanes(n - 8 * c)),
                                     vexp(_mm256_sub_ps(_mm256_loadu_ps(s + 8 * c), mxv)));
      _mm256_storeu_ps(s + 8 * c, p);
      sum = _mm256_add_ps(sum, p);
    }
    l[r] = l[r] * corr[r] + hsum(sum);
    m[r] = mx;
  }
}

void bwd_probs(float* S, int R, const int* nvis, const float* lse) {
  for (int r = 0; r < R; r++) {
    float* s = S + (size_t)r * BK;
    const int n = nvis[r];
    const __m256 lv = _mm256_set1_ps(lse[r]);
    for (int c = 0; c < 8; c++) {
      __m256 p = _mm256_setzero_ps();
      if (n > 8 * c)
        p = _mm256_and_ps(_mm256_castsi256_ps(lanes(n - 8 * c)),
                          vexp(_mm256_sub_ps(_mm256_loadu_ps(s + 8 * c), lv)));
      _mm256_storeu_ps(s + 8 * c, p);
    }
  }
}

void bwd_ds(float* dP, const float* P, int R, const float* Di) {
  for (int r = 0; r < R; r++) {
    float* dp = dP + (size_t)r * BK;
    const float* p = P + (size_t)r * BK;
    const __m256 di = _mm256_set1_ps(Di[r]);
    for (int c = 0; c < 8; c++)
      _mm256_storeu_ps(dp + 8 * c, _mm256_mul_ps(_mm256_loadu_ps(p + 8 * c),
                                                 _mm256_sub_ps(_mm256_loadu_ps(dp + 8 * c), di)));
  }
}

}  // namespace

const Kernels& kernels_avx2() {
  static const Kernels k = {scores, scores_rm, accum, fwd_softmax, bwd_probs, bwd_ds};
  return k;
}

}  // namespace attn
}  // namespace wst
