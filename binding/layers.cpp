#include "util.h"

namespace wst::binding {
namespace {

int even_head_dim(const Napi::CallbackInfo& info, size_t i) {
  int D = int_arg(info, i, "headDim", 0);
  if (D % 2 != 0) throw Napi::RangeError::New(info.Env(), "headDim must be even, got " + std::to_string(D));
  return D;
}

// rmsnormForward(out, rstd, inp, weight, N, C, eps, async); rstd may be null.
Napi::Value RmsnormForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int N = int_arg(info, 4, "rows", 0), C = int_arg(info, 5, "dim", 0);
  float eps = (float)number_arg(info, 6, "eps");
  bool async = bool_arg(info, 7, "async");
  size_t nc = checked_size(env, {N, C});
  float* out = array_arg<float>(info, 0, "out", nc, keep);
  float* rstd = array_arg<float>(info, 1, "rstd", (size_t)N, keep, true);
  const float* inp = array_arg<float>(info, 2, "inp", nc, keep);
  const float* weight = array_arg<float>(info, 3, "weight", (size_t)C, keep);
  return run_op(info, async, keep, [=] { backend().rmsnorm_forward(out, rstd, inp, weight, N, C, eps); });
}

// rmsnormBackward(dinp, dweight, dout, inp, weight, rstd, N, C, async); dweight accumulates.
Napi::Value RmsnormBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int N = int_arg(info, 6, "rows", 0), C = int_arg(info, 7, "dim", 0);
  bool async = bool_arg(info, 8, "async");
  size_t nc = checked_size(env, {N, C});
  float* dinp = array_arg<float>(info, 0, "dinp", nc, keep);
  float* dweight = array_arg<float>(info, 1, "dweight", (size_t)C, keep);
  const float* dout = array_arg<float>(info, 2, "dout", nc, keep);
  const float* inp = array_arg<float>(info, 3, "inp", nc, keep);
  const float* weight = array_arg<float>(info, 4, "weight", (size_t)C, keep);
  const float* rstd = array_arg<float>(info, 5, "rstd", (size_t)N, keep);
  return run_op(info, async, keep,
                [=] { backend().rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C); });
}

// ropeForward / ropeBackward(out, inp, positions, N, H, D, theta, async); out may be inp.
template <bool Backward>
Napi::Value Rope(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int N = int_arg(info, 3, "tokens", 0), H = int_arg(info, 4, "heads", 0);
  int D = even_head_dim(info, 5);
  double theta = number_arg(info, 6, "theta");
  if (!(theta > 1.0)) throw Napi::RangeError::New(env, "theta must be > 1");
  bool async = bool_arg(info, 7, "async");
  size_t total = checked_size(env, {N, H, D});
  float* out = array_arg<float>(info, 0, Backward ? "dinp" : "out", total, keep);
  const float* inp = array_arg<float>(info, 1, Backward ? "dout" : "inp", total, keep);
  const int32_t* pos = array_arg<int32_t>(info, 2, "positions", (size_t)N, keep);
  float th = (float)theta;
  return run_op(info, async, keep, [=] {
    if (Backward) backend().rope_backward(out, inp, pos, N, H, D, th);
    else backend().rope_forward(out, inp, pos, N, H, D, th);
  });
}

// swigluForward(out, gate, up, N, C, async)
Napi::Value SwigluForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int N = int_arg(info, 3, "rows", 0), C = int_arg(info, 4, "dim", 0);
  bool async = bool_arg(info, 5, "async");
  size_t nc = checked_size(env, {N, C});
  float* out = array_arg<float>(info, 0, "out", nc, keep);
  const float* gate = array_arg<float>(info, 1, "gate", nc, keep);
  const float* up = array_arg<float>(info, 2, "up", nc, keep);
  return run_op(info, async, keep, [=] { backend().swiglu_forward(out, gate, up, N, C); });
}

// swigluBackward(dgate, dup, dout, gate, up, N, C, async)
Napi::Value SwigluBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int N = int_arg(info, 5, "rows", 0), C = int_arg(info, 6, "dim", 0);
  bool async = bool_arg(info, 7, "async");
  size_t nc = checked_size(env, {N, C});
  float* dgate = array_arg<float>(info, 0, "dgate", nc, keep);
  float* dup = array_arg<float>(info, 1, "dup", nc, keep);
  const float* dout = array_arg<float>(info, 2, "dout", nc, keep);
  const float* gate = array_arg<float>(info, 3, "gate", nc, keep);
  const float* up = array_arg<float>(info, 4, "up", nc, keep);
  return run_op(info, async, keep, [=] { backend().swiglu_backward(dgate, dup, dout, gate, up, N, C); });
}

// embeddingForward(out, ids, table, N, V, C, async)
Napi::Value EmbeddingForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int N = int_arg(info, 3, "tokens", 0), V = int_arg(info, 4, "vocab", 1), C = int_arg(info, 5, "dim", 0);
  bool async = bool_arg(info, 6, "async");
  float* out = array_arg<float>(info, 0, "out", checked_size(env, {N, C}), keep);
  const int32_t* ids = array_arg<int32_t>(info, 1, "ids", (size_t)N, keep);
  const float* table = array_arg<float>(info, 2, "table", checked_size(env, {V, C}), keep);
  check_ids(env, ids, (size_t)N, V, "ids");
  return run_op(info, async, keep, [=] { backend().embedding_forward(out, ids, table, N, V, C); });
}

// embeddingBackward(dtable, dout, ids, N, V, C, async); dtable accumulates.
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Value> keep;
  int N = int_arg(info, 3, "tokens", 0), V = int_arg(info, 4, "vocab", 1), C = int_arg(info, 5, "dim", 0);
  bool async = bool_arg(info, 6, "async");
  float* dtable = array_arg<float>(info, 0, "dtable", checked_size(env, {V, C}), keep);
  const float* dout = array_arg<float>(info, 1, "dout", checked_size(env, {N, C}), keep);
  const int32_t* ids = array_arg<int32_t>(info, 2, "ids", (size_t)N, keep);
  check_ids(env, ids, (size_t)N, V, "ids");
  return run_op(info, async, keep, [=] { backend().embedding_backward(dtable, dout, ids, N, V, C); });
}

// residualForward(out, a, b, async): all of one length.
Napi::Value ResidualForward(const Napi::CallbackInfo& info) {
  std::vector<Napi::Value> keep;
  bool async = bool_arg(info, 3, "async");
  size_t n = 0;
  float* out = array_arg<float>(info, 0, "out", kAnyLength, keep, false, &n);
  const float* a = array_arg<float>(info, 1, "a", n, keep);
  const float* b = array_arg<float>(info, 2, "b", n, keep);
  return run_op(info, async, keep, [=] { backend().residual_forward(out, a, b, n); });
}

// residualBackward(da, db, dout, async): da += dout, db += dout.
Napi::Value ResidualBackward(const Napi::CallbackInfo& info) {
  std::vector<Napi::Value> keep;
  bool async = bool_arg(info, 3, "async");
  size_t n = 0;
  const float* dout = array_arg<float>(info, 2, "dout", kAnyLength, keep, false, &n);
  float* da = array_arg<float>(info, 0, "da", n, keep);
  float* db = array_arg<float>(info, 1, "db", n, keep);
  return run_op(info, async, keep, [=] { backend().residual_backward(da, db, dout, n); });
}

}  // namespace

void register_layers(Napi::Env env, Napi::Object exports) {
  exports.Set("rmsnormForward", Napi::Function::New(env, RmsnormForward));
  exports.Set("rmsnormBackward", Napi::Function::New(env, RmsnormBackward));
  exports.Set("ropeForward", Napi::Function::New(env, Rope<false>));
  exports.Set("ropeBackward", Napi::Function::New(env, Rope<true>));
  exports.Set("swigluForward", Napi::Function::New(env, SwigluForward));
  exports.Set("swigluBackward", Napi::Function::New(env, SwigluBackward));
  exports.Set("embeddingForward", Napi::Function::New(env, EmbeddingForward));
  exports.Set("embeddingBackward", Napi::Function::New(env, EmbeddingBackward));
  exports.Set("residualForward", Napi::Function::New(env, ResidualForward));
  exports.Set("residualBackward", Napi::Function::New(env, ResidualBackward));
}

}  // namespace wst::binding
