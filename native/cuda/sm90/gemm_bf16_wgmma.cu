// Hopper (sm_90a) bf16 GEMM with wgmma: C (m,n) = alpha * A (m,k) @ B (n,k)^T + beta * C, A and B
// bf16 with k contiguous (a Linear layer's x @ W^T), fp32 accumulation and fp32 C.
// Built only for sm_90a (its own library, see CMakeLists.txt); gemm_bf16 (gemm_bf16.cu) calls it on
// a compute-capability 9.0 device for this layout when the 16-byte alignment rules hold, and falls
// back to the portable mma.sync kernel otherwise.
//
//  - A 256-thread block (two warpgroups) owns a 128 x 256 tile of C; warpgroup w computes rows
//    64 w .. 64 w + 63 with wgmma.m64n256k16 (128 fp32 accumulators per thread), both operands read
//    by the tensor cores straight from shared memory through matrix descriptors.
//  - k advances 64 at a time through a 4-stage ring filled by cp.async (16-byte chunks, zero-filled
//    outside the matrices), loads 2 k-steps ahead, and one wgmma group left running while the
//    next k-step's barrier and loads are issued. Tiles are stored K-major in the 128-byte swizzle the descriptors name:
//    row r of a tile is 128 bytes (64 bf16) at r * 128, its 16-byte chunk c at chunk c ^ (r % 8);
//    8-row groups are 1024 bytes apart (the descriptor's stride byte offset). The k16 steps inside
//    a 64-wide tile advance the descriptors' start address by 32 bytes.
//  - After its cp.async copies land, each thread fences the generic-to-async proxy before the
//    barrier, so the tensor cores see the data.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace wst::cuda::sm90 {
namespace {

constexpr int BM = 128, BN = 256, BK = 64, STAGES = 4, THREADS = 256;
// Tiles are loaded PREFETCH k-steps ahead; the stage a load overwrites was last read by the
// wgmma group of k-step kt - (STAGES - PREFETCH), which has completed because one group at most
// is left in flight (wgmma.wait_group 1).
constexpr int PREFETCH = STAGES - 2;
constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2, STAGE_BYTES = A_BYTES + B_BYTES;
constexpr size_t SMEM_BYTES = (size_t)STAGE_BYTES * STAGES + 1024;  // + alignment slack

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WST_WGMMA 1
#endif

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool full) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(full ? 16 : 0));
}

// K-major operand tile, 128-byte swizzle, 8-row groups 1024 bytes apart.
__device__ __forceinline__ uint64_t descriptor(uint32_t addr) {
  return (uint64_t)((addr & 0x3FFFF) >> 4) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}

// Rows [r0, r0 + ROWS) x k [k0, k0 + 64) of a row-major (rows x k) bf16 matrix -> the swizzled
// tile at `tile` (shared address), zero outside.
template <int ROWS>
__device__ __forceinline__ void load_tile(uint32_t tile, const uint16_t* g, long ld, int r0, int k0,
                                          int rows, int k) {
  constexpr int CHUNKS = ROWS * 8;
#pragma unroll
  for (int i = 0; i < CHUNKS / THREADS; i++) {
    const int chunk = threadIdx.x + i * THREADS, r = chunk / 8, c = chunk % 8;
    const int gr = r0 + r, gk = k0 + c * 8;
    const bool in = gr < rows && gk < k;
    cp_async_16(tile + r * 128 + ((c ^ (r & 7)) << 4), in ? g + (size_t)gr * ld + gk : g, in);
  }
}

__device__ __forceinline__ void wgmma_m64n256k16(float (&d)[128], uint64_t da, uint64_t db) {
#ifdef WST_WGMMA
  asm volatile(
      "{\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, 1, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db));
#endif
}

__global__ void __launch_bounds__(THREADS, 1)
gemm_bf16_tn_kernel(int m, int n, int k, float alpha, const uint16_t* __restrict__ A, long lda,
                    const uint16_t* __restrict__ B, long ldb, float beta, float* __restrict__ C,
                    long ldc) {
#ifdef WST_WGMMA
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const uint32_t raw = smem_addr(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  const int bm = blockIdx.y * BM, bn = blockIdx.x * BN;
  const int wg = threadIdx.x / 128;
  const int ktiles = (k + BK - 1) / BK;
  auto a_tile = [&](int s) { return base + (uint32_t)(s * STAGE_BYTES); };
  auto b_tile = [&](int s) { return base + (uint32_t)(s * STAGE_BYTES + A_BYTES); };
  auto load_stage = [&](int s, int kt) {
    load_tile<BM>(a_tile(s), A, lda, bm, kt * BK, m, k);
    load_tile<BN>(b_tile(s), B, ldb, bn, kt * BK, n, k);
  };

  float d[128];
#pragma unroll
  for (int i = 0; i < 128; i++) d[i] = 0.0f;

#pragma unroll
  for (int s = 0; s < PREFETCH; s++) {
    if (s < ktiles) load_stage(s, s);
    asm volatile("cp.async.commit_group;\n" ::);
  }
  for (int kt = 0; kt < ktiles; kt++) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(PREFETCH - 1));  // tile kt has landed
    asm volatile("fence.proxy.async.shared::cta;\n" ::);
    __syncthreads();  // tile kt visible to all; every thread is past k-step kt - 1's wait
    {
      const int next = kt + PREFETCH;
      if (next < ktiles) load_stage(next % STAGES, next);
      asm volatile("cp.async.commit_group;\n" ::);
    }
    const int s = kt % STAGES;
    const uint32_t a = a_tile(s) + (uint32_t)(wg * 64 * 128), b = b_tile(s);
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++)
      wgmma_m64n256k16(d, descriptor(a + kk * 32), descriptor(b + kk * 32));
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");  // this k-step may still run
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  asm volatile("cp.async.wait_group 0;\n" ::);

  // Accumulator layout (per warp, like mma.m16n8): d[4j + e] is row 16 w + g (+ 8 for e >= 2),
  // column 8 j + 2 t + (e % 2), w = warp in the warpgroup, g = lane / 4, t = lane % 4.
  const int warp = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int half = 0; half < 2; half++) {
    const int row = bm + wg * 64 + warp * 16 + g + half * 8;
    if (row >= m) continue;
    float* crow = C + (size_t)row * ldc;
#pragma unroll
    for (int j = 0; j < BN / 8; j++) {
      const int col = bn + 8 * j + 2 * t;
#pragma unroll
      for (int e = 0; e < 2; e++) {
        if (col + e >= n) continue;
        const float r = alpha * d[4 * j + 2 * half + e];
        crow[col + e] = beta == 0.0f ? r : r + beta * crow[col + e];
      }
    }
  }
#endif
}

}  // namespace

// Returns false (and does nothing) when the kernel cannot run here (no sm_90a image for this
// device); throws on launch errors.
bool gemm_bf16_tn(int m, int n, int k, float alpha, const uint16_t* A, long lda, const uint16_t* B,
                  long ldb, float beta, float* C, long ldc) {
  static const int usable = [] {
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
      return 0;
    if (major != 9 || minor != 0) return 0;
    cudaFuncAttributes attr;
    if (cudaFuncGetAttributes(&attr, gemm_bf16_tn_kernel) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    if (cudaFuncSetAttribute(gemm_bf16_tn_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)SMEM_BYTES) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return 1;
  }();
  if (!usable) return false;
  dim3 grid((n + BN - 1) / BN, (m + BM - 1) / BM);
  if (grid.y > 65535) return false;
  gemm_bf16_tn_kernel<<<grid, THREADS, SMEM_BYTES>>>(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("wst-dash CUDA gemm_bf16 (wgmma): ") + cudaGetErrorString(e));
  return true;
}

}  // namespace wst::cuda::sm90
