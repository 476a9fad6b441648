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
template <> struct TypedArrayTraits<uint32_t> {
  static constexpr napi_typedarray_type type = napi_uint32_array;
  static constexpr const char* name = "Uint32Array";
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

// The reader of one call's arguments. Every addon function takes one options object (and, for
// work that can run off the event loop, an `async` flag after it: see run_op); fields are read by
// name, and every error names the field with its path ("prefix.count must be ..."). Typed arrays
// read are collected in keep(), so that async work holds them alive. The TypeScript side of this
// contract is src/native-api.ts.
class Args {
 public:
  // info[0]: the options object.
  explicit Args(const Napi::CallbackInfo& info)
      : Args(info.Env(), info[0], "", std::make_shared<std::vector<Napi::Value>>(), "the options") {}
  // An options object found elsewhere (a list element, a constructor's config): `path` prefixes
  // its field names in errors ("config." or "microBatches[2].").
  Args(Napi::Env env, Napi::Value value, std::string path, std::shared_ptr<std::vector<Napi::Value>> keep,
       const std::string& what)
      : env_(env), path_(std::move(path)), keep_(std::move(keep)) {
    if (!value.IsObject() || value.IsTypedArray() || value.IsArray())
      throw Napi::TypeError::New(env, what + " must be an object");
    obj_ = value.As<Napi::Object>();
  }

  Napi::Env env() const { return env_; }
  std::vector<Napi::Value>& keep() const { return *keep_; }
  // The field's name as errors give it.
  std::string field(const char* name) const { return path_ + name; }
  Napi::Value get(const char* name) const { return obj_.Get(name); }
  bool present(const char* name) const {
    Napi::Value v = obj_.Get(name);
    return !v.IsUndefined() && !v.IsNull();
  }
  Napi::Error range_error(const std::string& message) const { return Napi::RangeError::New(env_, message); }

  // A nested options object (its errors say "name.field").
  Args object(const char* name) const { return nested(get(name), field(name)); }
  // An options object found inside this one (e.g. a list element), named `path` in errors; its
  // typed arrays are kept with this call's.
  Args nested(Napi::Value value, const std::string& path) const { return Args(env_, value, path + ".", keep_, path); }

  // A typed array of element type T and length `expected` (kAnyLength: any; the length read is
  // stored in *length when given).
  template <class T>
  T* array(const char* name, size_t expected = kAnyLength, size_t* length = nullptr) const {
    Napi::Value v = get(name);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != TypedArrayTraits<T>::type)
      throw Napi::TypeError::New(env_, field(name) + (TypedArrayTraits<T>::name[0] == 'I' ? " must be an " : " must be a ") +
                                           TypedArrayTraits<T>::name);
    auto arr = v.As<Napi::TypedArrayOf<T>>();
    if (expected != kAnyLength && arr.ElementLength() != expected)
      throw range_error(field(name) + " must have length " + std::to_string(expected) + ", got " +
                        std::to_string(arr.ElementLength()));
    if (length) *length = arr.ElementLength();
    keep_->push_back(v);
    return arr.Data();
  }
  // The same, or nullptr when the field is null or absent.
  template <class T>
  T* optional_array(const char* name, size_t expected = kAnyLength, size_t* length = nullptr) const {
    if (present(name)) return array<T>(name, expected, length);
    if (length) *length = 0;
    return nullptr;
  }

  double number(const char* name) const {
    Napi::Value v = get(name);
    if (!v.IsNumber()) throw Napi::TypeError::New(env_, field(name) + " must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d)) throw range_error(field(name) + " must be finite");
    return d;
  }
  // An optional number: `fallback` when the field is absent.
  double number(const char* name, double fallback) const {
    return get(name).IsUndefined() ? fallback : number(name);
  }
  int integer(const char* name, int64_t lo, int64_t hi = std::numeric_limits<int32_t>::max()) const {
    double d = number(name);
    if (d != std::floor(d) || d < (double)lo || d > (double)hi)
      throw range_error(field(name) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return (int)d;
  }
  // An optional boolean (absent: false).
  bool flag(const char* name) const {
    Napi::Value v = get(name);
    if (v.IsUndefined()) return false;
    if (!v.IsBoolean()) throw Napi::TypeError::New(env_, field(name) + " must be a boolean");
    return v.As<Napi::Boolean>().Value();
  }
  std::string string(const char* name) const {
    Napi::Value v = get(name);
    if (!v.IsString()) throw Napi::TypeError::New(env_, field(name) + " must be a string");
    return v.As<Napi::String>().Utf8Value();
  }
  // One of `names` (a string field), as its index.
  template <size_t N>
  int choice(const char* name, const char* const (&names)[N]) const {
    std::string s = string(name), all;
    for (size_t i = 0; i < N; i++) {
      if (s == names[i]) return (int)i;
      all += (i ? ", " : "") + std::string("\"") + names[i] + "\"";
    }
    throw range_error(field(name) + " must be one of " + all + ", got \"" + s + "\"");
  }

 private:
  Napi::Env env_;
  Napi::Object obj_;
  std::string path_;
  std::shared_ptr<std::vector<Napi::Value>> keep_;
};

// The async flag after a call's options object (absent: false).
inline bool async_flag(const Napi::CallbackInfo& info, size_t i = 1) {
  Napi::Value v = info[i];
  if (v.IsUndefined()) return false;
  if (!v.IsBoolean()) throw Napi::TypeError::New(info.Env(), "async must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

// One scalar argument of a call that takes nothing else (setThreads(n), finishRow(row)).
inline int int_param(const Napi::CallbackInfo& info, const char* name, int64_t lo,
                     int64_t hi = std::numeric_limits<int32_t>::max()) {
  Napi::Value v = info[0];
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!(d == std::floor(d) && d >= (double)lo && d <= (double)hi))
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be an integer in [" + std::to_string(lo) +
                                                ", " + std::to_string(hi) + "]");
  return (int)d;
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

// Runs `work` for the call `info` whose arguments `args` read: now, or on a worker when the
// call's async flag (info[1]) is set.
inline Napi::Value run_op(const Napi::CallbackInfo& info, const Args& args, Work work,
                          MakeResult make_result = nullptr) {
  return run_op(info, async_flag(info), args.keep(), std::move(work), std::move(make_result));
}

// A row-major matrix shape read from two integer fields (rows >= 0, cols >= min_cols), and its size.
struct Matrix {
  int rows, cols;
  size_t size;
};
inline Matrix matrix_fields(const Args& args, const char* rows, const char* cols, int min_cols) {
  Matrix m;
  m.rows = args.integer(rows, 0);
  m.cols = args.integer(cols, min_cols);
  m.size = checked_size(args.env(), {m.rows, m.cols});
  return m;
}

// The GRPO loss's parameters from fields clipLow, clipHigh, beta, filterThreshold (null: no
// filtering), lossType ("grpo" | "bnpo" | "dr_grpo" | "dapo") and normalizer (losses.cpp).
GrpoParams grpo_params(const Args& args);

// A binding file's functions, by the name JavaScript calls them.
struct Export {
  const char* name;
  Napi::Value (*fn)(const Napi::CallbackInfo&);
};
template <size_t N>
void export_all(Napi::Env env, Napi::Object exports, const Export (&table)[N]) {
  for (const Export& e : table) exports.Set(e.name, Napi::Function::New(env, e.fn, e.name));
}

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
