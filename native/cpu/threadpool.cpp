#include "threadpool.h"

#include <atomic>
#include <condition_variable>
#include <exception>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "../kernels.h"

namespace wst {

#if defined(__x86_64__) || defined(_M_X64)
static constexpr unsigned kFlushBits = 0x8040;  // MXCSR FTZ (bit 15) | DAZ (bit 6)
FlushSubnormals::FlushSubnormals() : saved_(_mm_getcsr()) {
  if ((saved_ & kFlushBits) != kFlushBits) _mm_setcsr((unsigned)saved_ | kFlushBits);
}
FlushSubnormals::~FlushSubnormals() {
  if ((saved_ & kFlushBits) != kFlushBits) _mm_setcsr((unsigned)saved_);
}
bool FlushSubnormals::active() { return (_mm_getcsr() & kFlushBits) == kFlushBits; }
#elif defined(__aarch64__)
static constexpr unsigned long long kFlushBits = 1ull << 24;  // FPCR.FZ
static unsigned long long read_fpcr() {
  unsigned long long v;
  __asm__ volatile("mrs %0, fpcr" : "=r"(v));
  return v;
}
static void write_fpcr(unsigned long long v) { __asm__ volatile("msr fpcr, %0" : : "r"(v)); }
FlushSubnormals::FlushSubnormals() : saved_(read_fpcr()) {
  if (!(saved_ & kFlushBits)) write_fpcr(saved_ | kFlushBits);
}
FlushSubnormals::~FlushSubnormals() {
  if (!(saved_ & kFlushBits)) write_fpcr(saved_);
}
bool FlushSubnormals::active() { return (read_fpcr() & kFlushBits) != 0; }
#else
FlushSubnormals::FlushSubnormals() : saved_(0) {}
FlushSubnormals::~FlushSubnormals() {}
bool FlushSubnormals::active() { return false; }
#endif

namespace {

thread_local bool inside_task = false;

// How long a thread spins before it sleeps, in pause instructions (~20 ns each on AMD Zen 4/5,
// so ~0.4 ms): workers waiting for the next job, and the caller waiting for the last tasks.
constexpr int kSpinPauses = 20000;

// One parallel_for call. Workers hold it through a shared_ptr, so a worker that wakes late only
// ever claims indices of the job it holds (already exhausted): it can never run, or count, a task
// of a later job.
struct Job {
  const std::function<void(int)>* fn;
  int n_tasks;
  std::atomic<int> next{0};
  std::atomic<int> remaining;
  Job(const std::function<void(int)>* f, int n) : fn(f), n_tasks(n), remaining(n) {}
  // The first exception a task threw; the caller rethrows it once every task has finished (a
  // worker must never unwind out of its loop, nor the caller leave while workers use fn).
  std::mutex error_mu;
  std::exception_ptr error;
};

// Sets inside_task for a scope and restores it, also when a task throws.
struct InsideTask {
  bool was;
  InsideTask() : was(inside_task) { inside_task = true; }
  ~InsideTask() { inside_task = was; }
};

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
    FlushSubnormals ftz;
    if (n_tasks == 1 || n_threads_ == 1 || inside_task) {
      InsideTask scope;
      std::exception_ptr error;  // as on the pool: every task runs, the first exception after
      for (int i = 0; i < n_tasks; i++) {
        try {
          fn(i);
        } catch (...) {
          if (!error) error = std::current_exception();
        }
      }
      if (error) std::rethrow_exception(error);
      return;
    }
    std::lock_guard<std::mutex> caller(caller_mu_);
    auto job = std::make_shared<Job>(&fn, n_tasks);
    {
      std::lock_guard<std::mutex> lk(mu_);
      current_ = job;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    work(*job);
    // Wait for tasks still running on workers: spin (with pause) as long as a worker spins for
    // the next job, ~0.4 ms, then sleep (the second core of a shared VM is not always ours, so
    // never spin for long). A shorter spin (it was ~2 us) put the caller to sleep at the end of
    // most regions whose last task ran on a worker, and a futex wake-up (tens of us) then
    // came on top of every such region.
    for (int spin = 0; job->remaining.load(std::memory_order_acquire) > 0; spin++) {
      if (spin < kSpinPauses) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
        continue;
      }
      std::unique_lock<std::mutex> lk(mu_);
      done_cv_.wait(lk, [&] { return job->remaining.load() == 0; });
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      current_.reset();
    }
    if (job->error) std::rethrow_exception(job->error);
  }

 private:
  void work(Job& job) {
    InsideTask scope;
    for (;;) {
      int i = job.next.fetch_add(1, std::memory_order_acq_rel);
      if (i >= job.n_tasks) break;
      try {
        (*job.fn)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(job.error_mu);
        if (!job.error) job.error = std::current_exception();
      }
      if (job.remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(mu_);
        done_cv_.notify_all();
      }
    }
  }

  void worker_loop() {
    FlushSubnormals ftz;  // for the worker's whole life: it only ever runs tasks
    uint64_t seen = 0;
    for (;;) {
      // Spin a little first (back-to-back parallel regions are common), then sleep.
      for (int spin = 0; spin < kSpinPauses && generation_.load(std::memory_order_acquire) == seen; spin++) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
      }
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stopping_ || (generation_.load() != seen && current_); });
        if (stopping_) return;
        seen = generation_.load();
        job = current_;
      }
      work(*job);
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
  std::shared_ptr<Job> current_;
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
