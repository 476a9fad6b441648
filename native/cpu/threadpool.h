// A fixed pool of worker threads for the CPU kernels.
// parallel_for(n, fn) runs fn(i) for every task i in [0, n), each exactly once, on the pool
// and the calling thread. Kernels choose task boundaries that do not depend on the thread
// count, so results are identical for any pool size. Calls from inside a task run serially;
// concurrent callers (several AsyncWorkers) take turns.
#pragma once
#include <cstddef>
#include <functional>

namespace wst {

void parallel_for(int n_tasks, const std::function<void(int)>& fn);

// Split [0, n) into chunks of `grain` (the last may be shorter) and run fn(begin, end) per chunk.
inline void parallel_chunks(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  if (grain == 0) grain = 1;
  size_t chunks = (n + grain - 1) / grain;
  if (chunks == 1) { fn(0, n); return; }
  parallel_for((int)chunks, [&](int c) {
    size_t b = (size_t)c * grain, e = b + grain < n ? b + grain : n;
    fn(b, e);
  });
}

}  // namespace wst
