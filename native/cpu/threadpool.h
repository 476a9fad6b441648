// A fixed pool of worker threads for the CPU kernels.
// parallel_for(n, fn) runs fn(i) for every task i in [0, n), each exactly once, on the pool
// and the calling thread. Kernels choose task boundaries that do not depend on the thread
// count, so results are identical for any pool size. Calls from inside a task run serially;
// concurrent callers (several AsyncWorkers) take turns. A task that throws does not stop the
// others: the first exception is rethrown to the caller once every task has run.
//
// Every task runs with subnormal floats flushed to zero (x86 MXCSR FTZ|DAZ, Arm FPCR.FZ): a
// subnormal operand costs an FMA ~100 cycles on x86, and attention's exp(s - max) and its
// gradients make many (training was 1.5x slower with them). Values below 1.2e-38 are far under
// fp32 training's resolution; GPUs flush in their fast paths too. The caller's own mode is
// restored on return (Node's JavaScript shares the libuv threads' floating-point state).
#pragma once
#include <cstddef>
#include <functional>

namespace wst {

void parallel_for(int n_tasks, const std::function<void(int)>& fn);

// Flushes subnormals to zero on this thread while alive; restores the previous mode after.
class FlushSubnormals {
 public:
  FlushSubnormals();
  ~FlushSubnormals();
  FlushSubnormals(const FlushSubnormals&) = delete;
  FlushSubnormals& operator=(const FlushSubnormals&) = delete;
  // Whether this thread flushes subnormals now.
  static bool active();

 private:
  unsigned long long saved_;
};

// Split [0, n) into chunks of `grain` (the last may be shorter) and run fn(begin, end) per chunk.
inline void parallel_chunks(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  if (grain == 0) grain = 1;
  size_t chunks = (n + grain - 1) / grain;
  if (chunks == 1) {
    FlushSubnormals ftz;
    fn(0, n);
    return;
  }
  parallel_for((int)chunks, [&](int c) {
    size_t b = (size_t)c * grain, e = b + grain < n ? b + grain : n;
    fn(b, e);
  });
}

}  // namespace wst
