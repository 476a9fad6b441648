// The CPU emulator's scheduler and runtime API (see include/cuda_runtime.h for the model).
#include <map>
#include <sys/mman.h>
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "cuda_runtime.h"

// Fiber switch. On x86-64 a minimal switch of the callee-saved registers and the stack pointer
// (swapcontext also saves the signal mask with a system call, 50x slower); elsewhere ucontext.
#if defined(__x86_64__)
extern "C" void wst_emu_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.globl wst_emu_switch
.type wst_emu_switch,@function
wst_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size wst_emu_switch,.-wst_emu_switch
.section .note.GNU-stack,"",@progbits
.text
)");
#define WST_EMU_FAST_SWITCH 1
#endif

namespace wst_emu {

dim3 g_threadIdx, g_blockIdx, g_blockDim, g_gridDim;

namespace {

constexpr size_t kStack = 256 * 1024;

struct Barrier {
  int arrived = 0;
  unsigned gen = 0;
};

struct Fiber {
#ifdef WST_EMU_FAST_SWITCH
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
  void* stack = nullptr;
  dim3 tid;
  bool started = false, done = false;
};

struct Block {
  std::vector<Fiber> fibers;
#ifdef WST_EMU_FAST_SWITCH
  void* sched_sp = nullptr;
#else
  ucontext_t sched;
#endif
  const std::function<void()>* body = nullptr;
  int cur = -1;
  int alive = 0;
  Barrier block_bar;
  std::vector<Barrier> warp_bar;
  std::vector<int> warp_alive;
  std::vector<uint64_t> slots;  // (warps, 32)
  unsigned long events = 0;     // any state change: arrivals, releases, exits, starts
};

Block g;  // the running block (launches are serialised)
uint64_t g_rng = 0x2545F4914F6CDD1Dull;

uint64_t next_rand() {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

void yield() {
#ifdef WST_EMU_FAST_SWITCH
  wst_emu_switch(&g.fibers[g.cur].sp, g.sched_sp);
#else
  swapcontext(&g.fibers[g.cur].ctx, &g.sched);
#endif
}

int warp_of_current() {
  const dim3& t = g.fibers[g.cur].tid;
  return (int)((t.x + g_blockDim.x * (t.y + g_blockDim.y * t.z)) >> 5);
}

// Releases `b` when every live participant has arrived.
bool maybe_release(Barrier& b, int live) {
  if (b.arrived > 0 && b.arrived >= live) {
    b.arrived = 0;
    b.gen++;
    g.events++;
    return true;
  }
  return false;
}

void wait_at(Barrier& b, int* live) {
  const unsigned gen = b.gen;
  b.arrived++;
  g.events++;
  if (maybe_release(b, *live)) return;
  while (b.gen == gen) yield();
}

void trampoline() {
  (*g.body)();
  Fiber& f = g.fibers[g.cur];
  f.done = true;
  g.alive--;
  g.events++;
  const int w = warp_of_current();
  g.warp_alive[w]--;
  maybe_release(g.block_bar, g.alive);
  maybe_release(g.warp_bar[w], g.warp_alive[w]);
#ifdef WST_EMU_FAST_SWITCH
  void* dead;
  wst_emu_switch(&dead, g.sched_sp);  // never resumed
#else
  setcontext(&g.sched);  // never returns
#endif
  std::abort();
}

void* stack_at(size_t i) {
  static std::vector<void*> pool;
  while (pool.size() <= i) {
    void* s = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) {
      std::fprintf(stderr, "cuda emulator: cannot map a fiber stack\n");
      std::abort();
    }
    pool.push_back(s);
  }
  return pool[i];
}

void run_block(const std::function<void()>& body) {
  const int n = (int)(g_blockDim.x * g_blockDim.y * g_blockDim.z);
  const int nw = (n + 31) / 32;
  g.fibers.assign(n, Fiber{});
  g.body = &body;
  g.alive = n;
  g.block_bar = Barrier{};
  g.warp_bar.assign(nw, Barrier{});
  g.warp_alive.assign(nw, 0);
  g.slots.assign((size_t)nw * 32, 0);
  for (int i = 0; i < n; i++) {
    Fiber& f = g.fibers[i];
    f.tid = dim3(i % g_blockDim.x, (i / g_blockDim.x) % g_blockDim.y, i / (g_blockDim.x * g_blockDim.y));
    f.stack = stack_at(i);
    g.warp_alive[i / 32]++;
  }
  std::vector<int> order(n);
  for (int i = 0; i < n; i++) order[i] = i;
  while (g.alive > 0) {
    for (int i = n - 1; i > 0; i--) std::swap(order[i], order[next_rand() % (i + 1)]);
    const unsigned long before = g.events;
    for (int i : order) {
      Fiber& f = g.fibers[i];
      if (f.done) continue;
      g.cur = i;
      g_threadIdx = f.tid;
      if (!f.started) {
        f.started = true;
        g.events++;
#ifdef WST_EMU_FAST_SWITCH
        // A fresh stack as wst_emu_switch leaves it: six saved registers, then the return
        // address (trampoline), then a fake return address for trampoline's own frame, with the
        // ABI's 16-byte alignment at trampoline's entry.
        uintptr_t top = ((uintptr_t)f.stack + kStack) & ~(uintptr_t)15;
        void** sp = (void**)top;
        *--sp = nullptr;                    // trampoline's return address (never used)
        *--sp = (void*)&trampoline;         // popped by ret
        for (int r = 0; r < 6; r++) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
        f.sp = sp;
#else
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = kStack;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, trampoline, 0);
#endif
      }
#ifdef WST_EMU_FAST_SWITCH
      wst_emu_switch(&g.sched_sp, f.sp);
#else
      swapcontext(&g.sched, &f.ctx);
#endif
    }
    if (g.events == before) {
      std::fprintf(stderr,
                   "cuda emulator: deadlock in block (%u,%u,%u): %d live threads wait at "
                   "barriers that not all of them reach (%d at __syncthreads)\n",
                   g_blockIdx.x, g_blockIdx.y, g_blockIdx.z, g.alive, g.block_bar.arrived);
      std::abort();
    }
  }
}

}  // namespace

void launch(dim3 grid, dim3 block, const std::function<void()>& body) {
  // One launch at a time: host threads (e.g. an addon's worker threads) queue up here.
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  g_gridDim = grid;
  g_blockDim = block;
  for (unsigned z = 0; z < grid.z; z++)
    for (unsigned y = 0; y < grid.y; y++)
      for (unsigned x = 0; x < grid.x; x++) {
        g_blockIdx = dim3(x, y, z);
        run_block(body);
      }
}

void syncthreads() { wait_at(g.block_bar, &g.alive); }

void warp_exchange(uint64_t v, uint64_t out[32]) {
  const int w = warp_of_current(), lane = lane_id();
  g.slots[(size_t)w * 32 + lane] = v;
  wait_at(g.warp_bar[w], &g.warp_alive[w]);
  for (int i = 0; i < 32; i++) out[i] = g.slots[(size_t)w * 32 + i];
  wait_at(g.warp_bar[w], &g.warp_alive[w]);  // nobody overwrites a slot before all have read
}

}  // namespace wst_emu

// ---- runtime API ---------------------------------------------------------------------------------
const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : (e == cudaErrorMemoryAllocation ? "out of memory" : "error");
}
cudaError_t cudaGetLastError() { return cudaSuccess; }
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "CUDA emulator (CPU fibers)");
  p->major = 8;
  p->minor = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* dev) {
  *dev = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int) {
  // An H100's 227 KB of shared memory per block; 4 "multiprocessors", so that small GEMMs take
  // the split-K path in the tests.
  *v = attr == cudaDevAttrMaxSharedMemoryPerBlockOptin ? 232448
       : attr == cudaDevAttrMultiProcessorCount      ? 4
                                                      : 1;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int) {
  *pool = nullptr;
  return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) { return cudaSuccess; }
// "Device" allocations are host memory, but every one is recorded, so that a host pointer handed
// to a kernel or to the wrong side of a copy is caught (a real GPU would fault or read garbage).
namespace {
std::map<uintptr_t, size_t>& device_allocations() {
  static std::map<uintptr_t, size_t> m;
  return m;
}
}  // namespace

bool wst_emu::is_device_pointer(const void* p) {
  const uintptr_t a = (uintptr_t)p;
  auto& m = device_allocations();
  auto it = m.upper_bound(a);
  if (it == m.begin()) return false;
  --it;
  return a <= it->first + it->second;  // one past the end counts (empty ranges)
}

void wst_emu::require_device_pointer(const void* p, const char* what) {
  if (p && !is_device_pointer(p)) {
    std::fprintf(stderr, "CUDA emulator: %s is a host pointer (%p) where device memory is required\n", what, p);
    std::abort();
  }
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::malloc(bytes ? bytes : 1);
  if (!*p) return cudaErrorMemoryAllocation;
  device_allocations()[(uintptr_t)*p] = bytes ? bytes : 1;
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
cudaError_t cudaFree(void* p) {
  if (p) {
    wst_emu::require_device_pointer(p, "cudaFree's pointer");
    device_allocations().erase((uintptr_t)p);
  }
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (!bytes) return cudaSuccess;
  const bool dst_dev = wst_emu::is_device_pointer(dst), src_dev = wst_emu::is_device_pointer(src);
  const bool ok = kind == cudaMemcpyHostToDevice   ? dst_dev && !src_dev
                  : kind == cudaMemcpyDeviceToHost ? !dst_dev && src_dev
                  : kind == cudaMemcpyDeviceToDevice ? dst_dev && src_dev
                                                     : true;
  if (!ok) {
    std::fprintf(stderr, "CUDA emulator: cudaMemcpy kind %d with dst %s and src %s memory\n", (int)kind,
                 dst_dev ? "device" : "host", src_dev ? "device" : "host");
    std::abort();
  }
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  if (bytes) wst_emu::require_device_pointer(p, "cudaMemset's pointer");
  std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
