// SGEMM, BLIS-style: C (m,n) = alpha * op(A) @ op(B) + beta * C, row-major.
//
// Loops: pc over k in equal blocks of at most KC (a function of k and the SIMD path, never of
// the thread count) ->
// pack A[:, pc] into MR-row panels -> jc over n in blocks of NC -> pack B[pc, jc] into
// KC x NR panels -> a grid of (row panels x column panels) tasks, each running the register
// micro-kernel over its tiles (A panel in L1, the B block in L2). Every C element is summed
// by one micro-kernel call per k block, in the same order whatever the tiling or the thread
// count, so results are bit-identical for any thread count (only M and N are split).
// With several threads and a wide C (>= 8 NC blocks), the tasks split the columns instead: each
// packs its own B for whole NC blocks and runs every row panel over it (see blocked()).
//
// Shape-chosen special paths (the choice depends on m only, never on threads):
// - m <= MR with B not transposed: the micro-kernel reads B in place (no B packing);
// - m <= 16 with transB (decode: x @ W^T): a dot-product kernel along k, reading W once.
//
// The micro-kernels live in gemm_avx512.cpp / gemm_avx2.cpp (compiled with SIMD flags) and
// below (generic, plain C++). The path is picked once at load from the CPU features, and may
// be lowered with WST_DASH_ISA=generic|avx2|avx512.
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../kernels.h"
#include "gemm_kernels.h"
#include "threadpool.h"

namespace wst {
namespace gemm_detail {
namespace {

// ---- generic path: plain C++ (the baseline flags: SSE2 on x86-64) ------------------------
constexpr int G_MR = 4, G_NR = 8, G_KC = 256;

template <int MR_>
void generic_kern(long kc, const float* A, const float* B, long ldb, float* C, long ldc, int nr,
                  float alpha, float beta) {
  float acc[MR_][G_NR] = {};
  for (long p = 0; p < kc; p++) {
    for (int i = 0; i < MR_; i++) {
      float a = A[i];
      for (int j = 0; j < G_NR; j++) acc[i][j] += a * B[j];
    }
    A += MR_;
    B += ldb;
  }
  for (int i = 0; i < MR_; i++) {
    float* c = C + i * ldc;
    for (int j = 0; j < nr; j++) {
      float r = alpha * acc[i][j];
      c[j] = beta == 0.0f ? r : r + beta * c[j];
    }
  }
}

float generic_fma_loop(long iters) {
  float acc[32];
  for (int j = 0; j < 32; j++) acc[j] = 0.5f + 0.01f * j;
  for (long it = 0; it < iters; it++)
    for (int j = 0; j < 32; j++) acc[j] = acc[j] * 0.9999f + 0.0001f;
  float s = 0;
  for (int j = 0; j < 32; j++) s += acc[j];
  return s;
}

const KernelSet kGeneric = {
    "generic", G_MR, G_NR, G_KC,
    {nullptr, generic_kern<1>, generic_kern<2>, generic_kern<3>, generic_kern<4>, nullptr, nullptr,
     nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr},
    nullptr, nullptr, nullptr, generic_fma_loop, 2L * 32};

const KernelSet& choose_kernels() {
  int want = 2;  // 0 generic, 1 avx2, 2 avx512
  if (const char* env = std::getenv("WST_DASH_ISA")) {
    if (std::strcmp(env, "generic") == 0) want = 0;
    else if (std::strcmp(env, "avx2") == 0) want = 1;
  }
#if defined(WST_HAVE_X86_SIMD)
  __builtin_cpu_init();
  if (want >= 2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("fma"))
    return *kernels_avx512();
  if (want >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return *kernels_avx2();
#else
  (void)want;
#endif
  return kGeneric;
}

// ---- packing ---------------------------------------------------------------------------
// A panel (mr rows from row i0, k from pc): dst[p*mr + i] = op(A)[i0+i, pc+p]
void pack_a(const KernelSet& K, float* dst, const float* A, long lda, bool transA, int i0, int mr,
            int pc, int kc) {
  if (!transA && K.tpack) {
    K.tpack(dst, mr, A + (long)i0 * lda + pc, lda, mr, kc);
  } else if (transA && K.cpack) {  // A is (k,m): row p of op(A)^T is contiguous
    K.cpack(dst, mr, A + (long)pc * lda + i0, lda, mr, mr, kc);
  } else if (transA) {
    for (int p = 0; p < kc; p++) {
      const float* s = A + (long)(pc + p) * lda + i0;
      for (int i = 0; i < mr; i++) dst[p * mr + i] = s[i];
    }
  } else {
    for (int i = 0; i < mr; i++) {
      const float* s = A + (long)(i0 + i) * lda + pc;
      for (int p = 0; p < kc; p++) dst[p * mr + i] = s[p];
    }
  }
}

// B panel (nr <= NR columns from j0, k from pc), zero-padded to NR: dst[p*NR + j] = op(B)[pc+p, j0+j]
void pack_b(const KernelSet& K, float* dst, int NR, const float* B, long ldb, bool transB, int j0,
            int nr, int pc, int kc) {
  if (transB) {  // B is (n,k)
    if (K.tpack) {
      K.tpack(dst, NR, B + (long)j0 * ldb + pc, ldb, nr, kc);
    } else {
      for (int j = 0; j < nr; j++) {
        const float* s = B + (long)(j0 + j) * ldb + pc;
        for (int p = 0; p < kc; p++) dst[p * NR + j] = s[p];
      }
    }
    if (nr < NR)
      for (int p = 0; p < kc; p++)
        for (int j = nr; j < NR; j++) dst[p * NR + j] = 0.0f;
  } else if (K.cpack) {
    K.cpack(dst, NR, B + (long)pc * ldb + j0, ldb, nr, NR, kc);
  } else {
    for (int p = 0; p < kc; p++) {
      const float* s = B + (long)(pc + p) * ldb + j0;
      float* d = dst + p * NR;
      std::memcpy(d, s, sizeof(float) * nr);
      for (int j = nr; j < NR; j++) d[j] = 0.0f;
    }
  }
}

// A 64-byte aligned scratch buffer owned by the calling thread (workers read it during the
// parallel regions of that call only).
struct Scratch {
  float* p = nullptr;
  size_t cap = 0;
  float* get(size_t n) {
    if (n > cap) {
      std::free(p);
      size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
      p = (float*)std::aligned_alloc(64, bytes);
      if (!p) throw std::bad_alloc();
      cap = n;
    }
    return p;
  }
  ~Scratch() { std::free(p); }
};
thread_local Scratch scratch_a, scratch_b;
thread_local Scratch scratch_bt;  // a column task's own B block (on the thread that runs it)

constexpr double kSerialWork = 96.0 * 96 * 96;  // m*n*k below this: one thread, no pool
// Tuning knobs (compile-time overrides for experiments).
#ifndef WST_GEMM_DOT_MAX_M
#define WST_GEMM_DOT_MAX_M 16
#endif
#ifndef WST_GEMM_NC_PANELS
#define WST_GEMM_NC_PANELS 16  // NC = 16 * NR: 512 columns with AVX-512 (a 1 MiB B block at KC 512)
#endif
constexpr int kDotMaxM = WST_GEMM_DOT_MAX_M;        // m <= this, transB, !transA: dot kernel
#ifndef WST_GEMM_COL_BLOCKS
#define WST_GEMM_COL_BLOCKS 8
#endif
constexpr int kColBlocks = WST_GEMM_COL_BLOCKS;  // n >= this many NC blocks: column tasks

void scale_c(int m, int n, float beta, float* C, long ldc) {
  for (int i = 0; i < m; i++) {
    float* c = C + (long)i * ldc;
    if (beta == 0.0f) std::memset(c, 0, sizeof(float) * n);
    else if (beta != 1.0f)
      for (int j = 0; j < n; j++) c[j] *= beta;
  }
}

int ceil_div(long a, long b) { return (int)((a + b - 1) / b); }

void blocked(const KernelSet& K, bool transA, bool transB, int m, int n, int k, float alpha,
             const float* A, long lda, const float* B, long ldb, float beta, float* C, long ldc,
             int tasks_target) {
  const int MR = K.mr, NR = K.nr;
  // Equal k blocks of at most K.kc (a multiple of 16): a function of k alone.
  const int KC = ceil_div(ceil_div(k, ceil_div(k, K.kc)), 16) * 16;
  const int NC = WST_GEMM_NC_PANELS * NR;
  // Up to 3 row panels (decode shards, with the model's transposed weights): B read in place, not
  // packed; the same products in the same order either way (same bits).
  const bool direct = !transB && m <= 3 * MR;
  const int np = ceil_div(m, MR);  // row panels
  float* Ap = scratch_a.get((size_t)np * MR * (k < KC ? k : KC));
  float* Bp = scratch_b.get((size_t)(k < KC ? k : KC) * (direct ? NR : NC));
  const bool par = tasks_target > 1;

  // Wide C (at least kColBlocks NC blocks, e.g. the LM head: n = vocab): column tasks. Each task
  // owns a range of whole NC blocks, packs its own B for them (no B block shared between cores)
  // and runs every row panel over it, so a k block costs two parallel regions (pack A, then the
  // tasks) instead of two per NC block (64 regions of ~0.2 ms each for 512 x 512 x 8192 on AVX2,
  // where the row split's per-region cost took ~15 % at 2 threads). Narrower shapes keep the row
  // split below, which measured faster for them (A packed once and reused from L1 across a whole
  // NC block). Each C tile still gets one micro-kernel call per k block, k blocks in order: the
  // same bits either way.
  const int nblocks = ceil_div(n, NC);
  const int col_tasks = tasks_target < nblocks ? tasks_target : nblocks;
  if (par && !direct && nblocks >= kColBlocks && col_tasks >= 2 * num_threads()) {
    for (int pc = 0; pc < k; pc += KC) {
      const int kc = k - pc < KC ? k - pc : KC;
      const float beta_k = pc == 0 ? beta : 1.0f;
      const int g = ceil_div(np, 2 * tasks_target);
      parallel_for(ceil_div(np, g), [&](int t) {
        for (int r = t * g; r < (t + 1) * g && r < np; r++) {
          int i0 = r * MR, mr = m - i0 < MR ? m - i0 : MR;
          pack_a(K, Ap + (size_t)r * MR * kc, A, lda, transA, i0, mr, pc, kc);
        }
      });
      parallel_for(col_tasks, [&](int t) {
        const int b0 = (int)((long)t * nblocks / col_tasks), b1 = (int)((long)(t + 1) * nblocks / col_tasks);
        float* Bt = scratch_bt.get((size_t)kc * NC);
        for (int jc = b0 * NC; jc < b1 * NC && jc < n; jc += NC) {
          const int nc = n - jc < NC ? n - jc : NC, nq = ceil_div(nc, NR);
          for (int q = 0; q < nq; q++) {
            const int j0 = q * NR, nr = nc - j0 < NR ? nc - j0 : NR;
            pack_b(K, Bt + (size_t)q * NR * kc, NR, B, ldb, transB, jc + j0, nr, pc, kc);
          }
          for (int r = 0; r < np; r++) {
            const int i0 = r * MR, mr = m - i0 < MR ? m - i0 : MR;
            const float* a = Ap + (size_t)r * MR * kc;
            const MicroKernel kern = K.kern[mr];
            for (int q = 0; q < nq; q++) {
              const int j0 = q * NR, nr = nc - j0 < NR ? nc - j0 : NR;
              kern(kc, a, Bt + (size_t)q * NR * kc, NR, C + (long)i0 * ldc + jc + j0, ldc, nr, alpha, beta_k);
            }
          }
        }
      });
    }
    return;
  }

  for (int pc = 0; pc < k; pc += KC) {
    const int kc = k - pc < KC ? k - pc : KC;
    const float beta_k = pc == 0 ? beta : 1.0f;
    // A[:, pc:pc+kc] is packed once per k block; panel r starts at r*MR*kc. When the tasks
    // split rows only, each task packs its own panels (one barrier fewer).
    auto pack_a_panels = [&](int r0, int r1) {
      for (int r = r0; r < r1; r++) {
        int i0 = r * MR, mr = m - i0 < MR ? m - i0 : MR;
        pack_a(K, Ap + (size_t)r * MR * kc, A, lda, transA, i0, mr, pc, kc);
      }
    };
    bool a_packed = false;

    for (int jc = 0; jc < n; jc += NC) {
      const int nc = n - jc < NC ? n - jc : NC;
      const int nq = ceil_div(nc, NR);  // column panels
      const int nfull = nc / NR;
      if (!direct) {
        auto pack_b_panels = [&](int q0, int q1) {
          for (int q = q0; q < q1; q++) {
            int j0 = q * NR, nr = nc - j0 < NR ? nc - j0 : NR;
            pack_b(K, Bp + (size_t)q * NR * kc, NR, B, ldb, transB, jc + j0, nr, pc, kc);
          }
        };
        if (par && nq >= 4) parallel_for(nq, [&](int q) { pack_b_panels(q, q + 1); });
        else pack_b_panels(0, nq);
      } else if (nfull < nq) {
        pack_b(K, Bp, NR, B, ldb, false, jc + nfull * NR, nc - nfull * NR, pc, kc);
      }

      // Task grid: rows first (each task re-reads the B block from its core's L2).
      // Near-equal ranges, so that the threads finish together.
      const int rt = np < tasks_target ? np : tasks_target;
      int ct = ceil_div(tasks_target, rt);
      if (ct > nq) ct = nq;
      const bool fuse_a = !a_packed && ct == 1;
      if (!a_packed && !fuse_a) {
        int g = ceil_div(np, 2 * tasks_target);
        parallel_for(ceil_div(np, g), [&](int t) { pack_a_panels(t * g, (t + 1) * g < np ? (t + 1) * g : np); });
      }
      a_packed = true;
      auto run_task = [&](int t) {
        const int tr = t / ct, tc = t % ct;
        const int r0 = (int)((long)tr * np / rt), r1 = (int)((long)(tr + 1) * np / rt);
        const int q0 = (int)((long)tc * nq / ct), q1 = (int)((long)(tc + 1) * nq / ct);
        if (fuse_a) pack_a_panels(r0, r1);
        for (int r = r0; r < r1; r++) {
          const int i0 = r * MR, mr = m - i0 < MR ? m - i0 : MR;
          const float* a = Ap + (size_t)r * MR * kc;
          const MicroKernel kern = K.kern[mr];
          for (int q = q0; q < q1; q++) {
            const int j0 = q * NR, nr = nc - j0 < NR ? nc - j0 : NR;
            const float* b;
            long ldbp;
            if (!direct) b = Bp + (size_t)q * NR * kc, ldbp = NR;
            else if (q < nfull) b = B + (long)pc * ldb + jc + j0, ldbp = ldb;
            else b = Bp, ldbp = NR;
            kern(kc, a, b, ldbp, C + (long)i0 * ldc + jc + j0, ldc, nr, alpha, beta_k);
          }
        }
      };
      if (par) parallel_for(rt * ct, run_task);
      else run_task(0);
    }
  }
}

}  // namespace

const KernelSet* kernels_generic() { return &kGeneric; }

const KernelSet& active_kernels() {
  static const KernelSet& k = choose_kernels();
  return k;
}

}  // namespace gemm_detail

void sgemm(bool transA, bool transB, int m, int n, int k, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  using namespace gemm_detail;
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.0f) {
    scale_c(m, n, beta, C, ldc);
    return;
  }
  // Flushing whether or not the work below goes through the pool (small shapes, one thread): the
  // same bits for any thread count (threadpool.h).
  FlushSubnormals ftz;
  const KernelSet& K = active_kernels();
  const double work = (double)m * n * k;
  const int nt = num_threads();
  // Any split over M/N gives the same bits, so the task count may follow the pool size.
  const int tasks = (nt <= 1 || work < kSerialWork) ? 1 : 4 * nt;

  if (transB && !transA && K.dot && m <= kDotMaxM) {
    // Few rows: the cost is streaming B (n x k), not FLOPs, so split by B's size. A batch-1 decode
    // GEMV (k 512, n 1536: 3 MiB) then uses every core instead of one.
    const int dot_tasks = (nt <= 1 || (double)n * k < 65536.0) ? 1 : 2 * nt;
    if (dot_tasks == 1) {
      K.dot(m, 0, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
      return;
    }
    // Chunks start at multiples of 48 so that every path's column tiles (3 wide on AVX2, 4 on
    // AVX-512, 16-lane vectors) line up with the serial call: the same bits for any thread count.
    int chunk = ceil_div(ceil_div(n, dot_tasks), 48) * 48;
    parallel_for(ceil_div(n, chunk), [&](int t) {
      int j0 = t * chunk, j1 = j0 + chunk < n ? j0 + chunk : n;
      K.dot(m, j0, j1, k, alpha, A, lda, B, ldb, beta, C, ldc);
    });
    return;
  }
  blocked(K, transA, transB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, tasks);
}

const char* cpu_isa() { return gemm_detail::active_kernels().name; }

namespace {
volatile float g_fma_sink;  // keeps the FMA loops' results alive
}

double fma_peak_gflops(double seconds, int threads) {
  using clock = std::chrono::steady_clock;
  const auto& K = gemm_detail::active_kernels();
  if (threads < 1) threads = 1;
  if (threads > 1024) threads = 1024;
  // Calibrate on one thread, then run `threads` copies at once.
  long iters = 1 << 14;
  for (;;) {
    auto t0 = clock::now();
    g_fma_sink = K.fma_loop(iters);
    double dt = std::chrono::duration<double>(clock::now() - t0).count();
    if (dt > 0.02 || iters > (1L << 40)) {
      iters = (long)(iters * (seconds / dt)) + 1;
      break;
    }
    iters *= 4;
  }
  auto t0 = clock::now();
  float sinks[1024] = {};
  parallel_for(threads, [&](int t) { sinks[t & 1023] = K.fma_loop(iters); });
  double dt = std::chrono::duration<double>(clock::now() - t0).count();
  g_fma_sink = sinks[0];
  return (double)iters * K.fma_flops_per_iter * threads / dt * 1e-9;
}

double read_bandwidth_gbps(size_t bytes, double seconds, int threads) {
  using clock = std::chrono::steady_clock;
  if (threads < 1) threads = 1;
  if (threads > 1024) threads = 1024;
  const size_t n = bytes / sizeof(float) < 1024 ? 1024 : bytes / sizeof(float);
  std::vector<std::vector<float>> bufs(threads);
  parallel_for(threads, [&](int t) { bufs[t].assign(n, 1.0f + t); });  // first touch on its thread
  auto sweep = [&](const float* x) {
    float acc[16] = {};
    for (size_t i = 0; i + 16 <= n; i += 16)
      for (int j = 0; j < 16; j++) acc[j] += x[i + j];
    float s = 0;
    for (float v : acc) s += v;
    return s;
  };
  auto t0 = clock::now();
  long sweeps = 0;
  for (; std::chrono::duration<double>(clock::now() - t0).count() < seconds * 0.1; sweeps++) g_fma_sink = sweep(bufs[0].data());
  const double per = std::chrono::duration<double>(clock::now() - t0).count() / (double)sweeps;
  const long reps = (long)(seconds / per) + 1;
  float sinks[1024] = {};
  t0 = clock::now();
  parallel_for(threads, [&](int t) {
    for (long r = 0; r < reps; r++) sinks[t] += sweep(bufs[t].data());
  });
  const double dt = std::chrono::duration<double>(clock::now() - t0).count();
  g_fma_sink = sinks[0];
  return (double)reps * threads * (n / 16 * 16) * sizeof(float) / dt * 1e-9;
}

}  // namespace wst
