// Model and Context handles: the Llama-family model lives natively; JS holds handles and calls
// whole steps (forward, score, train step, optimizer step, prefill, decode), each of which can
// run off the event loop. Calls on one model are serialised by its mutex.
#include <memory>

#include "../native/model/llama.h"
#ifdef WST_DASH_WITH_CUDA
#include "../native/cuda/cuda_kernels.h"
#endif
#include "util.h"

namespace wst::binding {
namespace {

int get_int(const Napi::Object& o, const char* key, int lo, int hi) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("config.") + key + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != std::floor(d) || d < lo || d > hi)
    throw Napi::RangeError::New(o.Env(), std::string("config.") + key + " must be an integer in [" +
                                             std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return (int)d;
}
double get_num(const Napi::Object& o, const char* key, double fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue()))
    throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a finite number");
  return v.As<Napi::Number>().DoubleValue();
}
bool get_bool(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return false;
  if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), std::string("config.") + key + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}
template <class Info>
Napi::Object object_arg(const Info& info, size_t i, const char* name) {
  if (!info[i].IsObject()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be an object");
  return info[i].template As<Napi::Object>();
}

class ContextWrap;

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::FunctionReference ctor;
  static void Register(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(env, "Model", {
      InstanceMethod("tensors", &ModelWrap::Tensors),
      InstanceMethod("setTensor", &ModelWrap::SetTensor),
      InstanceMethod("getTensor", &ModelWrap::GetTensor),
      InstanceMethod("getGrad", &ModelWrap::GetGrad),
      InstanceMethod("initRandom", &ModelWrap::InitRandom),
      InstanceMethod("numParams", &ModelWrap::NumParams),
      InstanceMethod("promptStore", &ModelWrap::PromptStore),
      InstanceMethod("activationFloatsPerToken", &ModelWrap::ActivationFloatsPerToken),
      InstanceMethod("forwardLogits", &ModelWrap::ForwardLogits),
      InstanceMethod("score", &ModelWrap::Score),
      InstanceMethod("trainSft", &ModelWrap::TrainSft),
      InstanceMethod("valueForward", &ModelWrap::ValueForward),
      InstanceMethod("valueBackward", &ModelWrap::ValueBackward),
      InstanceMethod("trainGrpo", &ModelWrap::TrainGrpo),
      InstanceMethod("trainGrpoMany", &ModelWrap::TrainGrpoMany),
      InstanceMethod("optimizerStep", &ModelWrap::OptimizerStep),
      InstanceMethod("zeroGrad", &ModelWrap::ZeroGrad),
      InstanceMethod("getStep", &ModelWrap::GetStep),
      InstanceMethod("setStep", &ModelWrap::SetStep),
      InstanceMethod("getOptimizerState", &ModelWrap::GetOptimizerState),
      InstanceMethod("setOptimizerState", &ModelWrap::SetOptimizerState),
      InstanceMethod("createContext", &ModelWrap::CreateContext),
    });
    ctor = Napi::Persistent(f);
    ctor.SuppressDestruct();
    exports.Set("Model", f);
  }

  explicit ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
    Napi::Object c = object_arg(info, 0, "config");
    LlamaConfig cfg;
    cfg.vocab = get_int(c, "vocabSize", 1, 1 << 24);
    cfg.dim = get_int(c, "hiddenSize", 1, 1 << 16);
    cfg.hidden = get_int(c, "intermediateSize", 1, 1 << 18);
    cfg.n_layers = get_int(c, "numLayers", 1, 1024);
    cfg.n_heads = get_int(c, "numHeads", 1, 1024);
    cfg.n_kv_heads = get_int(c, "numKvHeads", 1, cfg.n_heads);
    cfg.head_dim = get_int(c, "headDim", 2, 1024);
    if (cfg.n_heads % cfg.n_kv_heads != 0)
      throw Napi::RangeError::New(info.Env(), "config.numHeads must be divisible by config.numKvHeads");
    if (cfg.head_dim % 2 != 0) throw Napi::RangeError::New(info.Env(), "config.headDim must be even");
    cfg.rope_theta = (float)get_num(c, "ropeTheta", 10000.0);
    cfg.norm_eps = (float)get_num(c, "rmsNormEps", 1e-5);
    cfg.tied_embeddings = get_bool(c, "tieWordEmbeddings");
    cfg.qkv_bias = get_bool(c, "attentionBias");
    cfg.qk_norm = get_bool(c, "qkNorm");
    // config.device: "cpu" (default) or "cuda" (weights, caches, activations and optimizer
    // state resident on the GPU; the CUDA build of the addon with a usable device).
    std::string device = "cpu";
    if (!c.Get("device").IsUndefined()) {
      if (!c.Get("device").IsString()) throw Napi::TypeError::New(info.Env(), "config.device must be \"cpu\" or \"cuda\"");
      device = c.Get("device").As<Napi::String>().Utf8Value();
    }
    const Backend* be = &cpu_backend();
    if (device == "cuda") {
#ifdef WST_DASH_WITH_CUDA
      if (cuda_device_count() == 0)
        throw Napi::Error::New(info.Env(), "config.device is \"cuda\" but no usable CUDA device was found");
      be = &cuda_backend();
#else
      throw Napi::Error::New(info.Env(), "config.device is \"cuda\" but the CPU addon is loaded: no usable CUDA device, no CUDA build of the addon, or WST_DASH_BACKEND=cpu");
#endif
    } else if (device != "cpu") {
      throw Napi::RangeError::New(info.Env(), "config.device must be \"cpu\" or \"cuda\", got \"" + device + "\"");
    }
    try {
      model_ = std::make_shared<LlamaModel>(be, cfg);
    } catch (const std::bad_alloc&) {
      throw Napi::RangeError::New(info.Env(), "out of memory allocating the model");
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  std::shared_ptr<LlamaModel> model_;

 private:
  const LlamaConfig& cfg() const { return model_->config(); }

  const TensorInfo& tensor_arg(const Napi::CallbackInfo& info, size_t i) {
    if (!info[i].IsString()) throw Napi::TypeError::New(info.Env(), "name must be a string");
    std::string name = info[i].As<Napi::String>();
    const TensorInfo* t = model_->find(name);
    if (!t) throw Napi::RangeError::New(info.Env(), "unknown tensor \"" + name + "\"");
    return *t;
  }

  Napi::Value Tensors(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array out = Napi::Array::New(env, model_->tensors().size());
    uint32_t i = 0;
    for (auto& t : model_->tensors()) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", t.name);
      Napi::Array shape = Napi::Array::New(env, t.shape.size());
      for (uint32_t d = 0; d < t.shape.size(); d++) shape.Set(d, Napi::Number::New(env, (double)t.shape[d]));
      o.Set("shape", shape);
      out.Set(i++, o);
    }
    return out;
  }

  Napi::Value SetTensor(const Napi::CallbackInfo& info) {
    const TensorInfo& t = tensor_arg(info, 0);
    std::vector<Napi::Value> keep;
    const float* data = array_arg<float>(info, 1, "data", t.size, keep);
    std::lock_guard<std::mutex> lk(model_->mutex());
    model_->set_tensor(t, data);
    return info.Env().Undefined();
  }

  Napi::Value GetTensor(const Napi::CallbackInfo& info) {
    const TensorInfo& t = tensor_arg(info, 0);
    Napi::Float32Array out = Napi::Float32Array::New(info.Env(), t.size);
    std::lock_guard<std::mutex> lk(model_->mutex());
    model_->get_tensor(t, out.Data());
    return out;
  }

  Napi::Value GetGrad(const Napi::CallbackInfo& info) {
    const TensorInfo& t = tensor_arg(info, 0);
    Napi::Float32Array out = Napi::Float32Array::New(info.Env(), t.size);
    std::lock_guard<std::mutex> lk(model_->mutex());
    model_->get_grad(t, out.Data());
    return out;
  }

  Napi::Value InitRandom(const Napi::CallbackInfo& info) {
    double seed = number_arg(info, 0, "seed");
    double std = number_arg(info, 1, "std");
    std::lock_guard<std::mutex> lk(model_->mutex());
    model_->init_random((uint64_t)seed, (float)std);
    return info.Env().Undefined();
  }

  Napi::Value NumParams(const Napi::CallbackInfo& info) {
    size_t n = 0;
    for (auto& t : model_->tensors()) n += t.size;
    return Napi::Number::New(info.Env(), (double)n);
  }

  // promptStore() -> { stored: prompts held for the current parameters, hits: prefixed training
  // forwards that took their prefix rows from it } (see LlamaModel::prefill).
  Napi::Value PromptStore(const Napi::CallbackInfo& info) {
    std::lock_guard<std::mutex> lk(model_->mutex());
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("stored", Napi::Number::New(info.Env(), model_->stored_prompts()));
    o.Set("hits", Napi::Number::New(info.Env(), (double)model_->prompt_store_hits()));
    return o;
  }

  Napi::Value ActivationFloatsPerToken(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), (double)model_->activation_floats_per_token());
  }

  // forwardLogits(tokens (B*T), B, T, async) -> Float32Array (B*T*V)
  Napi::Value ForwardLogits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<Napi::Value> keep{info.This()};
    int B = int_arg(info, 1, "batch", 1), T = int_arg(info, 2, "seq", 1);
    bool async = bool_arg(info, 3, "async");
    const int32_t* tokens = array_arg<int32_t>(info, 0, "tokens", checked_size(env, {B, T}), keep);
    check_ids(env, tokens, (size_t)B * T, "tokens");
    Napi::Float32Array out = Napi::Float32Array::New(env, checked_size(env, {B, T, cfg().vocab}));
    keep.push_back(out);
    float* o = out.Data();
    auto m = model_;
    return run_op(info, async, keep, [=] {
      std::lock_guard<std::mutex> lk(m->mutex());
      m->forward_logits(tokens, B, T, o);
    }, [ref = persist(out)](Napi::Env) -> Napi::Value { return ref->Value(); });
  }

  // score(tokens, targets, B, T, entropy, async, prefix?) -> { logprobs, entropy? }
  Napi::Value Score(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<Napi::Value> keep{info.This()};
    int B = int_arg(info, 2, "batch", 1), T = int_arg(info, 3, "seq", 1);
    bool want_entropy = bool_arg(info, 4, "entropy");
    bool async = bool_arg(info, 5, "async");
    size_t N = checked_size(env, {B, T});
    const int32_t* tokens = array_arg<int32_t>(info, 0, "tokens", N, keep);
    const int32_t* targets = array_arg<int32_t>(info, 1, "targets", N, keep);
    check_ids(env, tokens, N, "tokens");
    check_targets(env, targets, N);
    PrefixBatch pb;
    const bool prefixed = prefix_arg(info, 6, B, keep, pb);
    Napi::Float32Array lp = Napi::Float32Array::New(env, N);
    Napi::Float32Array ent = Napi::Float32Array::New(env, want_entropy ? N : 0);
    keep.push_back(lp);
    keep.push_back(ent);
    float* lpd = lp.Data();
    float* entd = want_entropy ? ent.Data() : nullptr;
    auto m = model_;
    return run_op(info, async, keep, [=] {
      std::lock_guard<std::mutex> lk(m->mutex());
      m->score(tokens, targets, B, T, lpd, entd, prefixed ? &pb : nullptr);
    }, [lpr = persist(lp), entr = persist(ent), want_entropy](Napi::Env env) -> Napi::Value {
      Napi::Object o = Napi::Object::New(env);
      o.Set("logprobs", lpr->Value());
      if (want_entropy) o.Set("entropy", entr->Value());
      return o;
    });
  }

  static Napi::Object step_result(Napi::Env env, const TrainStepResult& r) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("loss", r.loss);
    o.Set("tokens", r.tokens);
    o.Set("entropy", r.entropy);
    o.Set("kept", r.grpo.kept);
    o.Set("clipFraction", r.grpo.clip_fraction);
    o.Set("kl", r.grpo.kl);
    return o;
  }

  // valueForward(tokens (B*T), last (B), w (C), B, T, async, prefix?) -> Float32Array r (B)
  Napi::Value ValueForward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<Napi::Value> keep{info.This()};
    int B = int_arg(info, 3, "batch", 1), T = int_arg(info, 4, "seq", 1);
    bool async = bool_arg(info, 5, "async");
    size_t N = checked_size(env, {B, T});
    const int32_t* tokens = array_arg<int32_t>(info, 0, "tokens", N, keep);
    const int32_t* last = array_arg<int32_t>(info, 1, "last", (size_t)B, keep);
    const float* w = array_arg<float>(info, 2, "w", (size_t)cfg().dim, keep);
    check_ids(env, tokens, N, "tokens");
    for (int b = 0; b < B; b++)
      if (last[b] < 0 || last[b] >= T) throw Napi::RangeError::New(env, "last[" + std::to_string(b) + "] must be in [0, seq)");
    PrefixBatch pb;
    const bool prefixed = prefix_arg(info, 6, B, keep, pb);
    Napi::Float32Array r = Napi::Float32Array::New(env, B);
    keep.push_back(r);
    float* rd = r.Data();
    auto m = model_;
    return run_op(info, async, keep, [=] {
      std::lock_guard<std::mutex> lk(m->mutex());
      m->value_forward(tokens, B, T, last, w, rd, prefixed ? &pb : nullptr);
    }, [ref = persist(r)](Napi::Env) -> Napi::Value { return ref->Value(); });
  }

  // valueBackward(dr (B), w (C), async) -> Float32Array dw (C); right after valueForward
  Napi::Value ValueBackward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<Napi::Value> keep{info.This()};
    bool async = bool_arg(info, 2, "async");
    size_t n = 0;
    const float* dr = array_arg<float>(info, 0, "dr", kAnyLength, keep, false, &n);
    const float* w = array_arg<float>(info, 1, "w", (size_t)cfg().dim, keep);
    Napi::Float32Array dw = Napi::Float32Array::New(env, cfg().dim);
    keep.push_back(dw);
    float* dwd = dw.Data();
    auto m = model_;
    return run_op(info, async, keep, [=] {
      std::lock_guard<std::mutex> lk(m->mutex());
      m->value_backward(dr, (int)n, w, dwd);
    }, [ref = persist(dw)](Napi::Env) -> Napi::Value { return ref->Value(); });
  }

  // trainSft(tokens, targets, B, T, normalizer, async) -> { loss, tokens, entropy }
  Napi::Value TrainSft(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<Napi::Value> keep{info.This()};
    int B = int_arg(info, 2, "batch", 1), T = int_arg(info, 3, "seq", 1);
    double normalizer = number_arg(info, 4, "normalizer");
    if (normalizer <= 0) throw Napi::RangeError::New(env, "normalizer must be > 0");
    bool async = bool_arg(info, 5, "async");
    size_t N = checked_size(env, {B, T});
    const int32_t* tokens = array_arg<int32_t>(info, 0, "tokens", N, keep);
    const int32_t* targets = array_arg<int32_t>(info, 1, "targets", N, keep);
    check_ids(env, tokens, N, "tokens");
    check_targets(env, targets, N);
    auto m = model_;
    auto result = std::make_shared<TrainStepResult>();
    return run_op(info, async, keep, [=] {
      std::lock_guard<std::mutex> lk(m->mutex());
      *result = m->train_sft(tokens, targets, B, T, SftParams{normalizer});
    }, [result](Napi::Env env) { return step_result(env, *result); });
  }

  // trainGrpo(tokens, targets, mask|null, old, ref|null, advantages, B, T, params, async, prefix?)
  // The arguments of one GRPO micro-batch (trainGrpo's, or one entry of trainGrpoMany's list):
  // tokens, targets, mask?, oldLogprobs?, refLogprobs?, advantages, batch, seq, params, _, prefix?
  struct GrpoCall {
    GrpoMicroBatch mb;
    PrefixBatch pb;
    bool prefixed = false;
  };
  template <class Info>
  void parse_grpo(const Info& info, std::vector<Napi::Value>& keep, GrpoCall& c) {
    Napi::Env env = info.Env();
    int B = int_arg(info, 6, "batch", 1), T = int_arg(info, 7, "seq", 1);
    Napi::Object p = object_arg(info, 8, "params");
    size_t N = checked_size(env, {B, T});
    GrpoMicroBatch& m = c.mb;
    m.B = B;
    m.T = T;
    m.tokens = array_arg<int32_t>(info, 0, "tokens", N, keep);
    m.targets = array_arg<int32_t>(info, 1, "targets", N, keep);
    m.mask = array_arg<float>(info, 2, "mask", N, keep, true);
    m.old_logprobs = array_arg<float>(info, 3, "oldLogprobs", N, keep, true);
    m.ref_logprobs = array_arg<float>(info, 4, "refLogprobs", N, keep, true);
    m.advantages = array_arg<float>(info, 5, "advantages", (size_t)B, keep);
    check_ids(env, m.tokens, N, "tokens");
    check_targets(env, m.targets, N);
    GrpoParams& gp = m.params;
    gp.clip_low = (float)get_num(p, "clipLow", 0.2);
    gp.clip_high = (float)get_num(p, "clipHigh", 0.2);
    gp.beta = (float)get_num(p, "beta", 0.0);
    gp.filter_threshold = (float)get_num(p, "filterThreshold", -1.0);
    int lt = (int)get_num(p, "lossType", 0);
    if (lt < 0 || lt > 3) throw Napi::RangeError::New(env, "params.lossType must be 0..3");
    gp.loss_type = (GrpoLossType)lt;
    gp.normalizer = get_num(p, "normalizer", 0.0);
    if (gp.loss_type == GrpoLossType::dapo && !(gp.normalizer > 0))
      throw Napi::RangeError::New(env, "params.normalizer must be > 0 for the dapo loss");
    m.loss_scale = (float)get_num(p, "lossScale", 1.0);
    c.prefixed = prefix_arg(info, 10, B, keep, c.pb);
  }

  Napi::Value TrainGrpo(const Napi::CallbackInfo& info) {
    std::vector<Napi::Value> keep{info.This()};
    bool async = bool_arg(info, 9, "async");
    auto call = std::make_shared<GrpoCall>();
    parse_grpo(info, keep, *call);
    auto m = model_;
    auto result = std::make_shared<TrainStepResult>();
    return run_op(info, async, keep, [=] {
      std::lock_guard<std::mutex> lk(m->mutex());
      const GrpoMicroBatch& b = call->mb;
      *result = m->train_grpo(b.tokens, b.targets, b.mask, b.old_logprobs, b.ref_logprobs, b.advantages,
                              b.B, b.T, b.params, b.loss_scale, call->prefixed ? &call->pb : nullptr);
    }, [result](Napi::Env env) { return step_result(env, *result); });
  }

  // trainGrpoMany([[trainGrpo's arguments 0..8, unused, prefix?], ...], async) -> results[]: the
  // micro-batches of one optimizer step at once (LlamaModel::train_grpo_many).
  Napi::Value TrainGrpoMany(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<Napi::Value> keep{info.This()};
    if (!info[0].IsArray()) throw Napi::TypeError::New(env, "microBatches must be an array of argument lists");
    Napi::Array list = info[0].As<Napi::Array>();
    if (list.Length() == 0) throw Napi::RangeError::New(env, "microBatches must not be empty");
    bool async = bool_arg(info, 1, "async");
    auto calls = std::make_shared<std::vector<GrpoCall>>(list.Length());
    for (uint32_t i = 0; i < list.Length(); i++) {
      Napi::Value item = list.Get(i);
      if (!item.IsArray())
        throw Napi::TypeError::New(env, "microBatches[" + std::to_string(i) + "] must be an array of trainGrpo arguments");
      try {
        parse_grpo(ArrayArgs{env, item.As<Napi::Array>()}, keep, (*calls)[i]);
      } catch (const Napi::Error& e) {
        throw Napi::RangeError::New(env, "microBatches[" + std::to_string(i) + "]: " + e.Message());
      }
    }
    auto m = model_;
    auto results = std::make_shared<std::vector<TrainStepResult>>();
    return run_op(info, async, keep, [=] {
      std::vector<GrpoMicroBatch> mbs;
      for (GrpoCall& c : *calls) {
        c.mb.prefix = c.prefixed ? &c.pb : nullptr;
        mbs.push_back(c.mb);
      }
      std::lock_guard<std::mutex> lk(m->mutex());
      *results = m->train_grpo_many(mbs);
    }, [results](Napi::Env env) {
      Napi::Array out = Napi::Array::New(env, results->size());
      for (size_t i = 0; i < results->size(); i++) out.Set((uint32_t)i, step_result(env, (*results)[i]));
      return out;
    });
  }

  // optimizerStep({lr, beta1, beta2, eps, weightDecay, maxGradNorm}, async) -> grad norm
  Napi::Value OptimizerStep(const Napi::CallbackInfo& info) {
    Napi::Object p = object_arg(info, 0, "params");
    OptimizerParams op;
    op.lr = get_num(p, "lr", 1e-3);
    op.beta1 = get_num(p, "beta1", 0.9);
    op.beta2 = get_num(p, "beta2", 0.999);
    op.eps = get_num(p, "eps", 1e-8);
    op.weight_decay = get_num(p, "weightDecay", 0.0);
    op.max_grad_norm = get_num(p, "maxGradNorm", 0.0);
    bool async = bool_arg(info, 1, "async");
    std::vector<Napi::Value> keep{info.This()};
    auto m = model_;
    auto norm = std::make_shared<double>(0);
    return run_op(info, async, keep, [=] {
      std::lock_guard<std::mutex> lk(m->mutex());
      *norm = m->optimizer_step(op);
    }, [norm](Napi::Env env) { return Napi::Number::New(env, *norm); });
  }

  Napi::Value ZeroGrad(const Napi::CallbackInfo& info) {
    std::lock_guard<std::mutex> lk(model_->mutex());
    model_->zero_grad();
    return info.Env().Undefined();
  }
  Napi::Value GetStep(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), model_->step()); }
  Napi::Value SetStep(const Napi::CallbackInfo& info) {
    model_->set_step(int_arg(info, 0, "step", 0));
    return info.Env().Undefined();
  }

  Napi::Value GetOptimizerState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!model_->has_optimizer_state()) return env.Null();
    Napi::Float32Array m = Napi::Float32Array::New(env, model_->num_params());
    Napi::Float32Array v = Napi::Float32Array::New(env, model_->num_params());
    std::lock_guard<std::mutex> lk(model_->mutex());
    model_->get_optimizer_state(m.Data(), v.Data());
    Napi::Object o = Napi::Object::New(env);
    o.Set("m", m);
    o.Set("v", v);
    return o;
  }

  Napi::Value SetOptimizerState(const Napi::CallbackInfo& info) {
    std::vector<Napi::Value> keep;
    const float* m = array_arg<float>(info, 0, "m", model_->num_params(), keep);
    const float* v = array_arg<float>(info, 1, "v", model_->num_params(), keep);
    std::lock_guard<std::mutex> lk(model_->mutex());
    model_->set_optimizer_state(m, v);
    return info.Env().Undefined();
  }

  Napi::Value CreateContext(const Napi::CallbackInfo& info);

  void check_ids(Napi::Env env, const int32_t* ids, size_t n, const char* name) {
    binding::check_ids(env, ids, n, cfg().vocab, name);
  }
  // Targets < 0 mean "not scored".
  void check_targets(Napi::Env env, const int32_t* ids, size_t n) {
    binding::check_ids(env, ids, n, cfg().vocab, "targets", true);
  }
  // Optional argument i: shared prompt prefixes of a batch of B rows, { tokens: Int32Array
  // (count * length, right-padded), count, length, lengths: Int32Array (count), rowPrefix:
  // Int32Array (B, non-decreasing) }. Absent (null / undefined): false.
  template <class Info>
  bool prefix_arg(const Info& info, size_t i, int B, std::vector<Napi::Value>& keep,
                  PrefixBatch& pb) {
    Napi::Env env = info.Env();
    if (info.Length() <= i || info[i].IsNull() || info[i].IsUndefined()) return false;
    if (!info[i].IsObject())
      throw Napi::TypeError::New(env, "prefix must be an object {tokens, count, length, lengths, rowPrefix}");
    Napi::Object o = info[i].template As<Napi::Object>();
    auto get_int = [&](const char* k, int lo) {
      Napi::Value v = o.Get(k);
      double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
      if (!(d >= lo && d <= 1e9 && d == std::floor(d)))
        throw Napi::RangeError::New(env, std::string("prefix.") + k + " must be an integer >= " + std::to_string(lo));
      return (int)d;
    };
    auto get_arr = [&](const char* k, size_t n) {
      Napi::Value v = o.Get(k);
      if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
        throw Napi::TypeError::New(env, std::string("prefix.") + k + " must be an Int32Array");
      auto arr = v.As<Napi::Int32Array>();
      if (arr.ElementLength() != n)
        throw Napi::RangeError::New(env, std::string("prefix.") + k + " must have length " + std::to_string(n) +
                                             ", got " + std::to_string(arr.ElementLength()));
      keep.push_back(v);
      return (const int32_t*)arr.Data();
    };
    pb.Bp = get_int("count", 1);
    pb.Tp = get_int("length", 0);
    pb.tokens = get_arr("tokens", checked_size(env, {pb.Bp, pb.Tp}));
    check_ids(env, pb.tokens, (size_t)pb.Bp * pb.Tp, "prefix.tokens");
    pb.lengths = get_arr("lengths", (size_t)pb.Bp);
    for (int p = 0; p < pb.Bp; p++)
      if (pb.lengths[p] < 0 || pb.lengths[p] > pb.Tp)
        throw Napi::RangeError::New(env, "prefix.lengths[" + std::to_string(p) + "] must be in 0.." + std::to_string(pb.Tp));
    pb.row_prefix = get_arr("rowPrefix", (size_t)B);
    for (int b = 0; b < B; b++)
      if (pb.row_prefix[b] < 0 || pb.row_prefix[b] >= pb.Bp || (b > 0 && pb.row_prefix[b] < pb.row_prefix[b - 1]))
        throw Napi::RangeError::New(env, "prefix.rowPrefix must be non-decreasing values in 0.." + std::to_string(pb.Bp - 1) +
                                             " (rows of one prefix together); rowPrefix[" + std::to_string(b) + "] breaks it");
    return true;
  }
};
Napi::FunctionReference ModelWrap::ctor;

class ContextWrap : public Napi::ObjectWrap<ContextWrap> {
 public:
  static Napi::FunctionReference ctor;
  static void Register(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(env, "Context", {
      InstanceMethod("addRows", &ContextWrap::AddRows),
      InstanceMethod("decode", &ContextWrap::Decode),
      InstanceMethod("finishRow", &ContextWrap::FinishRow),
      InstanceMethod("active", &ContextWrap::Active),
      InstanceMethod("dispose", &ContextWrap::Dispose),
    });
    ctor = Napi::Persistent(f);
    ctor.SuppressDestruct();
    exports.Set("Context", f);
  }

  explicit ContextWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ContextWrap>(info) {
    if (info.Length() < 3 || !info[0].IsObject())
      throw Napi::TypeError::New(info.Env(), "use model.createContext(maxBatch, maxSeq)");
    ModelWrap* mw = Napi::ObjectWrap<ModelWrap>::Unwrap(info[0].As<Napi::Object>());
    model_ = mw->model_;
    model_ref_ = Napi::Persistent(info[0].As<Napi::Object>());
    int max_batch = int_arg(info, 1, "maxBatch", 1, 4096);
    int max_seq = int_arg(info, 2, "maxSeq", 1, 1 << 20);
    std::lock_guard<std::mutex> lk(model_->mutex());
    try {
      ctx_ = model_->create_context(max_batch, max_seq);
    } catch (const std::bad_alloc&) {
      throw Napi::RangeError::New(info.Env(), "out of memory allocating the KV cache");
    }
  }

 private:
  // addRows(promptTokens Int32Array, offsets Int32Array (B+1), seeds BigUint64Array (B),
  //         maxNew Int32Array (B), sampling {temperature, topK, topP, minP}, stopIds Int32Array, async,
  //         keepPrompts? boolean: the prompts' activations stay in the model's prompt store)
  Napi::Value AddRows(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    live(env);
    std::vector<Napi::Value> keep{info.This()};
    size_t n_tokens = 0, n_off = 0;
    const int32_t* tokens = array_arg<int32_t>(info, 0, "promptTokens", kAnyLength, keep, false, &n_tokens);
    const int32_t* offsets = array_arg<int32_t>(info, 1, "offsets", kAnyLength, keep, false, &n_off);
    if (n_off < 2) throw Napi::RangeError::New(env, "offsets must have at least 2 entries");
    int B = (int)n_off - 1;
    const uint64_t* seeds = array_arg<uint64_t>(info, 2, "seeds", (size_t)B, keep);
    const int32_t* max_new = array_arg<int32_t>(info, 3, "maxNew", (size_t)B, keep);
    Napi::Object s = object_arg(info, 4, "sampling");
    size_t n_stop = 0;
    const int32_t* stop = array_arg<int32_t>(info, 5, "stopIds", kAnyLength, keep, false, &n_stop);
    bool async = bool_arg(info, 6, "async");
    const bool keep_prompts = info.Length() > 7 && !info[7].IsUndefined() ? bool_arg(info, 7, "keepPrompts") : false;
    const LlamaConfig& cfg = model_->config();
    if (ctx_->active + B > ctx_->max_batch)
      throw Napi::RangeError::New(env, "too many rows: the context holds " + std::to_string(ctx_->max_batch) +
                                           " and " + std::to_string(ctx_->active) + " are active");
    if (offsets[0] != 0 || (size_t)offsets[B] != n_tokens)
      throw Napi::RangeError::New(env, "offsets must start at 0 and end at promptTokens.length");
    for (int b = 0; b < B; b++) {
      int len = offsets[b + 1] - offsets[b];
      if (len < 1 || len > ctx_->max_seq)
        throw Napi::RangeError::New(env, "prompt " + std::to_string(b) + " must have 1.." +
                                             std::to_string(ctx_->max_seq) + " tokens");
      if (max_new[b] < 1) throw Napi::RangeError::New(env, "maxNew must be >= 1");
    }
    check_ids(env, tokens, n_tokens, cfg.vocab, "promptTokens");
    SamplingParams sp;
    sp.temperature = (float)get_num(s, "temperature", 1.0);
    sp.top_k = (int)get_num(s, "topK", 0);
    sp.top_p = (float)get_num(s, "topP", 1.0);
    sp.min_p = (float)get_num(s, "minP", 0.0);
    std::unique_lock<std::mutex> lk(model_->mutex());
    ctx_->sampling = sp;
    ctx_->stop_ids.assign(stop, stop + n_stop);
    int first_row = ctx_->rows();
    for (int b = 0; b < B; b++) ctx_->add_row(seeds[b], max_new[b]);
    lk.unlock();
    std::vector<int64_t> off64(offsets, offsets + B + 1);
    auto m = model_;
    auto ctx = ctx_;
    return run_op(info, async, keep, [=] {
      std::lock_guard<std::mutex> lk(m->mutex());
      ctx->keep_prompts = keep_prompts;
      m->prefill(*ctx, tokens, off64.data(), B);
    }, [first_row](Napi::Env env) { return Napi::Number::New(env, first_row); });
  }

  // decode(nSteps, async) -> { active, counts Int32Array(rows), tokens, logprobs, finished }
  Napi::Value Decode(const Napi::CallbackInfo& info) {
    int n = int_arg(info, 0, "steps", 1);
    bool async = bool_arg(info, 1, "async");
    std::vector<Napi::Value> keep{info.This()};
    live(info.Env());
    auto m = model_;
    auto ctx = ctx_;
    return run_op(info, async, keep, [=] {
      std::lock_guard<std::mutex> lk(m->mutex());
      m->decode(*ctx, n);
    }, [ctx](Napi::Env env) {
      int rows = ctx->rows();
      size_t total = 0;
      for (int r = 0; r < rows; r++) total += ctx->out_tokens[r].size() - ctx->reported[r];
      Napi::Int32Array counts = Napi::Int32Array::New(env, rows);
      Napi::Int32Array tokens = Napi::Int32Array::New(env, total);
      Napi::Float32Array lps = Napi::Float32Array::New(env, total);
      Napi::Uint8Array finished = Napi::Uint8Array::New(env, rows);
      size_t at = 0;
      for (int r = 0; r < rows; r++) {
        int from = ctx->reported[r], to = (int)ctx->out_tokens[r].size();
        counts[r] = to - from;
        for (int i = from; i < to; i++, at++) {
          tokens[at] = ctx->out_tokens[r][i];
          lps[at] = ctx->out_logprobs[r][i];
        }
        ctx->reported[r] = to;
        finished[r] = ctx->finished[r];
      }
      Napi::Object o = Napi::Object::New(env);
      o.Set("active", ctx->active);
      o.Set("counts", counts);
      o.Set("tokens", tokens);
      o.Set("logprobs", lps);
      o.Set("finished", finished);
      return o;
    });
  }

  // finishRow(row): stop a row early (e.g. a stop string matched on the JS side).
  Napi::Value FinishRow(const Napi::CallbackInfo& info) {
    live(info.Env());
    int row = int_arg(info, 0, "row", 0, std::max(0, ctx_->rows() - 1));
    std::lock_guard<std::mutex> lk(model_->mutex());
    if (!ctx_->finished[row])
      for (int s = 0; s < ctx_->active; s++)
        if (ctx_->row_of_slot[s] == row) {
          std::vector<uint8_t> done(ctx_->active, 0);
          done[s] = 1;
          ctx_->finish_slots(done, model_->backend(), model_->config().n_layers,
                             (size_t)model_->config().n_kv_heads * model_->config().head_dim,
                             model_->config().vocab);
          break;
        }
    return info.Env().Undefined();
  }

  Napi::Value Active(const Napi::CallbackInfo& info) {
    live(info.Env());
    return Napi::Number::New(info.Env(), ctx_->active);
  }

  // dispose(): frees the context's KV caches and scratch now (idempotent); later calls throw.
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    ctx_.reset();  // queued or running work holds its own reference
    return info.Env().Undefined();
  }

  void live(Napi::Env env) const {
    if (!ctx_) throw Napi::Error::New(env, "this context was disposed");
  }

  std::shared_ptr<LlamaModel> model_;
  Napi::ObjectReference model_ref_;
  // Shared with the async work already queued, so that dispose() can drop it at any time: the
  // KV caches are freed when the last user lets go, not when the JS garbage collector runs.
  std::shared_ptr<LlamaModel::Context> ctx_;
};
Napi::FunctionReference ContextWrap::ctor;

Napi::Value ModelWrap::CreateContext(const Napi::CallbackInfo& info) {
  return ContextWrap::ctor.New({info.This(), info[0], info[1]});
}

}  // namespace

void register_model(Napi::Env env, Napi::Object exports) {
  ModelWrap::Register(env, exports);
  ContextWrap::Register(env, exports);
}

}  // namespace wst::binding
