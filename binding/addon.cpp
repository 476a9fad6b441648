// Module entry: the runner shared by every op, backend/thread queries, and registration.
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "util.h"
#include "../native/cpu/threadpool.h"
#ifdef WST_DASH_WITH_CUDA
#include "../native/cuda/cuda_kernels.h"
#endif

namespace wst::binding {

// The CPU addon always runs the CPU kernels. The CUDA addon (WST_DASH_WITH_CUDA) runs the kernel
// API through the CUDA twins when a device is usable and WST_DASH_BACKEND is not "cpu"; its
// staging backend takes host arrays, so callers are unchanged.
const Backend& backend() {
#ifdef WST_DASH_WITH_CUDA
  static const Backend& b = []() -> const Backend& {
    const char* e = std::getenv("WST_DASH_BACKEND");
    return cuda_device_count() > 0 && !(e && std::strcmp(e, "cpu") == 0) ? cuda_host_staging_backend() : cpu_backend();
  }();
  return b;
#else
  return cpu_backend();
#endif
}

namespace {

class OpWorker : public Napi::AsyncWorker {
 public:
  OpWorker(Napi::Env env, Work work, MakeResult make_result, std::vector<Napi::Value>& keep)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)), make_result_(std::move(make_result)) {
    for (auto& v : keep) refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    FlushSubnormals ftz;  // every native call flushes subnormals, whichever path its kernels take
    try {
      work_();
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    deferred_.Resolve(make_result_ ? make_result_(env) : env.Undefined());
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Work work_;
  MakeResult make_result_;
  std::vector<Napi::ObjectReference> refs_;
};

}  // namespace

Napi::Value run_op(const Napi::CallbackInfo& info, bool async, std::vector<Napi::Value>& keep,
                   Work work, MakeResult make_result) {
  Napi::Env env = info.Env();
  if (!async) {
    FlushSubnormals ftz;  // restored before JavaScript runs on this thread again
    try {
      work();
    } catch (const std::bad_alloc&) {
      throw Napi::RangeError::New(env, "out of memory");
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
    return make_result ? make_result(env) : env.Undefined();
  }
  auto* worker = new OpWorker(env, std::move(work), std::move(make_result), keep);
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

namespace {

Napi::Value GetThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), num_threads());
}
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  set_num_threads(int_param(info, "threads", 1, 1024));
  return info.Env().Undefined();
}

// OpenBLAS, when the machine has it, for side-by-side GEMM comparison in `bench kernels`
// only. Loaded with dlopen at run time: it is never a build or run dependency.
using cblas_sgemm_t = void (*)(int, int, int, int, int, int, float, const float*, int,
                               const float*, int, float, float*, int);
using openblas_set_threads_t = void (*)(int);
struct OpenBlas {
  cblas_sgemm_t sgemm = nullptr;
  openblas_set_threads_t set_threads = nullptr;
};
const OpenBlas& openblas() {
  static OpenBlas ob = [] {
    OpenBlas o;
    for (const char* lib : {"libopenblas.so.0", "libopenblas.so", "libopenblasp.so.0"}) {
      void* h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
      if (!h) continue;
      o.sgemm = (cblas_sgemm_t)dlsym(h, "cblas_sgemm");
      o.set_threads = (openblas_set_threads_t)dlsym(h, "openblas_set_num_threads");
      if (o.sgemm) break;
    }
    return o;
  }();
  return ob;
}

Napi::Value OpenBlasAvailable(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), openblas().sgemm != nullptr);
}

// openblasSgemm({a, b, c, m, k, n, transB?, threads}): C = A @ op(B), row-major.
Napi::Value OpenBlasSgemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!openblas().sgemm) throw Napi::Error::New(env, "OpenBLAS is not installed");
  Args args(info);
  int m = args.integer("m", 1), k = args.integer("k", 1), n = args.integer("n", 1);
  bool transB = args.flag("transB");
  int threads = args.integer("threads", 1, 1024);
  const float* a = args.array<float>("a", checked_size(env, {m, k}));
  const float* b = args.array<float>("b", checked_size(env, {k, n}));
  float* c = args.array<float>("c", checked_size(env, {m, n}));
  if (openblas().set_threads) openblas().set_threads(threads);
  // CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112
  openblas().sgemm(101, 111, transB ? 112 : 111, m, n, k, 1.0f, a, k, b, transB ? k : n, 0.0f, c, n);
  return env.Undefined();
}

}  // namespace

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  exports.Set("backend", Napi::String::New(env, backend().name));
  exports.Set("isa", Napi::String::New(env, cpu_isa()));
  static const Export table[] = {
      {"getThreads", GetThreads},
      {"setThreads", SetThreads},
      {"openblasAvailable", OpenBlasAvailable},
      {"openblasSgemm", OpenBlasSgemm},
  };
  export_all(env, exports, table);
  register_gemm(env, exports);
  register_attention(env, exports);
  register_layers(env, exports);
  register_losses(env, exports);
  register_sampling(env, exports);
  register_optim(env, exports);
  register_model(env, exports);
  register_cuda(env, exports);
  return exports;
}

}  // namespace wst::binding

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  return wst::binding::InitModule(env, exports);
}

NODE_API_MODULE(wst_dash, Init)
