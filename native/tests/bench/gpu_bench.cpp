// Times the CUDA kernels for bench/gpu-check.sh: cudaEvent timing on the default stream,
// median of repeated runs after a warm-up. Prints one JSON object per line:
//   {"bench": ..., "impl": "ours", "ms": median, "tflops"|"gbps": ..., "note": ...}
// The shapes match bench/gpu_check_torch.py, which times the torch side.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "../../cuda/cuda_kernels.h"

namespace {

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "gpu_bench: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(2);
  }
}

// Device buffer filled from a host LCG (values in [lo, hi)).
struct Buf {
  void* p = nullptr;
  size_t bytes = 0;
  Buf(size_t n, size_t elem) : bytes(n * elem) { ck(cudaMalloc(&p, bytes), "cudaMalloc"); }
  ~Buf() { cudaFree(p); }
  float* f() const { return (float*)p; }
  static Buf floats(size_t n, float lo, float hi, uint64_t seed) {
    Buf b(n, sizeof(float));
    std::vector<float> h(std::min<size_t>(n, size_t(1) << 24));
    uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
    for (auto& x : h) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      x = lo + (float)((s >> 40) * (1.0 / 16777216.0)) * (hi - lo);
    }
    for (size_t off = 0; off < n; off += h.size()) {
      size_t cnt = std::min(h.size(), n - off);
      ck(cudaMemcpy(b.f() + off, h.data(), cnt * sizeof(float), cudaMemcpyHostToDevice), "upload");
    }
    return b;
  }
  // bf16 values (top half of the fp32 LCG values, rounded to nearest even).
  static Buf bf16(size_t n, float lo, float hi, uint64_t seed) {
    Buf f = floats(n, lo, hi, seed), b(n, 2);
    std::vector<float> h(std::min<size_t>(n, size_t(1) << 24));
    std::vector<uint16_t> hb(h.size());
    for (size_t off = 0; off < n; off += h.size()) {
      size_t cnt = std::min(h.size(), n - off);
      ck(cudaMemcpy(h.data(), f.f() + off, cnt * 4, cudaMemcpyDeviceToHost), "download");
      for (size_t i = 0; i < cnt; i++) hb[i] = wst::float_to_bf16(h[i]);
      ck(cudaMemcpy((uint16_t*)b.p + off, hb.data(), cnt * 2, cudaMemcpyHostToDevice), "upload");
    }
    return b;
  }
  Buf(Buf&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr; }
};

double median_ms(int reps, const std::function<void()>& fn) {
  cudaEvent_t a, b;
  ck(cudaEventCreate(&a), "event");
  ck(cudaEventCreate(&b), "event");
  fn();  // warm-up
  ck(cudaDeviceSynchronize(), "warm-up");
  std::vector<double> t;
  for (int i = 0; i < reps; i++) {
    ck(cudaEventRecord(a), "record");
    fn();
    ck(cudaEventRecord(b), "record");
    ck(cudaEventSynchronize(b), "sync");
    float ms = 0;
    ck(cudaEventElapsedTime(&ms, a, b), "elapsed");
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void emit(const char* bench, double ms, const char* unit, double value, const char* note) {
  std::printf("{\"bench\": \"%s\", \"impl\": \"ours\", \"ms\": %.4f, \"%s\": %.3f, \"note\": \"%s\"}\n",
              bench, ms, unit, value, note);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (wst::cuda_device_count() == 0) {
    std::fprintf(stderr, "gpu_bench: no CUDA device\n");
    return 1;
  }
  std::fprintf(stderr, "gpu_bench on %s\n", wst::cuda_device_name());
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";  // smaller shapes, for smoke runs

  {  // memory bandwidth reference: device-to-device copy (read + write)
    const size_t n = size_t(1) << (quick ? 26 : 28);  // floats (1 GiB full size)
    Buf a = Buf::floats(n, -1, 1, 1), b(n, sizeof(float));
    double ms = median_ms(10, [&] { ck(cudaMemcpy(b.p, a.p, n * 4, cudaMemcpyDeviceToDevice), "d2d"); });
    emit("memcpy_d2d", ms, "gbps", 2.0 * n * 4 / (ms * 1e6), "read+write bytes / time");
  }
  {  // attention forward, fp32, causal
    const int B = quick ? 1 : 4, H = 32, T = quick ? 1024 : 4096, D = 128;
    const size_t n = (size_t)B * T * H * D;
    Buf q = Buf::floats(n, -1, 1, 2), k = Buf::floats(n, -1, 1, 3), v = Buf::floats(n, -1, 1, 4);
    Buf o(n, 4), lse((size_t)B * H * T, 4);
    double ms = median_ms(5, [&] {
      wst::cuda::attention_forward(o.f(), lse.f(), q.f(), k.f(), v.f(), B, H, H, T, T, D, true);
    });
    const double flops = 2.0 * B * H * (double)T * T * D;  // causal: half of 4 B H T^2 D
    emit("attention_fwd_causal", ms, "tflops", flops / (ms * 1e9), "fp32 SIMT kernel");
  }
  {  // attention forward, bf16 tensor cores, causal
    const int B = quick ? 1 : 4, H = 32, T = quick ? 1024 : 4096, D = 128;
    const size_t n = (size_t)B * T * H * D;
    Buf q = Buf::bf16(n, -1, 1, 2), k = Buf::bf16(n, -1, 1, 3), v = Buf::bf16(n, -1, 1, 4);
    Buf o(n, 2), lse((size_t)B * H * T, 4);
    double ms = median_ms(10, [&] {
      wst::cuda::attention_forward_bf16((uint16_t*)o.p, lse.f(), (uint16_t*)q.p, (uint16_t*)k.p,
                                        (uint16_t*)v.p, B, H, H, T, T, D, true);
    });
    const double flops = 2.0 * B * H * (double)T * T * D;
    emit("attention_fwd_causal", ms, "tflops", flops / (ms * 1e9), "bf16 mma.sync FA2-style");
  }
  {  // bf16 GEMM on tensor cores: A (m,k) row-major, B (k,n) row-major, as torch.matmul(x, y)
    const int N = quick ? 4096 : 8192;
    Buf a = Buf::bf16((size_t)N * N, -1, 1, 5), b = Buf::bf16((size_t)N * N, -1, 1, 6);
    Buf c((size_t)N * N, 4);
    for (int tb = 0; tb < 2; tb++) {
      double ms = median_ms(10, [&] {
        wst::cuda::gemm_bf16(false, tb, N, N, N, 1.0f, (uint16_t*)a.p, N, (uint16_t*)b.p, N, 0.0f,
                             c.f(), N);
      });
      emit("gemm", ms, "tflops", 2.0 * N * (double)N * N / (ms * 1e9),
           tb ? "bf16, B as (n,k) (Linear layout): wgmma on Hopper, else mma.sync; fp32 out"
              : "bf16 mma.sync, B as (k,n), fp32 out");
    }
  }
  {  // sgemm: fp32 SIMT and tf32 tensor cores
    const int N = quick ? 4096 : 8192;
    Buf a = Buf::floats((size_t)N * N, -1, 1, 5), b = Buf::floats((size_t)N * N, -1, 1, 6);
    Buf c((size_t)N * N, 4);
    double ms_tf32 = median_ms(5, [&] {
      wst::cuda::sgemm_tf32(false, false, N, N, N, 1.0f, a.f(), N, b.f(), N, 0.0f, c.f(), N);
    });
    emit("gemm", ms_tf32, "tflops", 2.0 * N * (double)N * N / (ms_tf32 * 1e9), "tf32 mma.sync, fp32 in/out");
    double ms = median_ms(5, [&] {
      wst::cuda::sgemm(false, false, N, N, N, 1.0f, a.f(), N, b.f(), N, 0.0f, c.f(), N);
    });
    emit("gemm", ms, "tflops", 2.0 * N * (double)N * N / (ms * 1e9), "fp32 CUDA cores");
  }
  {  // sampling, top-p 0.9
    const int Bs = 256, V = 151936;
    Buf z = Buf::floats((size_t)Bs * V, -8, 8, 7);
    std::vector<uint64_t> hs(Bs), hc(Bs, 0);
    for (int i = 0; i < Bs; i++) hs[i] = 1000 + i;
    Buf seeds(Bs, 8), ctrs(Bs, 8), ids(Bs, 4), lps(Bs, 4);
    ck(cudaMemcpy(seeds.p, hs.data(), Bs * 8, cudaMemcpyHostToDevice), "upload");
    ck(cudaMemcpy(ctrs.p, hc.data(), Bs * 8, cudaMemcpyHostToDevice), "upload");
    wst::SamplingParams p{1.0f, 0, 0.9f, 0.0f};
    double ms = median_ms(10, [&] {
      wst::cuda::sample_tokens((int32_t*)ids.p, lps.f(), z.f(), Bs, V, p, (uint64_t*)seeds.p,
                               (uint64_t*)ctrs.p);
    });
    emit("sampling_top_p", ms, "gbps", (double)Bs * V * 4 / (ms * 1e6), "logits bytes / time");
  }
  {  // GRPO loss + gradient (with ref; mask nonzero almost everywhere)
    const int S = 512, T = quick ? 2048 : 8192;
    const size_t n = (size_t)S * T;
    Buf lp = Buf::floats(n, -4, -0.01f, 8), old = Buf::floats(n, -4, -0.01f, 9);
    Buf ref = Buf::floats(n, -4, -0.01f, 10), mask = Buf::floats(n, 0, 1.25f, 11);
    Buf adv = Buf::floats(S, -1, 1, 12), grad(n, 4);
    wst::GrpoParams p{0.2f, 0.28f, 0.04f, 0.0f, wst::GrpoLossType::grpo, 1.0};
    double ms = median_ms(10, [&] {
      wst::cuda::grpo_loss(grad.f(), lp.f(), old.f(), ref.f(), adv.f(), mask.f(), S, T, p);
    });
    emit("grpo_loss", ms, "gbps", 5.0 * n * 4 / (ms * 1e6),
         "4 inputs read + grad written, per time; includes the result copy to host");
    // The kernels alone: 20 back-to-back calls leaving the result on the device, per call.
    Buf dres(1, sizeof(wst::GrpoResult));
    const int reps = 20;
    double ms_async = median_ms(5, [&] {
      for (int r = 0; r < reps; r++)
        wst::cuda::grpo_loss_async((wst::GrpoResult*)dres.p, grad.f(), lp.f(), old.f(), ref.f(),
                                   adv.f(), mask.f(), S, T, p);
    }) / reps;
    emit("grpo_loss_kernels", ms_async, "gbps", 5.0 * n * 4 / (ms_async * 1e6),
         "same, result left on the device, 20 calls back to back");
    wst::cuda::grpo_set_path(2);  // the three-kernel path (counts, weights, 1024-token blocks)
    double ms_three = median_ms(5, [&] {
      for (int r = 0; r < reps; r++)
        wst::cuda::grpo_loss_async((wst::GrpoResult*)dres.p, grad.f(), lp.f(), old.f(), ref.f(),
                                   adv.f(), mask.f(), S, T, p);
    }) / reps;
    wst::cuda::grpo_set_path(0);
    emit("grpo_loss_kernels_3k", ms_three, "gbps", 5.0 * n * 4 / (ms_three * 1e6),
         "three-kernel path, result on the device, 20 calls back to back");
  }
  return 0;
}
