// bf16 attention forward on tensor cores, FlashAttention-2 style (kernels.h
// attention_forward_bf16; semantics of attention_forward: causal query i sits at absolute
// position Tk - Tq + i, GQA head h reads kv head h / (H / KVH), rows that see no key get 0 and
// lse = -inf).
//
//  - A 128-thread block owns 64 query rows of one (batch, head); each of its 4 warps owns 16 rows
//    and keeps them in registers for the whole pass: Q as mma A-fragments (D/16 x 4 registers),
//    the output accumulator O (16 x D fp32), and per row the running max m and partial sum l.
//  - K and V stream through shared memory in 64-key tiles, double-buffered with cp.async. Per
//    tile: S = Q K^T (K tile [key][d] is the col-major B operand: plain ldmatrix), online softmax
//    in fp32 with exp2 (the 1/sqrt(D) scale folded into log2(e)), P rounded to bf16 straight from
//    the S accumulators (their C-fragment layout is the A-fragment layout of the next mma), then
//    O += P V (V tile [key][d] is row-major B: ldmatrix.trans).
//  - Only tiles that cross the causal diagonal or the end of the keys are masked; tiles past the
//    diagonal are never loaded. Blocks are issued heaviest (last query tile) first.
//  - Needs D = 64 or 128 and 16-byte aligned q, k, v, out; other shapes widen to fp32 on the
//    device and run the fp32 kernel (correct, slower).
#include <cfloat>

#include "common.cuh"
#include "cuda_kernels.h"
#include "mma.cuh"

namespace wst::cuda {
namespace {
using namespace cuda_detail;

constexpr int BR = 64, BC = 64, WARPS = 4, THREADS = WARPS * 32, PAD = 8;

template <int D>
constexpr size_t smem_elems() {
  return (size_t)(BR + 4 * BC) * (D + PAD);  // Q tile, then K and V tiles x 2 buffers
}

// rows [r0, r0 + ROWS) of a (.., T, heads, D) tensor at one head -> sh[ROWS][D + PAD], zero
// outside [0, T). `src` points at row 0 of that head; row stride `ld` elements.
template <int ROWS, int D>
__device__ __forceinline__ void load_rows(uint16_t* sh, const uint16_t* src, long ld, int r0,
                                          int T) {
  constexpr int CPR = D / 8, CHUNKS = ROWS * CPR;  // 16-byte chunks per row, per tile
  static_assert(CHUNKS % THREADS == 0, "chunks must divide among the threads");
#pragma unroll
  for (int i = 0; i < CHUNKS / THREADS; i++) {
    const int c = threadIdx.x + i * THREADS, r = c / CPR, d = (c % CPR) * 8;
    const bool in = r0 + r < T;
    cp_async_16(sh + r * (D + PAD) + d, in ? src + (size_t)(r0 + r) * ld + d : src, in);
  }
}

template <int D>
__global__ void __launch_bounds__(THREADS)
attention_bf16_kernel(uint16_t* __restrict__ out, float* __restrict__ lse,
                      const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                      const uint16_t* __restrict__ v, int H, int KVH, int Tq, int Tk, bool causal,
                      float scale_log2) {
  constexpr int LD = D + PAD, KD = D / 16;  // k16 steps over the head dim
  WST_DYNAMIC_SMEM(uint16_t, smem, smem_elems<128>() * sizeof(uint16_t));
  // Q tile, then K buffers 0 and 1, then V buffers 0 and 1 (arithmetic, not pointer arrays: a
  // run-time index into an array would put it in local memory).
  uint16_t* qs = smem;
  auto ks = [&](int buf) { return smem + (BR + buf * BC) * LD; };
  auto vs = [&](int buf) { return smem + (BR + (2 + buf) * BC) * LD; };

  const int qtile = gridDim.x - 1 - blockIdx.x;  // heaviest causal tiles first
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / (H / KVH);
  const int q0 = qtile * BR;
  const long ldq = (long)H * D, ldk = (long)KVH * D;
  const uint16_t* qb = q + ((size_t)b * Tq * H + h) * D;
  const uint16_t* kb = k + ((size_t)b * Tk * KVH + kvh) * D;
  const uint16_t* vb = v + ((size_t)b * Tk * KVH + kvh) * D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;

  // Keys this tile needs: up to what its last row sees.
  int kv_end = Tk;
  if (causal) kv_end = max(0, min(Tk, Tk - Tq + min(q0 + BR, Tq)));
  const int ntiles = (kv_end + BC - 1) / BC;

  load_rows<BR, D>(qs, qb, ldq, q0, Tq);
  if (ntiles > 0) {
    load_rows<BC, D>(ks(0), kb, ldk, 0, Tk);
    load_rows<BC, D>(vs(0), vb, ldk, 0, Tk);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  uint32_t qf[KD][4];
#pragma unroll
  for (int kk = 0; kk < KD; kk++)
    ldmatrix_x4(qf[kk], qs + (warp * 16 + (lane % 16)) * LD + kk * 16 + (lane / 16) * 8);

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};
  const int row0 = q0 + warp * 16 + g;  // this thread's rows: row0, row0 + 8
  // Keys visible to each of the two rows (causal), as an exclusive bound.
  const int vis0 = causal ? Tk - Tq + row0 + 1 : Tk, vis1 = causal ? vis0 + 8 : Tk;

  for (int j = 0; j < ntiles; j++) {
    const int cur = j & 1;
    if (j + 1 < ntiles) {  // prefetch the next tile into the other buffer (freed last iteration)
      load_rows<BC, D>(ks(cur ^ 1), kb, ldk, (j + 1) * BC, Tk);
      load_rows<BC, D>(vs(cur ^ 1), vb, ldk, (j + 1) * BC, Tk);
    }
    cp_async_commit();
    if (j > 0) {
      cp_async_wait<1>();  // tile j landed (the newest group, tile j + 1, may still fly)
      __syncthreads();
    }
    const uint16_t* kt = ks(cur);
    const uint16_t* vt = vs(cur);
    const int key0 = j * BC;

    // S = Q K^T for this warp's 16 rows x 64 keys.
    float s[BC / 8][4];
#pragma unroll
    for (int i = 0; i < BC / 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KD; kk++)
#pragma unroll
      for (int np = 0; np < BC / 16; np++) {
        uint32_t kf[4];
        const int jj = lane / 8;
        ldmatrix_x4(kf, kt + (np * 16 + (jj >> 1) * 8 + (lane & 7)) * LD + kk * 16 + (jj & 1) * 8);
        mma_bf16_16816(s[2 * np], qf[kk], kf[0], kf[1]);
        mma_bf16_16816(s[2 * np + 1], qf[kk], kf[2], kf[3]);
      }

    // Mask keys past the end or past a row's causal bound (only tiles that reach them).
    const int lim0 = min(vis0, Tk), lim1 = min(vis1, Tk);
    if (key0 + BC > min(lim0, lim1)) {
#pragma unroll
      for (int nt = 0; nt < BC / 8; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const int key = key0 + nt * 8 + 2 * t + e;
          if (key >= lim0) s[nt][e] = -INFINITY;
          if (key >= lim1) s[nt][2 + e] = -INFINITY;
        }
    }

    // Online softmax, rows r = 0 (g) and 1 (g + 8); the 4 lanes of a row group share a row.
    float corr[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
      float mx = mrow[r];
#pragma unroll
      for (int nt = 0; nt < BC / 8; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float base = mx == -INFINITY ? 0.0f : mx * scale_log2;  // a row with no key yet
      corr[r] = exp2f(mrow[r] * scale_log2 - base);                 // 0 when mrow was -inf
      mrow[r] = mx;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < BC / 8; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const float p = exp2f(fmaf(s[nt][2 * r + e], scale_log2, -base));
          s[nt][2 * r + e] = p;
          sum += p;
        }
      lrow[r] = lrow[r] * corr[r] + sum;  // per-lane partial; the 4 lanes are summed at the end
    }
#pragma unroll
    for (int i = 0; i < D / 8; i++) {
      o[i][0] *= corr[0];
      o[i][1] *= corr[0];
      o[i][2] *= corr[1];
      o[i][3] *= corr[1];
    }

    // O += P V: P's k16 step kk covers keys 16 kk .. 16 kk + 15 = S tiles 2 kk and 2 kk + 1.
#pragma unroll
    for (int kk = 0; kk < BC / 16; kk++) {
      const uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; dp++) {
        uint32_t vf[4];
        const int jj = lane / 8;
        ldmatrix_x4_trans(vf, vt + (kk * 16 + (jj & 1) * 8 + (lane & 7)) * LD + dp * 16 + (jj >> 1) * 8);
        mma_bf16_16816(o[2 * dp], pa, vf[0], vf[1]);
        mma_bf16_16816(o[2 * dp + 1], pa, vf[2], vf[3]);
      }
    }
    __syncthreads();  // every warp is done with buffer `cur` before it is refilled
  }
  cp_async_wait<0>();

  // Normalise and store: out rows in bf16, lse in natural-log units.
#pragma unroll
  for (int r = 0; r < 2; r++) {
    float l = lrow[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int row = row0 + 8 * r;
    if (row >= Tq) continue;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    uint16_t* orow = out + (((size_t)b * Tq + row) * H + h) * D;
#pragma unroll
    for (int i = 0; i < D / 8; i++) {
      const uint32_t packed = pack_bf16(o[i][2 * r] * inv, o[i][2 * r + 1] * inv);
      *reinterpret_cast<uint32_t*>(orow + i * 8 + 2 * t) = packed;
    }
    if (lse && t == 0)
      lse[((size_t)b * H + h) * Tq + row] =
          l > 0.0f ? mrow[r] * scale_log2 * 0.69314718055994531f + logf(l) : -INFINITY;
  }
}

__global__ void widen_kernel(float* dst, const uint16_t* src, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    dst[i] = bf16_to_f32(src[i]);
}
__global__ void narrow_kernel(uint16_t* dst, const float* src, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    dst[i] = f32_to_bf16(src[i]);
}

template <int D>
void launch(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
            int B, int H, int KVH, int Tq, int Tk, bool causal) {
  constexpr size_t bytes = smem_elems<D>() * sizeof(uint16_t);
  static bool configured = false;
  if (!configured) {
    check(cudaFuncSetAttribute(attention_bf16_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               (int)bytes),
          "attention_forward_bf16 (shared memory)");
    configured = true;
  }
  const float scale_log2 = (float)(1.4426950408889634 / std::sqrt((double)D));
  dim3 grid((Tq + BR - 1) / BR, H, B);
  WST_LAUNCH_SMEM(attention_bf16_kernel<D>, grid, THREADS, bytes, out, lse, q, k, v, H, KVH, Tq,
                  Tk, causal, scale_log2);
}

}  // namespace

void attention_forward_bf16(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k,
                            const uint16_t* v, int B, int H, int KVH, int Tq, int Tk, int D,
                            bool causal) {
  if (B <= 0 || H <= 0 || Tq <= 0) return;
  if (KVH <= 0 || H % KVH != 0) throw std::invalid_argument("attention_forward_bf16: H % KVH != 0");
  if (H > 65535 || B > 65535) throw std::invalid_argument("attention_forward_bf16: B or H too large");
  const bool fast = (D == 64 || D == 128) && aligned16(q) && aligned16(k) && aligned16(v) &&
                    aligned16(out) && Tk > 0;
  if (fast) {
    if (D == 64) launch<64>(out, lse, q, k, v, B, H, KVH, Tq, Tk, causal);
    else launch<128>(out, lse, q, k, v, B, H, KVH, Tq, Tk, causal);
    check_launch("attention_forward_bf16");
    return;
  }
  // Any other shape: widen to fp32 on the device, run the fp32 kernel, narrow the output. The
  // widened copies live in this thread's scratch, held across attention_forward: safe because the
  // fp32 forward takes no scratch (keep it that way, or give these their own buffer).
  const size_t nq = (size_t)B * Tq * H * D, nk = (size_t)B * Tk * KVH * D;
  float* buf = (float*)thread_scratch((2 * nq + 2 * nk) * sizeof(float));
  float *qf = buf, *kf = qf + nq, *vf = kf + nk, *of = vf + nk;
  WST_LAUNCH(widen_kernel, grid_for(nq, 256), 256, qf, q, nq);
  if (nk) {
    WST_LAUNCH(widen_kernel, grid_for(nk, 256), 256, kf, k, nk);
    WST_LAUNCH(widen_kernel, grid_for(nk, 256), 256, vf, v, nk);
  }
  attention_forward(of, lse, qf, kf, vf, B, H, KVH, Tq, Tk, D, causal);
  WST_LAUNCH(narrow_kernel, grid_for(nq, 256), 256, out, of, nq);
  check_launch("attention_forward_bf16 (fp32 path)");
}

}  // namespace wst::cuda
