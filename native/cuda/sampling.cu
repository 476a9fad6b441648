// Token sampling on CUDA: temperature, top-k, top-p, min-p, Philox4x32-10 draws; the twin of
// native/cpu/sampling.cpp with the semantics spelled out in kernels.h (canonical order = logit
// descending, ties by lower index, NaN as -inf; every filter keeps a prefix of that order).
//
// No sort. One 1024-thread block per row. Each question about the canonical order ("which token
// is at rank L-1 and what is the mass of the first L", "where does the cumulative mass first reach
// a target") is answered by a radix descent over the order-preserving 32-bit key of the logit:
// three passes (11 + 11 + 10 bits) build a shared-memory histogram of token counts and masses of
// the keys under the current prefix; a block scan over the bins (largest key first) picks the bin
// where the running total crosses the target. After the last pass the key is exact, and the tokens
// sharing it (all with equal weight) are resolved in index order with warp ballots.
//
// Agreement with the CPU:
//  - weights: w = exp((x - max) / T) computed with the CPU's own polynomial (exp_nonpos) and
//    IEEE-rounded single operations (__fmul_rn etc., no FMA contraction), so every w is
//    bit-identical to the CPU's; the Philox draw u is bit-identical too;
//  - masses: the CPU sums w in float64 in canonical order; here w is rounded to a multiple of
//    2^-44 and summed exactly in 64-bit integers (order-independent, deterministic). The two Z
//    differ by < V * 2^-45 absolute, so a draw or a top-p cut can differ only when u * Z (or
//    top_p * Z) lies within ~1e-9 of a cumulative-mass boundary; exact ties of those (e.g. equal
//    logits) still agree because both sums are then exact. logprobs agree to ~1e-12 relative
//    before the final rounding to float.
#include "common.cuh"
#include "cuda_kernels.h"

namespace wst::cuda {
namespace {
using namespace cuda_detail;

constexpr int kThreads = 1024;
constexpr int kBins = 2048;  // levels: bits 31..21, 20..10, 9..0
constexpr double kFix = 17592186044416.0;  // 2^44: mass fixed point
constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;

__device__ __host__ __forceinline__ uint32_t philox_word0(uint64_t key, uint64_t counter) {
  uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
  for (int round = 0; round < 10; round++) {
    if (round > 0) { k0 += kPhiloxW0; k1 += kPhiloxW1; }
    const uint64_t p0 = (uint64_t)kPhiloxM0 * c0, p1 = (uint64_t)kPhiloxM1 * c2;
    const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
  }
  return c0;
}

__device__ __forceinline__ float philox_u(uint64_t key, uint64_t counter) {
  return (float)(philox_word0(key, counter) >> 8) * (1.0f / 16777216.0f);  // exact
}

// sampling.cpp's exp_nonpos, operation for operation (single rounding each, no FMA).
__device__ __forceinline__ float exp_nonpos(float x) {
  const uint32_t xb = __float_as_uint(x);
  const uint32_t under = 0u - (uint32_t)(xb > 0xC2D00000u);  // x < -104 or -inf: 0
  const float xc = __uint_as_float((xb & ~under) | (0xC2D00000u & under));
  const float n =
      __fsub_rn(__fadd_rn(__fmul_rn(xc, 1.44269504088896341f), 12582912.0f), 12582912.0f);
  const float r = __fsub_rn(__fsub_rn(xc, __fmul_rn(n, 0.693359375f)), __fmul_rn(n, -2.12194440e-4f));
  float p = __fadd_rn(__fmul_rn(1.9875691500e-4f, r), 1.3981999507e-3f);
  p = __fadd_rn(__fmul_rn(p, r), 8.3334519073e-3f);
  p = __fadd_rn(__fmul_rn(p, r), 4.1665795894e-2f);
  p = __fadd_rn(__fmul_rn(p, r), 1.6666665459e-1f);
  p = __fadd_rn(__fmul_rn(p, r), 5.0000001201e-1f);
  const float y = __fadd_rn(__fadd_rn(__fmul_rn(p, __fmul_rn(r, r)), r), 1.0f);
  const int32_t ni = (int32_t)n, h = ni >> 1;
  const float res = __fmul_rn(__fmul_rn(y, __uint_as_float((uint32_t)(h + 127) << 23)),
                              __uint_as_float((uint32_t)(ni - h + 127) << 23));
  return __uint_as_float(__float_as_uint(res) & ~under);
}

__device__ __forceinline__ float key_of(float x) { return x != x ? -INFINITY : x; }

// Order-preserving unsigned key: larger logit -> larger key; -0 == +0; NaN == -inf.
__device__ __forceinline__ uint32_t ukey(float x) {
  float f = key_of(x);
  if (f == 0.0f) f = 0.0f;
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The row's scaled logit s and weight w (m: the row max, finite or +inf; T > 0).
__device__ __forceinline__ float scaled(float x, float m, float T) {
  const float k = key_of(x);
  if (m == INFINITY) return k == m ? 0.0f : -INFINITY;
  return __fdiv_rn(__fsub_rn(k, m), T);
}
__device__ __forceinline__ uint64_t fixed_mass(float w) {
  return __double2ull_rn((double)w * kFix);  // exact for w >= 2^-20, rounded below
}

struct Shared {
  uint32_t hc[kBins];
  unsigned long long hm[kBins];
  unsigned long long wc[32], wm[32];  // per-warp scan totals
  double dsum[32];
  unsigned long long usum[32];
  float fred[32];
  int ired[32];
  // descent state (written by one thread, read by all after a barrier)
  unsigned long long base_cnt, base_mass, tie_cnt, tie_mass;
  uint32_t prefix;
  int found;
  int token;
};

struct Sel {
  bool found;
  uint32_t key;
  uint64_t base_cnt, base_mass;  // tokens (and mass) strictly before the key in canonical order
  uint64_t tie_cnt, tie_mass;    // tokens with exactly this key (equal weights)
};

__device__ __forceinline__ uint64_t warp_incl_scan(uint64_t v) {
  const int lane = threadIdx.x & 31;
  for (int o = 1; o < 32; o <<= 1) {
    const uint64_t t = __shfl_up_sync(0xffffffffu, (unsigned long long)v, o);
    if (lane >= o) v += t;
  }
  return v;
}

struct MinOp {
  __device__ int operator()(int a, int b) const { return a < b ? a : b; }
};

// Radix descent: the first key (canonical order) at which the running total of `mass ? w : 1`
// reaches thr, counting only tokens of nonzero count. Block-uniform call.
__device__ Sel descend(const float* x, int V, float m, float T, bool mass, uint64_t thr,
                       Shared& sh) {
  const int tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;
  __syncthreads();  // earlier readers of the shared state are done
  if (tid == 0) {
    sh.base_cnt = 0;
    sh.base_mass = 0;
    sh.prefix = 0;
    sh.found = 1;
  }
  for (int lvl = 0; lvl < 3; lvl++) {
    const int shift = lvl == 0 ? 21 : (lvl == 1 ? 10 : 0);
    const int nb = lvl == 2 ? 1024 : 2048;
    const int hi_shift = lvl == 0 ? 32 : (lvl == 1 ? 21 : 10);
    __syncthreads();  // previous level's state / histogram reads are done
    for (int b = tid; b < kBins; b += kThreads) {
      sh.hc[b] = 0;
      sh.hm[b] = 0;
    }
    __syncthreads();
    const uint32_t prefix = sh.prefix;
    for (int v = tid; v < V; v += kThreads) {
      const float xv = x[v];
      const uint32_t k = ukey(xv);
      if (hi_shift < 32 && (k >> hi_shift) != prefix) continue;
      const int bin = (int)((k >> shift) & (uint32_t)(nb - 1));
      atomicAdd(&sh.hc[bin], 1u);
      const uint64_t wq = fixed_mass(exp_nonpos(scaled(xv, m, T)));
      if (wq) atomicAdd(&sh.hm[bin], (unsigned long long)wq);
    }
    __syncthreads();
    // Scan the bins largest key first: thread t owns descending positions 2t, 2t+1.
    uint64_t c[2], w[2];
    for (int q = 0; q < 2; q++) {
      const int pos = 2 * tid + q;
      const int bin = nb - 1 - pos;
      c[q] = pos < nb ? sh.hc[bin] : 0;
      w[q] = pos < nb ? (uint64_t)sh.hm[bin] : 0;
    }
    const uint64_t ci = warp_incl_scan(c[0] + c[1]), wi = warp_incl_scan(w[0] + w[1]);
    if (lane == 31) {
      sh.wc[wid] = ci;
      sh.wm[wid] = wi;
    }
    __syncthreads();
    if (wid == 0) {
      const uint64_t a = sh.wc[lane], b = sh.wm[lane];
      const uint64_t ai = warp_incl_scan(a), bi = warp_incl_scan(b);
      sh.wc[lane] = ai - a;  // exclusive
      sh.wm[lane] = bi - b;
    }
    __syncthreads();
    const uint64_t base_c = sh.base_cnt, base_m = sh.base_mass;
    uint64_t ce = sh.wc[wid] + ci - (c[0] + c[1]);  // exclusive, before position 2t
    uint64_t we = sh.wm[wid] + wi - (w[0] + w[1]);
    int cand = 0x7fffffff;
    uint64_t cand_ce = 0, cand_we = 0;
    for (int q = 0; q < 2; q++) {
      const uint64_t incl = mass ? base_m + we + w[q] : base_c + ce + c[q];
      if (c[q] > 0 && incl >= thr && cand == 0x7fffffff) {
        cand = 2 * tid + q;
        cand_ce = ce;
        cand_we = we;
      }
      ce += c[q];
      we += w[q];
    }
    const int first = block_reduce(cand, sh.ired, MinOp{}, 0x7fffffff);
    if (first == 0x7fffffff) {  // the total never reaches thr (only possible at level 0)
      if (tid == 0) sh.found = 0;
      __syncthreads();
      break;
    }
    if (cand == first) {
      const int bin = nb - 1 - first;
      sh.base_cnt = base_c + cand_ce;
      sh.base_mass = base_m + cand_we;
      sh.tie_cnt = c[first & 1];
      sh.tie_mass = w[first & 1];
      sh.prefix = (prefix << (lvl == 2 ? 10 : 11)) | (uint32_t)bin;
    }
  }
  __syncthreads();
  Sel s;
  s.found = sh.found != 0;
  s.key = sh.prefix;
  s.base_cnt = sh.base_cnt;
  s.base_mass = sh.base_mass;
  s.tie_cnt = s.found ? (uint64_t)sh.tie_cnt : 0;
  s.tie_mass = s.found ? (uint64_t)sh.tie_mass : 0;
  return s;
}

// Index of the j-th token (index order, 0-based) whose key is `key`; `count` tokens have it.
__device__ int tie_token(const float* x, int V, uint32_t key, uint64_t j, uint64_t count,
                         Shared& sh) {
  const int tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;
  __syncthreads();
  if (count <= 1) {
    for (int v = tid; v < V; v += kThreads)
      if (ukey(x[v]) == key) sh.token = v;  // unique writer
    __syncthreads();
    return sh.token;
  }
  // Warp w scans the contiguous segment [w seg, (w+1) seg).
  const int nw = kThreads / 32;
  const int seg = (int)(((long)V + nw - 1) / nw);
  const int s0 = (int)min((long)V, (long)wid * seg), s1 = (int)min((long)V, (long)s0 + seg);
  int n = 0;
  for (int v = s0 + lane; v < s1; v += 32) n += ukey(x[v]) == key;
  n = warp_sum(n);
  if (lane == 0) sh.ired[wid] = n;
  __syncthreads();
  uint64_t run = 0;
  int owner = nw - 1;
  uint64_t jr = 0;
  for (int w = 0; w < nw; w++) {
    if (run + (uint64_t)sh.ired[w] > j) {
      owner = w;
      jr = j - run;
      break;
    }
    run += (uint64_t)sh.ired[w];
  }
  if (wid == owner) {
    for (int base = s0; base < s1; base += 32) {
      const int v = base + lane;
      unsigned b = __ballot_sync(0xffffffffu, v < s1 && ukey(x[v]) == key);
      const uint64_t cnt = (uint64_t)__popc(b);
      if (jr < cnt) {
        for (uint64_t i = 0; i < jr; i++) b &= b - 1;
        if (lane == 0) sh.token = base + __ffs(b) - 1;
        break;
      }
      jr -= cnt;
    }
  }
  __syncthreads();
  return sh.token;
}

// Position of the first token whose running total reaches thr, resolved to (pos, mass_incl,
// tie index); false when the total never reaches it.
struct Hit {
  bool found;
  uint64_t pos, mass_incl, j;
  Sel sel;
};
__device__ Hit locate(const float* x, int V, float m, float T, bool mass, uint64_t thr,
                      Shared& sh) {
  Hit h;
  h.sel = descend(x, V, m, T, mass, thr, sh);
  h.found = h.sel.found;
  if (!h.found) return h;
  const Sel& s = h.sel;
  const uint64_t wq = s.tie_cnt ? s.tie_mass / s.tie_cnt : 0;  // ties have equal weights
  uint64_t j;
  if (mass) {
    j = (thr > s.base_mass && wq > 0) ? (thr - s.base_mass + wq - 1) / wq - 1 : 0;
  } else {
    j = thr > s.base_cnt ? thr - s.base_cnt - 1 : 0;
  }
  if (j >= s.tie_cnt) j = s.tie_cnt - 1;
  h.j = j;
  h.pos = s.base_cnt + j;
  h.mass_incl = s.base_mass + (j + 1) * wq;
  return h;
}

__global__ void __launch_bounds__(kThreads)
sample_kernel(int32_t* ids, float* logprobs, const float* logits, int N, int V,
              SamplingParams p, const uint64_t* seeds, const uint64_t* counters) {
  __shared__ Shared sh;
  const int tid = threadIdx.x;
  const float T = p.temperature;
  for (int r = blockIdx.x; r < N; r += gridDim.x) {
    const float* x = logits + (size_t)r * V;
    float mx = -INFINITY;  // NaN ignored
    for (int v = tid; v < V; v += kThreads) mx = max_ign(mx, x[v]);
    mx = block_reduce(mx, sh.fred, MaxIgnOp{}, -INFINITY);
    if (mx == -INFINITY) {  // no distribution (also covers greedy on an all -inf/NaN row)
      if (tid == 0) {
        ids[r] = 0;
        if (logprobs) logprobs[r] = NAN;
      }
      continue;
    }
    if (!(T > 0)) {  // greedy: first index of the largest logit
      int first = 0x7fffffff;
      for (int v = tid; v < V; v += kThreads)
        if (x[v] == mx) { first = v; break; }
      first = block_reduce(first, sh.ired, MinOp{}, 0x7fffffff);
      if (tid == 0) {
        ids[r] = first;
        if (logprobs) logprobs[r] = 0.0f;
      }
      continue;
    }
    const float m = mx;
    // Totals: tokens with w > 0, tokens with w >= min_p, total mass.
    int npos = 0, nminp = 0;
    uint64_t ztot = 0;
    for (int v = tid; v < V; v += kThreads) {
      const float w = exp_nonpos(scaled(x[v], m, T));
      npos += w > 0.0f;
      nminp += w >= p.min_p;
      ztot += fixed_mass(w);
    }
    npos = block_sum(npos, sh.ired);
    nminp = block_sum(nminp, sh.ired);
    ztot = block_sum((unsigned long long)ztot, sh.usum);

    uint64_t L = (uint64_t)npos;  // w > 0 tokens form a prefix; the max token has w = 1
    if (p.top_k > 0 && p.top_k < V && (uint64_t)p.top_k < L) L = (uint64_t)p.top_k;
    uint64_t Z = L == (uint64_t)npos ? ztot : locate(x, V, m, T, false, L, sh).mass_incl;
    if (p.top_p < 1.0f) {  // shortest prefix whose mass reaches top_p of the survivors
      const double t = (double)p.top_p * (double)Z;
      const uint64_t thr = t <= 0.0 ? 0 : (uint64_t)ceil(t);
      const Hit h = locate(x, V, m, T, true, thr, sh);
      if (h.found && h.pos < L) {
        L = h.pos + 1;
        Z = h.mass_incl;
      }
    }
    if (p.min_p > 0.0f) {
      const uint64_t keep = (uint64_t)(nminp > 1 ? nminp : 1);
      if (keep < L) {
        L = keep;
        Z = locate(x, V, m, T, false, L, sh).mass_incl;
      }
    }
    // Draw: the first kept token whose cumulative mass exceeds u * Z (L - 1 if rounding falls
    // short).
    const double u = (double)philox_u(seeds[r], counters[r]);
    const uint64_t thr = (uint64_t)floor(u * (double)Z) + 1;
    Hit h = locate(x, V, m, T, true, thr, sh);
    if (!h.found || h.pos >= L) h = locate(x, V, m, T, false, L, sh);
    const int id = tie_token(x, V, h.sel.key, h.j, h.sel.tie_cnt, sh);
    if (tid == 0) {
      ids[r] = id;
      if (logprobs)
        logprobs[r] = (float)((double)scaled(x[id], m, T) - log((double)Z / kFix));
    }
    __syncthreads();
  }
}

__global__ void philox_batch_kernel(float* out, const uint64_t* keys, const uint64_t* counters,
                                    int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = philox_u(keys[i], counters[i]);
}

}  // namespace

void sample_tokens(int32_t* ids, float* logprobs, const float* logits, int N, int V,
                   const SamplingParams& params, const uint64_t* seeds, const uint64_t* counters) {
  if (N <= 0) return;
  if (V <= 0) throw std::invalid_argument("wst-dash CUDA sample_tokens: V must be positive");
  WST_LAUNCH(sample_kernel, (unsigned)(N < 65535 ? N : 65535), kThreads, ids, logprobs, logits, N, V,
                                                                  params, seeds, counters);
  cuda_detail::check_launch("sample_tokens");
}

void philox_uniform_batch(float* out, const uint64_t* keys, const uint64_t* counters, int n) {
  if (n <= 0) return;
  WST_LAUNCH(philox_batch_kernel, (n + 255) / 256, 256, out, keys, counters, n);
  cuda_detail::check_launch("philox_uniform_batch");
}

}  // namespace wst::cuda
