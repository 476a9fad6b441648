// Token sampling: temperature, top-k, top-p, min-p, drawn with Philox4x32-10.
//
// Every filter keeps a prefix of one canonical order of the vocabulary: descending logit,
// ties by lower index (NaN counts as -inf). A row's kept set is therefore a prefix length L,
// and the draw walks that prefix accumulating probability mass. Two ways to get at the
// canonical order without sorting the vocabulary:
//  - top-k with k <= kDirectTopK: a streaming selection keeps the k best logits (O(V)), and
//    only those k are sorted, exponentiated and walked.
//  - everything else: one pass computes s = (x - max) / T, w = exp(s) and a histogram of s
//    in buckets of 1/8 nat (bucket index is monotone in the canonical order, so buckets are
//    consecutive segments of it). Walking bucket masses finds which bucket a mass target
//    falls in; only that bucket's members (a linked list built in the same pass) are
//    gathered and sorted.
// Rows are independent and each is computed serially, so results never depend on the thread
// count or on the other rows of the batch.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "../kernels.h"
#include "threadpool.h"

namespace wst {

// ---------------------------------------------------------------------------------------
// Philox4x32-10 (Salmon, Moraes, Dror, Shaw 2011), Random123 constants.
namespace {
constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;
}  // namespace

// Raw block function, exposed (not in kernels.h) for the known-answer tests.
void philox4x32_10(const uint32_t ctr_in[4], const uint32_t key_in[2], uint32_t out[4]) {
  uint32_t c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
  uint32_t k0 = key_in[0], k1 = key_in[1];
  for (int round = 0; round < 10; round++) {
    if (round > 0) { k0 += kPhiloxW0; k1 += kPhiloxW1; }
    uint64_t p0 = (uint64_t)kPhiloxM0 * c0, p1 = (uint64_t)kPhiloxM1 * c2;
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

float philox_uniform(uint64_t key, uint64_t counter) {
  const uint32_t ctr[4] = {(uint32_t)counter, (uint32_t)(counter >> 32), 0, 0};
  const uint32_t k[2] = {(uint32_t)key, (uint32_t)(key >> 32)};
  uint32_t out[4];
  philox4x32_10(ctr, k, out);
  return (float)(out[0] >> 8) * (1.0f / 16777216.0f);  // top 24 bits -> [0, 1), exact
}

// ---------------------------------------------------------------------------------------
namespace {

constexpr int kBuckets = 1024;       // bucket b holds -s in [b/8, (b+1)/8); the last is open
constexpr float kBucketsPerNat = 8.0f;
constexpr int kDirectTopK = 2048;    // top-k above this goes through the bucket path
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float key_of(float x) { return x != x ? kNegInf : x; }

inline float bits_float(uint32_t b) { float f; std::memcpy(&f, &b, 4); return f; }
inline uint32_t float_bits(float f) { uint32_t b; std::memcpy(&b, &f, 4); return b; }

// exp(x) for x <= 0 (or -inf), within 1 ulp of the true value (Cephes expf polynomial), and
// written without float compares so that loops over it vectorise. Every path uses this one
// function, so a token's weight does not depend on which path the row took.
inline float exp_nonpos(float x) {
  uint32_t xb = float_bits(x);
  uint32_t under = 0u - (uint32_t)(xb > 0xC2D00000u);  // x < -104 or -inf: exp rounds to 0
  float xc = bits_float((xb & ~under) | (0xC2D00000u & under));
  float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  float r = xc - n * 0.693359375f - n * -2.12194440e-4f;
  float y = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r +
               4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f) * (r * r) +
            r + 1.0f;
  int32_t ni = (int32_t)n, h = ni >> 1;  // n in [-150, 0]: scale in two exact-range steps
  float res = y * bits_float((uint32_t)(h + 127) << 23) * bits_float((uint32_t)(ni - h + 127) << 23);
  return bits_float(float_bits(res) & ~under);
}

// Largest logit, NaN ignored (-inf when there is none). SSE2 is part of x86-64.
float row_max(const float* x, int V) {
  float m = kNegInf;
  int v = 0;
#ifdef __SSE2__
  __m128 a0 = _mm_set1_ps(kNegInf), a1 = a0, a2 = a0, a3 = a0;
  for (; v + 16 <= V; v += 16) {  // maxps(x, acc) returns acc when x is NaN
    a0 = _mm_max_ps(_mm_loadu_ps(x + v), a0);
    a1 = _mm_max_ps(_mm_loadu_ps(x + v + 4), a1);
    a2 = _mm_max_ps(_mm_loadu_ps(x + v + 8), a2);
    a3 = _mm_max_ps(_mm_loadu_ps(x + v + 12), a3);
  }
  float lanes[4];
  _mm_storeu_ps(lanes, _mm_max_ps(_mm_max_ps(a0, a1), _mm_max_ps(a2, a3)));
  for (float l : lanes) m = l > m ? l : m;
#endif
  for (; v < V; v++) m = x[v] > m ? x[v] : m;
  return m;
}

// Whether any of x[0..16) exceeds thr (NaN does not).
inline bool any_above16(const float* x, float thr) {
#ifdef __SSE2__
  __m128 t = _mm_set1_ps(thr);
  __m128 c = _mm_or_ps(_mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(x), t), _mm_cmpgt_ps(_mm_loadu_ps(x + 4), t)),
                       _mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(x + 8), t), _mm_cmpgt_ps(_mm_loadu_ps(x + 12), t)));
  return _mm_movemask_ps(c) != 0;
#else
  int f = 0;
  for (int j = 0; j < 16; j++) f |= x[j] > thr;
  return f != 0;
#endif
}

inline int bucket_of(float s) {  // s <= 0 (or -inf)
  float t = -s * kBucketsPerNat;
  return t < (float)(kBuckets - 1) ? (int)t : kBuckets - 1;
}

// Sort key for the canonical order: ascending key = descending logit, then ascending index.
// -0 counts as +0 and NaN as -inf, as in every comparison of logits here.
inline uint64_t order_key(const float* x, int32_t v) {
  float k = key_of(x[v]) + 0.0f;  // -0 + 0 = +0
  uint32_t b = float_bits(k);
  uint32_t ascending = b ^ ((b >> 31) ? 0xFFFFFFFFu : 0x80000000u);  // monotone in k
  return ((uint64_t)~ascending << 32) | (uint32_t)v;
}

// Sorts token indices into the canonical order.
void sort_canonical(int32_t* idx, int n, const float* x, std::vector<uint64_t>& tmp) {
  tmp.resize(n);
  for (int i = 0; i < n; i++) tmp[i] = order_key(x, idx[i]);
  std::sort(tmp.begin(), tmp.end());
  for (int i = 0; i < n; i++) idx[i] = (int32_t)(uint32_t)tmp[i];
}

struct RowScratch {
  std::vector<float> s, w;        // (V): scaled logit and exp(s), valid for the row's tokens
  std::vector<uint16_t> bucket;   // (V): bucket path only
  std::vector<uint64_t> keys;     // order keys: top-k candidates, or a bucket being sorted
  std::vector<int32_t> link;      // (V): bucket path: next token of the same bucket, or -1
  std::vector<int32_t> flat;      // members of the segments asked for, each contiguous
  std::vector<int> count, start;  // per segment: token count, offset into flat (-1: not yet)
  std::vector<int32_t> head;      // per bucket: its highest-index token, or -1
  std::vector<double> mass;       // per segment: sum of w
};

// The canonical order of one row as consecutive segments, each with a token count, a mass
// (sum of w) and members gathered (from the bucket's linked list) and sorted on demand.
class Segments {
 public:
  Segments(RowScratch& sc, const float* x, int nseg) : sc_(sc), x_(x), nseg_(nseg) {}

  const int32_t* members(int seg) {
    if (sc_.start[seg] < 0) {
      int begin = used_, n = sc_.count[seg];  // flat holds V: segments never overflow it
      int32_t* m = sc_.flat.data() + begin;
      int i = 0;
      for (int32_t v = sc_.head[seg]; v >= 0; v = sc_.link[v]) m[i++] = v;
      sort_canonical(m, n, x_, sc_.keys);
      sc_.start[seg] = begin;
      used_ += n;
    }
    return sc_.flat.data() + sc_.start[seg];
  }

  // Mass of the first L tokens of the canonical order. Whole segments use their histogram
  // mass; a partly covered segment sums its sorted members.
  double prefix_mass(int L) {
    double acc = 0;
    int n = 0;
    for (int seg = 0; seg < nseg_ && n < L; seg++) {
      int c = sc_.count[seg];
      if (c == 0) continue;
      if (n + c <= L) { acc += sc_.mass[seg]; n += c; continue; }
      const int32_t* m = members(seg);
      for (int j = 0; n < L; j++, n++) acc += sc_.w[m[j]];
    }
    return acc;
  }

  // Smallest position p < L whose inclusive cumulative mass reaches target (>= when !strict,
  // > when strict); L - 1 when rounding leaves it short.
  int first_reaching(double target, bool strict, int L) {
    auto reaches = [&](double cum) { return strict ? cum > target : cum >= target; };
    double acc = 0;
    int n = 0;
    for (int seg = 0; seg < nseg_ && n < L; seg++) {
      int c = sc_.count[seg];
      if (c == 0) continue;
      if (n + c <= L && !reaches(acc + sc_.mass[seg])) { acc += sc_.mass[seg]; n += c; continue; }
      const int32_t* m = members(seg);
      int take = std::min(c, L - n);
      for (int j = 0; j < take; j++) {
        acc += sc_.w[m[j]];
        if (reaches(acc)) return n + j;
      }
      n += take;
    }
    return L - 1;
  }

  int32_t token_at(int pos) {
    int n = 0;
    for (int seg = 0; seg < nseg_; seg++) {
      int c = sc_.count[seg];
      if (pos < n + c) return members(seg)[pos - n];
      n += c;
    }
    return 0;  // unreachable for pos < total count
  }

 private:
  RowScratch& sc_;
  const float* x_;
  int nseg_, used_ = 0;
};

void sample_row(int32_t* id_out, float* lp_out, const float* x, int V, const SamplingParams& p,
                uint64_t seed, uint64_t counter, RowScratch& sc) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const float T = p.temperature;
  if (!(T > 0)) {  // greedy: first index of the largest logit; NaN never wins
    float best = row_max(x, V);
    int32_t arg = 0;
    if (best != kNegInf)
      while (x[arg] != best) arg++;
    *id_out = arg;
    if (lp_out) *lp_out = best == kNegInf ? nan : 0.0f;
    return;
  }

  if (sc.s.size() < (size_t)V) { sc.s.resize(V); sc.w.resize(V); }
  float* s = sc.s.data();
  float* w = sc.w.data();
  const bool topk_on = p.top_k > 0 && p.top_k < V;
  const bool direct = topk_on && p.top_k <= kDirectTopK;
  int n_pos = 0, n_minp = 0;  // tokens with w > 0, tokens with w >= min_p (w_max is 1)
  double total = 0;           // mass of every token
  int nseg;
  float m;

  if (direct) {
    // Streaming top-k selection on order keys: keep every token that beats the current k-th
    // best, compact to the best k whenever the buffer reaches 2k. A later token that only ties
    // the k-th best loses to it (higher index), so `x > thr` is exact.
    const int k = p.top_k;
    std::vector<uint64_t>& cand = sc.keys;
    cand.clear();
    cand.reserve(2 * (size_t)k);
    float thr = kNegInf;
    bool full = false;
    for (int v = 0; v < V; v++) {
      if (full && !(x[v] > thr)) {
        // Skip whole blocks of 16 that cannot enter (the common case once the buffer is full).
        if ((v & 15) == 0)
          while (v + 16 <= V && !any_above16(x + v, thr)) v += 16;
        if (v >= V || !(x[v] > thr)) continue;
      }
      cand.push_back(order_key(x, v));
      if ((int)cand.size() == 2 * k) {
        std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end());
        cand.resize(k);
        thr = key_of(x[(uint32_t)cand[k - 1]]);
        full = true;
      }
    }
    if ((int)cand.size() > k) {
      std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end());
      cand.resize(k);
    }
    std::sort(cand.begin(), cand.end());
    const int n = (int)cand.size();
    if (sc.flat.size() < (size_t)n) sc.flat.resize(n);
    for (int i = 0; i < n; i++) sc.flat[i] = (int32_t)(uint32_t)cand[i];
    m = key_of(x[sc.flat[0]]);
    if (m == kNegInf) { *id_out = 0; if (lp_out) *lp_out = nan; return; }
    for (int i = 0; i < n; i++) {
      int32_t v = sc.flat[i];
      float xv = key_of(x[v]);
      float sv = m == inf ? (xv == m ? 0.0f : kNegInf) : (xv - m) / T;
      float wv = exp_nonpos(sv);
      s[v] = sv; w[v] = wv;
      total += wv;
      n_pos += wv > 0;
      n_minp += wv >= p.min_p;
    }
    nseg = 1;  // one segment, already sorted: the candidates
    sc.count.assign(1, n);
    sc.mass.assign(1, total);
    sc.start.assign(1, 0);
  } else {
    m = row_max(x, V);
    if (m == kNegInf) { *id_out = 0; if (lp_out) *lp_out = nan; return; }
    if (sc.bucket.size() < (size_t)V) { sc.bucket.resize(V); sc.link.resize(V); }
    if (sc.flat.size() < (size_t)V) sc.flat.resize(V);
    uint16_t* bk = sc.bucket.data();
    int32_t* link = sc.link.data();
    sc.count.assign(kBuckets, 0);
    sc.mass.assign(kBuckets, 0.0);
    sc.start.assign(kBuckets, -1);
    sc.head.assign(kBuckets, -1);
    int32_t* head = sc.head.data();
    int* count = sc.count.data();
    double* mass = sc.mass.data();
    if (m == inf) {
      for (int v = 0; v < V; v++) s[v] = x[v] == m ? 0.0f : kNegInf;
    } else {
      for (int v = 0; v < V; v++) s[v] = (key_of(x[v]) - m) / T;
    }
    // w >= 0, so comparing bit patterns as integers compares values (and vectorises).
    const uint32_t min_p_bits = float_bits(p.min_p > 0 ? p.min_p : 0.0f);
    for (int v = 0; v < V; v++) {
      float wv = exp_nonpos(s[v]);
      w[v] = wv;
      bk[v] = (uint16_t)bucket_of(s[v]);
      n_pos += float_bits(wv) != 0;
      n_minp += float_bits(wv) >= min_p_bits;
    }
    for (int v = 0; v < V; v++) {
      int b = bk[v];
      count[b]++;
      mass[b] += w[v];
      link[v] = head[b];
      head[b] = v;
    }
    for (int b = 0; b < kBuckets; b++) total += mass[b];
    nseg = kBuckets;
  }

  Segments seg(sc, x, nseg);
  // Tokens with w > 0 come first (w never increases along the canonical order, up to
  // rounding in the underflow range); the max token has w = 1, so L >= 1.
  int L = n_pos;
  double Z = total;  // the first n_pos tokens hold all the mass
  if (topk_on && p.top_k < L) {
    L = p.top_k;
    Z = seg.prefix_mass(L);
  }
  if (p.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p of the survivors
    int Lp = seg.first_reaching((double)p.top_p * Z, false, L) + 1;
    if (Lp < L) { L = Lp; Z = seg.prefix_mass(L); }
  }
  if (p.min_p > 0.0f && std::max(n_minp, 1) < L) {
    L = std::max(n_minp, 1);
    Z = seg.prefix_mass(L);
  }
  double u = philox_uniform(seed, counter);
  int pos = seg.first_reaching(u * Z, true, L);
  int32_t id = seg.token_at(pos);
  while (w[id] == 0 && pos > 0) id = seg.token_at(--pos);  // only if rounding left u*Z unreached
  *id_out = id;
  if (lp_out) *lp_out = (float)((double)s[id] - std::log(Z));
}

}  // namespace

void sample_tokens(int32_t* ids, float* logprobs, const float* logits, int N, int V,
                   const SamplingParams& params, const uint64_t* seeds, const uint64_t* counters) {
  parallel_for(N, [&](int r) {
    thread_local RowScratch scratch;
    sample_row(ids + r, logprobs ? logprobs + r : nullptr, logits + (size_t)r * V, V, params,
               seeds[r], counters[r], scratch);
  });
}

}  // namespace wst
