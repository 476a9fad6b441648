// Shared glue for the binding: argument readers that name the argument in every error, and
// one runner that executes an op either synchronously or on a libuv worker (Promise).
// The TypeScript layer validates first and gives the friendlier messages; these checks are
// the last line, so that even a direct call with bad arguments throws instead of crashing.
#pragma once
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "../native/backend.h"

namespace wst::binding {

const Backend& backend();

template <class T> struct TypedArrayTraits;
template <> struct TypedArrayTraits<float> {
  static constexpr napi_typedarray_type type = napi_float32_array;
  static constexpr const char* name = "Float32Array";
};
template <> struct TypedArrayTraits<uint16_t> {  // bf16 bits
  static constexpr napi_typedarray_type type = napi_uint16_array;
  static constexpr const char* name = "Uint16Array";
};
template <> struct TypedArrayTraits<int32_t> {
  static constexpr napi_typedarray_type type = napi_int32_array;
  static constexpr const char* name = "Int32Array";
};
template <> struct TypedArrayTraits<uint64_t> {
  static constexpr napi_typedarray_type type = napi_biguint64_array;
  static constexpr const char* name = "BigUint64Array";
};

constexpr size_t kAnyLength = std::numeric_limits<size_t>::max();

// The arguments of one micro-batch inside an array argument (trainGrpoMany): indexed like a
// CallbackInfo, so the argument helpers below read either.
struct ArrayArgs {
  Napi::Env env;
  Napi::Array items;
  Napi::Env Env() const { return env; }
  size_t Length() const { return items.Length(); }
  Napi::Value operator[](size_t i) const { return i < items.Length() ? items.Get((uint32_t)i) : env.Undefined(); }
};

// A typed-array argument. expected == kAnyLength accepts any length; `nullable` accepts
// null/undefined and returns nullptr. The array is appended to `keep` so async work can
// hold it alive.
template <class T, class Info>
T* array_arg(const Info& info, size_t i, const char* name, size_t expected,
             std::vector<Napi::Value>& keep, bool nullable = false, size_t* length = nullptr) {
  Napi::Env env = info.Env();
  Napi::Value v = info[i];
  if (nullable && (v.IsNull() || v.IsUndefined())) {
    if (length) *length = 0;
    return nullptr;
  }
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != TypedArrayTraits<T>::type)
    throw Napi::TypeError::New(env, std::string(name) + " must be a " + TypedArrayTraits<T>::name);
  auto arr = v.As<Napi::TypedArrayOf<T>>();
  if (expected != kAnyLength && arr.ElementLength() != expected)
    throw Napi::RangeError::New(env, std::string(name) + " must have length " +
                                         std::to_string(expected) + ", got " +
                                         std::to_string(arr.ElementLength()));
  if (length) *length = arr.ElementLength();
  keep.push_back(v);
  return arr.Data();
}

template <class Info>
double number_arg(const Info& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) throw Napi::RangeError::New(info.Env(), std::string(name) + " must be finite");
  return d;
}

template <class Info>
int int_arg(const Info& info, size_t i, const char* name, int64_t lo,
                   int64_t hi = std::numeric_limits<int32_t>::max()) {
  double d = number_arg(info, i, name);
  if (d != std::floor(d) || d < (double)lo || d > (double)hi)
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be an integer in [" +
                                                std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return (int)d;
}

template <class Info>
bool bool_arg(const Info& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (v.IsUndefined()) return false;
  if (!v.IsBoolean()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

// Product of sizes as size_t, refusing overflow and absurd totals.
inline size_t checked_size(const Napi::Env& env, std::initializer_list<int64_t> dims) {
  size_t total = 1;
  for (int64_t d : dims) {
    if (d < 0) throw Napi::RangeError::New(env, "sizes must be non-negative");
    if (d != 0 && total > (size_t(1) << 40) / (size_t)d)
      throw Napi::RangeError::New(env, "tensor size overflows");
    total *= (size_t)d;
  }
  return total;
}

// Token ids must lie in [0, vocab) (negative allowed where they mean "ignored"): checked in the
// binding too, so that a direct call can never index out of bounds.
inline void check_ids(const Napi::Env& env, const int32_t* ids, size_t n, int64_t vocab, const char* name,
                      bool allow_negative = false) {
  for (size_t i = 0; i < n; i++)
    if (ids[i] >= vocab || (!allow_negative && ids[i] < 0))
      throw Napi::RangeError::New(env, std::string(name) + "[" + std::to_string(i) + "] = " +
                                           std::to_string(ids[i]) + " is outside [0, " +
                                           std::to_string(vocab) + ")");
}

// A JS object that a MakeResult may return later: local handles die with their scope, so a
// result built before async work must be held through a persistent reference.
inline std::shared_ptr<Napi::ObjectReference> persist(Napi::Object o) {
  return std::make_shared<Napi::ObjectReference>(Napi::Persistent(o));
}

using Work = std::function<void()>;
using MakeResult = std::function<Napi::Value(Napi::Env)>;

// Runs `work` now (returns make_result) or on a worker thread (returns a Promise that
// resolves to make_result). `keep` holds the typed arrays alive until the work is done.
Napi::Value run_op(const Napi::CallbackInfo& info, bool async, std::vector<Napi::Value>& keep,
                   Work work, MakeResult make_result = nullptr);

// Registration hooks, one per binding file.
void register_gemm(Napi::Env env, Napi::Object exports);
void register_attention(Napi::Env env, Napi::Object exports);
void register_layers(Napi::Env env, Napi::Object exports);
void register_losses(Napi::Env env, Napi::Object exports);
void register_sampling(Napi::Env env, Napi::Object exports);
void register_optim(Napi::Env env, Napi::Object exports);
void register_model(Napi::Env env, Napi::Object exports);
void register_cuda(Napi::Env env, Napi::Object exports);  // deviceCount/deviceName (CUDA addon)

}  // namespace wst::binding
