#include "util.h"

namespace wst {
// Raw Philox4x32-10 block (native/cpu/sampling.cpp), for the known-answer tests.
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
}  // namespace wst

namespace wst::binding {
namespace {

// sampleTokens(logits, ids, logprobs|null, rows, vocab, temperature, topK, topP, minP,
//              seeds, counters, async)
// logits (rows,vocab) -> ids (rows), logprobs (rows); seeds, counters: BigUint64Array (rows).
Napi::Value SampleTokens(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int rows = int_arg(info, 3, "rows", 1), vocab = int_arg(info, 4, "vocab", 1);
  double temperature = number_arg(info, 5, "temperature");
  if (temperature < 0) throw Napi::RangeError::New(env, "temperature must be >= 0");
  SamplingParams params;
  params.temperature = (float)temperature;
  params.top_k = int_arg(info, 6, "topK", 0, vocab);
  params.top_p = (float)number_arg(info, 7, "topP");
  params.min_p = (float)number_arg(info, 8, "minP");
  if (!(params.top_p > 0 && params.top_p <= 1)) throw Napi::RangeError::New(env, "topP must be in (0, 1]");
  if (!(params.min_p >= 0 && params.min_p < 1)) throw Napi::RangeError::New(env, "minP must be in [0, 1)");
  bool async = bool_arg(info, 11, "async");
  const float* logits = array_arg<float>(info, 0, "logits", checked_size(env, {rows, vocab}), keep);
  int32_t* ids = array_arg<int32_t>(info, 1, "ids", (size_t)rows, keep);
  float* logprobs = array_arg<float>(info, 2, "logprobs", (size_t)rows, keep, true);
  const uint64_t* seeds = array_arg<uint64_t>(info, 9, "seeds", (size_t)rows, keep);
  const uint64_t* counters = array_arg<uint64_t>(info, 10, "counters", (size_t)rows, keep);
  return run_op(info, async, keep, [=] {
    backend().sample_tokens(ids, logprobs, logits, rows, vocab, params, seeds, counters);
  });
}

uint32_t* u32_arg(const Napi::CallbackInfo& info, size_t i, const char* name, size_t expected) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Uint32Array");
  auto arr = v.As<Napi::Uint32Array>();
  if (arr.ElementLength() != expected)
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must have length " +
                                                std::to_string(expected) + ", got " +
                                                std::to_string(arr.ElementLength()));
  return arr.Data();
}

// philox4x32(counter Uint32Array(4), key Uint32Array(2)) -> Uint32Array(4)
Napi::Value Philox4x32(const Napi::CallbackInfo& info) {
  const uint32_t* ctr = u32_arg(info, 0, "counter", 4);
  const uint32_t* key = u32_arg(info, 1, "key", 2);
  auto out = Napi::Uint32Array::New(info.Env(), 4);
  philox4x32_10(ctr, key, out.Data());
  return out;
}

// philoxUniform(keys BigUint64Array(n), counters BigUint64Array(n), out Float32Array(n))
Napi::Value PhiloxUniform(const Napi::CallbackInfo& info) {
  std::vector<Napi::Value> keep;
  size_t n = 0;
  const uint64_t* keys = array_arg<uint64_t>(info, 0, "keys", kAnyLength, keep, false, &n);
  const uint64_t* counters = array_arg<uint64_t>(info, 1, "counters", n, keep);
  float* out = array_arg<float>(info, 2, "out", n, keep);
  for (size_t i = 0; i < n; i++) out[i] = philox_uniform(keys[i], counters[i]);
  return info.Env().Undefined();
}

}  // namespace

void register_sampling(Napi::Env env, Napi::Object exports) {
  exports.Set("sampleTokens", Napi::Function::New(env, SampleTokens));
  exports.Set("philox4x32", Napi::Function::New(env, Philox4x32));
  exports.Set("philoxUniform", Napi::Function::New(env, PhiloxUniform));
}

}  // namespace wst::binding
