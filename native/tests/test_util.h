// Helpers for the native test program: seeded random data (never zero), error metrics where
// NaN never passes, and the pass/fail table.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace wst_test {

// splitmix64: small, fast, reproducible.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (double)(next() >> 11) * (1.0 / 9007199254740992.0); }  // [0,1)
  // Uniform in [lo, hi), never exactly 0.
  float nonzero(float lo = -1.0f, float hi = 1.0f) {
    float x = lo + (float)uniform() * (hi - lo);
    return x == 0.0f ? 0.5f * hi : x;
  }
  int below(int n) { return (int)(next() % (uint64_t)n); }
};

inline std::vector<float> randv(Rng& r, size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(n);
  for (auto& x : v) x = r.nonzero(lo, hi);
  return v;
}

inline std::vector<float> nanv(size_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

// max |got - want| / max |want| (infinities must match exactly; NaN in got, or a mismatch, gives
// +inf). An empty comparison is 0.
template <class G, class W>
double rel_err(const G* got, const W* want, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    const double g = (double)got[i], w = (double)want[i];
    if (std::isnan(g)) return std::numeric_limits<double>::infinity();
    if (std::isnan(w)) return std::numeric_limits<double>::infinity();
    if (std::isinf(w) || std::isinf(g)) {
      if (g != w) return std::numeric_limits<double>::infinity();
      continue;
    }
    num = std::fmax(num, std::fabs(g - w));
    den = std::fmax(den, std::fabs(w));
  }
  if (num == 0) return 0;
  return num / (den > 0 ? den : 1e-300);
}
template <class G, class W>
double rel_err(const std::vector<G>& got, const std::vector<W>& want) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  return rel_err(got.data(), want.data(), got.size());
}

// Number of positions where the values differ (exact comparison, NaN differs from everything).
template <class T>
double mismatches(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double n = 0;
  for (size_t i = 0; i < a.size(); i++) n += !(a[i] == b[i]);
  return n;
}

struct Row {
  std::string name;
  double value, limit;
  bool pass;
};

struct Report {
  std::vector<Row> rows;
  // Passes when value <= limit; NaN never passes.
  void check(const std::string& name, double value, double limit) {
    rows.push_back({name, value, limit, value <= limit});
  }
  int failures() const {
    int f = 0;
    for (const auto& r : rows) f += !r.pass;
    return f;
  }
  void print() const {
    std::printf("%-6s %-58s %11s %9s\n", "status", "check", "error", "limit");
    for (const auto& r : rows)
      std::printf("%-6s %-58s %11.3g %9.2g\n", r.pass ? "PASS" : "FAIL", r.name.c_str(), r.value,
                  r.limit);
  }
};

// A named group of checks; `run` adds rows to the report.
struct Check {
  const char* name;
  std::function<void(Report&)> run;
};
// False when a filter picked some check groups only (checks over the whole run then skip).
extern bool g_all_groups;

std::vector<Check> cpu_checks();
std::vector<Check> cuda_checks();  // empty when built without CUDA
}  // namespace wst_test
namespace wst {
struct Backend;
struct LlamaConfig;
class LlamaModel;
}
namespace wst_test {
// Model checks run on any backend, against the CPU model (model_checks.cpp).
void check_model_prefix_batch(Report& rep, const wst::Backend& be, const std::string& what);
void check_model_grpo_many(Report& rep, const wst::Backend& be, const std::string& what);
void check_model_value_head(Report& rep, const wst::Backend& be, const std::string& what);
// B rows of T random tokens, and targets with each row's first 3 positions unscored (-1).
void random_rows(Rng& rng, int vocab, int B, int T, std::vector<int32_t>& tokens, std::vector<int32_t>& targets);
// The largest relative error over every tensor (or every gradient) of `got` against `want`.
double tensors_rel_err(wst::LlamaModel& got, wst::LlamaModel& want, bool grads);
void check_model_bf16(Report& rep, const wst::Backend& be, const std::string& what);
void check_model_decode_shards(Report& rep);
void check_lane_deal(Report& rep);
void check_model_finish_row(Report& rep);
void check_model_prompt_store(Report& rep);
void check_model_prefill_logits(Report& rep);
void check_host_block_reuse(Report& rep);
// The tiny Llama of the model checks (GQA 4/2, head 16, 2 layers): qkv biases, or qk-norm and tied
// embeddings.
wst::LlamaConfig tiny_llama_config(int vocab, bool qk_norm);

}  // namespace wst_test
