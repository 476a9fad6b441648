// Causal grouped-query attention: FlashAttention-2-style forward, backward and decode.
//
// A task owns a tile of rows: the G = H/KVH query heads that share one kv head, times a block of
// query positions (rows ordered position-major, so a position's G heads are adjacent). The tile
// walks the keys in blocks of BK = 64 with an online softmax: S = Q K^T for the block, a running
// max m and sum l per row, O rescaled by exp(m_old - m_new) and O += P V. Nothing Tq x Tk is ever
// stored: per task the scratch is a few R x D and R x BK buffers, and per call K (and V, in the
// backward) are packed once into transposed (D,BK) tiles that every query tile of a kv head reuses.
// The backward is FA2's recompute from lse; dK, dV and dQ each have exactly one writer task.
//
// Rows that see no key at all (causal with Tq > Tk: query i < Tq - Tk sits before key 0) get
// out = 0 and lse = -inf; their gradients are 0.
//
// The inner products live in a small table of micro-kernels (scores, accum, the two softmax
// pieces), one per SIMD path: generic (here), AVX2 and AVX-512 (attention_avx2.cpp,
// attention_avx512.cpp), chosen from cpu_isa(). Each task's arithmetic happens in a fixed order
// and every output element is written by exactly one task, so results do not depend on the
// thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "../kernels.h"
#include "threadpool.h"

namespace wst {
namespace attn {

constexpr int BK = 64;  // keys per block (the width of every S / P tile)

// S (R,BK) = A (R,D) @ Bt (D,BK); A row-major (ld D), Bt zero-padded to BK columns.
using ScoresFn = void (*)(float* S, const float* A, const float* Bt, int R, int D);
// S (R,BK) = A (R,D) @ Bm[0:nk]^T with Bm row-major (row stride ldb); columns >= nk are 0.
// For a few rows against unpacked keys (decode).
using ScoresRmFn = void (*)(float* S, const float* A, const float* Bm, long ldb, int nk, int R,
                            int D);
// C[m][0:D] += alpha * sum_{k<K} P[m*prow + k*pcol] * Bm[k*ldb + 0:D] for m < M.
using AccumFn = void (*)(float* const* C, float alpha, const float* P, long prow, long pcol, int M,
                         int K, const float* Bm, long ldb, int D);
// Online softmax step over R rows of S (R,BK): row r sees its first nvis[r] columns. Updates the
// running max m[r] and sum l[r], turns S into P = exp(S - m_new) (0 where not visible) and
// writes corr[r] = exp(m_old - m_new), the factor the row's output accumulator needs.
using FwdSoftmaxFn = void (*)(float* S, int R, const int* nvis, float* m, float* l, float* corr);
// S (R,BK) -> P = exp(S - lse[r]) on the first nvis[r] columns, 0 elsewhere.
using BwdProbsFn = void (*)(float* S, int R, const int* nvis, const float* lse);
// dP (R,BK) -> dS = P * (dP - Di[r]).
using BwdDsFn = void (*)(float* dP, const float* P, int R, const float* Di);

struct Kernels {
  ScoresFn scores;
  ScoresRmFn scores_rm;
  AccumFn accum;
  FwdSoftmaxFn fwd_softmax;
  BwdProbsFn bwd_probs;
  BwdDsFn bwd_ds;
};

#if defined(WST_HAVE_X86_SIMD)
const Kernels& kernels_avx512();  // attention_avx512.cpp
const Kernels& kernels_avx2();    // attention_avx2.cpp
#endif

// ---- generic micro-kernels (baseline flags; the compiler vectorises the j and d loops) ----

void scores_generic(float* S, const float* A, const float* Bt, int R, int D) {
  for (int r = 0; r < R; r++) {
    float acc[BK] = {0};
    const float* a = A + (size_t)r * D;
    for (int d = 0; d < D; d++) {
      const float ad = a[d];
      const float* b = Bt + (size_t)d * BK;
      for (int j = 0; j < BK; j++) acc[j] += ad * b[j];
    }
    std::memcpy(S + (size_t)r * BK, acc, sizeof acc);
  }
}

void scores_rm_generic(float* S, const float* A, const float* Bm, long ldb, int nk, int R, int D) {
  for (int r = 0; r < R; r++) {
    float* s = S + (size_t)r * BK;
    const float* a = A + (size_t)r * D;
    for (int j = 0; j < nk; j++) {
      const float* b = Bm + j * ldb;
      float acc = 0.0f;
      for (int d = 0; d < D; d++) acc += a[d] * b[d];
      s[j] = acc;
    }
    for (int j = nk; j < BK; j++) s[j] = 0.0f;
  }
}

void accum_generic(float* const* C, float alpha, const float* P, long prow, long pcol, int M, int K,
                   const float* Bm, long ldb, int D) {
  std::vector<float> acc((size_t)D);
  for (int m = 0; m < M; m++) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    float* a = acc.data();
    for (int k = 0; k < K; k++) {
      const float p = P[m * prow + k * pcol];
      const float* b = Bm + k * ldb;
      for (int d = 0; d < D; d++) a[d] += p * b[d];
    }
    float* c = C[m];
    for (int d = 0; d < D; d++) c[d] += alpha * a[d];
  }
}

void fwd_softmax_generic(float* S, int R, const int* nvis, float* m, float* l, float* corr) {
  for (int r = 0; r < R; r++) {
    float* s = S + (size_t)r * BK;
    const int n = nvis[r];
    if (n <= 0) {
      for (int j = 0; j < BK; j++) s[j] = 0.0f;
      corr[r] = 1.0f;
      continue;
    }
    float mx = m[r];
    for (int j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    corr[r] = std::exp(m[r] - mx);  // m_old = -inf -> 0
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
      s[j] = std::exp(s[j] - mx);
      sum += s[j];
    }
    for (int j = n; j < BK; j++) s[j] = 0.0f;
    l[r] = l[r] * corr[r] + sum;
    m[r] = mx;
  }
}

void bwd_probs_generic(float* S, int R, const int* nvis, const float* lse) {
  for (int r = 0; r < R; r++) {
    float* s = S + (size_t)r * BK;
    const int n = nvis[r] > 0 ? nvis[r] : 0;
    for (int j = 0; j < n; j++) s[j] = std::exp(s[j] - lse[r]);
    for (int j = n; j < BK; j++) s[j] = 0.0f;
  }
}

void bwd_ds_generic(float* dP, const float* P, int R, const float* Di) {
  for (int r = 0; r < R; r++) {
    float* dp = dP + (size_t)r * BK;
    const float* p = P + (size_t)r * BK;
    const float di = Di[r];
    for (int j = 0; j < BK; j++) dp[j] = p[j] * (dp[j] - di);
  }
}

const Kernels& kernels_generic() {
  static const Kernels k = {scores_generic, scores_rm_generic, accum_generic, fwd_softmax_generic, bwd_probs_generic,
                            bwd_ds_generic};
  return k;
}

const Kernels& active() {
  static const Kernels* k = [] {
#if defined(WST_HAVE_X86_SIMD)
    const char* isa = cpu_isa();
    if (std::strcmp(isa, "avx512") == 0) return &kernels_avx512();
    if (std::strcmp(isa, "avx2") == 0) return &kernels_avx2();
#endif
    return &kernels_generic();
  }();
  return *k;
}

// ---- driver ---------------------------------------------------------------------------------

inline int imin(int a, int b) { return a < b ? a : b; }
inline int imax(int a, int b) { return a > b ? a : b; }

// Query positions per tile: about 64 rows of G heads each.
inline int query_block(int G) { return imax(1, 64 / G); }

// Bt (D,BK) = the rows [0, nk) of src (row stride ld) transposed, zero beyond nk.
void pack_transposed(float* Bt, const float* src, long ld, int nk, int D) {
  for (int d = 0; d < D; d++) {
    float* b = Bt + (size_t)d * BK;
    for (int j = 0; j < nk; j++) b[j] = src[j * ld + d];
    for (int j = nk; j < BK; j++) b[j] = 0.0f;
  }
}

// Row r of a (b, kv head, query block) tile: position i0 + r / G, head kvh * G + r % G.
struct Tile {
  int R = 0;
  std::vector<const float*> q, dout;
  std::vector<float*> o;        // out rows (forward) / dq rows (backward)
  std::vector<float*> lse_out;  // forward: where lse goes (entries null when lse is null)
  std::vector<float> lse, di;   // backward: per-row lse and rowsum(dout * out)
  std::vector<int> vis;         // keys visible to the row: [0, vis)
  void resize(int r) {
    R = r;
    q.resize(r); dout.resize(r); o.resize(r); lse_out.resize(r); lse.resize(r); di.resize(r);
    vis.resize(r);
  }
};

// The online-softmax state of R query rows (scaled queries, running max and sum, unnormalised
// output), fed key blocks by consume(): the forward and decode kernels' building block. Per-thread
// scratch (thread_local instances).
struct OnlineRows {
  std::vector<float> Q, O, S, m, l, corr;
  std::vector<int> nvis;
  std::vector<float*> orow;
  void init(int R, int D, const float* const* q, float scale) {
    Q.resize((size_t)R * D);
    O.assign((size_t)R * D, 0.0f);
    S.resize((size_t)R * BK);
    m.assign(R, -std::numeric_limits<float>::infinity());
    l.assign(R, 0.0f);
    corr.resize(R);
    nvis.resize(R);
    orow.resize(R);
    for (int r = 0; r < R; r++) {
      for (int d = 0; d < D; d++) Q[(size_t)r * D + d] = q[r][d] * scale;
      orow[r] = O.data() + (size_t)r * D;
    }
  }
  // Rows [r0, r0 + R) attend to the keys [0, n) of kb / vb (row stride ld); row r sees keys
  // [0, vis[r - r0]) when vis is given, all n otherwise. kt, when not null, holds the keys packed:
  // block j0 / BK at kt + j0 * D, transposed (D,BK) and zero-padded (see pack_all); without it the
  // scores read K rows directly (decode: a few rows, each key used once).
  void consume(const Kernels& K, int r0, int R, const float* kb, const float* kt, const float* vb,
               long ld, int n, int D, const int* vis = nullptr) {
    float* s = S.data() + (size_t)r0 * BK;
    for (int j0 = 0; j0 < n; j0 += BK) {
      const int nk = imin(BK, n - j0);
      for (int r = 0; r < R; r++) nvis[r0 + r] = vis ? imax(0, imin(nk, vis[r] - j0)) : nk;
      if (kt)  // S = (scale Q) K^T
        K.scores(s, Q.data() + (size_t)r0 * D, kt + (size_t)j0 * D, R, D);
      else
        K.scores_rm(s, Q.data() + (size_t)r0 * D, kb + j0 * ld, ld, nk, R, D);
      K.fwd_softmax(s, R, nvis.data() + r0, m.data() + r0, l.data() + r0, corr.data() + r0);  // P = exp(S - m)
      for (int r = r0; r < r0 + R; r++)
        if (corr[r] != 1.0f)
          for (int d = 0; d < D; d++) orow[r][d] *= corr[r];                             // O *= exp(m_old - m)
      K.accum(orow.data() + r0, 1.0f, s, BK, 1, R, nk, vb + j0 * ld, ld, D);              // O += P V
    }
  }
  // out = O / l (0 for a row that saw no key); lse (entries may be null) = m + log l, or -inf.
  void finish(int R, int D, float* const* out, float* const* lse = nullptr) const {
    for (int r = 0; r < R; r++) {
      const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
      for (int d = 0; d < D; d++) out[r][d] = orow[r][d] * inv;
      if (lse && lse[r]) *lse[r] = l[r] > 0.0f ? m[r] + std::log(l[r]) : -std::numeric_limits<float>::infinity();
    }
  }
};

// Online-softmax forward of one tile against keys kb/vb (row stride ld); kt: the keys packed,
// or null (see OnlineRows::consume).
void forward_tile(const Kernels& K, const Tile& t, const float* kb, const float* kt, const float* vb,
                  long ld, int D, float scale) {
  int maxvis = 0;
  for (int r = 0; r < t.R; r++) maxvis = imax(maxvis, t.vis[r]);
  thread_local OnlineRows st;  // reused across calls (decode runs this per row and kv head each step)
  st.init(t.R, D, t.q.data(), scale);
  st.consume(K, 0, t.R, kb, kt, vb, ld, maxvis, D, t.vis.data());
  st.finish(t.R, D, t.o.data(), t.lse_out.data());
}

struct Shape {
  int B, H, KVH, Tq, Tk, D, G, BQ, nqb, nkb;
  bool causal;
  Shape(int B_, int H_, int KVH_, int Tq_, int Tk_, int D_, bool causal_)
      : B(B_), H(H_), KVH(KVH_), Tq(Tq_), Tk(Tk_), D(D_), G(H_ / KVH_), BQ(query_block(H_ / KVH_)),
        nqb((Tq_ + BQ - 1) / BQ), nkb((Tk_ + BK - 1) / BK), causal(causal_) {}
  size_t qrow(int b, int i, int h) const { return (((size_t)b * Tq + i) * H + h) * D; }
  size_t krow(int b, int j, int kvh) const { return (((size_t)b * Tk + j) * KVH + kvh) * D; }
  // Keys visible to query i: causal puts it at absolute position Tk - Tq + i.
  int visible(int i) const { return causal ? imax(0, imin(Tk, Tk - Tq + i + 1)) : Tk; }
  // The packed key blocks of (b, kvh) (see pack_all): nkb tiles of (D,BK).
  size_t tiles(int b, int kvh) const { return ((size_t)b * KVH + kvh) * nkb * D * BK; }
};

// Every key block of src (B,Tk,KVH,D), packed once per call: a (D,BK) transposed tile per
// (b, kvh, block), so the query tiles that share a kv head reuse it.
std::vector<float> pack_all(const Shape& s, const float* src) {
  std::vector<float> out((size_t)s.B * s.KVH * s.nkb * s.D * BK);
  const long ld = (long)s.KVH * s.D;
  parallel_for(s.B * s.KVH * s.nkb, [&](int task) {
    const int kb = task % s.nkb, bk = task / s.nkb, b = bk / s.KVH, kvh = bk % s.KVH;
    const int j0 = kb * BK;
    pack_transposed(out.data() + s.tiles(b, kvh) + (size_t)j0 * s.D, src + s.krow(b, j0, kvh), ld,
                    imin(BK, s.Tk - j0), s.D);
  });
  return out;
}

}  // namespace attn

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int B, int H, int KVH, int Tq, int Tk, int D, bool causal) {
  using namespace attn;
  const Kernels& K = active();
  const Shape s(B, H, KVH, Tq, Tk, D, causal);
  const float scale = 1.0f / std::sqrt((float)D);
  const long ld = (long)KVH * D;
  const std::vector<float> kt = pack_all(s, k);
  parallel_for(B * KVH * s.nqb, [&](int task) {
    const int qb = task % s.nqb, b = task / s.nqb / KVH, kvh = task / s.nqb % KVH;
    const int i0 = qb * s.BQ, ni = imin(s.BQ, Tq - i0);
    thread_local Tile t;
    t.resize(ni * s.G);
    for (int ii = 0; ii < ni; ii++)
      for (int g = 0; g < s.G; g++) {
        const int r = ii * s.G + g, i = i0 + ii, h = kvh * s.G + g;
        t.q[r] = q + s.qrow(b, i, h);
        t.o[r] = out + s.qrow(b, i, h);
        t.lse_out[r] = lse ? lse + ((size_t)b * H + h) * Tq + i : nullptr;
        t.vis[r] = s.visible(i);
      }
    forward_tile(K, t, k + s.krow(b, 0, kvh), kt.data() + s.tiles(b, kvh), v + s.krow(b, 0, kvh),
                 ld, D, scale);
  });
}

void attention_decode(float* out, const float* q, const float* kcache, const float* vcache,
                      const int32_t* lengths, int B, int H, int KVH, int maxT, int D) {
  using namespace attn;
  const Kernels& K = active();
  const int G = H / KVH;
  const float scale = 1.0f / std::sqrt((float)D);
  const long ld = (long)KVH * D;
  parallel_for(B * KVH, [&](int task) {
    const int b = task / KVH, kvh = task % KVH;
    thread_local Tile t;
    t.resize(G);
    for (int g = 0; g < G; g++) {
      const size_t row = ((size_t)b * H + kvh * G + g) * D;
      t.q[g] = q + row;
      t.o[g] = out + row;
      t.lse_out[g] = nullptr;
      t.vis[g] = lengths[b];
    }
    const size_t base = (size_t)b * maxT * KVH * D + (size_t)kvh * D;
    forward_tile(K, t, kcache + base, nullptr, vcache + base, ld, D, scale);
  });
}

void attention_decode_shared(float* out, const float* q, const float* kcache, const float* vcache,
                             const int32_t* lengths, int B, int H, int KVH, int maxT, int D,
                             const int32_t* members, const int32_t* group_start,
                             const int32_t* shared_len, int n_groups) {
  using namespace attn;
  if (!members || n_groups <= 0) {  // no grouping given: every slot on its own
    attention_decode(out, q, kcache, vcache, lengths, B, H, KVH, maxT, D);
    return;
  }
  const Kernels& K = active();
  const int G = H / KVH;
  const float scale = 1.0f / std::sqrt((float)D);
  const long ld = (long)KVH * D;
  parallel_for(n_groups * KVH, [&](int task) {
    const int gi = task / KVH, kvh = task % KVH;
    const int m0 = group_start[gi], nm = group_start[gi + 1] - m0, L = shared_len[gi], R = nm * G;
    thread_local OnlineRows st;
    thread_local std::vector<const float*> qs;
    thread_local std::vector<float*> os;
    qs.resize(R);
    os.resize(R);
    for (int i = 0; i < nm; i++)
      for (int g = 0; g < G; g++) {
        const size_t row = ((size_t)members[m0 + i] * H + kvh * G + g) * D;
        qs[i * G + g] = q + row;
        os[i * G + g] = out + row;
      }
    auto cache = [&](int slot) { return (size_t)slot * maxT * ld + (size_t)kvh * D; };
    st.init(R, D, qs.data(), scale);
    // The shared positions once, from the first member, for every row of the group ...
    if (L > 0) st.consume(K, 0, R, kcache + cache(members[m0]), nullptr, vcache + cache(members[m0]), ld, L, D);
    // ... then each member's own positions [L, length).
    for (int i = 0; i < nm; i++) {
      const int slot = members[m0 + i], n = lengths[slot] - L;
      if (n > 0)
        st.consume(K, i * G, G, kcache + cache(slot) + L * ld, nullptr, vcache + cache(slot) + L * ld, ld, n, D);
    }
    st.finish(R, D, os.data());
  });
}

namespace attn {

// Backward scratch for one (query tile, key block) step; per thread, reused (every entry a step
// reads is written first: load_tile fills Qs, dO; scores fills S, dP).
struct BwdScratch {
  std::vector<float> Qs, dO, S, dP;
  std::vector<int> nvis;
  void reserve(int Rmax, int D) {
    for (auto* v : {&Qs, &dO}) if (v->size() < (size_t)Rmax * D) v->resize((size_t)Rmax * D);
    for (auto* v : {&S, &dP}) if (v->size() < (size_t)Rmax * BK) v->resize((size_t)Rmax * BK);
    if (nvis.size() < (size_t)Rmax) nvis.resize(Rmax);
  }
};
BwdScratch& bwd_scratch(int Rmax, int D) {
  thread_local BwdScratch w;
  w.reserve(Rmax, D);
  return w;
}

// Fills the rows of query block qb (for kv head kvh of batch row b) and packs (scale q), dout.
void load_tile(Tile& t, BwdScratch& w, const Shape& s, int b, int kvh, int qb, const float* q,
               const float* dout, float* dq, const float* lse, const float* di, float scale) {
  const int i0 = qb * s.BQ, ni = imin(s.BQ, s.Tq - i0), D = s.D;
  t.resize(ni * s.G);
  for (int ii = 0; ii < ni; ii++)
    for (int g = 0; g < s.G; g++) {
      const int r = ii * s.G + g, i = i0 + ii, h = kvh * s.G + g;
      const float* qr = q + s.qrow(b, i, h);
      const float* dr = dout + s.qrow(b, i, h);
      for (int d = 0; d < D; d++) {
        w.Qs[(size_t)r * D + d] = qr[d] * scale;
        w.dO[(size_t)r * D + d] = dr[d];
      }
      t.o[r] = dq + s.qrow(b, i, h);
      const size_t li = ((size_t)b * s.H + h) * s.Tq + i;
      t.lse[r] = lse[li];
      t.di[r] = di[li];
      t.vis[r] = s.visible(i);
    }
}

// One (query tile, key block) step of the backward: recompute P, then the gradients.
// The key block is [j0, j0 + nk): Kt/Vt hold it packed (D,BK), kblk points at its first K row.
// dkrow/dvrow (nk rows, may be null) accumulate dK, dV; dq rows (t.o) accumulate when with_dq.
void backward_step(const Kernels& K, const Tile& t, BwdScratch& w, const Shape& s, int j0, int nk,
                   const float* Kt, const float* Vt, const float* kblk, long ld, float* const* dkrow, float* const* dvrow,
                   bool with_dq, float scale) {
  const int R = t.R, D = s.D;
  for (int r = 0; r < R; r++) w.nvis[r] = imax(0, imin(nk, t.vis[r] - j0));
  // forward: S = (scale Q) K^T; P = exp(S - m) / l = exp(S - lse)
  K.scores(w.S.data(), w.Qs.data(), Kt, R, D);
  K.bwd_probs(w.S.data(), R, w.nvis.data(), t.lse.data());
  if (dvrow)  // forward: O += P V  =>  dV += P^T dO
    K.accum(dvrow, 1.0f, w.S.data(), 1, BK, nk, R, w.dO.data(), D, D);
  // forward: O += P V  =>  dP = dO V^T
  K.scores(w.dP.data(), w.dO.data(), Vt, R, D);
  // forward: P = softmax(S)  =>  dS = P * (dP - rowsum(dO * O))
  K.bwd_ds(w.dP.data(), w.S.data(), R, t.di.data());
  if (dkrow)  // forward: S = (scale Q) K^T  =>  dK += dS^T (scale Q)
    K.accum(dkrow, 1.0f, w.dP.data(), 1, BK, nk, R, w.Qs.data(), D, D);
  if (with_dq)  // forward: S = (scale Q) K^T  =>  dQ += scale dS K
    K.accum(t.o.data(), scale, w.dP.data(), BK, 1, R, nk, kblk, ld, D);
}

}  // namespace attn

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse, int B,
                        int H, int KVH, int Tq, int Tk, int D, bool causal) {
  using namespace attn;
  const Kernels& K = active();
  const Shape s(B, H, KVH, Tq, Tk, D, causal);
  const float scale = 1.0f / std::sqrt((float)D);
  const long ld = (long)KVH * D;

  // Di = rowsum(dout * out), laid out like lse (B,H,Tq).
  std::vector<float> di((size_t)B * H * Tq);
  parallel_chunks((size_t)B * Tq, 64, [&](size_t r0, size_t r1) {
    for (size_t bi = r0; bi < r1; bi++)
      for (int h = 0; h < H; h++) {
        const size_t row = (bi * H + h) * D;
        float acc = 0.0f;
        for (int d = 0; d < D; d++) acc += dout[row + d] * out[row + d];
        const size_t b = bi / Tq, i = bi % Tq;
        di[(b * H + h) * Tq + i] = acc;
      }
  });

  const std::vector<float> kt = pack_all(s, k), vt = pack_all(s, v);

  // Key block kb of (b, kvh): dK, dV over every query tile that sees it (and dQ when fused).
  auto kv_block = [&](int b, int kvh, int kb, bool with_dq, Tile& t, BwdScratch& w) {
    const int j0 = kb * BK, nk = imin(BK, Tk - j0);
    const float* kblk = k + s.krow(b, j0, kvh);
    const float* Kt = kt.data() + s.tiles(b, kvh) + (size_t)j0 * D;
    const float* Vt = vt.data() + s.tiles(b, kvh) + (size_t)j0 * D;
    std::vector<float*> dkrow(nk), dvrow(nk);
    for (int j = 0; j < nk; j++) {
      dkrow[j] = dk + s.krow(b, j0 + j, kvh);
      dvrow[j] = dv + s.krow(b, j0 + j, kvh);
      std::memset(dkrow[j], 0, sizeof(float) * D);
      std::memset(dvrow[j], 0, sizeof(float) * D);
    }
    // First query that sees key j0: Tk - Tq + i >= j0.
    const int ifirst = causal ? imax(0, j0 - (Tk - Tq)) : 0;
    for (int qb = ifirst / s.BQ; qb < s.nqb; qb++) {
      load_tile(t, w, s, b, kvh, qb, q, dout, dq, lse, di.data(), scale);
      backward_step(K, t, w, s, j0, nk, Kt, Vt, kblk, ld, dkrow.data(), dvrow.data(), with_dq,
                    scale);
    }
  };
  auto zero_dq = [&](int b, int kvh, int i0, int i1) {
    for (int i = i0; i < i1; i++)
      std::memset(dq + s.qrow(b, i, kvh * s.G), 0, sizeof(float) * s.G * D);
  };

  const int Rmax = s.BQ * s.G;
  // Enough (b, kv head) tasks for the pool (four per thread, or 32): each task owns its dq, dk, dv
  // rows and walks its key blocks in order. Both paths add every term in the same order, so the
  // choice (which depends on the thread count) does not change a bit.
  const int nt = num_threads();
  if (nt == 1 || B * KVH >= std::min(32, 4 * nt)) {
    parallel_for(B * KVH, [&](int task) {
      const int b = task / KVH, kvh = task % KVH;
      thread_local Tile t;
      BwdScratch& w = bwd_scratch(Rmax, D);
      zero_dq(b, kvh, 0, Tq);
      for (int kb = 0; kb < s.nkb; kb++) kv_block(b, kvh, kb, true, t, w);
    });
    return;
  }
  // Few (b, kv head) pairs: split the keys for dK, dV, then the queries for dQ (P recomputed).
  parallel_for(B * KVH * s.nkb, [&](int task) {
    const int kb = task % s.nkb, b = task / s.nkb / KVH, kvh = task / s.nkb % KVH;
    thread_local Tile t;
    BwdScratch& w = bwd_scratch(Rmax, D);
    kv_block(b, kvh, kb, false, t, w);
  });
  parallel_for(B * KVH * s.nqb, [&](int task) {
    const int qb = task % s.nqb, b = task / s.nqb / KVH, kvh = task / s.nqb % KVH;
    thread_local Tile t;
    BwdScratch& w = bwd_scratch(Rmax, D);
    const int i0 = qb * s.BQ, i1 = imin(Tq, i0 + s.BQ);
    zero_dq(b, kvh, i0, i1);
    load_tile(t, w, s, b, kvh, qb, q, dout, dq, lse, di.data(), scale);
    int maxvis = 0;
    for (int r = 0; r < t.R; r++) maxvis = imax(maxvis, t.vis[r]);
    for (int j0 = 0; j0 < maxvis; j0 += BK) {
      const int nk = imin(BK, Tk - j0);
      const float* Kt = kt.data() + s.tiles(b, kvh) + (size_t)j0 * D;
      const float* Vt = vt.data() + s.tiles(b, kvh) + (size_t)j0 * D;
      backward_step(K, t, w, s, j0, nk, Kt, Vt, k + s.krow(b, j0, kvh), ld, nullptr, nullptr, true,
                    scale);
    }
  });
}

}  // namespace wst
