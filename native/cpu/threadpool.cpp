#include "threadpool.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "../kernels.h"

namespace wst {
namespace {

thread_local bool inside_task = false;

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop_workers(); }

  int size() const { return n_threads_; }

  void resize(int n) {
    std::lock_guard<std::mutex> caller(caller_mu_);
    stop_workers();
    n_threads_ = n < 1 ? 1 : n;
    stopping_ = false;
    for (int i = 1; i < n_threads_; i++) workers_.emplace_back([this] { worker_loop(); });
  }

  void run(int n_tasks, const std::function<void(int)>& fn) {
    if (n_tasks <= 0) return;
    if (n_tasks == 1 || n_threads_ == 1 || inside_task) {
      bool was = inside_task;
      inside_task = true;
      for (int i = 0; i < n_tasks; i++) fn(i);
      inside_task = was;
      return;
    }
    std::lock_guard<std::mutex> caller(caller_mu_);
    {
      std::lock_guard<std::mutex> lk(mu_);
      // A worker still leaving the last job may touch next_ at any moment: keep the counter
      // exhausted until the new job is fully described, then open it.
      next_.store(1 << 30);
      fn_.store(&fn);
      n_tasks_.store(n_tasks);
      remaining_.store(n_tasks);
      next_.store(0);
      generation_++;
    }
    cv_.notify_all();
    work();
    // Wait for stragglers: spin briefly, then sleep (the second core of a shared VM is not
    // always ours, so never spin for long).
    for (int spin = 0; remaining_.load(std::memory_order_acquire) > 0; spin++) {
      if (spin < 2000) continue;
      std::unique_lock<std::mutex> lk(mu_);
      done_cv_.wait(lk, [this] { return remaining_.load() == 0; });
    }
    std::lock_guard<std::mutex> lk(mu_);
    fn_.store(nullptr);
  }

 private:
  void work() {
    inside_task = true;
    for (;;) {
      int i = next_.fetch_add(1, std::memory_order_acq_rel);
      if (i >= n_tasks_.load(std::memory_order_acquire)) break;
      (*fn_.load(std::memory_order_acquire))(i);
      if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(mu_);
        done_cv_.notify_all();
      }
    }
    inside_task = false;
  }

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      // Spin a little first (back-to-back parallel regions are common), then sleep.
      for (int spin = 0; spin < 20000 && generation_.load(std::memory_order_acquire) == seen; spin++) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
      }
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stopping_ || (generation_ != seen && fn_ != nullptr); });
        if (stopping_) return;
        seen = generation_;
      }
      work();
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex caller_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  std::atomic<const std::function<void(int)>*> fn_{nullptr};
  std::atomic<int> n_tasks_{0};
  std::atomic<int> next_{0}, remaining_{0};
  std::atomic<uint64_t> generation_{0};
  bool stopping_ = false;
};

int default_threads() {
  if (const char* env = std::getenv("WST_DASH_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1 && n <= 1024) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : (int)hc;
}

Pool& pool() {
  static Pool* p = new Pool(default_threads());  // leaked on purpose: no join at exit
  return *p;
}

}  // namespace

void parallel_for(int n_tasks, const std::function<void(int)>& fn) { pool().run(n_tasks, fn); }
int num_threads() { return pool().size(); }
void set_num_threads(int n) {
  if (n != pool().size()) pool().resize(n);
}

}  // namespace wst
