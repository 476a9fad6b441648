// CUDA device queries for the CUDA addon (build/Release/cuda/wst_dash_cuda.node), which is the
// same binding compiled with WST_DASH_WITH_CUDA=1 and linked with native/cuda/. In the CPU addon
// this file compiles to an empty register_cuda(), so InitModule can call it unconditionally.
//   deviceCount(): usable CUDA devices (compute capability >= 8.0); 0 without driver or device.
//   deviceName():  name of device 0, or null when there is none.
#include "util.h"

#ifdef WST_DASH_WITH_CUDA
#include "../native/cuda/cuda_kernels.h"
#endif

namespace wst::binding {

void register_cuda(Napi::Env env, Napi::Object exports);

#ifdef WST_DASH_WITH_CUDA
namespace {
Napi::Value DeviceCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cuda_device_count());
}
Napi::Value DeviceName(const Napi::CallbackInfo& info) {
  if (cuda_device_count() == 0) return info.Env().Null();
  return Napi::String::New(info.Env(), cuda_device_name());
}
}  // namespace

void register_cuda(Napi::Env env, Napi::Object exports) {
  exports.Set("deviceCount", Napi::Function::New(env, DeviceCount));
  exports.Set("deviceName", Napi::Function::New(env, DeviceName));
}
#else
void register_cuda(Napi::Env, Napi::Object) {}
#endif

}  // namespace wst::binding
