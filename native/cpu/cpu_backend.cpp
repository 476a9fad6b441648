#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "../backend.h"

namespace wst {
namespace {
// Host memory, with large blocks kept for reuse after they are freed. A training loop creates a
// generation context (KV caches, scratch: ~13 MB for the built-in model's 128 rows) every step,
// and fresh pages cost a page fault, a clear and (with THP in madvise mode) a compaction attempt
// each: ~7 ms of a 38 ms DASH generation on this VM. Each block carries its capacity in a 64-byte
// header. Reused memory is not cleared (as from malloc, contents are unspecified).
constexpr size_t kHeader = 64;
constexpr size_t kReuseMin = (size_t)256 << 10;  // smaller blocks go straight back to malloc
constexpr size_t kReuseMaxTotal = (size_t)256 << 20;  // the most kept for reuse, all blocks together

struct BlockCache {
  std::mutex mu;
  std::vector<std::pair<size_t, void*>> free_blocks;  // (capacity, base), oldest first
  size_t total = 0;
};
BlockCache& block_cache() {
  static BlockCache* c = new BlockCache();  // never destroyed: frees may come during exit
  return *c;
}

void* host_alloc(size_t bytes) {
  const size_t cap = (bytes + 63) / 64 * 64 + 64;  // as before: one spare line past the end
  if (cap >= kReuseMin) {
    BlockCache& c = block_cache();
    std::lock_guard<std::mutex> lk(c.mu);
    // The smallest kept block that fits without wasting more than half of it.
    int best = -1;
    for (int i = 0; i < (int)c.free_blocks.size(); i++) {
      const size_t have = c.free_blocks[i].first;
      if (have >= cap && have / 2 <= cap && (best < 0 || have < c.free_blocks[best].first)) best = i;
    }
    if (best >= 0) {
      void* base = c.free_blocks[best].second;
      c.total -= c.free_blocks[best].first;
      c.free_blocks.erase(c.free_blocks.begin() + best);
      return (char*)base + kHeader;
    }
  }
  void* base = std::aligned_alloc(64, cap + kHeader);
  if (!base) throw std::bad_alloc();
  *(size_t*)base = cap;
  return (char*)base + kHeader;
}
void host_free(void* p) {
  if (!p) return;
  void* base = (char*)p - kHeader;
  const size_t cap = *(const size_t*)base;
  if (cap >= kReuseMin && cap <= kReuseMaxTotal) {
    BlockCache& c = block_cache();
    std::lock_guard<std::mutex> lk(c.mu);
    while (!c.free_blocks.empty() && c.total + cap > kReuseMaxTotal) {  // the oldest go first
      std::free(c.free_blocks.front().second);
      c.total -= c.free_blocks.front().first;
      c.free_blocks.erase(c.free_blocks.begin());
    }
    c.free_blocks.emplace_back(cap, base);
    c.total += cap;
    return;
  }
  std::free(base);
}
void host_copy(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void host_sync() {}
void host_zero(void* p, size_t bytes) { std::memset(p, 0, bytes); }
}  // namespace

const Backend& cpu_backend() {
  static const Backend b = [] {
    Backend t{"cpu", true, /*concurrent_pieces=*/true, /*transposed_decode_weights=*/true, host_alloc, host_free, host_copy, host_copy, host_sync, host_copy, host_zero};
#define WST_CPU_OP(op) t.op = &::wst::op;
    WST_BACKEND_OPS(WST_CPU_OP)
#undef WST_CPU_OP
    return t;
  }();
  return b;
}

}  // namespace wst
