// Causal grouped-query attention on CUDA: FlashAttention-2-style forward, backward, decode
// (split-K over the keys when batch x kv heads cannot fill the GPU).
// Semantics exactly as native/cpu/attention.cpp (kernels.h): query i sits at absolute position
// Tk - Tq + i under causal and sees keys [0, vis(i)); rows that see no key get out = 0,
// lse = -inf and zero gradients; decode row b sees keys [0, lengths[b]).
//
// Layout of the work, shared by all three kernels:
//  - A block owns 64 "rows". For the forward / dQ kernels a row is a (query position, head) pair
//    of one (batch, kv head): rows are position-major with the G = H / KVH heads of a kv head
//    adjacent (like the CPU tiles), so one K/V tile in shared memory serves every head of the
//    group. For the dK/dV kernel a row is a key of one (batch, kv head).
//  - Four threads share a row and split the head dimension: thread `sub` owns the float4 chunks
//    c*4 + sub (c < DPT/4), i.e. dims 16c + 4 sub .. +3, so the four read adjacent 16-byte words
//    of a shared-memory row (no bank conflicts). Dot products are reduced with two xor-shuffles,
//    which leave the identical sum in all four lanes.
//  - DPT (dims per thread) is a template parameter: 8, 16, 32 or 64, i.e. D <= 32, 64, 128, 256.
//    Shared rows are padded to Dp = 4 DPT with zeros, so any D in range works.
// Scores use scale * q (scaled once, as the CPU does), online softmax in fp32 with expf.
// Nothing is stored per (query, key); every output element has exactly one writer, so results
// are deterministic (not bit-identical to the CPU: different summation order).
#include <cfloat>
#include <type_traits>

#include "common.cuh"
#include "cuda_kernels.h"

namespace wst::cuda {
namespace {

constexpr int ROWS = 64, TPR = 4, THREADS = ROWS * TPR;

template <int DPT>
struct Cfg {
  static constexpr int Dp = 4 * DPT;              // padded head dim held in shared memory
  static constexpr int TILE = DPT <= 32 ? 32 : 16;  // keys (or queries) per shared tile
  static constexpr int NC = DPT / 4;              // float4 chunks per thread
};

__device__ __forceinline__ int chunk_dim(int c, int sub) { return (c * 4 + sub) * 4; }

__device__ __forceinline__ float reduce4(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  x += __shfl_xor_sync(0xffffffffu, x, 2);
  return x;
}

// Keys visible to query i (kernels.h): causal puts it at absolute position Tk - Tq + i.
__device__ __forceinline__ int visible(int i, int Tq, int Tk, bool causal) {
  if (!causal) return Tk;
  const int v = Tk - Tq + i + 1;
  return v < 0 ? 0 : (v > Tk ? Tk : v);
}

// Loads `n` consecutive rows of a (.., Tk, KVH, D) tensor starting at key j0 into sh[TILE][Dp],
// zero outside [0, Tk) x [0, D).
template <int DPT>
__device__ __forceinline__ void load_rows(float* sh, const float* src, int j0, int Tk, long ld,
                                          int D) {
  constexpr int Dp = Cfg<DPT>::Dp, TILE = Cfg<DPT>::TILE;
  for (int e = threadIdx.x; e < TILE * Dp; e += THREADS) {
    const int j = e / Dp, d = e % Dp;
    sh[e] = (j0 + j < Tk && d < D) ? src[(size_t)(j0 + j) * ld + d] : 0.0f;
  }
}

template <int DPT>
__device__ __forceinline__ void load_reg(float (&r)[DPT], const float* src, int D, int sub,
                                         float mul, bool valid) {
#pragma unroll
  for (int c = 0; c < Cfg<DPT>::NC; c++)
#pragma unroll
    for (int t = 0; t < 4; t++) {
      const int d = chunk_dim(c, sub) + t;
      r[c * 4 + t] = (valid && d < D) ? src[d] * mul : 0.0f;
    }
}

template <int DPT>
__device__ __forceinline__ float dot_sh(const float (&r)[DPT], const float* row, int sub) {
  float acc = 0.0f;
#pragma unroll
  for (int c = 0; c < Cfg<DPT>::NC; c++) {
    const float4 x = *reinterpret_cast<const float4*>(row + chunk_dim(c, sub));
    acc = fmaf(r[c * 4 + 0], x.x, acc);
    acc = fmaf(r[c * 4 + 1], x.y, acc);
    acc = fmaf(r[c * 4 + 2], x.z, acc);
    acc = fmaf(r[c * 4 + 3], x.w, acc);
  }
  return reduce4(acc);
}

template <int DPT>
__device__ __forceinline__ void axpy_sh(float (&r)[DPT], float a, const float* row, int sub) {
#pragma unroll
  for (int c = 0; c < Cfg<DPT>::NC; c++) {
    const float4 x = *reinterpret_cast<const float4*>(row + chunk_dim(c, sub));
    r[c * 4 + 0] = fmaf(a, x.x, r[c * 4 + 0]);
    r[c * 4 + 1] = fmaf(a, x.y, r[c * 4 + 1]);
    r[c * 4 + 2] = fmaf(a, x.z, r[c * 4 + 2]);
    r[c * 4 + 3] = fmaf(a, x.w, r[c * 4 + 3]);
  }
}

template <int DPT>
__device__ __forceinline__ void store_reg(float* dst, const float (&r)[DPT], float mul, int D,
                                          int sub) {
#pragma unroll
  for (int c = 0; c < Cfg<DPT>::NC; c++)
#pragma unroll
    for (int t = 0; t < 4; t++) {
      const int d = chunk_dim(c, sub) + t;
      if (d < D) dst[d] = r[c * 4 + t] * mul;
    }
}

// One key tile of the online softmax for this thread's row: keys j0 + j < vis_end of the tile in
// shared memory update the running max m, sum l and unnormalised output o. Every lane computes
// every score (the dot products shuffle), then rows with no visible key in the tile stop.
template <int DPT>
__device__ __forceinline__ void attend_tile(float (&o)[DPT], float& m, float& l,
                                            const float (&qr)[DPT], const float* Ks,
                                            const float* Vs, int j0, int vis_end, int sub) {
  using C = Cfg<DPT>;
  float s[C::TILE];
  float mx = m;
#pragma unroll
  for (int j = 0; j < C::TILE; j++) {
    s[j] = dot_sh<DPT>(qr, Ks + j * C::Dp, sub);  // every lane shuffles: no divergence here
    if (j0 + j < vis_end) mx = fmaxf(mx, s[j]);
  }
  if (j0 >= vis_end) return;  // no visible key in this tile for this row
  const float corr = expf(m - mx);  // m = -inf on the first tile -> 0
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < C::TILE; j++) {
    const float p = (j0 + j < vis_end) ? expf(s[j] - mx) : 0.0f;
    s[j] = p;
    sum += p;
  }
  l = l * corr + sum;
  m = mx;
#pragma unroll
  for (int t = 0; t < DPT; t++) o[t] *= corr;
#pragma unroll
  for (int j = 0; j < C::TILE; j++)
    if (s[j] != 0.0f) axpy_sh<DPT>(o, s[j], Vs + j * C::Dp, sub);
}

// ---- forward (and decode) ---------------------------------------------------------------------
// grid (ceil(Tq G / 64), KVH, B). lengths != null: decode (Tq == 1, row b sees lengths[b] keys).
template <int DPT>
__global__ void __launch_bounds__(THREADS)
attn_fwd_kernel(float* __restrict__ out, float* __restrict__ lse, const float* __restrict__ q,
                const float* __restrict__ k, const float* __restrict__ v,
                const int32_t* __restrict__ lengths, int H, int KVH, int Tq, int Tk, int D,
                bool causal, float scale) {
  using C = Cfg<DPT>;
  __shared__ __align__(16) float Ks[C::TILE * C::Dp];
  __shared__ __align__(16) float Vs[C::TILE * C::Dp];
  const int G = H / KVH, kvh = blockIdx.y, b = blockIdx.z;
  const int sub = threadIdx.x & 3;
  const int rows_total = Tq * G;
  const int r = blockIdx.x * ROWS + (threadIdx.x >> 2);
  const bool valid = r < rows_total;
  const int i = valid ? r / G : 0, h = kvh * G + (valid ? r % G : 0);
  int vis = 0, maxvis;
  if (lengths) {
    int len = lengths[b];
    len = len < 0 ? 0 : (len > Tk ? Tk : len);
    vis = valid ? len : 0;
    maxvis = len;
  } else {
    vis = valid ? visible(i, Tq, Tk, causal) : 0;
    const int rlast = min(rows_total, (int)(blockIdx.x + 1) * ROWS) - 1;
    maxvis = visible(rlast / G, Tq, Tk, causal);  // vis grows with the position
  }
  const size_t qoff = (((size_t)b * Tq + i) * H + h) * D;
  const long ld = (long)KVH * D;
  const float* kb = k + ((size_t)b * Tk * KVH + kvh) * D;
  const float* vb = v + ((size_t)b * Tk * KVH + kvh) * D;

  float qr[DPT], o[DPT];
  load_reg<DPT>(qr, q + qoff, D, sub, scale, valid);
#pragma unroll
  for (int t = 0; t < DPT; t++) o[t] = 0.0f;
  float m = -INFINITY, l = 0.0f;

  for (int j0 = 0; j0 < maxvis; j0 += C::TILE) {
    __syncthreads();  // the previous tile is no longer read
    load_rows<DPT>(Ks, kb, j0, Tk, ld, D);
    load_rows<DPT>(Vs, vb, j0, Tk, ld, D);
    __syncthreads();
    attend_tile<DPT>(o, m, l, qr, Ks, Vs, j0, vis, sub);
  }
  if (!valid) return;
  if (l > 0.0f) {
    store_reg<DPT>(out + qoff, o, 1.0f / l, D, sub);
    if (lse && sub == 0) lse[((size_t)b * H + h) * Tq + i] = m + logf(l);
  } else {
    store_reg<DPT>(out + qoff, o, 0.0f, D, sub);  // o is 0 here; writes +0
    if (lse && sub == 0) lse[((size_t)b * H + h) * Tq + i] = -INFINITY;
  }
}

// ---- split-K decode (flash-decoding) ----------------------------------------------------------------
// When (batch x kv heads) blocks cannot fill the GPU (decode at small batch), the keys of each row
// are cut into `splits` ranges of `chunk` keys, each handled by its own block: grid
// (row_tiles x splits, KVH, B). A block writes, per row, its unnormalised output and its (max, sum)
// to scratch; attn_decode_combine_kernel merges the splits in order. Empty ranges write m = -inf.
template <int DPT>
__global__ void __launch_bounds__(THREADS)
attn_decode_split_kernel(float* __restrict__ part_o, float* __restrict__ part_ml,
                         const float* __restrict__ q, const float* __restrict__ k,
                         const float* __restrict__ v, const int32_t* __restrict__ lengths, int H,
                         int KVH, int maxT, int D, float scale, int splits, int chunk) {
  using C = Cfg<DPT>;
  __shared__ __align__(16) float Ks[C::TILE * C::Dp];
  __shared__ __align__(16) float Vs[C::TILE * C::Dp];
  const int G = H / KVH, kvh = blockIdx.y, b = blockIdx.z;
  const int row_tiles = (G + ROWS - 1) / ROWS;
  const int split = blockIdx.x / row_tiles, rt = blockIdx.x % row_tiles;
  const int sub = threadIdx.x & 3;
  const int r = rt * ROWS + (threadIdx.x >> 2);
  const bool valid = r < G;
  const int h = kvh * G + (valid ? r : 0);
  int len = lengths[b];
  len = len < 0 ? 0 : (len > maxT ? maxT : len);
  const int jb = split * chunk, je = min(len, jb + chunk);  // this block's keys [jb, je)
  const size_t qoff = ((size_t)b * H + h) * D;
  const long ld = (long)KVH * D;
  const float* kb = k + ((size_t)b * maxT * KVH + kvh) * D;
  const float* vb = v + ((size_t)b * maxT * KVH + kvh) * D;

  float qr[DPT], o[DPT];
  load_reg<DPT>(qr, q + qoff, D, sub, scale, valid);
#pragma unroll
  for (int t = 0; t < DPT; t++) o[t] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  for (int j0 = jb; j0 < je; j0 += C::TILE) {
    __syncthreads();  // the previous tile is no longer read
    load_rows<DPT>(Ks, kb, j0, maxT, ld, D);
    load_rows<DPT>(Vs, vb, j0, maxT, ld, D);
    __syncthreads();
    attend_tile<DPT>(o, m, l, qr, Ks, Vs, j0, je, sub);
  }
  if (!valid) return;
  const size_t slot = ((size_t)b * H + h) * splits + split;
  store_reg<DPT>(part_o + slot * D, o, 1.0f, D, sub);  // zeros for an empty range
  if (sub == 0) {
    part_ml[slot * 2] = m;
    part_ml[slot * 2 + 1] = l;
  }
}

// One warp per (b, h) row: out = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s, splits in order.
__global__ void attn_decode_combine_kernel(float* __restrict__ out, const float* __restrict__ part_o,
                                           const float* __restrict__ part_ml, int rows, int splits,
                                           int D) {
  const int lane = threadIdx.x & 31;
  const int row = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5);
  if (row >= rows) return;  // whole warps leave together
  const float* ml = part_ml + (size_t)row * splits * 2;
  float M = -INFINITY;
  for (int s = 0; s < splits; s++)
    if (ml[2 * s + 1] > 0.0f) M = fmaxf(M, ml[2 * s]);
  float L = 0.0f;
  for (int s = 0; s < splits; s++)
    if (ml[2 * s + 1] > 0.0f) L += expf(ml[2 * s] - M) * ml[2 * s + 1];
  const float inv = L > 0.0f ? 1.0f / L : 0.0f;
  for (int d = lane; d < D; d += 32) {
    float acc = 0.0f;
    for (int s = 0; s < splits; s++)
      if (ml[2 * s + 1] > 0.0f) acc += expf(ml[2 * s] - M) * part_o[((size_t)row * splits + s) * D + d];
    out[(size_t)row * D + d] = acc * inv;  // 0 for a row that sees no key
  }
}

// ---- backward ----------------------------------------------------------------------------------
// Di (B,H,Tq) = rowsum(dout * out). One warp per (b, i, h) row of (B,Tq,H,D).
__global__ void attn_di_kernel(float* __restrict__ di, const float* __restrict__ dout,
                               const float* __restrict__ out, int B, int H, int Tq, int D) {
  const size_t rows = (size_t)B * Tq * H;
  const size_t warps = ((size_t)gridDim.x * blockDim.x) >> 5;
  const int lane = threadIdx.x & 31;
  // The loop bound is uniform per warp, so whole warps run the shuffles together.
  for (size_t row = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5; row < rows;
       row += warps) {
    const float* a = dout + row * D;
    const float* c = out + row * D;
    float acc = 0.0f;
    for (int d = lane; d < D; d += 32) acc = fmaf(a[d], c[d], acc);
    acc = cuda_detail::warp_sum(acc);
    if (lane == 0) {
      const size_t h = row % H, bi = row / H, i = bi % Tq, b = bi / Tq;
      di[(b * H + h) * Tq + i] = acc;
    }
  }
}

// dQ: the forward's row layout. Per visible key j (recomputed from lse):
//   forward: S = (scale Q) K^T, P = exp(S - lse)   =>  dP = dO V^T, dS = P * (dP - Di)
//   forward: S = (scale Q) K^T                      =>  dQ = scale dS K
template <int DPT>
__global__ void __launch_bounds__(THREADS)
attn_dq_kernel(float* __restrict__ dq, const float* __restrict__ dout, const float* __restrict__ q,
               const float* __restrict__ k, const float* __restrict__ v,
               const float* __restrict__ lse, const float* __restrict__ di, int H, int KVH, int Tq,
               int Tk, int D, bool causal, float scale) {
  using C = Cfg<DPT>;
  __shared__ __align__(16) float Ks[C::TILE * C::Dp];
  __shared__ __align__(16) float Vs[C::TILE * C::Dp];
  const int G = H / KVH, kvh = blockIdx.y, b = blockIdx.z;
  const int sub = threadIdx.x & 3;
  const int rows_total = Tq * G;
  const int r = blockIdx.x * ROWS + (threadIdx.x >> 2);
  const bool valid = r < rows_total;
  const int i = valid ? r / G : 0, h = kvh * G + (valid ? r % G : 0);
  const int vis = valid ? visible(i, Tq, Tk, causal) : 0;
  const int rlast = min(rows_total, (int)(blockIdx.x + 1) * ROWS) - 1;
  const int maxvis = visible(rlast / G, Tq, Tk, causal);
  const size_t qoff = (((size_t)b * Tq + i) * H + h) * D;
  const size_t li = ((size_t)b * H + h) * Tq + i;
  const float row_lse = valid ? lse[li] : 0.0f, row_di = valid ? di[li] : 0.0f;
  const long ld = (long)KVH * D;
  const float* kb = k + ((size_t)b * Tk * KVH + kvh) * D;
  const float* vb = v + ((size_t)b * Tk * KVH + kvh) * D;

  float qs[DPT], dO[DPT], acc[DPT];
  load_reg<DPT>(qs, q + qoff, D, sub, scale, valid);
  load_reg<DPT>(dO, dout + qoff, D, sub, 1.0f, valid);
#pragma unroll
  for (int t = 0; t < DPT; t++) acc[t] = 0.0f;

  for (int j0 = 0; j0 < maxvis; j0 += C::TILE) {
    __syncthreads();
    load_rows<DPT>(Ks, kb, j0, Tk, ld, D);
    load_rows<DPT>(Vs, vb, j0, Tk, ld, D);
    __syncthreads();
#pragma unroll 4
    for (int j = 0; j < C::TILE; j++) {
      const float sc = dot_sh<DPT>(qs, Ks + j * C::Dp, sub);
      const float dp = dot_sh<DPT>(dO, Vs + j * C::Dp, sub);
      if (j0 + j < vis) {
        const float p = expf(sc - row_lse);
        axpy_sh<DPT>(acc, p * (dp - row_di), Ks + j * C::Dp, sub);
      }
    }
  }
  if (valid) store_reg<DPT>(dq + qoff, acc, scale, D, sub);
}

// dK, dV: a block owns 64 keys of one (b, kv head) and walks every query row (position-major,
// G heads each) that can see them, staging scale*q, dout, lse and Di tiles in shared memory.
//   forward: O = P V                  =>  dV = P^T dO
//   forward: S = (scale Q) K^T        =>  dK = dS^T (scale Q)
template <int DPT>
__global__ void __launch_bounds__(THREADS)
attn_dkdv_kernel(float* __restrict__ dk, float* __restrict__ dv, const float* __restrict__ dout,
                 const float* __restrict__ q, const float* __restrict__ k,
                 const float* __restrict__ v, const float* __restrict__ lse,
                 const float* __restrict__ di, int H, int KVH, int Tq, int Tk, int D, bool causal,
                 float scale) {
  using C = Cfg<DPT>;
  __shared__ __align__(16) float Qs[C::TILE * C::Dp];
  __shared__ __align__(16) float Os[C::TILE * C::Dp];
  __shared__ float Ls[C::TILE], Ds[C::TILE];
  __shared__ int Vis[C::TILE];
  const int G = H / KVH, kvh = blockIdx.y, b = blockIdx.z;
  const int sub = threadIdx.x & 3;
  const int j0 = blockIdx.x * ROWS;
  const int j = j0 + (threadIdx.x >> 2);
  const bool valid = j < Tk;
  const size_t koff = (((size_t)b * Tk + (valid ? j : 0)) * KVH + kvh) * D;

  float kr[DPT], vr[DPT], dkr[DPT], dvr[DPT];
  load_reg<DPT>(kr, k + koff, D, sub, 1.0f, valid);
  load_reg<DPT>(vr, v + koff, D, sub, 1.0f, valid);
#pragma unroll
  for (int t = 0; t < DPT; t++) { dkr[t] = 0.0f; dvr[t] = 0.0f; }

  // First query position that sees key j0: Tk - Tq + i >= j0.
  const int ifirst = causal ? max(0, j0 - (Tk - Tq)) : 0;
  const int rows_total = Tq * G;
  for (int r0 = ifirst * G; r0 < rows_total; r0 += C::TILE) {
    __syncthreads();
    for (int e = threadIdx.x; e < C::TILE * C::Dp; e += THREADS) {
      const int rr = r0 + e / C::Dp, d = e % C::Dp;
      float qv = 0.0f, ov = 0.0f;
      if (rr < rows_total && d < D) {
        const int i = rr / G, h = kvh * G + rr % G;
        const size_t off = (((size_t)b * Tq + i) * H + h) * D + d;
        qv = q[off] * scale;
        ov = dout[off];
      }
      Qs[e] = qv;
      Os[e] = ov;
    }
    for (int e = threadIdx.x; e < C::TILE; e += THREADS) {
      const int rr = r0 + e;
      float lv = 0.0f, dv_ = 0.0f;
      int vs = 0;
      if (rr < rows_total) {
        const int i = rr / G, h = kvh * G + rr % G;
        const size_t li = ((size_t)b * H + h) * Tq + i;
        lv = lse[li];
        dv_ = di[li];
        vs = visible(i, Tq, Tk, causal);
      }
      Ls[e] = lv;
      Ds[e] = dv_;
      Vis[e] = vs;
    }
    __syncthreads();
#pragma unroll 4
    for (int rr = 0; rr < C::TILE; rr++) {
      const float sc = dot_sh<DPT>(kr, Qs + rr * C::Dp, sub);
      const float dp = dot_sh<DPT>(vr, Os + rr * C::Dp, sub);
      if (j < Vis[rr]) {  // false for invalid keys (j >= Tk) and rows past the end (Vis = 0)
        const float p = expf(sc - Ls[rr]);
        axpy_sh<DPT>(dvr, p, Os + rr * C::Dp, sub);
        axpy_sh<DPT>(dkr, p * (dp - Ds[rr]), Qs + rr * C::Dp, sub);
      }
    }
  }
  if (!valid) return;
  store_reg<DPT>(dk + koff, dkr, 1.0f, D, sub);
  store_reg<DPT>(dv + koff, dvr, 1.0f, D, sub);
}

template <class F>
void dispatch_d(int D, F&& f) {
  if (D <= 32) f(std::integral_constant<int, 8>{});
  else if (D <= 64) f(std::integral_constant<int, 16>{});
  else if (D <= 128) f(std::integral_constant<int, 32>{});
  else if (D <= 256) f(std::integral_constant<int, 64>{});
  else throw std::invalid_argument("wst-dash CUDA attention: head dim must be <= 256");
}

void check_heads(int H, int KVH) {
  if (KVH <= 0 || H % KVH != 0)
    throw std::invalid_argument("wst-dash CUDA attention: H must be a multiple of KVH");
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int B, int H, int KVH, int Tq, int Tk, int D, bool causal) {
  if (B <= 0 || H <= 0 || Tq <= 0 || D <= 0) return;
  check_heads(H, KVH);
  const int G = H / KVH;
  const float scale = 1.0f / std::sqrt((float)D);
  dim3 grid((unsigned)(((long)Tq * G + ROWS - 1) / ROWS), KVH, B);
  dispatch_d(D, [&](auto dpt) {
    WST_LAUNCH(attn_fwd_kernel<decltype(dpt)::value>, grid, THREADS, out, lse, q, k, v, nullptr, H, KVH,
                                                             Tq, Tk, D, causal, scale);
  });
  cuda_detail::check_launch("attention_forward");
}

void attention_decode(float* out, const float* q, const float* kcache, const float* vcache,
                      const int32_t* lengths, int B, int H, int KVH, int maxT, int D) {
  if (B <= 0 || H <= 0 || D <= 0) return;
  check_heads(H, KVH);
  const int G = H / KVH;
  const float scale = 1.0f / std::sqrt((float)D);
  const int row_tiles = (G + ROWS - 1) / ROWS;
  // Split the keys when the (batch x kv head) blocks would not give every SM two blocks: at most
  // one split per 256 cache positions (so a cache of >= 257 positions can split), each range a
  // multiple of 64 keys (a whole number of tiles for every head dim).
  const long blocks = (long)row_tiles * KVH * B, want = 2L * cuda_detail::device_multiprocessors();
  int splits = 1;
  if (blocks < want) splits = (int)std::min<long>({(want + blocks - 1) / blocks, (maxT + 255) / 256, 64});
  if (splits > 1) {
    const int chunk = ((maxT + splits - 1) / splits + 63) / 64 * 64;
    splits = (maxT + chunk - 1) / chunk;
    const size_t rows = (size_t)B * H;
    float* scratch = (float*)cuda_detail::thread_scratch(rows * splits * ((size_t)D + 2) * sizeof(float));
    float* part_o = scratch;
    float* part_ml = scratch + rows * splits * (size_t)D;
    dim3 grid((unsigned)(row_tiles * splits), KVH, B);
    dispatch_d(D, [&](auto dpt) {
      WST_LAUNCH(attn_decode_split_kernel<decltype(dpt)::value>, grid, THREADS, part_o, part_ml, q,
                 kcache, vcache, lengths, H, KVH, maxT, D, scale, splits, chunk);
    });
    WST_LAUNCH(attn_decode_combine_kernel, cuda_detail::grid_for(rows * 32, 256), 256, out, part_o,
               part_ml, (int)rows, splits, D);
    cuda_detail::check_launch("attention_decode (split-K)");
    return;
  }
  dim3 grid((unsigned)row_tiles, KVH, B);
  dispatch_d(D, [&](auto dpt) {
    WST_LAUNCH(attn_fwd_kernel<decltype(dpt)::value>, grid, THREADS, out, nullptr, q, kcache, vcache,
                                                             lengths, H, KVH, 1, maxT, D, false,
                                                             scale);
  });
  cuda_detail::check_launch("attention_decode");
}

void attention_decode_shared(float* out, const float* q, const float* kcache, const float* vcache,
                             const int32_t* lengths, int B, int H, int KVH, int maxT, int D,
                             const int32_t*, const int32_t*, const int32_t*, int) {
  attention_decode(out, q, kcache, vcache, lengths, B, H, KVH, maxT, D);
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse, int B,
                        int H, int KVH, int Tq, int Tk, int D, bool causal) {
  using namespace cuda_detail;
  if (B <= 0 || H <= 0 || D <= 0) return;
  check_heads(H, KVH);
  const int G = H / KVH;
  const float scale = 1.0f / std::sqrt((float)D);
  const size_t rows = (size_t)B * H * (Tq > 0 ? Tq : 0);
  float* di = rows ? (float*)thread_scratch(rows * sizeof(float)) : nullptr;
  if (rows) {
    WST_LAUNCH(attn_di_kernel, grid_for(rows * 32, 256), 256, di, dout, out, B, H, Tq, D);
    check_launch("attention_backward (Di)");
  }
  dispatch_d(D, [&](auto dpt) {
    constexpr int P = decltype(dpt)::value;
    if (Tq > 0) {
      dim3 gq((unsigned)(((long)Tq * G + ROWS - 1) / ROWS), KVH, B);
      WST_LAUNCH(attn_dq_kernel<P>, gq, THREADS, dq, dout, q, k, v, lse, di, H, KVH, Tq, Tk, D, causal,
                                         scale);
    }
    if (Tk > 0) {
      dim3 gk((unsigned)((Tk + ROWS - 1) / ROWS), KVH, B);
      WST_LAUNCH(attn_dkdv_kernel<P>, gk, THREADS, dk, dv, dout, q, k, v, lse, di, H, KVH, Tq, Tk, D,
                                           causal, scale);
    }
  });
  check_launch("attention_backward");
}

}  // namespace wst::cuda
