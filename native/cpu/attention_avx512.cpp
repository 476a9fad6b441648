// Attention micro-kernels for AVX-512 (selected when cpu_isa() is "avx512"); see attention.cpp
// for what each computes. Self-contained: intrinsics and file-local helpers only, so nothing
// compiled with these flags can be merged into the baseline build.
// GCC 12 flags the intrinsics' internal _mm512_undefined_ps() as maybe-uninitialized (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstddef>

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
const Kernels& kernels_avx512();

namespace {

constexpr int BK = 64;

// Lanes [0, n) of a 16-lane vector, n clamped to [0, 16].
inline __mmask16 lanes(int n) {
  return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

// exp(x), Cephes-style: x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial for exp(r) (about
// 1 ulp), scaled by 2^n. Inputs are clamped to [-103, 88.7]: exp underflows to 0 below.
inline __m512 vexp(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-103.0f));
  x = _mm512_min_ps(x, _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(y, n);
}

// NR rows of S (BK wide): 4 x NR accumulators, one Bt row (4 vectors) per d.
template <int NR>
inline void scores_rows(float* S, const float* A, const float* Bt, int D) {
  __m512 acc[NR][4];
  for (int r = 0; r < NR; r++)
    for (int c = 0; c < 4; c++) acc[r][c] = _mm512_setzero_ps();
  for (int d = 0; d < D; d++) {
    const float* b = Bt + (size_t)d * BK;
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
    const __m512 b2 = _mm512_loadu_ps(b + 32), b3 = _mm512_loadu_ps(b + 48);
    for (int r = 0; r < NR; r++) {
      const __m512 a = _mm512_set1_ps(A[(size_t)r * D + d]);
      acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(a, b2, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(a, b3, acc[r][3]);
    }
  }
  for (int r = 0; r < NR; r++)
    for (int c = 0; c < 4; c++) _mm512_storeu_ps(S + (size_t)r * BK + 16 * c, acc[r][c]);
}

void scores(float* S, const float* A, const float* Bt, int R, int D) {
  int r = 0;
  for (; r + 4 <= R; r += 4) scores_rows<4>(S + (size_t)r * BK, A + (size_t)r * D, Bt, D);
  float* s = S + (size_t)r * BK;
  const float* a = A + (size_t)r * D;
  switch (R - r) {
    case 3: scores_rows<3>(s, a, Bt, D); break;
    case 2: scores_rows<2>(s, a, Bt, D); break;
    case 1: scores_rows<1>(s, a, Bt, D); break;
    default: break;
  }
}

// The four horizontal sums of a, b, c, d, as one vector [sum a, sum b, sum c, sum d]: three
// shuffle-add levels instead of four separate reductions.
inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] and the same for c, d.
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  // Per 128-bit lane: [a, b, c, d] partial sums.
  const __m512d abd = _mm512_castps_pd(ab), cdd = _mm512_castps_pd(cd);
  const __m512 abcd = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(abd, cdd)),
                                    _mm512_castpd_ps(_mm512_unpackhi_pd(abd, cdd)));
  const __m256 s = _mm256_add_ps(_mm512_castps512_ps256(abcd),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(abcd), 1)));
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

// S[r][j] = dot(A[r], Bm[j]) for up to 4 rows: each key row is read once for all of them; four
// keys at a time share one reduction per row (decode: 1 query row per head, short rows).
template <int NR>
inline void scores_rm_rows(float* S, const float* A, const float* Bm, long ldb, int nk, int D) {
  int j = 0;
  for (; j + 4 <= nk; j += 4) {
    const float* b = Bm + j * ldb;
    __m512 acc[NR][4];
    for (int r = 0; r < NR; r++)
      for (int u = 0; u < 4; u++) acc[r][u] = _mm512_setzero_ps();
    for (int d = 0; d < D; d += 16) {
      const __mmask16 mk = lanes(D - d);
      __m512 av[NR];
      for (int r = 0; r < NR; r++) av[r] = _mm512_maskz_loadu_ps(mk, A + (size_t)r * D + d);
      for (int u = 0; u < 4; u++) {
        const __m512 bv = _mm512_maskz_loadu_ps(mk, b + u * ldb + d);
        for (int r = 0; r < NR; r++) acc[r][u] = _mm512_fmadd_ps(av[r], bv, acc[r][u]);
      }
    }
    for (int r = 0; r < NR; r++)
      _mm_storeu_ps(S + (size_t)r * BK + j, reduce4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
  }
  for (; j < nk; j++) {
    const float* b = Bm + j * ldb;
    __m512 acc[NR];
    for (int r = 0; r < NR; r++) acc[r] = _mm512_setzero_ps();
    for (int d = 0; d < D; d += 16) {
      const __mmask16 mk = lanes(D - d);
      const __m512 bv = _mm512_maskz_loadu_ps(mk, b + d);
      for (int r = 0; r < NR; r++)
        acc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, A + (size_t)r * D + d), bv, acc[r]);
    }
    for (int r = 0; r < NR; r++) S[(size_t)r * BK + j] = _mm512_reduce_add_ps(acc[r]);
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

// c[v] += alpha * a_v on the lanes m[v] of each 16-float vector v.
inline void store_row(float* c, __m512 al, __m512 a0, __m512 a1, __m512 a2, __m512 a3,
                      const __mmask16* m) {
  const __m512 a[4] = {a0, a1, a2, a3};
  for (int v = 0; v < 4; v++)
    if (m[v])
      _mm512_mask_storeu_ps(c + 16 * v, m[v],
                            _mm512_fmadd_ps(al, a[v], _mm512_maskz_loadu_ps(m[v], c + 16 * v)));
}

// NR (1..4) rows of C, columns [c0, c0 + 64): vector v < NV covers lanes m[v] (0 past the row
// end); vectors v >= NV lie wholly past the row end and are skipped (head_dim < 64).
// Named accumulators, not an array: GCC otherwise spills the array to the stack every k.
template <int NR, int NV>
inline void accum_rows(float* const* C, float alpha, const float* P, long prow, long pcol, int K,
                       const float* Bm, long ldb, int c0, const __mmask16* m) {
  const __m512 z = _mm512_setzero_ps();
  __m512 a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z;
  __m512 a20 = z, a21 = z, a22 = z, a23 = z, a30 = z, a31 = z, a32 = z, a33 = z;
  const __mmask16 m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3];
  for (int k = 0; k < K; k++) {
    const float* b = Bm + k * ldb + c0;
    const float* p = P + k * pcol;
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, b);
    const __m512 b1 = NV > 1 ? _mm512_maskz_loadu_ps(m1, b + 16) : z;
    const __m512 b2 = NV > 2 ? _mm512_maskz_loadu_ps(m2, b + 32) : z;
    const __m512 b3 = NV > 3 ? _mm512_maskz_loadu_ps(m3, b + 48) : z;
    __m512 q = _mm512_set1_ps(p[0]);
    a00 = _mm512_fmadd_ps(q, b0, a00);
    if (NV > 1) a01 = _mm512_fmadd_ps(q, b1, a01);
    if (NV > 2) a02 = _mm512_fmadd_ps(q, b2, a02);
    if (NV > 3) a03 = _mm512_fmadd_ps(q, b3, a03);
    if (NR > 1) {
      q = _mm512_set1_ps(p[prow]);
      a10 = _mm512_fmadd_ps(q, b0, a10);
      if (NV > 1) a11 = _mm512_fmadd_ps(q, b1, a11);
      if (NV > 2) a12 = _mm512_fmadd_ps(q, b2, a12);
      if (NV > 3) a13 = _mm512_fmadd_ps(q, b3, a13);
    }
    if (NR > 2) {
      q = _mm512_set1_ps(p[2 * prow]);
      a20 = _mm512_fmadd_ps(q, b0, a20);
      if (NV > 1) a21 = _mm512_fmadd_ps(q, b1, a21);
      if (NV > 2) a22 = _mm512_fmadd_ps(q, b2, a22);
      if (NV > 3) a23 = _mm512_fmadd_ps(q, b3, a23);
    }
    if (NR > 3) {
      q = _mm512_set1_ps(p[3 * prow]);
      a30 = _mm512_fmadd_ps(q, b0, a30);
      if (NV > 1) a31 = _mm512_fmadd_ps(q, b1, a31);
      if (NV > 2) a32 = _mm512_fmadd_ps(q, b2, a32);
      if (NV > 3) a33 = _mm512_fmadd_ps(q, b3, a33);
    }
  }
  const __m512 al = _mm512_set1_ps(alpha);
  store_row(C[0] + c0, al, a00, a01, a02, a03, m);
  if (NR > 1) store_row(C[1] + c0, al, a10, a11, a12, a13, m);
  if (NR > 2) store_row(C[2] + c0, al, a20, a21, a22, a23, m);
  if (NR > 3) store_row(C[3] + c0, al, a30, a31, a32, a33, m);
}

template <int NV>
void accum_cols(float* const* C, float alpha, const float* P, long prow, long pcol, int M, int K,
                const float* Bm, long ldb, int c0, const __mmask16* m) {
  int r = 0;
  for (; r + 4 <= M; r += 4) accum_rows<4, NV>(C + r, alpha, P + r * prow, prow, pcol, K, Bm, ldb, c0, m);
  switch (M - r) {
    case 3: accum_rows<3, NV>(C + r, alpha, P + r * prow, prow, pcol, K, Bm, ldb, c0, m); break;
    case 2: accum_rows<2, NV>(C + r, alpha, P + r * prow, prow, pcol, K, Bm, ldb, c0, m); break;
    case 1: accum_rows<1, NV>(C + r, alpha, P + r * prow, prow, pcol, K, Bm, ldb, c0, m); break;
    default: break;
  }
}

void accum(float* const* C, float alpha, const float* P, long prow, long pcol, int M, int K,
           const float* Bm, long ldb, int D) {
  for (int c0 = 0; c0 < D; c0 += 64) {
    const __mmask16 m[4] = {lanes(D - c0), lanes(D - c0 - 16), lanes(D - c0 - 32), lanes(D - c0 - 48)};
    switch ((D - c0 >= 64 ? 64 : D - c0 + 15) / 16) {
      case 1: accum_cols<1>(C, alpha, P, prow, pcol, M, K, Bm, ldb, c0, m); break;
      case 2: accum_cols<2>(C, alpha, P, prow, pcol, M, K, Bm, ldb, c0, m); break;
      case 3: accum_cols<3>(C, alpha, P, prow, pcol, M, K, Bm, ldb, c0, m); break;
      default: accum_cols<4>(C, alpha, P, prow, pcol, M, K, Bm, ldb, c0, m); break;
    }
  }
}

void fwd_softmax(float* S, int R, const int* nvis, float* m, float* l, float* corr) {
  for (int r = 0; r < R; r++) {
    float* s = S + (size_t)r * BK;
    const int n = nvis[r];
    if (n <= 0) {
      for (int c = 0; c < 4; c++) _mm512_storeu_ps(s + 16 * c, _mm512_setzero_ps());
      corr[r] = 1.0f;
      continue;
    }
    __m512 mv = _mm512_set1_ps(m[r]);
    for (int c = 0; c < 4; c++)
      mv = _mm512_mask_max_ps(mv, lanes(n - 16 * c), mv, _mm512_loadu_ps(s + 16 * c));
    const float mx = _mm512_reduce_max_ps(mv);
    corr[r] = __builtin_expf(m[r] - mx);  // m_old = -inf -> 0
    const __m512 mxv = _mm512_set1_ps(mx);
    __m512 sum = _mm512_setzero_ps();
    for (int c = 0; c < 4; c++) {
      const __m512 p = _mm512_maskz_mov_ps(lanes(n - 16 * c),
                                           vexp(_mm512_sub_ps(_mm512_loadu_ps(s + 16 * c), mxv)));
      _mm512_storeu_ps(s + 16 * c, p);
      sum = _mm512_add_ps(sum, p);
    }
    l[r] = l[r] * corr[r] + _mm512_reduce_add_ps(sum);
    m[r] = mx;
  }
}

void bwd_probs(float* S, int R, const int* nvis, const float* lse) {
  for (int r = 0; r < R; r++) {
    float* s = S + (size_t)r * BK;
    const int n = nvis[r];
    const __m512 lv = _mm512_set1_ps(lse[r]);
    for (int c = 0; c < 4; c++) {
      const __mmask16 mk = lanes(n - 16 * c);
      __m512 p = _mm512_setzero_ps();
      if (mk) p = _mm512_maskz_mov_ps(mk, vexp(_mm512_sub_ps(_mm512_loadu_ps(s + 16 * c), lv)));
      _mm512_storeu_ps(s + 16 * c, p);
    }
  }
}

void bwd_ds(float* dP, const float* P, int R, const float* Di) {
  for (int r = 0; r < R; r++) {
    float* dp = dP + (size_t)r * BK;
    const float* p = P + (size_t)r * BK;
    const __m512 di = _mm512_set1_ps(Di[r]);
    for (int c = 0; c < 4; c++)
      _mm512_storeu_ps(dp + 16 * c, _mm512_mul_ps(_mm512_loadu_ps(p + 16 * c),
                                                  _mm512_sub_ps(_mm512_loadu_ps(dp + 16 * c), di)));
  }
}

}  // namespace

const Kernels& kernels_avx512() {
  static const Kernels k = {scores, scores_rm, accum, fwd_softmax, bwd_probs, bwd_ds};
  return k;
}

}  // namespace attn
}  // namespace wst
