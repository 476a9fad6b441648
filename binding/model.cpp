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

// A name argument (getTensor(name), getGrad(name)).
std::string name_param(const Napi::CallbackInfo& info) {
  if (!info[0].IsString()) throw Napi::TypeError::New(info.Env(), "name must be a string");
  return info[0].As<Napi::String>().Utf8Value();
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
    Args c(info.Env(), info[0], "config.", std::make_shared<std::vector<Napi::Value>>(), "config");
    LlamaConfig cfg;
    cfg.vocab = c.integer("vocabSize", 1, 1 << 24);
    cfg.dim = c.integer("hiddenSize", 1, 1 << 16);
    cfg.hidden = c.integer("intermediateSize", 1, 1 << 18);
    cfg.n_layers = c.integer("numLayers", 1, 1024);
    cfg.n_heads = c.integer("numHeads", 1, 1024);
    cfg.n_kv_heads = c.integer("numKvHeads", 1, cfg.n_heads);
    cfg.head_dim = c.integer("headDim", 2, 1024);
    if (cfg.n_heads % cfg.n_kv_heads != 0)
      throw Napi::RangeError::New(info.Env(), "config.numHeads must be divisible by config.numKvHeads");
    if (cfg.head_dim % 2 != 0) throw Napi::RangeError::New(info.Env(), "config.headDim must be even");
    cfg.rope_theta = (float)c.number("ropeTheta", 10000.0);
    cfg.norm_eps = (float)c.number("rmsNormEps", 1e-5);
    cfg.tied_embeddings = c.flag("tieWordEmbeddings");
    cfg.qkv_bias = c.flag("attentionBias");
    cfg.qk_norm = c.flag("qkNorm");
    static const char* const kDtypes[] = {"fp32", "bf16"};
    cfg.bf16 = c.present("dtype") && c.choice("dtype", kDtypes) == 1;
    // config.device: "cpu" (default) or "cuda" (weights, caches, activations and optimizer
    // state resident on the GPU; the CUDA build of the addon with a usable device).
    const std::string device = c.present("device") ? c.string("device") : "cpu";
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

  const TensorInfo& tensor(Napi::Env env, const std::string& name) {
    const TensorInfo* t = model_->find(name);
    if (!t) throw Napi::RangeError::New(env, "unknown tensor \"" + name + "\"");
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

  // setTensor({name, data})
  Napi::Value SetTensor(const Napi::CallbackInfo& info) {
    Args args(info);
    const TensorInfo& t = tensor(info.Env(), args.string("name"));
    const float* data = args.array<float>("data", t.size);
    std::lock_guard<std::mutex> lk(model_->mutex());
    model_->set_tensor(t, data);
    return info.Env().Undefined();
  }

  Napi::Value GetTensor(const Napi::CallbackInfo& info) {
    const TensorInfo& t = tensor(info.Env(), name_param(info));
    Napi::Float32Array out = Napi::Float32Array::New(info.Env(), t.size);
    std::lock_guard<std::mutex> lk(model_->mutex());
    model_->get_tensor(t, out.Data());
    return out;
  }

  Napi::Value GetGrad(const Napi::CallbackInfo& info) {
    const TensorInfo& t = tensor(info.Env(), name_param(info));
    Napi::Float32Array out = Napi::Float32Array::New(info.Env(), t.size);
    std::lock_guard<std::mutex> lk(model_->mutex());
    model_->get_grad(t, out.Data());
    return out;
  }

  // initRandom({seed, std})
  Napi::Value InitRandom(const Napi::CallbackInfo& info) {
    Args args(info);
    double seed = args.number("seed");
    double std = args.number("std");
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

  // forwardLogits({tokens (B*T), batch, seq}, async) -> Float32Array (B*T*V)
  Napi::Value ForwardLogits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Args args = call_args(info);
    const auto [B, T, tokens] = token_batch(args);
    Napi::Float32Array out = Napi::Float32Array::New(env, checked_size(env, {B, T, cfg().vocab}));
    args.keep().push_back(out);
    float* o = out.Data();
    auto m = model_;
    return run_op(info, args, [=] {
      std::lock_guard<std::mutex> lk(m->mutex());
      m->forward_logits(tokens, B, T, o);
    }, [ref = persist(out)](Napi::Env) -> Napi::Value { return ref->Value(); });
  }

  // score({tokens, targets, batch, seq, entropy?, prefix?}, async) -> { logprobs, entropy? }
  Napi::Value Score(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Args args = call_args(info);
    const auto [B, T, tokens] = token_batch(args);
    const size_t N = (size_t)B * T;
    const int32_t* targets = target_field(args, N);
    bool want_entropy = args.flag("entropy");
    PrefixBatch pb;
    const bool prefixed = prefix_field(args, B, pb);
    Napi::Float32Array lp = Napi::Float32Array::New(env, N);
    Napi::Float32Array ent = Napi::Float32Array::New(env, want_entropy ? N : 0);
    args.keep().push_back(lp);
    args.keep().push_back(ent);
    float* lpd = lp.Data();
    float* entd = want_entropy ? ent.Data() : nullptr;
    auto m = model_;
    return run_op(info, args, [=] {
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

  // valueForward({tokens (B*T), last (B), w (C), batch, seq, prefix?}, async) -> Float32Array r (B)
  Napi::Value ValueForward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Args args = call_args(info);
    const auto [B, T, tokens] = token_batch(args);
    const int32_t* last = args.array<int32_t>("last", (size_t)B);
    const float* w = args.array<float>("w", (size_t)cfg().dim);
    for (int b = 0; b < B; b++)
      if (last[b] < 0 || last[b] >= T) throw args.range_error("last[" + std::to_string(b) + "] must be in [0, seq)");
    PrefixBatch pb;
    const bool prefixed = prefix_field(args, B, pb);
    Napi::Float32Array r = Napi::Float32Array::New(env, B);
    args.keep().push_back(r);
    float* rd = r.Data();
    auto m = model_;
    return run_op(info, args, [=] {
      std::lock_guard<std::mutex> lk(m->mutex());
      m->value_forward(tokens, B, T, last, w, rd, prefixed ? &pb : nullptr);
    }, [ref = persist(r)](Napi::Env) -> Napi::Value { return ref->Value(); });
  }

  // valueBackward({dr (B), w (C)}, async) -> Float32Array dw (C); right after valueForward
  Napi::Value ValueBackward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Args args = call_args(info);
    size_t n = 0;
    const float* dr = args.array<float>("dr", kAnyLength, &n);
    const float* w = args.array<float>("w", (size_t)cfg().dim);
    Napi::Float32Array dw = Napi::Float32Array::New(env, cfg().dim);
    args.keep().push_back(dw);
    float* dwd = dw.Data();
    auto m = model_;
    return run_op(info, args, [=] {
      std::lock_guard<std::mutex> lk(m->mutex());
      m->value_backward(dr, (int)n, w, dwd);
    }, [ref = persist(dw)](Napi::Env) -> Napi::Value { return ref->Value(); });
  }

  // trainSft({tokens, targets, batch, seq, normalizer}, async) -> { loss, tokens, entropy }
  Napi::Value TrainSft(const Napi::CallbackInfo& info) {
    Args args = call_args(info);
    const auto [B, T, tokens] = token_batch(args);
    const int32_t* targets = target_field(args, (size_t)B * T);
    double normalizer = args.number("normalizer");
    if (normalizer <= 0) throw args.range_error("normalizer must be > 0");
    auto m = model_;
    auto result = std::make_shared<TrainStepResult>();
    return run_op(info, args, [=] {
      std::lock_guard<std::mutex> lk(m->mutex());
      *result = m->train_sft(tokens, targets, B, T, SftParams{normalizer});
    }, [result](Napi::Env env) { return step_result(env, *result); });
  }

  // One GRPO micro-batch: {tokens, targets, mask?, oldLogprobs?, refLogprobs?, advantages, batch,
  // seq, clipLow?, clipHigh?, beta?, filterThreshold?, lossType?, normalizer?, lossScale?,
  // prefix?} (trainGrpo's options, or one entry of trainGrpoMany's microBatches).
  struct GrpoCall {
    GrpoMicroBatch mb;
    PrefixBatch pb;
    bool prefixed = false;
  };
  void parse_grpo(const Args& args, GrpoCall& c) {
    GrpoMicroBatch& m = c.mb;
    const auto [B, T, tokens] = token_batch(args);
    const size_t N = (size_t)B * T;
    m.B = B;
    m.T = T;
    m.tokens = tokens;
    m.targets = target_field(args, N);
    m.mask = args.optional_array<float>("mask", N);
    m.old_logprobs = args.optional_array<float>("oldLogprobs", N);
    m.ref_logprobs = args.optional_array<float>("refLogprobs", N);
    m.advantages = args.array<float>("advantages", (size_t)B);
    m.params = grpo_params(args);
    m.loss_scale = (float)args.number("lossScale", 1.0);
    c.prefixed = prefix_field(args, B, c.pb);
  }

  // trainGrpo(micro-batch, async) -> { loss, tokens, entropy, kept, clipFraction, kl }
  Napi::Value TrainGrpo(const Napi::CallbackInfo& info) {
    Args args = call_args(info);
    auto call = std::make_shared<GrpoCall>();
    parse_grpo(args, *call);
    auto m = model_;
    auto result = std::make_shared<TrainStepResult>();
    return run_op(info, args, [=] {
      std::lock_guard<std::mutex> lk(m->mutex());
      const GrpoMicroBatch& b = call->mb;
      *result = m->train_grpo(b.tokens, b.targets, b.mask, b.old_logprobs, b.ref_logprobs, b.advantages,
                              b.B, b.T, b.params, b.loss_scale, call->prefixed ? &call->pb : nullptr);
    }, [result](Napi::Env env) { return step_result(env, *result); });
  }

  // trainGrpoMany({microBatches: [micro-batch, ...]}, async) -> results[]: the micro-batches of
  // one optimizer step at once (LlamaModel::train_grpo_many).
  Napi::Value TrainGrpoMany(const Napi::CallbackInfo& info) {
    Args args = call_args(info);
    Napi::Value v = args.get("microBatches");
    if (!v.IsArray()) throw Napi::TypeError::New(info.Env(), "microBatches must be an array of micro-batches");
    Napi::Array list = v.As<Napi::Array>();
    if (list.Length() == 0) throw args.range_error("microBatches must not be empty");
    auto calls = std::make_shared<std::vector<GrpoCall>>(list.Length());
    for (uint32_t i = 0; i < list.Length(); i++) {
      parse_grpo(args.nested(list.Get(i), "microBatches[" + std::to_string(i) + "]"), (*calls)[i]);
    }
    auto m = model_;
    auto results = std::make_shared<std::vector<TrainStepResult>>();
    return run_op(info, args, [=] {
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
    Args args = call_args(info);
    OptimizerParams op;
    op.lr = args.number("lr", 1e-3);
    op.beta1 = args.number("beta1", 0.9);
    op.beta2 = args.number("beta2", 0.999);
    op.eps = args.number("eps", 1e-8);
    op.weight_decay = args.number("weightDecay", 0.0);
    op.max_grad_norm = args.number("maxGradNorm", 0.0);
    auto m = model_;
    auto norm = std::make_shared<double>(0);
    return run_op(info, args, [=] {
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
    model_->set_step(int_param(info, "step", 0));
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

  // setOptimizerState({m, v})
  Napi::Value SetOptimizerState(const Napi::CallbackInfo& info) {
    Args args(info);
    const float* m = args.array<float>("m", model_->num_params());
    const float* v = args.array<float>("v", model_->num_params());
    std::lock_guard<std::mutex> lk(model_->mutex());
    model_->set_optimizer_state(m, v);
    return info.Env().Undefined();
  }

  Napi::Value CreateContext(const Napi::CallbackInfo& info);

  // A call's options; the model object itself is held until async work is done.
  static Args call_args(const Napi::CallbackInfo& info) {
    Args args(info);
    args.keep().push_back(info.This());
    return args;
  }

  void check_ids(const Args& args, const int32_t* ids, size_t n, const char* name) {
    binding::check_ids(args.env(), ids, n, cfg().vocab, (args.field(name)).c_str());
  }
  // batch, seq and tokens (batch * seq checked token ids).
  struct TokenBatch {
    int B, T;
    const int32_t* tokens;
  };
  TokenBatch token_batch(const Args& args) {
    TokenBatch t;
    t.B = args.integer("batch", 1);
    t.T = args.integer("seq", 1);
    const size_t N = checked_size(args.env(), {t.B, t.T});
    t.tokens = args.array<int32_t>("tokens", N);
    check_ids(args, t.tokens, N, "tokens");
    return t;
  }
  // Targets: token ids, or < 0 for "not scored".
  const int32_t* target_field(const Args& args, size_t N) {
    const int32_t* targets = args.array<int32_t>("targets", N);
    binding::check_ids(args.env(), targets, N, cfg().vocab, args.field("targets").c_str(), true);
    return targets;
  }
  // The optional field `prefix`: shared prompt prefixes of a batch of B rows, { tokens: Int32Array
  // (count * length, right-padded), count, length, lengths: Int32Array (count), rowPrefix:
  // Int32Array (B, non-decreasing) }. Absent (null / undefined): false.
  bool prefix_field(const Args& args, int B, PrefixBatch& pb) {
    if (!args.present("prefix")) return false;
    Args p = args.object("prefix");
    pb.Bp = p.integer("count", 1, 1000000000);
    pb.Tp = p.integer("length", 0, 1000000000);
    pb.tokens = p.array<int32_t>("tokens", checked_size(args.env(), {pb.Bp, pb.Tp}));
    check_ids(p, pb.tokens, (size_t)pb.Bp * pb.Tp, "tokens");
    pb.lengths = p.array<int32_t>("lengths", (size_t)pb.Bp);
    for (int i = 0; i < pb.Bp; i++)
      if (pb.lengths[i] < 0 || pb.lengths[i] > pb.Tp)
        throw p.range_error(p.field("lengths") + "[" + std::to_string(i) + "] must be in 0.." + std::to_string(pb.Tp));
    pb.row_prefix = p.array<int32_t>("rowPrefix", (size_t)B);
    for (int b = 0; b < B; b++)
      if (pb.row_prefix[b] < 0 || pb.row_prefix[b] >= pb.Bp || (b > 0 && pb.row_prefix[b] < pb.row_prefix[b - 1]))
        throw p.range_error(p.field("rowPrefix") + " must be non-decreasing values in 0.." + std::to_string(pb.Bp - 1) +
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
    if (info.Length() < 2 || !info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(ModelWrap::ctor.Value()))
      throw Napi::TypeError::New(info.Env(), "use model.createContext({maxBatch, maxSeq})");
    ModelWrap* mw = Napi::ObjectWrap<ModelWrap>::Unwrap(info[0].As<Napi::Object>());
    model_ = mw->model_;
    model_ref_ = Napi::Persistent(info[0].As<Napi::Object>());
    Args args(info.Env(), info[1], "", std::make_shared<std::vector<Napi::Value>>(), "the options");
    int max_batch = args.integer("maxBatch", 1, 4096);
    int max_seq = args.integer("maxSeq", 1, 1 << 20);
    std::lock_guard<std::mutex> lk(model_->mutex());
    try {
      ctx_ = model_->create_context(max_batch, max_seq);
    } catch (const std::bad_alloc&) {
      throw Napi::RangeError::New(info.Env(), "out of memory allocating the KV cache");
    }
  }

 private:
  // addRows({promptTokens Int32Array, offsets Int32Array (B+1), seeds BigUint64Array (B),
  //          maxNew Int32Array (B), sampling {temperature?, topK?, topP?, minP?}, stopIds Int32Array,
  //          keepPrompts?: the prompts' activations stay in the model's prompt store}, async)
  //   -> the first new row's index
  Napi::Value AddRows(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    live(env);
    Args args(info);
    args.keep().push_back(info.This());
    size_t n_tokens = 0, n_off = 0;
    const int32_t* tokens = args.array<int32_t>("promptTokens", kAnyLength, &n_tokens);
    const int32_t* offsets = args.array<int32_t>("offsets", kAnyLength, &n_off);
    if (n_off < 2) throw args.range_error("offsets must have at least 2 entries");
    int B = (int)n_off - 1;
    const uint64_t* seeds = args.array<uint64_t>("seeds", (size_t)B);
    const int32_t* max_new = args.array<int32_t>("maxNew", (size_t)B);
    Args s = args.object("sampling");
    size_t n_stop = 0;
    const int32_t* stop = args.array<int32_t>("stopIds", kAnyLength, &n_stop);
    const bool keep_prompts = args.flag("keepPrompts");
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
    sp.temperature = (float)s.number("temperature", 1.0);
    sp.top_k = s.present("topK") ? s.integer("topK", 0) : 0;
    sp.top_p = (float)s.number("topP", 1.0);
    sp.min_p = (float)s.number("minP", 0.0);
    std::unique_lock<std::mutex> lk(model_->mutex());
    ctx_->sampling = sp;
    ctx_->stop_ids.assign(stop, stop + n_stop);
    int first_row = ctx_->rows();
    for (int b = 0; b < B; b++) ctx_->add_row(seeds[b], max_new[b]);
    lk.unlock();
    std::vector<int64_t> off64(offsets, offsets + B + 1);
    auto m = model_;
    auto ctx = ctx_;
    return run_op(info, args, [=] {
      std::lock_guard<std::mutex> lk(m->mutex());
      ctx->keep_prompts = keep_prompts;
      m->prefill(*ctx, tokens, off64.data(), B);
    }, [first_row](Napi::Env env) { return Napi::Number::New(env, first_row); });
  }

  // decode({steps}, async) -> { active, counts Int32Array(rows), tokens, logprobs, finished }
  Napi::Value Decode(const Napi::CallbackInfo& info) {
    live(info.Env());
    Args args(info);
    args.keep().push_back(info.This());
    int n = args.integer("steps", 1);
    auto m = model_;
    auto ctx = ctx_;
    return run_op(info, args, [=] {
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
    int row = int_param(info, "row", 0, std::max(0, ctx_->rows() - 1));
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
  return ContextWrap::ctor.New({info.This(), info[0]});
}

}  // namespace

void register_model(Napi::Env env, Napi::Object exports) {
  ModelWrap::Register(env, exports);
  ContextWrap::Register(env, exports);
}

}  // namespace wst::binding
