// A CPU emulator of the small part of CUDA that native/cuda/*.cu uses, so that the very same
// kernel sources compile with the host C++ compiler and run in the native tests on machines
// without a GPU (CI). It checks the kernels' logic (indexing, tiling, reductions, the sampling
// descent, barriers), not their speed or the real device's floating-point library.
//
// Model: a launch runs its blocks one after another; a block's threads are fibers (ucontext)
// scheduled cooperatively, switching only inside __syncthreads() and the warp intrinsics. Each
// round of the scheduler visits the live threads in a freshly shuffled order, so a read of shared
// data that another thread writes later in the same phase (a missing barrier) tends to show up as
// a wrong result. A barrier that not every live thread reaches (divergent __syncthreads, a warp
// intrinsic skipped by some lanes) is reported as a deadlock and aborts. __shared__ variables are
// static storage shared by the block's fibers. Device memory is host memory; copies are memcpy.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#define WST_CUDA_EMULATOR 1

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct alignas(16) float4 {
  float x, y, z, w;
};

namespace wst_emu {
extern dim3 g_threadIdx, g_blockIdx, g_blockDim, g_gridDim;
void launch(dim3 grid, dim3 block, const std::function<void()>& body);
// Device-pointer bookkeeping (cudaMalloc records every allocation): a kernel argument or copy
// side that must be device memory but is not aborts with a message.
bool is_device_pointer(const void* p);
void require_device_pointer(const void* p, const char* what);
template <class... Args>
inline void check_kernel_args(const char* kernel, const Args&... args) {
  auto one = [&](const auto& a) {
    if constexpr (std::is_pointer_v<std::decay_t<decltype(a)>>) require_device_pointer((const void*)a, kernel);
  };
  (one(args), ...);
}
void syncthreads();
// Every lane of the calling thread's warp contributes v; all receive the 32 values.
void warp_exchange(uint64_t v, uint64_t out[32]);
inline int lane_id() {
  return (int)((g_threadIdx.x + g_blockDim.x * (g_threadIdx.y + g_blockDim.y * g_threadIdx.z)) & 31);
}
template <class T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8, "warp values up to 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
}  // namespace wst_emu

#define threadIdx (::wst_emu::g_threadIdx)
#define blockIdx (::wst_emu::g_blockIdx)
#define blockDim (::wst_emu::g_blockDim)
#define gridDim (::wst_emu::g_gridDim)

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

inline void __syncthreads() { ::wst_emu::syncthreads(); }

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int mask) {
  uint64_t all[32];
  ::wst_emu::warp_exchange(::wst_emu::to_bits(v), all);
  return ::wst_emu::from_bits<T>(all[(::wst_emu::lane_id() ^ mask) & 31]);
}
template <class T>
inline T __shfl_up_sync(unsigned, T v, unsigned delta) {
  uint64_t all[32];
  ::wst_emu::warp_exchange(::wst_emu::to_bits(v), all);
  const int lane = ::wst_emu::lane_id();
  return ::wst_emu::from_bits<T>(all[lane >= (int)delta ? lane - (int)delta : lane]);
}
inline unsigned __ballot_sync(unsigned, int pred) {
  uint64_t all[32];
  ::wst_emu::warp_exchange(pred ? 1u : 0u, all);
  unsigned m = 0;
  for (int i = 0; i < 32; i++) m |= (all[i] ? 1u : 0u) << i;
  return m;
}

// Fibers switch only at barriers, so read-modify-write is atomic here.
template <class T>
inline T atomicAdd(T* p, T v) {
  T old = *p;
  *p = old + v;
  return old;
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
// IEEE single operations, round to nearest (host SSE arithmetic without FMA contraction).
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline unsigned long long __double2ull_rn(double d) { return (unsigned long long)std::nearbyint(d); }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }

// ---- runtime API subset ------------------------------------------------------------------------
enum cudaError_t { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorInvalidValue = 1 };
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
};
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
  cudaDevAttrMemoryPoolsSupported = 115,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
template <class F>
inline cudaError_t cudaFuncSetAttribute(F*, cudaFuncAttribute, int) { return cudaSuccess; }
enum cudaMemPoolAttr { cudaMemPoolAttrReleaseThreshold = 4 };
using cudaStream_t = void*;
using cudaMemPool_t = void*;
struct cudaDeviceProp {
  char name[256];
  int major, minor;
};

const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int dev);
cudaError_t cudaGetDevice(int* dev);
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int dev);
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int dev);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value);
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t stream);
cudaError_t cudaFree(void* p);
cudaError_t cudaFreeAsync(void* p, cudaStream_t stream);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemset(void* p, int value, size_t bytes);
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  return cudaMemset(p, value, bytes);
}
cudaError_t cudaDeviceSynchronize();
