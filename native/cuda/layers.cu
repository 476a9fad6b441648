// Row-wise and elementwise layers on CUDA: RMSNorm, RoPE, SwiGLU, embedding, residual, and the
// optimiser kernels (AdamW, sum of squares, in-place scale). Semantics as native/cpu/layers.cpp
// and native/cpu/optim.cpp. Where the CPU's arithmetic is short and plain, the same operations
// are spelled with __fmul_rn / __fadd_rn (no FMA contraction), so RoPE, AdamW, embedding and
// residual give the CPU's bits exactly; RMSNorm and SwiGLU agree to fp32 rounding.
#include "common.cuh"
#include "cuda_kernels.h"

namespace wst::cuda {
namespace {
using namespace cuda_detail;

constexpr int kThreads = 256;

// ---- RMSNorm -----------------------------------------------------------------------------------
// inp (N,C), weight (C) -> out (N,C), rstd (N). One block per row (grid-stride).
__global__ void rmsnorm_fwd_kernel(float* out, float* rstd, const float* inp, const float* weight,
                                   int N, int C, float eps) {
  __shared__ double sh[32];
  for (int r = blockIdx.x; r < N; r += gridDim.x) {
    const float* x = inp + (size_t)r * C;
    float* y = out + (size_t)r * C;
    double acc = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) acc += (double)x[i] * (double)x[i];
    const double ms = block_sum(acc, sh) / (C > 0 ? C : 1);
    const float s = (float)(1.0 / sqrt(ms + (double)eps));
    for (int i = threadIdx.x; i < C; i += blockDim.x) y[i] = __fmul_rn(__fmul_rn(x[i], s), weight[i]);
    if (rstd && threadIdx.x == 0) rstd[r] = s;
  }
}

// dweight partials: partial[chunk][i] = sum over the chunk's 64 rows, in row order, of
// dout[r,i] * (inp[r,i] * rstd[r]) (float, like the CPU's per-chunk partials).
constexpr int kNormChunk = 64;
__global__ void rmsnorm_dw_partial_kernel(float* partial, const float* dout, const float* inp,
                                          const float* rstd, int N, int C) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x, chunk = blockIdx.y;
  if (i >= C) return;
  const int r0 = chunk * kNormChunk, r1 = min(N, r0 + kNormChunk);
  float acc = 0.0f;
  for (int r = r0; r < r1; r++) {
    const size_t e = (size_t)r * C + i;
    acc = __fadd_rn(acc, __fmul_rn(dout[e], __fmul_rn(inp[e], rstd[r])));
  }
  partial[(size_t)chunk * C + i] = acc;
}
__global__ void rmsnorm_dw_reduce_kernel(float* dweight, const float* partial, int n_chunks, int C) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= C) return;
  double acc = 0;
  for (int c = 0; c < n_chunks; c++) acc += partial[(size_t)c * C + i];
  dweight[i] += (float)acc;
}

// Forward: out[i] = inp[i] * s * w[i], s = (mean(inp^2) + eps)^-1/2, so ds/dinp[i] = -s^3 inp[i] / C
//   dinp[i] = s * w[i] * dout[i] - s^3 / C * inp[i] * sum_j dout[j] w[j] inp[j]
__global__ void rmsnorm_dx_kernel(float* dinp, const float* dout, const float* inp,
                                  const float* weight, const float* rstd, int N, int C) {
  __shared__ double sh[32];
  for (int r = blockIdx.x; r < N; r += gridDim.x) {
    const float* x = inp + (size_t)r * C;
    const float* dy = dout + (size_t)r * C;
    float* dx = dinp + (size_t)r * C;
    const float s = rstd[r];
    double acc = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x)
      acc += (double)__fmul_rn(dy[i], weight[i]) * (double)x[i];
    const double proj = block_sum(acc, sh);  // all reads of dy for the sum precede any write
    const float k = (float)((double)s * s * s * proj / C);
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
      const float d = dy[i];  // the same thread reads dy[i] then writes dx[i] (may alias)
      dx[i] = __fsub_rn(__fmul_rn(__fmul_rn(s, weight[i]), d), __fmul_rn(k, x[i]));
    }
  }
}

// ---- RoPE --------------------------------------------------------------------------------------
// HF float32 convention (layers.cpp): inv_freq = 1 / float(theta^(float(2i)/D)),
// angle = float(pos) * inv_freq (float), cos/sin evaluated in double and rounded once.
// One thread per (token, i < D/2), looping over heads. sign = -1: the inverse rotation.
__global__ void rope_kernel(float* out, const float* inp, const int32_t* positions, int N, int H,
                            int D, float theta, float sign) {
  const int half = D / 2;
  const size_t total = (size_t)N * half;
  for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total;
       e += (size_t)gridDim.x * blockDim.x) {
    const int t = (int)(e / half), i = (int)(e % half);
    const float ex = __fdiv_rn((float)(2 * i), (float)D);
    const float p = (float)pow((double)theta, (double)ex);
    const float inv = __fdiv_rn(1.0f, p);
    const double a = (double)__fmul_rn((float)positions[t], inv);
    const float cs = (float)cos(a), sn = sign * (float)sin(a);
    for (int h = 0; h < H; h++) {
      const size_t base = ((size_t)t * H + h) * D;
      const float x1 = inp[base + i], x2 = inp[base + i + half];
      out[base + i] = __fsub_rn(__fmul_rn(x1, cs), __fmul_rn(x2, sn));
      out[base + i + half] = __fadd_rn(__fmul_rn(x2, cs), __fmul_rn(x1, sn));
    }
  }
}

// ---- SwiGLU ------------------------------------------------------------------------------------
// out = silu(g) * u, silu(g) = g / (1 + exp(-g))
__global__ void swiglu_fwd_kernel(float* out, const float* gate, const float* up, size_t n) {
  for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
       e += (size_t)gridDim.x * blockDim.x) {
    const float g = gate[e];
    out[e] = g / (1.0f + expf(-g)) * up[e];
  }
}
// Forward: out = g * sig(g) * u  =>  dup = dout * g * sig(g);
//   dgate = dout * u * sig(g) * (1 + g * (1 - sig(g)))
__global__ void swiglu_bwd_kernel(float* dgate, float* dup, const float* dout, const float* gate,
                                  const float* up, size_t n) {
  for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
       e += (size_t)gridDim.x * blockDim.x) {
    const float g = gate[e], u = up[e], d = dout[e];
    const float sg = 1.0f / (1.0f + expf(-g));
    dup[e] = d * (g * sg);
    dgate[e] = d * u * (sg * (1.0f + g * (1.0f - sg)));
  }
}

// ---- embedding ---------------------------------------------------------------------------------
__global__ void embedding_fwd_kernel(float* out, const int32_t* ids, const float* table, int N,
                                     int C) {
  const size_t total = (size_t)N * C;
  for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total;
       e += (size_t)gridDim.x * blockDim.x) {
    const size_t n = e / C, c = e % C;
    out[e] = table[(size_t)ids[n] * C + c];
  }
}
// Forward: out[n, :] = table[ids[n], :]  =>  dtable[ids[n], :] += dout[n, :], n increasing.
// One thread per channel walks the tokens in order: no atomics, repeated ids accumulate exactly
// as the CPU's serial loop (bit-identical). Parallel over channels only.
__global__ void embedding_bwd_kernel(float* dtable, const float* dout, const int32_t* ids, int N,
                                     int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int n = 0; n < N; n++) {
    float* dst = dtable + (size_t)ids[n] * C + c;
    *dst = __fadd_rn(*dst, dout[(size_t)n * C + c]);
  }
}

// ---- residual ----------------------------------------------------------------------------------
__global__ void residual_fwd_kernel(float* out, const float* a, const float* b, size_t n) {
  for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
       e += (size_t)gridDim.x * blockDim.x)
    out[e] = __fadd_rn(a[e], b[e]);
}
// Forward: out = a + b  =>  da += dout, db += dout
__global__ void residual_bwd_kernel(float* da, float* db, const float* dout, size_t n) {
  for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
       e += (size_t)gridDim.x * blockDim.x) {
    const float d = dout[e];
    da[e] = __fadd_rn(da[e], d);
    db[e] = __fadd_rn(db[e], d);
  }
}

// ---- optimiser ---------------------------------------------------------------------------------
struct AdamwConsts {
  float decay, w1, w1c, b2, w2, step_size, bc2_sqrt, eps;
  bool decayed, lerp_small;
};

// optim.cpp's adamw_chunk, operation for operation (no contraction).
__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, size_t n,
                             AdamwConsts k) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    const float g = grad[i], mo = m[i];
    const float p = k.decayed ? __fmul_rn(param[i], k.decay) : param[i];
    const float mi = k.lerp_small ? __fadd_rn(mo, __fmul_rn(k.w1, __fsub_rn(g, mo)))
                                  : __fsub_rn(g, __fmul_rn(__fsub_rn(g, mo), k.w1c));
    const float vi = __fadd_rn(__fmul_rn(v[i], k.b2), __fmul_rn(__fmul_rn(k.w2, g), g));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), k.bc2_sqrt), k.eps);
    m[i] = mi;
    v[i] = vi;
    param[i] = __fsub_rn(p, __fmul_rn(k.step_size, __fdiv_rn(mi, denom)));
  }
}

// Σ x^2 in double: block partials over a grid fixed by n, then one block sums them in order.
constexpr int kSsqBlocks = 1024;
__global__ void ssq_partial_kernel(double* partial, const float* x, size_t n) {
  __shared__ double sh[32];
  double acc = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    acc += (double)x[i] * (double)x[i];
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
__global__ void ssq_final_kernel(double* result, const double* partial, int n) {
  __shared__ double sh[32];
  double acc = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) *result = acc;
}

__global__ void scale_kernel(float* x, size_t n, float s) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    x[i] = __fmul_rn(x[i], s);
}

unsigned row_grid(int N) { return (unsigned)(N < 65535 ? (N > 0 ? N : 1) : 65535); }

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps) {
  if (N <= 0) return;
  WST_LAUNCH(rmsnorm_fwd_kernel, row_grid(N), kThreads, out, rstd, inp, weight, N, C, eps);
  check_launch("rmsnorm_forward");
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C) {
  if (N <= 0 || C <= 0) return;
  const int n_chunks = (N + kNormChunk - 1) / kNormChunk;
  float* partial = (float*)thread_scratch((size_t)n_chunks * C * sizeof(float));
  const unsigned cb = (unsigned)((C + kThreads - 1) / kThreads);
  // dweight first: dinp may alias dout.
  WST_LAUNCH(rmsnorm_dw_partial_kernel, dim3(cb, n_chunks), kThreads, partial, dout, inp, rstd, N, C);
  WST_LAUNCH(rmsnorm_dw_reduce_kernel, cb, kThreads, dweight, partial, n_chunks, C);
  WST_LAUNCH(rmsnorm_dx_kernel, row_grid(N), kThreads, dinp, dout, inp, weight, rstd, N, C);
  check_launch("rmsnorm_backward");
}

void rope_forward(float* out, const float* inp, const int32_t* positions, int N, int H, int D,
                  float theta) {
  if (N <= 0 || H <= 0 || D <= 1) return;
  WST_LAUNCH(rope_kernel, grid_for((size_t)N * (D / 2), kThreads), kThreads, out, inp, positions, N, H, D,
                                                                     theta, 1.0f);
  check_launch("rope_forward");
}

void rope_backward(float* dinp, const float* dout, const int32_t* positions, int N, int H, int D,
                   float theta) {
  if (N <= 0 || H <= 0 || D <= 1) return;
  WST_LAUNCH(rope_kernel, grid_for((size_t)N * (D / 2), kThreads), kThreads, dinp, dout, positions, N, H,
                                                                     D, theta, -1.0f);
  check_launch("rope_backward");
}

void swiglu_forward(float* out, const float* gate, const float* up, int N, int C) {
  const size_t n = (size_t)(N > 0 ? N : 0) * (size_t)(C > 0 ? C : 0);
  if (!n) return;
  WST_LAUNCH(swiglu_fwd_kernel, grid_for(n, kThreads), kThreads, out, gate, up, n);
  check_launch("swiglu_forward");
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                     const float* up, int N, int C) {
  const size_t n = (size_t)(N > 0 ? N : 0) * (size_t)(C > 0 ? C : 0);
  if (!n) return;
  WST_LAUNCH(swiglu_bwd_kernel, grid_for(n, kThreads), kThreads, dgate, dup, dout, gate, up, n);
  check_launch("swiglu_backward");
}

void embedding_forward(float* out, const int32_t* ids, const float* table, int N, int V, int C) {
  if (N <= 0 || C <= 0) return;
  WST_LAUNCH(embedding_fwd_kernel, grid_for((size_t)N * C, kThreads), kThreads, out, ids, table, N, C);
  check_launch("embedding_forward");
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int N, int V, int C) {
  if (N <= 0 || C <= 0) return;
  WST_LAUNCH(embedding_bwd_kernel, (C + 127) / 128, 128, dtable, dout, ids, N, C);
  check_launch("embedding_backward");
}

void residual_forward(float* out, const float* a, const float* b, size_t n) {
  if (!n) return;
  WST_LAUNCH(residual_fwd_kernel, grid_for(n, kThreads), kThreads, out, a, b, n);
  check_launch("residual_forward");
}

void residual_backward(float* da, float* db, const float* dout, size_t n) {
  if (!n) return;
  WST_LAUNCH(residual_bwd_kernel, grid_for(n, kThreads), kThreads, da, db, dout, n);
  check_launch("residual_backward");
}

void adamw_update(float* param, const float* grad, float* m, float* v, size_t n, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int step) {
  if (!n) return;
  // The scalar factors exactly as optim.cpp forms them (double, then rounded to float).
  const double bc1 = 1.0 - std::pow(beta1, (double)step);
  const double bc2 = 1.0 - std::pow(beta2, (double)step);
  AdamwConsts k;
  k.decay = (float)(1.0 - lr * weight_decay);
  k.w1 = (float)(1.0 - beta1);
  k.w1c = 1.0f - k.w1;
  k.b2 = (float)beta2;
  k.w2 = (float)(1.0 - beta2);
  k.step_size = (float)(lr / bc1);
  k.bc2_sqrt = (float)std::sqrt(bc2);
  k.eps = (float)eps;
  k.decayed = weight_decay != 0.0;
  k.lerp_small = std::fabs(k.w1) < 0.5f;
  WST_LAUNCH(adamw_kernel, grid_for(n, kThreads), kThreads, param, grad, m, v, n, k);
  check_launch("adamw_update");
}

double sum_squares(const float* x, size_t n) {
  if (n == 0) return 0.0;
  const int blocks = (int)std::min<size_t>(kSsqBlocks, (n + kThreads - 1) / kThreads);
  double* scratch = (double*)thread_scratch((size_t)(blocks + 1) * sizeof(double));
  WST_LAUNCH(ssq_partial_kernel, blocks, kThreads, scratch + 1, x, n);
  WST_LAUNCH(ssq_final_kernel, 1, kThreads, scratch, scratch + 1, blocks);
  check_launch("sum_squares");
  double r = 0;
  check(cudaMemcpy(&r, scratch, sizeof(double), cudaMemcpyDeviceToHost), "sum_squares (copy)");
  return r;
}

// Block i copies row i (grid-strided over rows), float by float: rows are short (a KV row).
__global__ void copy_rows_kernel(float* dst, const float* src, const int64_t* dst_off,
                                 const int64_t* src_off, const int64_t* count, int n) {
  for (int i = blockIdx.x; i < n; i += gridDim.x) {
    float* d = dst + dst_off[i];
    const float* s = src + src_off[i];
    for (int64_t e = threadIdx.x; e < count[i]; e += blockDim.x) d[e] = s[e];
  }
}

void copy_rows(float* dst, const float* src, const int64_t* dst_off, const int64_t* src_off,
               const int64_t* count, int n) {
  if (n <= 0) return;
  WST_LAUNCH(copy_rows_kernel, (unsigned)std::min(n, 65535), 256, dst, src, dst_off, src_off, count, n);
  check_launch("copy_rows");
}

__global__ void cast_bf16_kernel(uint16_t* out, const float* in, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const uint32_t u = __float_as_uint(in[i]);  // as float_to_bf16 (kernels.h): nearest even, NaN kept
    out[i] = (u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((u >> 16) | 0x40u) : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
}

void cast_bf16(uint16_t* out, const float* in, size_t n) {
  if (!n) return;
  WST_LAUNCH(cast_bf16_kernel, grid_for(n, kThreads), kThreads, out, in, n);
  check_launch("cast_bf16");
}

void scale_inplace(float* x, size_t n, float s) {
  if (!n) return;
  WST_LAUNCH(scale_kernel, grid_for(n, kThreads), kThreads, x, n, s);
  check_launch("scale_inplace");
}

}  // namespace wst::cuda
