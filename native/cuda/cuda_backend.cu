// The CUDA backend tables (see cuda_kernels.h): device discovery that never throws, the device
// backend (ops on device pointers), and the host-staging backend (ops on host pointers, for the
// kernel API and the tests).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "common.cuh"
#include "cuda_kernels.h"

namespace wst {

namespace cuda_detail {

namespace {
struct Scratch {
  void* ptr = nullptr;
  size_t cap = 0;
  ~Scratch() {
    if (ptr) cudaFree(ptr);  // errors ignored: the runtime may already be shutting down
  }
};
}  // namespace

void* thread_scratch(size_t bytes) {
  thread_local Scratch s;
  if (bytes == 0) bytes = 1;
  if (bytes > s.cap) {
    const size_t cap = std::max(bytes, s.cap * 2);
    if (s.ptr) check(cudaFree(s.ptr), "scratch free");  // waits for the work that used it
    s.ptr = nullptr;
    s.cap = 0;
    check(cudaMalloc(&s.ptr, cap), "scratch alloc");
    s.cap = cap;
  }
  return s.ptr;
}

int device_multiprocessors() {
  static const int sms = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || v < 1)
      return 1;
    return v;
  }();
  return sms;
}

void* thread_result_slot(size_t bytes) {
  thread_local Scratch s;
  if (bytes > 256) throw std::invalid_argument("wst-dash CUDA: result slot holds 256 bytes");
  if (!s.ptr) {
    check(cudaMalloc(&s.ptr, 256), "result slot alloc");
    s.cap = 256;
  }
  return s.ptr;
}

}  // namespace cuda_detail

namespace {

struct DeviceInfo {
  int count = 0;
  std::string name;
};

const DeviceInfo& device_info() {
  static const DeviceInfo info = [] {
    DeviceInfo d;
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {  // no driver, no device, driver too old...
      cudaGetLastError();
      return d;
    }
    // Usable: compute capability 8.0 or newer (the kernels are built for sm_80, sm_89, sm_90,
    // with PTX that newer devices JIT-compile).
    for (int i = 0; i < n; i++) {
      cudaDeviceProp p;
      if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
        cudaGetLastError();
        continue;
      }
      if (p.major < 8) continue;
      if (d.count == 0) d.name = p.name;
      d.count++;
    }
    return d;
  }();
  return info;
}

// ---- device backend ----------------------------------------------------------------------------
void* dev_alloc(size_t bytes) {
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw std::bad_alloc();
  }
  return p;
}
void dev_free(void* p) {
  if (p) cudaFree(p);
}
void dev_upload(void* dst, const void* src, size_t bytes) {
  if (bytes) cuda_detail::check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "upload");
}
void dev_download(void* dst, const void* src, size_t bytes) {
  if (bytes) cuda_detail::check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "download");
}
void dev_sync() { cuda::synchronize(); }
void dev_copy(void* dst, const void* src, size_t bytes) {
  if (bytes) cuda_detail::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0), "copy");
}
void dev_zero(void* dst, size_t bytes) {
  if (bytes) cuda_detail::check(cudaMemsetAsync(dst, 0, bytes, 0), "zero");
}

// ---- host staging ------------------------------------------------------------------------------
// Stream-ordered pool allocations when the device supports them (no implicit device-wide sync on
// free), plain cudaMalloc otherwise.
bool use_pool() {
  static const bool pool = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&v, cudaDevAttrMemoryPoolsSupported, dev) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    if (v) {
      cudaMemPool_t mp;
      if (cudaDeviceGetDefaultMemPool(&mp, dev) == cudaSuccess) {
        uint64_t keep = UINT64_MAX;  // keep freed blocks cached for the next call
        cudaMemPoolSetAttribute(mp, cudaMemPoolAttrReleaseThreshold, &keep);
      }
      cudaGetLastError();
    }
    return v != 0;
  }();
  return pool;
}

bool g_poison = false;

// The device copies of one op's host arguments. Register inputs first (in/inout), then outputs:
// a pointer seen twice (an output aliasing an input) maps to one device buffer.
class Stage {
 public:
  ~Stage() {
    for (auto& b : bufs_) {
      if (use_pool()) cudaFreeAsync(b.dev, 0);
      else cudaFree(b.dev);
    }
  }
  template <class T>
  T* in(const T* h, size_t n) { return (T*)add(h, n * sizeof(T), true, false); }
  template <class T>
  T* out(T* h, size_t n) { return (T*)add(h, n * sizeof(T), false, true); }
  template <class T>
  T* inout(T* h, size_t n) { return (T*)add(h, n * sizeof(T), true, true); }
  // Downloads the outputs (cudaMemcpy waits for the op).
  void finish() {
    cuda_detail::check_launch("staged op");
    for (auto& b : bufs_)
      if (b.down)
        cuda_detail::check(cudaMemcpy((void*)b.host, b.dev, b.bytes, cudaMemcpyDeviceToHost),
                           "download");
  }

 private:
  struct Buf {
    const void* host;
    size_t bytes;
    void* dev;
    bool down;
  };
  std::vector<Buf> bufs_;

  void* add(const void* h, size_t bytes, bool up, bool down) {
    if (!h || bytes == 0) return nullptr;
    for (auto& b : bufs_)
      if (b.host == h) {
        if (bytes > b.bytes) throw std::logic_error("wst-dash CUDA staging: aliased sizes differ");
        b.down = b.down || down;
        return b.dev;
      }
    void* d = nullptr;
    cudaError_t e = use_pool() ? cudaMallocAsync(&d, bytes, 0) : cudaMalloc(&d, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw std::bad_alloc();
    }
    bufs_.push_back({h, bytes, d, down});
    if (up) cuda_detail::check(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice), "upload");
    else if (g_poison) cuda_detail::check(cudaMemset(d, 0xFF, bytes), "poison");
    return d;
  }
};

inline size_t sz(long a) { return a > 0 ? (size_t)a : 0; }
inline size_t prod(std::initializer_list<long> dims) {
  size_t t = 1;
  for (long d : dims) t *= sz(d);
  return t;
}
// Elements spanned by `rows` rows of `cols` with leading dimension ld.
inline size_t extent(long rows, long cols, long ld) {
  return rows > 0 && cols > 0 ? (size_t)(rows - 1) * (size_t)ld + (size_t)cols : 0;
}

void st_sgemm(bool transA, bool transB, int m, int n, int k, float alpha, const float* A, int lda,
              const float* B, int ldb, float beta, float* C, int ldc) {
  if (m <= 0 || n <= 0) return;
  Stage s;
  const float* a = s.in(A, extent(transA ? k : m, transA ? m : k, lda));
  const float* b = s.in(B, extent(transB ? n : k, transB ? k : n, ldb));
  float* c = s.inout(C, extent(m, n, ldc));  // inout: keeps the gaps between rows when ldc > n
  cuda::sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  s.finish();
}

void st_gemm_bf16(bool transA, bool transB, int m, int n, int k, float alpha, const uint16_t* A,
                  int lda, const uint16_t* B, int ldb, float beta, float* C, int ldc) {
  if (m <= 0 || n <= 0) return;
  Stage s;
  const uint16_t* a = s.in(A, extent(transA ? k : m, transA ? m : k, lda));
  const uint16_t* b = s.in(B, extent(transB ? n : k, transB ? k : n, ldb));
  float* c = s.inout(C, extent(m, n, ldc));
  cuda::gemm_bf16(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  s.finish();
}

void st_sgemm_tf32(bool transA, bool transB, int m, int n, int k, float alpha, const float* A,
                   int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  if (m <= 0 || n <= 0) return;
  Stage s;
  const float* a = s.in(A, extent(transA ? k : m, transA ? m : k, lda));
  const float* b = s.in(B, extent(transB ? n : k, transB ? k : n, ldb));
  float* c = s.inout(C, extent(m, n, ldc));
  cuda::sgemm_tf32(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  s.finish();
}

void st_attention_forward_bf16(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k,
                               const uint16_t* v, int B, int H, int KVH, int Tq, int Tk, int D,
                               bool causal) {
  Stage s;
  const uint16_t* dq = s.in(q, prod({B, Tq, H, D}));
  const uint16_t* dk = s.in(k, prod({B, Tk, KVH, D}));
  const uint16_t* dv = s.in(v, prod({B, Tk, KVH, D}));
  uint16_t* o = s.out(out, prod({B, Tq, H, D}));
  float* l = s.out(lse, prod({B, H, Tq}));
  cuda::attention_forward_bf16(o, l, dq, dk, dv, B, H, KVH, Tq, Tk, D, causal);
  s.finish();
}

void st_attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                          int B, int H, int KVH, int Tq, int Tk, int D, bool causal) {
  Stage s;
  const float* dq = s.in(q, prod({B, Tq, H, D}));
  const float* dk = s.in(k, prod({B, Tk, KVH, D}));
  const float* dv = s.in(v, prod({B, Tk, KVH, D}));
  float* o = s.out(out, prod({B, Tq, H, D}));
  float* l = s.out(lse, prod({B, H, Tq}));
  cuda::attention_forward(o, l, dq, dk, dv, B, H, KVH, Tq, Tk, D, causal);
  s.finish();
}

void st_attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                           const float* k, const float* v, const float* out, const float* lse,
                           int B, int H, int KVH, int Tq, int Tk, int D, bool causal) {
  Stage s;
  const size_t nq = prod({B, Tq, H, D}), nk = prod({B, Tk, KVH, D});
  const float* d_dout = s.in(dout, nq);
  const float* d_q = s.in(q, nq);
  const float* d_k = s.in(k, nk);
  const float* d_v = s.in(v, nk);
  const float* d_out = s.in(out, nq);
  const float* d_lse = s.in(lse, prod({B, H, Tq}));
  float* d_dq = s.out(dq, nq);
  float* d_dk = s.out(dk, nk);
  float* d_dv = s.out(dv, nk);
  cuda::attention_backward(d_dq, d_dk, d_dv, d_dout, d_q, d_k, d_v, d_out, d_lse, B, H, KVH, Tq,
                           Tk, D, causal);
  s.finish();
}

void st_attention_decode(float* out, const float* q, const float* kcache, const float* vcache,
                         const int32_t* lengths, int B, int H, int KVH, int maxT, int D) {
  Stage s;
  const float* d_q = s.in(q, prod({B, H, D}));
  const float* d_k = s.in(kcache, prod({B, maxT, KVH, D}));
  const float* d_v = s.in(vcache, prod({B, maxT, KVH, D}));
  const int32_t* d_len = s.in(lengths, sz(B));
  float* d_out = s.out(out, prod({B, H, D}));
  cuda::attention_decode(d_out, d_q, d_k, d_v, d_len, B, H, KVH, maxT, D);
  s.finish();
}

// The grouping is only a hint (every slot holds its own copy of the shared positions): the
// plain decode gives the same result.
void st_attention_decode_shared(float* out, const float* q, const float* kcache, const float* vcache,
                                const int32_t* lengths, int B, int H, int KVH, int maxT, int D,
                                const int32_t*, const int32_t*, const int32_t*, int) {
  st_attention_decode(out, q, kcache, vcache, lengths, B, H, KVH, maxT, D);
}

void st_rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N,
                        int C, float eps) {
  Stage s;
  const float* d_in = s.in(inp, prod({N, C}));
  const float* d_w = s.in(weight, sz(C));
  float* d_out = s.out(out, prod({N, C}));
  float* d_rstd = s.out(rstd, sz(N));
  cuda::rmsnorm_forward(d_out, d_rstd, d_in, d_w, N, C, eps);
  s.finish();
}

void st_rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                         const float* weight, const float* rstd, int N, int C) {
  Stage s;
  const float* d_dout = s.in(dout, prod({N, C}));
  const float* d_in = s.in(inp, prod({N, C}));
  const float* d_w = s.in(weight, sz(C));
  const float* d_rstd = s.in(rstd, sz(N));
  float* d_dw = s.inout(dweight, sz(C));
  float* d_dinp = s.out(dinp, prod({N, C}));
  cuda::rmsnorm_backward(d_dinp, d_dw, d_dout, d_in, d_w, d_rstd, N, C);
  s.finish();
}

void st_rope_forward(float* out, const float* inp, const int32_t* positions, int N, int H, int D,
                     float theta) {
  Stage s;
  const float* d_in = s.in(inp, prod({N, H, D}));
  const int32_t* d_pos = s.in(positions, sz(N));
  float* d_out = s.out(out, prod({N, H, D}));
  cuda::rope_forward(d_out, d_in, d_pos, N, H, D, theta);
  s.finish();
}

void st_rope_backward(float* dinp, const float* dout, const int32_t* positions, int N, int H,
                      int D, float theta) {
  Stage s;
  const float* d_dout = s.in(dout, prod({N, H, D}));
  const int32_t* d_pos = s.in(positions, sz(N));
  float* d_dinp = s.out(dinp, prod({N, H, D}));
  cuda::rope_backward(d_dinp, d_dout, d_pos, N, H, D, theta);
  s.finish();
}

void st_swiglu_forward(float* out, const float* gate, const float* up, int N, int C) {
  Stage s;
  const float* g = s.in(gate, prod({N, C}));
  const float* u = s.in(up, prod({N, C}));
  float* o = s.out(out, prod({N, C}));
  cuda::swiglu_forward(o, g, u, N, C);
  s.finish();
}

void st_swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                        const float* up, int N, int C) {
  Stage s;
  const float* d = s.in(dout, prod({N, C}));
  const float* g = s.in(gate, prod({N, C}));
  const float* u = s.in(up, prod({N, C}));
  float* dg = s.out(dgate, prod({N, C}));
  float* du = s.out(dup, prod({N, C}));
  cuda::swiglu_backward(dg, du, d, g, u, N, C);
  s.finish();
}

void st_embedding_forward(float* out, const int32_t* ids, const float* table, int N, int V, int C) {
  Stage s;
  const int32_t* d_ids = s.in(ids, sz(N));
  const float* d_t = s.in(table, prod({V, C}));
  float* d_out = s.out(out, prod({N, C}));
  cuda::embedding_forward(d_out, d_ids, d_t, N, V, C);
  s.finish();
}

void st_embedding_backward(float* dtable, const float* dout, const int32_t* ids, int N, int V,
                           int C) {
  Stage s;
  const float* d_dout = s.in(dout, prod({N, C}));
  const int32_t* d_ids = s.in(ids, sz(N));
  float* d_dt = s.inout(dtable, prod({V, C}));
  cuda::embedding_backward(d_dt, d_dout, d_ids, N, V, C);
  s.finish();
}

void st_residual_forward(float* out, const float* a, const float* b, size_t n) {
  Stage s;
  const float* da = s.in(a, n);
  const float* db = s.in(b, n);
  float* o = s.out(out, n);
  cuda::residual_forward(o, da, db, n);
  s.finish();
}

void st_residual_backward(float* da, float* db, const float* dout, size_t n) {
  Stage s;
  const float* d = s.in(dout, n);
  float* a = s.inout(da, n);
  float* b = s.inout(db, n);
  cuda::residual_backward(a, b, d, n);
  s.finish();
}

void st_softmax_forward(float* probs, const float* logits, int N, int V) {
  Stage s;
  const float* z = s.in(logits, prod({N, V}));
  float* p = s.out(probs, prod({N, V}));
  cuda::softmax_forward(p, z, N, V);
  s.finish();
}

void st_log_softmax_forward(float* out, const float* logits, int N, int V) {
  Stage s;
  const float* z = s.in(logits, prod({N, V}));
  float* o = s.out(out, prod({N, V}));
  cuda::log_softmax_forward(o, z, N, V);
  s.finish();
}

void st_token_logprobs_forward(float* logprob, float* lse, float* entropy, const float* logits,
                               const int32_t* ids, int N, int V) {
  Stage s;
  const float* z = s.in(logits, prod({N, V}));
  const int32_t* d_ids = s.in(ids, sz(N));
  float* lp = s.out(logprob, sz(N));
  float* l = s.out(lse, sz(N));
  float* e = s.out(entropy, sz(N));
  cuda::token_logprobs_forward(lp, l, e, z, d_ids, N, V);
  s.finish();
}

void st_token_logprobs_backward(float* dlogits, const float* dlogprob, const float* dentropy,
                                const float* logits, const int32_t* ids, const float* lse,
                                const float* entropy, int N, int V) {
  Stage s;
  const float* g = s.in(dlogprob, sz(N));
  const float* dH = s.in(dentropy, sz(N));
  const float* z = s.in(logits, prod({N, V}));
  const int32_t* d_ids = s.in(ids, sz(N));
  const float* l = s.in(lse, sz(N));
  const float* H = s.in(entropy, sz(N));
  float* dz = s.out(dlogits, prod({N, V}));  // may alias logits
  cuda::token_logprobs_backward(dz, g, dH, z, d_ids, l, H, N, V);
  s.finish();
}

void st_crossentropy_forward(float* losses, float* lse, const float* logits,
                             const int32_t* targets, int N, int V) {
  Stage s;
  const float* z = s.in(logits, prod({N, V}));
  const int32_t* t = s.in(targets, sz(N));
  float* lo = s.out(losses, sz(N));
  float* l = s.out(lse, sz(N));
  cuda::crossentropy_forward(lo, l, z, t, N, V);
  s.finish();
}

void st_crossentropy_backward(float* dlogits, const float* dlosses, const float* logits,
                              const int32_t* targets, const float* lse, int N, int V) {
  Stage s;
  const float* g = s.in(dlosses, sz(N));
  const float* z = s.in(logits, prod({N, V}));
  const int32_t* t = s.in(targets, sz(N));
  const float* l = s.in(lse, sz(N));
  float* dz = s.out(dlogits, prod({N, V}));  // may alias logits
  cuda::crossentropy_backward(dz, g, z, t, l, N, V);
  s.finish();
}

void st_sample_tokens(int32_t* ids, float* logprobs, const float* logits, int N, int V,
                      const SamplingParams& params, const uint64_t* seeds,
                      const uint64_t* counters) {
  Stage s;
  const float* z = s.in(logits, prod({N, V}));
  const uint64_t* sd = s.in(seeds, sz(N));
  const uint64_t* ct = s.in(counters, sz(N));
  int32_t* d_ids = s.out(ids, sz(N));
  float* lp = s.out(logprobs, sz(N));
  cuda::sample_tokens(d_ids, lp, z, N, V, params, sd, ct);
  s.finish();
}

GrpoResult st_grpo_loss(float* grad, const float* logprobs, const float* old_logprobs,
                        const float* ref_logprobs, const float* advantages, const float* mask,
                        int S, int T, const GrpoParams& params) {
  Stage s;
  const size_t n = prod({S, T});
  const float* lp = s.in(logprobs, n);
  const float* old = s.in(old_logprobs, n);
  const float* ref = s.in(ref_logprobs, n);
  const float* adv = s.in(advantages, sz(S));
  const float* msk = s.in(mask, n);
  float* g = s.out(grad, n);
  GrpoResult r = cuda::grpo_loss(g, lp, old, ref, adv, msk, S, T, params);
  s.finish();
  return r;
}

void st_adamw_update(float* param, const float* grad, float* m, float* v, size_t n, double lr,
                     double beta1, double beta2, double eps, double weight_decay, int step) {
  Stage s;
  const float* g = s.in(grad, n);
  float* p = s.inout(param, n);
  float* dm = s.inout(m, n);
  float* dv = s.inout(v, n);
  cuda::adamw_update(p, g, dm, dv, n, lr, beta1, beta2, eps, weight_decay, step);
  s.finish();
}

double st_sum_squares(const float* x, size_t n) {
  Stage s;
  const float* d = s.in(x, n);
  double r = cuda::sum_squares(d, n);
  s.finish();
  return r;
}

// Host staging for row copies: plain host memcpy (the rows are host memory here).
void st_copy_rows(float* dst, const float* src, const int64_t* dst_off, const int64_t* src_off,
                  const int64_t* count, int n) {
  if (n <= 0) return;
  size_t nd = 0, ns = 0;  // the extents the runs touch
  for (int i = 0; i < n; i++) {
    nd = std::max(nd, (size_t)(dst_off[i] + count[i]));
    ns = std::max(ns, (size_t)(src_off[i] + count[i]));
  }
  Stage s;
  const float* d_src = s.in(src, ns);
  const int64_t* d_doff = s.in(dst_off, sz(n));
  const int64_t* d_soff = s.in(src_off, sz(n));
  const int64_t* d_count = s.in(count, sz(n));
  float* d_dst = s.inout(dst, nd);
  cuda::copy_rows(d_dst, d_src, d_doff, d_soff, d_count, n);
  s.finish();
}

void st_cast_bf16(uint16_t* out, const float* in, size_t n) {
  Stage s;
  const float* d_in = s.in(in, n);
  uint16_t* d_out = s.out(out, n);
  cuda::cast_bf16(d_out, d_in, n);
  s.finish();
}

void st_scale_inplace(float* x, size_t n, float sc) {
  Stage s;
  float* d = s.inout(x, n);
  cuda::scale_inplace(d, n, sc);
  s.finish();
}

void* host_alloc(size_t bytes) {
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  if (!p) throw std::bad_alloc();
  return p;
}
void host_free(void* p) { std::free(p); }
void host_copy(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void host_zero(void* p, size_t bytes) { std::memset(p, 0, bytes); }

}  // namespace

int cuda_device_count() { return device_info().count; }
const char* cuda_device_name() { return device_info().name.c_str(); }

namespace cuda {
void set_poison_staged_outputs(bool on) { g_poison = on; }
void synchronize() {
  cuda_detail::check(cudaDeviceSynchronize(), "synchronize");
  cuda_detail::check_launch("synchronize");
}
}  // namespace cuda

const Backend& cuda_backend() {
  static const Backend b = [] {
    Backend t{"cuda", false, /*concurrent_pieces=*/false, /*transposed_decode_weights=*/false, dev_alloc, dev_free, dev_upload, dev_download, dev_sync, dev_copy, dev_zero};
#define WST_CUDA_OP(op) t.op = &cuda::op;
    WST_BACKEND_OPS(WST_CUDA_OP)
#undef WST_CUDA_OP
    return t;
  }();
  return b;
}

const Backend& cuda_host_staging_backend() {
  static const Backend b = [] {
    Backend t{"cuda", true, /*concurrent_pieces=*/false, /*transposed_decode_weights=*/false, host_alloc, host_free, host_copy, host_copy, dev_sync, host_copy, host_zero};
#define WST_STAGED_OP(op) t.op = &st_##op;
    WST_BACKEND_OPS(WST_STAGED_OP)
#undef WST_STAGED_OP
    return t;
  }();
  return b;
}

}  // namespace wst
