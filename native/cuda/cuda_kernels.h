// The CUDA twins of kernels.h: the same signatures and semantics, with every pointer (floats
// and the int arrays: ids, positions, lengths, seeds, counters) in DEVICE memory. Plain C++
// header: the binding and the native tests include it without nvcc.
//
// Each op is enqueued on the legacy default stream and returns without waiting, except those
// that return a value to the host (grpo_loss, sum_squares), which synchronise. Errors throw
// std::runtime_error (std::bad_alloc when device memory runs out).
//
// Where the CUDA result may differ from the CPU kernel (all within float tolerance unless said):
//  - float sums run in a different order (GEMM, attention, RMSNorm's dinp, softmax family,
//    SwiGLU's exp); every kernel is deterministic (no float atomics, fixed launch shapes);
//  - bit-identical to the CPU by construction: RoPE, AdamW, residual, embedding (both ways),
//    RMSNorm's dweight, scale_inplace, and the Philox draws;
//  - sample_tokens: same Philox draw and the same fp32 weights (bit-identical exp), masses summed
//    exactly in 2^-44 fixed point instead of float64 in canonical order, so a draw can differ
//    only when u * Z falls within ~1e-12 (relative) of a cumulative-mass boundary.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../backend.h"

namespace wst {

// Number of usable CUDA devices; 0 when there is no driver, no device, or any CUDA error.
// Never throws or aborts.
int cuda_device_count();
// Name of device 0 ("" when there is none).
const char* cuda_device_name();

// The CUDA backend: alloc/free/upload/download with cudaMalloc/cudaMemcpy, ops on device
// pointers (host_memory = false).
const Backend& cuda_backend();

// The same ops taking HOST pointers: each call uploads its inputs to device scratch, runs the
// CUDA op, and downloads its outputs (host_memory = true, so callers treat it like the CPU).
// For the kernel API (src/kernels via the binding) and for tests. It is not how a model should
// run on the GPU: device-resident weights, caches and optimiser state need cuda_backend() and a
// model that keeps its buffers there (not done yet: native/model requires host memory).
const Backend& cuda_host_staging_backend();

namespace cuda {

void sgemm(bool transA, bool transB, int m, int n, int k, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc);
void sgemm_tf32(bool transA, bool transB, int m, int n, int k, float alpha, const float* A,
                int lda, const float* B, int ldb, float beta, float* C, int ldc);
void gemm_bf16(bool transA, bool transB, int m, int n, int k, float alpha, const uint16_t* A,
               int lda, const uint16_t* B, int ldb, float beta, float* C, int ldc);
void attention_forward_bf16(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k,
                            const uint16_t* v, int B, int H, int KVH, int Tq, int Tk, int D,
                            bool causal);
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int B, int H, int KVH, int Tq, int Tk, int D, bool causal);
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse, int B,
                        int H, int KVH, int Tq, int Tk, int D, bool causal);
void attention_decode(float* out, const float* q, const float* kcache, const float* vcache,
                      const int32_t* lengths, int B, int H, int KVH, int maxT, int D);
// The grouping hint of wst::attention_decode_shared is not used on the GPU (each slot's copy is
// read; decode there is launch-bound, not bandwidth-bound, at these sizes).
void attention_decode_shared(float* out, const float* q, const float* kcache, const float* vcache,
                             const int32_t* lengths, int B, int H, int KVH, int maxT, int D,
                             const int32_t* members, const int32_t* group_start,
                             const int32_t* shared_len, int n_groups);
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps);
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C);
void rope_forward(float* out, const float* inp, const int32_t* positions, int N, int H, int D,
                  float theta);
void rope_backward(float* dinp, const float* dout, const int32_t* positions, int N, int H, int D,
                   float theta);
void swiglu_forward(float* out, const float* gate, const float* up, int N, int C);
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                     const float* up, int N, int C);
void embedding_forward(float* out, const int32_t* ids, const float* table, int N, int V, int C);
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int N, int V, int C);
void residual_forward(float* out, const float* a, const float* b, size_t n);
void residual_backward(float* da, float* db, const float* dout, size_t n);
void softmax_forward(float* probs, const float* logits, int N, int V);
void log_softmax_forward(float* out, const float* logits, int N, int V);
void token_logprobs_forward(float* logprob, float* lse, float* entropy, const float* logits,
                            const int32_t* ids, int N, int V);
void token_logprobs_backward(float* dlogits, const float* dlogprob, const float* dentropy,
                             const float* logits, const int32_t* ids, const float* lse,
                             const float* entropy, int N, int V);
void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                          int N, int V);
void crossentropy_backward(float* dlogits, const float* dlosses, const float* logits,
                           const int32_t* targets, const float* lse, int N, int V);
void sample_tokens(int32_t* ids, float* logprobs, const float* logits, int N, int V,
                   const SamplingParams& params, const uint64_t* seeds, const uint64_t* counters);
GrpoResult grpo_loss(float* grad, const float* logprobs, const float* old_logprobs,
                     const float* ref_logprobs, const float* advantages, const float* mask,
                     int S, int T, const GrpoParams& params);
// The same op with the result left in device memory (no synchronisation): for pipelines that
// keep going on the device, and for timing the kernels alone.
void grpo_loss_async(GrpoResult* device_result, float* grad, const float* logprobs,
                     const float* old_logprobs, const float* ref_logprobs,
                     const float* advantages, const float* mask, int S, int T,
                     const GrpoParams& params);
// Benchmarks and tests: 0 = choose (default), 1 = the fused one-kernel path, 2 = the three-kernel
// path (counts, weights, tokens). Not thread-safe; results are the same either way.
void grpo_set_path(int path);
void adamw_update(float* param, const float* grad, float* m, float* v, size_t n, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int step);
double sum_squares(const float* x, size_t n);
void scale_inplace(float* x, size_t n, float s);
void copy_rows(float* dst, const float* src, const int64_t* dst_off, const int64_t* src_off,
               const int64_t* count, int n);

// Tests: out[i] = philox_uniform(keys[i], counters[i]) computed on the device (device pointers).
void philox_uniform_batch(float* out, const uint64_t* keys, const uint64_t* counters, int n);
// Waits for all enqueued work and throws on any pending asynchronous error.
void synchronize();
// Tests: when on, the host-staging backend fills every output-only device buffer with 0xFF bytes
// (NaN for floats, -1 for ints) before running the op, so an element the kernel forgets to write
// cannot pass by holding a stale value.
void set_poison_staged_outputs(bool on);

}  // namespace cuda
}  // namespace wst
