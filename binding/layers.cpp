#include "util.h"

namespace wst::binding {
namespace {

Matrix rows_dim(const Args& args) { return matrix_fields(args, "rows", "dim", 0); }

// rmsnormForward({out, rstd?, inp, weight, rows, dim, eps}, async)
Napi::Value RmsnormForward(const Napi::CallbackInfo& info) {
  Args args(info);
  const auto [N, C, nc] = rows_dim(args);
  float eps = (float)args.number("eps");
  float* out = args.array<float>("out", nc);
  float* rstd = args.optional_array<float>("rstd", (size_t)N);
  const float* inp = args.array<float>("inp", nc);
  const float* weight = args.array<float>("weight", (size_t)C);
  return run_op(info, args, [=] { backend().rmsnorm_forward(out, rstd, inp, weight, N, C, eps); });
}

// rmsnormBackward({dinp, dweight, dout, inp, weight, rstd, rows, dim}, async); dweight accumulates.
Napi::Value RmsnormBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  const auto [N, C, nc] = rows_dim(args);
  float* dinp = args.array<float>("dinp", nc);
  float* dweight = args.array<float>("dweight", (size_t)C);
  const float* dout = args.array<float>("dout", nc);
  const float* inp = args.array<float>("inp", nc);
  const float* weight = args.array<float>("weight", (size_t)C);
  const float* rstd = args.array<float>("rstd", (size_t)N);
  return run_op(info, args, [=] { backend().rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C); });
}

// ropeForward({out, inp, positions, tokens, heads, headDim, theta}, async) and
// ropeBackward({dinp, dout, positions, tokens, heads, headDim, theta}, async); out may be inp.
template <bool Backward>
Napi::Value Rope(const Napi::CallbackInfo& info) {
  Args args(info);
  int N = args.integer("tokens", 0), H = args.integer("heads", 0), D = args.integer("headDim", 0);
  if (D % 2 != 0) throw args.range_error("headDim must be even, got " + std::to_string(D));
  double theta = args.number("theta");
  if (!(theta > 1.0)) throw args.range_error("theta must be > 1");
  size_t total = checked_size(info.Env(), {N, H, D});
  float* out = args.array<float>(Backward ? "dinp" : "out", total);
  const float* inp = args.array<float>(Backward ? "dout" : "inp", total);
  const int32_t* pos = args.array<int32_t>("positions", (size_t)N);
  float th = (float)theta;
  return run_op(info, args, [=] {
    if (Backward) backend().rope_backward(out, inp, pos, N, H, D, th);
    else backend().rope_forward(out, inp, pos, N, H, D, th);
  });
}

// swigluForward({out, gate, up, rows, dim}, async)
Napi::Value SwigluForward(const Napi::CallbackInfo& info) {
  Args args(info);
  const auto [N, C, nc] = rows_dim(args);
  float* out = args.array<float>("out", nc);
  const float* gate = args.array<float>("gate", nc);
  const float* up = args.array<float>("up", nc);
  return run_op(info, args, [=] { backend().swiglu_forward(out, gate, up, N, C); });
}

// swigluBackward({dgate, dup, dout, gate, up, rows, dim}, async)
Napi::Value SwigluBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  const auto [N, C, nc] = rows_dim(args);
  float* dgate = args.array<float>("dgate", nc);
  float* dup = args.array<float>("dup", nc);
  const float* dout = args.array<float>("dout", nc);
  const float* gate = args.array<float>("gate", nc);
  const float* up = args.array<float>("up", nc);
  return run_op(info, args, [=] { backend().swiglu_backward(dgate, dup, dout, gate, up, N, C); });
}

// tokens, vocab and dim of an embedding call, and its checked ids.
struct EmbeddingDims {
  int N, V, C;
  const int32_t* ids;
};
EmbeddingDims embedding_dims(const Args& args) {
  EmbeddingDims d;
  d.N = args.integer("tokens", 0);
  d.V = args.integer("vocab", 1);
  d.C = args.integer("dim", 0);
  d.ids = args.array<int32_t>("ids", (size_t)d.N);
  check_ids(args.env(), d.ids, (size_t)d.N, d.V, "ids");
  return d;
}

// embeddingForward({out, ids, table, tokens, vocab, dim}, async)
Napi::Value EmbeddingForward(const Napi::CallbackInfo& info) {
  Args args(info);
  const auto [N, V, C, ids] = embedding_dims(args);
  float* out = args.array<float>("out", checked_size(info.Env(), {N, C}));
  const float* table = args.array<float>("table", checked_size(info.Env(), {V, C}));
  return run_op(info, args, [=] { backend().embedding_forward(out, ids, table, N, V, C); });
}

// embeddingBackward({dtable, dout, ids, tokens, vocab, dim}, async); dtable accumulates.
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  const auto [N, V, C, ids] = embedding_dims(args);
  float* dtable = args.array<float>("dtable", checked_size(info.Env(), {V, C}));
  const float* dout = args.array<float>("dout", checked_size(info.Env(), {N, C}));
  return run_op(info, args, [=] { backend().embedding_backward(dtable, dout, ids, N, V, C); });
}

// residualForward({out, a, b}, async): all of one length.
Napi::Value ResidualForward(const Napi::CallbackInfo& info) {
  Args args(info);
  size_t n = 0;
  float* out = args.array<float>("out", kAnyLength, &n);
  const float* a = args.array<float>("a", n);
  const float* b = args.array<float>("b", n);
  return run_op(info, args, [=] { backend().residual_forward(out, a, b, n); });
}

// residualBackward({da, db, dout}, async): da += dout, db += dout.
Napi::Value ResidualBackward(const Napi::CallbackInfo& info) {
  Args args(info);
  size_t n = 0;
  const float* dout = args.array<float>("dout", kAnyLength, &n);
  float* da = args.array<float>("da", n);
  float* db = args.array<float>("db", n);
  return run_op(info, args, [=] { backend().residual_backward(da, db, dout, n); });
}

}  // namespace

void register_layers(Napi::Env env, Napi::Object exports) {
  static const Export table[] = {
      {"rmsnormForward", RmsnormForward},       {"rmsnormBackward", RmsnormBackward},
      {"ropeForward", Rope<false>},             {"ropeBackward", Rope<true>},
      {"swigluForward", SwigluForward},         {"swigluBackward", SwigluBackward},
      {"embeddingForward", EmbeddingForward},   {"embeddingBackward", EmbeddingBackward},
      {"residualForward", ResidualForward},     {"residualBackward", ResidualBackward},
  };
  export_all(env, exports, table);
}

}  // namespace wst::binding
