// The native test program (no Node): CPU kernels against float64 references, then, when built
// with CUDA (WST_TEST_WITH_CUDA) and a device is present, every CUDA kernel against the CPU
// kernel. Prints a pass/fail table; exits 1 on any failure. Without a device the GPU checks are
// skipped with a message and the exit status reflects the CPU checks alone.
//   wst_native_tests [--cpu-only] [--gpu-only] [filter]   (filter: substring of a check group)
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "test_util.h"
#ifdef WST_TEST_WITH_CUDA
#include "../cuda/cuda_kernels.h"
#endif

using namespace wst_test;

bool wst_test::g_all_groups = true;

int main(int argc, char** argv) {
  bool cpu = true, gpu = true;
  std::string filter;
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "--cpu-only")) gpu = false;
    else if (!std::strcmp(argv[i], "--gpu-only")) cpu = false;
    else filter = argv[i];
  }
  g_all_groups = filter.empty();
  Report rep;
  auto run = [&](const std::vector<Check>& checks, const char* what) {
    for (const Check& c : checks) {
      if (!filter.empty() && std::string(c.name).find(filter) == std::string::npos) continue;
      auto t0 = std::chrono::steady_clock::now();
      try {
        c.run(rep);
      } catch (const std::exception& e) {
        rep.rows.push_back({std::string(what) + " " + c.name + ": threw " + e.what(),
                            std::numeric_limits<double>::infinity(), 0, false});
      }
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "[%s %s: %.0f ms]\n", what, c.name, ms);
    }
  };
  if (cpu) run(cpu_checks(), "cpu");

  std::string gpu_note;
  if (gpu) {
    const std::vector<Check> checks = cuda_checks();
#ifdef WST_TEST_WITH_CUDA
    const int devices = wst::cuda_device_count();
#else
    const int devices = 0;
#endif
    if (checks.empty()) {
      gpu_note = "built without CUDA: no GPU checks";
    } else if (devices == 0) {
      gpu_note = "no CUDA device: skipping " + std::to_string(checks.size()) + " GPU checks";
    } else {
#ifdef WST_TEST_WITH_CUDA
      gpu_note = std::string("CUDA device: ") + wst::cuda_device_name();
#endif
      run(checks, "cuda");
    }
  }

  rep.print();
  if (!gpu_note.empty()) std::printf("%s\n", gpu_note.c_str());
  const int fails = rep.failures();
  std::printf("%d checks, %d failed\n", (int)rep.rows.size(), fails);
  return fails ? 1 : 0;
}
