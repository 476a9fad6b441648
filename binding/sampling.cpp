#include "util.h"

namespace wst {
// Raw Philox4x32-10 block (native/cpu/sampling.cpp), for the known-answer tests.
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
}  // namespace wst

namespace wst::binding {
namespace {

// sampleTokens({logits, ids, logprobs?, rows, vocab, temperature, topK, topP, minP, seeds,
// counters}, async): logits (rows,vocab) -> ids (rows), logprobs (rows); seeds, counters:
// BigUint64Array (rows).
Napi::Value SampleTokens(const Napi::CallbackInfo& info) {
  Args args(info);
  int rows = args.integer("rows", 1), vocab = args.integer("vocab", 1);
  double temperature = args.number("temperature");
  if (temperature < 0) throw args.range_error("temperature must be >= 0");
  SamplingParams params;
  params.temperature = (float)temperature;
  params.top_k = args.integer("topK", 0, vocab);
  params.top_p = (float)args.number("topP");
  params.min_p = (float)args.number("minP");
  if (!(params.top_p > 0 && params.top_p <= 1)) throw args.range_error("topP must be in (0, 1]");
  if (!(params.min_p >= 0 && params.min_p < 1)) throw args.range_error("minP must be in [0, 1)");
  const float* logits = args.array<float>("logits", checked_size(info.Env(), {rows, vocab}));
  int32_t* ids = args.array<int32_t>("ids", (size_t)rows);
  float* logprobs = args.optional_array<float>("logprobs", (size_t)rows);
  const uint64_t* seeds = args.array<uint64_t>("seeds", (size_t)rows);
  const uint64_t* counters = args.array<uint64_t>("counters", (size_t)rows);
  return run_op(info, args, [=] { backend().sample_tokens(ids, logprobs, logits, rows, vocab, params, seeds, counters); });
}

// philox4x32({counter: Uint32Array(4), key: Uint32Array(2)}) -> Uint32Array(4)
Napi::Value Philox4x32(const Napi::CallbackInfo& info) {
  Args args(info);
  const uint32_t* ctr = args.array<uint32_t>("counter", 4);
  const uint32_t* key = args.array<uint32_t>("key", 2);
  auto out = Napi::Uint32Array::New(info.Env(), 4);
  philox4x32_10(ctr, key, out.Data());
  return out;
}

// philoxUniform({keys: BigUint64Array(n), counters: BigUint64Array(n), out: Float32Array(n)})
Napi::Value PhiloxUniform(const Napi::CallbackInfo& info) {
  Args args(info);
  size_t n = 0;
  const uint64_t* keys = args.array<uint64_t>("keys", kAnyLength, &n);
  const uint64_t* counters = args.array<uint64_t>("counters", n);
  float* out = args.array<float>("out", n);
  for (size_t i = 0; i < n; i++) out[i] = philox_uniform(keys[i], counters[i]);
  return info.Env().Undefined();
}

}  // namespace

void register_sampling(Napi::Env env, Napi::Object exports) {
  static const Export table[] = {
      {"sampleTokens", SampleTokens}, {"philox4x32", Philox4x32}, {"philoxUniform", PhiloxUniform},
  };
  export_all(env, exports, table);
}

}  // namespace wst::binding
