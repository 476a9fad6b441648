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

// Every op of the op list (backend.h), with the signature of its CPU kernel in kernels.h (declared
// from it: a CUDA twin cannot drift from the CPU signature). Notes on some of them:
//  - attention_decode_shared: the grouping hint is not used on the GPU (each slot's copy is read;
//    decode there is launch-bound, not bandwidth-bound, at these sizes).
#define WST_CUDA_DECLARE(op) decltype(::wst::op) op;
WST_BACKEND_OPS(WST_CUDA_DECLARE)
#undef WST_CUDA_DECLARE

// The same op with the result left in device memory (no synchronisation): for pipelines that
// keep going on the device, and for timing the kernels alone.
void grpo_loss_async(GrpoResult* device_result, float* grad, const float* logprobs,
                     const float* old_logprobs, const float* ref_logprobs,
                     const float* advantages, const float* mask, int S, int T,
                     const GrpoParams& params);
// Benchmarks and tests: 0 = choose (default), 1 = the fused one-kernel path, 2 = the three-kernel
// path (counts, weights, tokens). Not thread-safe; results are the same either way.
void grpo_set_path(int path);
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
