// Shared helpers for the CUDA twins: error checks, launch sizing, block reductions, and a
// per-host-thread device scratch buffer. Included by every native/cuda/*.cu file.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>

#include "../kernels.h"

// Kernel launch on the legacy default stream. Spelled as a macro so that the same sources also
// build for the CPU emulator of the native tests (native/tests/emu/), where a launch runs the
// block's threads as fibers.
// WST_LAUNCH_SMEM also passes a dynamic shared-memory size, which a kernel declares with
// WST_DYNAMIC_SMEM(type, name, max_bytes) (a static array of max_bytes in the emulator).
#ifdef WST_CUDA_EMULATOR
#define WST_LAUNCH(kernel, grid, block, ...)                 \
  (::wst_emu::check_kernel_args(#kernel, __VA_ARGS__),        \
   ::wst_emu::launch(dim3(grid), dim3(block), [&] { kernel(__VA_ARGS__); }))
#define WST_LAUNCH_SMEM(kernel, grid, block, smem_bytes, ...) \
  (::wst_emu::check_kernel_args(#kernel, __VA_ARGS__),        \
   ::wst_emu::launch(dim3(grid), dim3(block), [&] { kernel(__VA_ARGS__); }))
#define WST_DYNAMIC_SMEM(type, name, max_bytes) \
  alignas(128) static type name[(max_bytes) / sizeof(type)]
#else
#define WST_LAUNCH(kernel, grid, block, ...) kernel<<<(grid), (block)>>>(__VA_ARGS__)
#define WST_LAUNCH_SMEM(kernel, grid, block, smem_bytes, ...) \
  kernel<<<(grid), (block), (smem_bytes)>>>(__VA_ARGS__)
#define WST_DYNAMIC_SMEM(type, name, max_bytes) extern __shared__ __align__(128) type name[]
#endif

namespace wst::cuda_detail {

[[noreturn]] inline void fail(cudaError_t e, const char* what) {
  if (e == cudaErrorMemoryAllocation) throw std::bad_alloc();
  throw std::runtime_error(std::string("wst-dash CUDA: ") + what + ": " + cudaGetErrorString(e));
}

// Throws on a launch/configuration error of the last kernel (asynchronous errors surface at the
// next synchronising call: a copy, a download, or synchronize()).
inline void check_launch(const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail(e, what);
}

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(e, what);
}

inline unsigned grid_for(size_t n, int threads, size_t cap = 65535u * 64) {
  size_t g = (n + (size_t)threads - 1) / (size_t)threads;
  if (g < 1) g = 1;
  return (unsigned)(g > cap ? cap : g);
}

// A grow-only device buffer private to the calling host thread. Kernels that need scratch
// (partial sums, per-row stats) take it from here; the legacy default stream orders every use
// by the same thread, and other threads have their own buffer, so there is no race.
void* thread_scratch(size_t bytes);
// A small (<= 256 bytes) device buffer private to the calling host thread, apart from the scratch
// (which may be reallocated by the next op), for results copied back to the host.
void* thread_result_slot(size_t bytes);
// Multiprocessors of the current device (1 when unknown); cached.
int device_multiprocessors();

// ---- reductions ------------------------------------------------------------------------------

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// NaN-propagating max (NaN wins, as the CPU softmax rows do).
__device__ __forceinline__ float max_nan(float a, float b) { return (b > a || b != b) ? b : a; }

// Max that ignores NaN (the sampler's key: NaN counts as -inf).
__device__ __forceinline__ float max_ign(float a, float b) { return b > a ? b : a; }

__device__ __forceinline__ float warp_max_nan(float v) {
  for (int o = 16; o > 0; o >>= 1) v = max_nan(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_max_ign(float v) {
  for (int o = 16; o > 0; o >>= 1) v = max_ign(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide reduction; every thread gets the result. `sh` holds at least 32 T.
// The combination order depends only on blockDim, so results are deterministic.
template <class T, class Op>
__device__ T block_reduce(T v, T* sh, Op op, T identity) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // sh may still be read by a previous reduction
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  T r = lane < nw ? sh[lane] : identity;
  if (wid == 0) {
    for (int o = 16; o > 0; o >>= 1) r = op(r, __shfl_xor_sync(0xffffffffu, r, o));
    if (lane == 0) sh[0] = r;
  }
  __syncthreads();
  return sh[0];
}

struct SumOp {
  template <class T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct MaxNanOp {
  __device__ float operator()(float a, float b) const { return max_nan(a, b); }
};
struct MaxIgnOp {
  __device__ float operator()(float a, float b) const { return max_ign(a, b); }
};

template <class T>
__device__ T block_sum(T v, T* sh) { return block_reduce(v, sh, SumOp{}, T(0)); }

}  // namespace wst::cuda_detail
