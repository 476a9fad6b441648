// Every CUDA kernel against the CPU kernel (the reference) on random inputs: odd sizes that are
// not multiples of any tile, host outputs NaN-poisoned and staged device outputs 0xFF-poisoned
// before each run, fp32 results compared by max|cuda - cpu| / max|cpu| <= 1e-5 (NaN never
// passes), sampled ids compared exactly. The ops run through cuda_host_staging_backend() (host
// pointers), and a few through cuda_backend() (device pointers) to cover that table too.
#include "test_util.h"

#ifdef WST_TEST_WITH_CUDA
#include <algorithm>
#include <cstdarg>
#include <cstring>

#include "../backend.h"
#include "../cuda/cuda_kernels.h"
#include "../model/llama.h"

namespace wst_test {
namespace {

constexpr double kF32 = 1e-5;
constexpr double kBF16 = 1e-2;  // bf16 results (the bound for bf16 kernels)

const wst::Backend& CPU() { return wst::cpu_backend(); }

// Calls per op of the op list through the tables the op checks use: the last check fails when an
// op of WST_BACKEND_OPS has no CUDA-vs-CPU case (the wrapper forwards every call unchanged).
enum OpIndex {
#define WST_OP_INDEX(op) kOp_##op,
  WST_BACKEND_OPS(WST_OP_INDEX)
#undef WST_OP_INDEX
  kOpCount
};
const char* const kOpNames[] = {
#define WST_OP_NAME(op) #op,
    WST_BACKEND_OPS(WST_OP_NAME)
#undef WST_OP_NAME
};
long g_op_calls[kOpCount];
// The wrapped table's op, one slot per (table, op).
template <int I, class F> struct Real { static inline F fn = nullptr; };
// A copy of `be` whose ops count their calls (one counter per op, shared by both tables).
template <int Table>
wst::Backend counting(const wst::Backend& be) {
  wst::Backend c = be;
#define WST_COUNT_OP(op)                                                  \
  Real<Table * kOpCount + kOp_##op, decltype(be.op)>::fn = be.op;          \
  c.op = [](auto... a) {                                                 \
    g_op_calls[kOp_##op]++;                                              \
    return Real<Table * kOpCount + kOp_##op, decltype(c.op)>::fn(a...);   \
  };
  WST_BACKEND_OPS(WST_COUNT_OP)
#undef WST_COUNT_OP
  return c;
}
// Host pointers (every op) and device pointers (a few, to cover that table too).
const wst::Backend& GPU() {
  static const wst::Backend b = counting<0>(wst::cuda_host_staging_backend());
  return b;
}
const wst::Backend& DEVICE_OPS() {
  static const wst::Backend b = counting<1>(wst::cuda_backend());
  return b;
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[160];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

std::vector<int32_t> rand_ids(Rng& r, size_t n, int V) {
  std::vector<int32_t> v(n);
  for (auto& x : v) x = r.below(V);
  return v;
}

// A device copy of a host vector through the device backend table.
template <class T>
struct Dev {
  const wst::Backend& be = wst::cuda_backend();
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(const std::vector<T>& h) : n(h.size()) {
    p = (T*)be.alloc(n * sizeof(T));
    be.upload(p, h.data(), n * sizeof(T));
  }
  explicit Dev(size_t count) : n(count) {
    p = (T*)be.alloc(n * sizeof(T));
    std::vector<T> poison(n);
    std::memset(poison.data(), 0xFF, n * sizeof(T));
    be.upload(p, poison.data(), n * sizeof(T));
  }
  ~Dev() { be.free(p); }
  std::vector<T> get() const {
    std::vector<T> h(n);
    be.download(h.data(), p, n * sizeof(T));
    return h;
  }
};

// ---- philox -------------------------------------------------------------------------------------
void check_philox(Report& rep) {
  Rng rng(5);
  const int n = 4099;
  std::vector<uint64_t> keys(n), ctrs(n);
  for (int i = 0; i < n; i++) {
    keys[i] = rng.next();
    ctrs[i] = i < 16 ? (uint64_t)i : rng.next();
  }
  std::vector<float> want(n);
  for (int i = 0; i < n; i++) want[i] = wst::philox_uniform(keys[i], ctrs[i]);
  Dev<uint64_t> dk(keys), dc(ctrs);
  Dev<float> out((size_t)n);
  wst::cuda::philox_uniform_batch(out.p, dk.p, dc.p, n);
  rep.check("cuda philox_uniform vs cpu (mismatches of 4099)", mismatches(out.get(), want), 0);
}

// ---- sgemm --------------------------------------------------------------------------------------
void check_sgemm(Report& rep) {
  struct S { int m, n, k; };
  const S shapes[] = {{37, 53, 71}, {1, 129, 65}, {130, 3, 257}, {257, 129, 300}, {200, 300, 9}};
  Rng rng(7);
  for (const S& s : shapes)
    for (int t = 0; t < 4; t++)
      for (int bc = 0; bc < 2; bc++) {
        const bool tA = t & 1, tB = t & 2;
        const int lda = (tA ? s.m : s.k) + 3, ldb = (tB ? s.k : s.n) + 1, ldc = s.n + 2;
        auto A = randv(rng, (size_t)(tA ? s.k : s.m) * lda);
        auto B = randv(rng, (size_t)(tB ? s.n : s.k) * ldb);
        const float alpha = 1.3f, beta = bc ? -0.6f : 0.0f;
        auto C0 = bc ? randv(rng, (size_t)s.m * ldc) : nanv((size_t)s.m * ldc);
        if (!bc)
          for (size_t i = 0; i < C0.size(); i++)
            if ((int)(i % ldc) >= s.n) C0[i] = 1.0f;  // gaps stay untouched
        auto want = C0, got = C0;
        CPU().sgemm(tA, tB, s.m, s.n, s.k, alpha, A.data(), lda, B.data(), ldb, beta, want.data(), ldc);
        GPU().sgemm(tA, tB, s.m, s.n, s.k, alpha, A.data(), lda, B.data(), ldb, beta, got.data(), ldc);
        rep.check(fmt("cuda sgemm %dx%dx%d %c%c beta=%g", s.m, s.n, s.k, tA ? 'T' : 'N',
                      tB ? 'T' : 'N', beta),
                  rel_err(got, want), kF32);
      }
  // k == 0 and alpha == 0: C = beta C.
  for (int kz = 0; kz < 2; kz++) {
    auto A = randv(rng, 5 * 7), B = randv(rng, 7 * 6), C = randv(rng, 5 * 6);
    auto want = C, got = C;
    const int k = kz ? 0 : 7;
    const float alpha = kz ? 1.0f : 0.0f;
    CPU().sgemm(false, false, 5, 6, k, alpha, A.data(), 7, B.data(), 6, 0.5f, want.data(), 6);
    GPU().sgemm(false, false, 5, 6, k, alpha, A.data(), 7, B.data(), 6, 0.5f, got.data(), 6);
    rep.check(kz ? "cuda sgemm k=0 (C = beta C)" : "cuda sgemm alpha=0 (C = beta C)",
              rel_err(got, want), 0);
  }
  // The device-pointer table.
  {
    const int m = 77, n = 91, k = 133;
    auto A = randv(rng, (size_t)m * k), B = randv(rng, (size_t)k * n);
    auto want = nanv((size_t)m * n);
    CPU().sgemm(false, false, m, n, k, 1.0f, A.data(), k, B.data(), n, 0.0f, want.data(), n);
    Dev<float> dA(A), dB(B), dC((size_t)m * n);
    DEVICE_OPS().sgemm(false, false, m, n, k, 1.0f, dA.p, k, dB.p, n, 0.0f, dC.p, n);
    rep.check("cuda sgemm 77x91x133 via cuda_backend (device ptrs)", rel_err(dC.get(), want), kF32);
  }
}

// ---- attention ----------------------------------------------------------------------------------
struct AttnShape {
  int B, H, KVH, Tq, Tk, D;
  bool causal;
};

void check_attention(Report& rep) {
  const AttnShape shapes[] = {
      {2, 4, 2, 37, 37, 24, true},    {1, 6, 3, 13, 70, 40, true},  {1, 2, 1, 70, 45, 16, true},
      {1, 3, 3, 19, 33, 64, false},   {2, 8, 2, 97, 97, 128, true}, {1, 4, 1, 33, 130, 128, true},
      {1, 2, 2, 45, 45, 200, true},   {1, 40, 1, 5, 9, 8, true},
  };
  Rng rng(13);
  for (const AttnShape& s : shapes) {
    const std::string tag = fmt("B%d H%d/%d Tq%d Tk%d D%d%s", s.B, s.H, s.KVH, s.Tq, s.Tk, s.D,
                                s.causal ? " causal" : "");
    const size_t nq = (size_t)s.B * s.Tq * s.H * s.D, nk = (size_t)s.B * s.Tk * s.KVH * s.D;
    const size_t nl = (size_t)s.B * s.H * s.Tq;
    auto q = randv(rng, nq), k = randv(rng, nk), v = randv(rng, nk), dout = randv(rng, nq);
    auto out_c = nanv(nq), lse_c = nanv(nl), out_g = nanv(nq), lse_g = nanv(nl);
    CPU().attention_forward(out_c.data(), lse_c.data(), q.data(), k.data(), v.data(), s.B, s.H,
                            s.KVH, s.Tq, s.Tk, s.D, s.causal);
    GPU().attention_forward(out_g.data(), lse_g.data(), q.data(), k.data(), v.data(), s.B, s.H,
                            s.KVH, s.Tq, s.Tk, s.D, s.causal);
    rep.check("cuda attention fwd out " + tag, rel_err(out_g, out_c), kF32);
    rep.check("cuda attention fwd lse " + tag, rel_err(lse_g, lse_c), kF32);
    auto dq_c = nanv(nq), dk_c = nanv(nk), dv_c = nanv(nk);
    auto dq_g = nanv(nq), dk_g = nanv(nk), dv_g = nanv(nk);
    CPU().attention_backward(dq_c.data(), dk_c.data(), dv_c.data(), dout.data(), q.data(),
                             k.data(), v.data(), out_c.data(), lse_c.data(), s.B, s.H, s.KVH,
                             s.Tq, s.Tk, s.D, s.causal);
    GPU().attention_backward(dq_g.data(), dk_g.data(), dv_g.data(), dout.data(), q.data(),
                             k.data(), v.data(), out_c.data(), lse_c.data(), s.B, s.H, s.KVH,
                             s.Tq, s.Tk, s.D, s.causal);
    rep.check("cuda attention bwd dq " + tag, rel_err(dq_g, dq_c), kF32);
    rep.check("cuda attention bwd dk " + tag, rel_err(dk_g, dk_c), kF32);
    rep.check("cuda attention bwd dv " + tag, rel_err(dv_g, dv_c), kF32);
  }
  // decode
  // The second and third shapes have few (batch x kv head) blocks, so the keys are split (split-K
  // decode; on the emulator's 4 "SMs" too): long rows, a row in one split, an empty row.
  struct DecodeShape { int B, H, KVH, maxT, D; std::vector<int32_t> len; };
  const DecodeShape dshapes[] = {{5, 8, 2, 300, 36, {1, 300, 17, 0, 129}},
                                 {5, 8, 2, 300, 128, {1, 300, 17, 0, 129}},
                                 {2, 4, 1, 1000, 64, {1000, 1}},
                                 {1, 6, 2, 777, 36, {613}},
                                 {2, 2, 1, 520, 128, {0, 519}}};
  for (const DecodeShape& ds : dshapes) {
    const int B = ds.B, H = ds.H, KVH = ds.KVH, maxT = ds.maxT, D = ds.D;
    const std::vector<int32_t>& len = ds.len;
    auto q = randv(rng, (size_t)B * H * D);
    auto kc = randv(rng, (size_t)B * maxT * KVH * D), vc = randv(rng, (size_t)B * maxT * KVH * D);
    auto oc = nanv(q.size()), og = nanv(q.size());
    CPU().attention_decode(oc.data(), q.data(), kc.data(), vc.data(), len.data(), B, H, KVH, maxT, D);
    GPU().attention_decode(og.data(), q.data(), kc.data(), vc.data(), len.data(), B, H, KVH, maxT, D);
    rep.check(fmt("cuda attention decode B%d H%d/%d maxT%d D%d", B, H, KVH, maxT, D),
              rel_err(og, oc), kF32);
  }
  {  // The shared-prompt decode (slots 2, 0 share 50 positions; slot 1 alone) vs the CPU's.
    const int B = 3, H = 8, KVH = 2, maxT = 120, D = 64;
    const std::vector<int32_t> len = {77, 31, 119}, members = {2, 0, 1}, start = {0, 2, 3}, shared = {50, 0};
    auto q = randv(rng, (size_t)B * H * D);
    auto kc = randv(rng, (size_t)B * maxT * KVH * D), vc = randv(rng, (size_t)B * maxT * KVH * D);
    const size_t row = (size_t)maxT * KVH * D, n = (size_t)50 * KVH * D;
    std::copy(kc.begin() + 2 * row, kc.begin() + 2 * row + n, kc.begin());
    std::copy(vc.begin() + 2 * row, vc.begin() + 2 * row + n, vc.begin());
    auto oc = nanv(q.size()), og = nanv(q.size());
    CPU().attention_decode_shared(oc.data(), q.data(), kc.data(), vc.data(), len.data(), B, H, KVH, maxT, D,
                                  members.data(), start.data(), shared.data(), 2);
    GPU().attention_decode_shared(og.data(), q.data(), kc.data(), vc.data(), len.data(), B, H, KVH, maxT, D,
                                  members.data(), start.data(), shared.data(), 2);
    rep.check("cuda attention decode, shared prompts", rel_err(og, oc), kF32);
  }
}

// ---- layers -------------------------------------------------------------------------------------
void check_rmsnorm(Report& rep) {
  Rng rng(17);
  const int N = 67, C = 1000;
  auto x = randv(rng, (size_t)N * C, -2, 2), w = randv(rng, C);
  auto oc = nanv(x.size()), og = nanv(x.size()), rc = nanv(N), rg = nanv(N);
  CPU().rmsnorm_forward(oc.data(), rc.data(), x.data(), w.data(), N, C, 1e-5f);
  GPU().rmsnorm_forward(og.data(), rg.data(), x.data(), w.data(), N, C, 1e-5f);
  rep.check("cuda rmsnorm fwd out 67x1000", rel_err(og, oc), kF32);
  rep.check("cuda rmsnorm fwd rstd", rel_err(rg, rc), kF32);
  auto inplace = x;  // out aliasing inp
  GPU().rmsnorm_forward(inplace.data(), nullptr, inplace.data(), w.data(), N, C, 1e-5f);
  rep.check("cuda rmsnorm fwd in place, rstd null", rel_err(inplace, oc), kF32);

  auto dout = randv(rng, x.size()), dw0 = randv(rng, C);
  auto dic = nanv(x.size()), dig = nanv(x.size()), dwc = dw0, dwg = dw0;
  CPU().rmsnorm_backward(dic.data(), dwc.data(), dout.data(), x.data(), w.data(), rc.data(), N, C);
  GPU().rmsnorm_backward(dig.data(), dwg.data(), dout.data(), x.data(), w.data(), rc.data(), N, C);
  rep.check("cuda rmsnorm bwd dinp", rel_err(dig, dic), kF32);
  rep.check("cuda rmsnorm bwd dweight (+=)", rel_err(dwg, dwc), kF32);
  auto dio = dout, dwo = dw0;  // dinp aliasing dout
  GPU().rmsnorm_backward(dio.data(), dwo.data(), dio.data(), x.data(), w.data(), rc.data(), N, C);
  rep.check("cuda rmsnorm bwd dinp aliasing dout", rel_err(dio, dic), kF32);
  rep.check("cuda rmsnorm bwd dweight with aliasing", rel_err(dwo, dwc), kF32);
}

void check_rope(Report& rep) {
  Rng rng(19);
  for (int D : {64, 30}) {
    const int N = 37, H = 5;
    auto x = randv(rng, (size_t)N * H * D);
    std::vector<int32_t> pos(N);
    for (auto& p : pos) p = rng.below(32768);
    auto oc = nanv(x.size()), og = nanv(x.size());
    CPU().rope_forward(oc.data(), x.data(), pos.data(), N, H, D, 10000.0f);
    GPU().rope_forward(og.data(), x.data(), pos.data(), N, H, D, 1e4f);
    rep.check(fmt("cuda rope fwd N%d H%d D%d", N, H, D), rel_err(og, oc), kF32);
    auto bc = nanv(x.size()), bg = x;  // backward in place
    CPU().rope_backward(bc.data(), x.data(), pos.data(), N, H, D, 1e6f);
    GPU().rope_backward(bg.data(), bg.data(), pos.data(), N, H, D, 1e6f);
    rep.check(fmt("cuda rope bwd (in place, theta 1e6) D%d", D), rel_err(bg, bc), kF32);
  }
}

void check_swiglu(Report& rep) {
  Rng rng(29);
  const int N = 33, C = 1001;
  auto g = randv(rng, (size_t)N * C, -12, 12), u = randv(rng, (size_t)N * C, -2, 2);
  auto oc = nanv(g.size()), og = nanv(g.size());
  CPU().swiglu_forward(oc.data(), g.data(), u.data(), N, C);
  GPU().swiglu_forward(og.data(), g.data(), u.data(), N, C);
  rep.check("cuda swiglu fwd 33x1001", rel_err(og, oc), kF32);
  auto d = randv(rng, g.size());
  auto dgc = nanv(g.size()), duc = nanv(g.size()), dgg = nanv(g.size()), dug = nanv(g.size());
  CPU().swiglu_backward(dgc.data(), duc.data(), d.data(), g.data(), u.data(), N, C);
  GPU().swiglu_backward(dgg.data(), dug.data(), d.data(), g.data(), u.data(), N, C);
  rep.check("cuda swiglu bwd dgate", rel_err(dgg, dgc), kF32);
  rep.check("cuda swiglu bwd dup", rel_err(dug, duc), kF32);
}

void check_embedding(Report& rep) {
  Rng rng(37);
  const int N = 300, V = 50, C = 129;  // N > V: ids repeat
  auto table = randv(rng, (size_t)V * C);
  auto ids = rand_ids(rng, N, V);
  auto oc = nanv((size_t)N * C), og = nanv((size_t)N * C);
  CPU().embedding_forward(oc.data(), ids.data(), table.data(), N, V, C);
  GPU().embedding_forward(og.data(), ids.data(), table.data(), N, V, C);
  rep.check("cuda embedding fwd (mismatches)", mismatches(og, oc), 0);
  auto dout = randv(rng, (size_t)N * C), dt0 = randv(rng, (size_t)V * C);
  auto dtc = dt0, dtg = dt0;
  CPU().embedding_backward(dtc.data(), dout.data(), ids.data(), N, V, C);
  GPU().embedding_backward(dtg.data(), dout.data(), ids.data(), N, V, C);
  rep.check("cuda embedding bwd (+=, repeated ids)", rel_err(dtg, dtc), kF32);
}

void check_residual(Report& rep) {
  Rng rng(41);
  const size_t n = 100001;
  auto a = randv(rng, n), b = randv(rng, n);
  auto oc = nanv(n), og = nanv(n);
  CPU().residual_forward(oc.data(), a.data(), b.data(), n);
  GPU().residual_forward(og.data(), a.data(), b.data(), n);
  rep.check("cuda residual fwd (mismatches)", mismatches(og, oc), 0);
  auto ai = a;
  GPU().residual_forward(ai.data(), ai.data(), b.data(), n);
  rep.check("cuda residual fwd out aliasing a (mismatches)", mismatches(ai, oc), 0);
  auto d = randv(rng, n);
  auto dac = a, dbc = b, dag = a, dbg = b;
  CPU().residual_backward(dac.data(), dbc.data(), d.data(), n);
  GPU().residual_backward(dag.data(), dbg.data(), d.data(), n);
  rep.check("cuda residual bwd da, db (+=)", std::max(rel_err(dag, dac), rel_err(dbg, dbc)), kF32);
}

// ---- softmax family -----------------------------------------------------------------------------
void check_softmax(Report& rep) {
  Rng rng(43);
  struct S { int N, V; };
  for (S s : {S{7, 151936}, S{33, 1001}}) {
    const size_t n = (size_t)s.N * s.V;
    const std::string tag = fmt("%dx%d", s.N, s.V);
    auto z = randv(rng, n, -8, 8);
    auto ids = rand_ids(rng, s.N, s.V);
    auto pc = nanv(n), pg = nanv(n);
    CPU().softmax_forward(pc.data(), z.data(), s.N, s.V);
    GPU().softmax_forward(pg.data(), z.data(), s.N, s.V);
    rep.check("cuda softmax fwd " + tag, rel_err(pg, pc), kF32);
    CPU().log_softmax_forward(pc.data(), z.data(), s.N, s.V);
    GPU().log_softmax_forward(pg.data(), z.data(), s.N, s.V);
    rep.check("cuda log_softmax fwd " + tag, rel_err(pg, pc), kF32);

    auto lpc = nanv(s.N), lsc = nanv(s.N), enc = nanv(s.N);
    auto lpg = nanv(s.N), lsg = nanv(s.N), eng = nanv(s.N);
    CPU().token_logprobs_forward(lpc.data(), lsc.data(), enc.data(), z.data(), ids.data(), s.N, s.V);
    GPU().token_logprobs_forward(lpg.data(), lsg.data(), eng.data(), z.data(), ids.data(), s.N, s.V);
    rep.check("cuda token_logprobs fwd logprob " + tag, rel_err(lpg, lpc), kF32);
    rep.check("cuda token_logprobs fwd lse " + tag, rel_err(lsg, lsc), kF32);
    rep.check("cuda token_logprobs fwd entropy " + tag, rel_err(eng, enc), kF32);

    auto g = randv(rng, s.N), dH = randv(rng, s.N);
    for (int mode = 0; mode < 3; mode++) {  // 0: no dentropy, 1: with entropy, 2: entropy null
      const float* dh = mode ? dH.data() : nullptr;
      const float* en = mode == 1 ? enc.data() : nullptr;
      auto dc = nanv(n), dg = z;  // GPU in place (dlogits aliasing logits)
      CPU().token_logprobs_backward(dc.data(), g.data(), dh, z.data(), ids.data(), lsc.data(), en,
                                    s.N, s.V);
      GPU().token_logprobs_backward(dg.data(), g.data(), dh, dg.data(), ids.data(), lsc.data(), en,
                                    s.N, s.V);
      static const char* modes[] = {"dlogprob only", "with dentropy", "dentropy, entropy null"};
      rep.check(fmt("cuda token_logprobs bwd in place (%s) %s", modes[mode], tag.c_str()),
                rel_err(dg, dc), kF32);
    }

    auto tg = ids;
    tg[0] = -1;
    if (s.N > 3) tg[3] = -100;
    auto loc = nanv(s.N), lsc2 = nanv(s.N), log_ = nanv(s.N), lsg2 = nanv(s.N);
    CPU().crossentropy_forward(loc.data(), lsc2.data(), z.data(), tg.data(), s.N, s.V);
    GPU().crossentropy_forward(log_.data(), lsg2.data(), z.data(), tg.data(), s.N, s.V);
    rep.check("cuda crossentropy fwd loss (ignored targets) " + tag, rel_err(log_, loc), kF32);
    rep.check("cuda crossentropy fwd lse " + tag, rel_err(lsg2, lsc2), kF32);
    auto dl = randv(rng, s.N);
    auto dc = nanv(n), dg = z;
    CPU().crossentropy_backward(dc.data(), dl.data(), z.data(), tg.data(), lsc2.data(), s.N, s.V);
    GPU().crossentropy_backward(dg.data(), dl.data(), dg.data(), tg.data(), lsc2.data(), s.N, s.V);
    rep.check("cuda crossentropy bwd in place " + tag, rel_err(dg, dc), kF32);
  }
}

// ---- sampling -----------------------------------------------------------------------------------
void check_sampling(Report& rep) {
  Rng rng(47);
  struct Case {
    const char* name;
    int N, V;
    wst::SamplingParams p;
    int ties;  // 1: logits quantised to multiples of 1/4 (many exact ties)
  };
  const Case cases[] = {
      {"greedy", 16, 50021, {0.0f, 0, 1.0f, 0.0f}, 0},
      {"greedy ties", 16, 5003, {0.0f, 0, 1.0f, 0.0f}, 1},
      {"T=1", 64, 1000, {1.0f, 0, 1.0f, 0.0f}, 0},
      {"T=0.7 top_p=0.9", 8, 151936, {0.7f, 0, 0.9f, 0.0f}, 0},
      {"T=1 top_k=40", 64, 32003, {1.0f, 40, 1.0f, 0.0f}, 0},
      {"T=1.3 top_k=5000", 16, 32003, {1.3f, 5000, 1.0f, 0.0f}, 0},
      {"T=1 min_p=0.05", 64, 10007, {1.0f, 0, 1.0f, 0.05f}, 0},
      {"T=0.9 top_k=50 top_p=0.8 min_p=0.02", 64, 32003, {0.9f, 50, 0.8f, 0.02f}, 0},
      {"T=1 top_p=0.5 ties", 64, 5003, {1.0f, 0, 0.5f, 0.0f}, 1},
      {"T=2 top_k=100 ties", 64, 5003, {2.0f, 100, 1.0f, 0.0f}, 1},
  };
  for (Case c : cases) {
#ifdef WST_TEST_EMULATED
    c.N = std::min(c.N, 6);  // the CPU emulator runs 1024-thread blocks as fibers: keep it short
#endif
    const size_t n = (size_t)c.N * c.V;
    std::vector<float> z(n);
    for (auto& x : z) {
      x = rng.nonzero(-6, 6);
      if (c.ties) x = std::round(x * 4) / 4;
    }
    std::vector<uint64_t> seeds(c.N), ctrs(c.N);
    for (int r = 0; r < c.N; r++) {
      seeds[r] = rng.next();
      ctrs[r] = rng.next() >> 20;
    }
    std::vector<int32_t> ic(c.N, -7), ig(c.N, -7);
    auto lc = nanv(c.N), lg = nanv(c.N);
    CPU().sample_tokens(ic.data(), lc.data(), z.data(), c.N, c.V, c.p, seeds.data(), ctrs.data());
    GPU().sample_tokens(ig.data(), lg.data(), z.data(), c.N, c.V, c.p, seeds.data(), ctrs.data());
    rep.check(fmt("cuda sample_tokens ids %s %dx%d (mismatches)", c.name, c.N, c.V),
              mismatches(ig, ic), 0);
    rep.check(fmt("cuda sample_tokens logprobs %s", c.name), rel_err(lg, lc), kF32);
  }
  // Rows with NaN / +inf / nothing finite.
  {
    const int N = 4, V = 777;
    std::vector<float> z = randv(rng, (size_t)N * V);
    z[5] = NAN;                                              // row 0: a NaN, ignored
    z[V + 9] = INFINITY; z[V + 400] = INFINITY;              // row 1: two +inf, split evenly
    for (int v = 0; v < V; v++) z[2 * V + v] = v % 2 ? NAN : -INFINITY;  // row 2: nothing
    z[3 * V + 100] = -INFINITY;                              // row 3: one -inf
    std::vector<uint64_t> seeds = {1, 2, 3, 4}, ctrs = {9, 9, 9, 9};
    for (float T : {0.0f, 1.0f}) {
      wst::SamplingParams p{T, 0, 0.95f, 0.0f};
      std::vector<int32_t> ic(N), ig(N);
      auto lc = nanv(N), lg = nanv(N);
      CPU().sample_tokens(ic.data(), lc.data(), z.data(), N, V, p, seeds.data(), ctrs.data());
      GPU().sample_tokens(ig.data(), lg.data(), z.data(), N, V, p, seeds.data(), ctrs.data());
      double bad = mismatches(ig, ic);
      for (int r = 0; r < N; r++) {
        const bool nc = std::isnan(lc[r]), ng = std::isnan(lg[r]);
        bad += nc != ng || (!nc && lc[r] != lg[r] && std::fabs(lc[r] - lg[r]) > 1e-5 * std::fabs(lc[r]));
      }
      rep.check(fmt("cuda sample_tokens NaN/+inf/empty rows T=%g (mismatches)", T), bad, 0);
    }
  }
}

// ---- bf16 tensor-core GEMM ----------------------------------------------------------------------
std::vector<uint16_t> rand_bf16(Rng& rng, size_t n) {
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = wst::float_to_bf16(rng.nonzero(-1.0f, 1.0f));
  return v;
}

void check_gemm_bf16(Report& rep) {
  struct S { int m, n, k, pad; };  // pad: extra leading-dim elements (multiple of 8: aligned path)
  // Aligned shapes (16-byte copies) with ragged tile edges and k not a multiple of 32, then
  // unaligned ones (plain loads).
  const S shapes[] = {{200, 264, 96, 8}, {128, 256, 40, 0}, {136, 24, 8, 16}, {77, 91, 133, 3},
                      {1, 33, 17, 1}, {300, 520, 392, 0}};
  Rng rng(71);
  for (const S& s : shapes)
    for (int t = 0; t < 4; t++) {
      const bool tA = t & 1, tB = t & 2;
      const int bc = t == 1 || t == 2;  // beta != 0 for TN and NT (NT is the wgmma path on Hopper)
      const int lda = (tA ? s.m : s.k) + s.pad, ldb = (tB ? s.k : s.n) + s.pad, ldc = s.n + 2;
      auto A = rand_bf16(rng, (size_t)(tA ? s.k : s.m) * lda);
      auto B = rand_bf16(rng, (size_t)(tB ? s.n : s.k) * ldb);
      const float alpha = 1.3f, beta = bc ? -0.6f : 0.0f;
      auto C0 = bc ? randv(rng, (size_t)s.m * ldc) : nanv((size_t)s.m * ldc);
      if (!bc)
        for (size_t i = 0; i < C0.size(); i++)
          if ((int)(i % ldc) >= s.n) C0[i] = 1.0f;  // gaps stay untouched
      auto want = C0, got = C0;
      CPU().gemm_bf16(tA, tB, s.m, s.n, s.k, alpha, A.data(), lda, B.data(), ldb, beta, want.data(), ldc);
      GPU().gemm_bf16(tA, tB, s.m, s.n, s.k, alpha, A.data(), lda, B.data(), ldb, beta, got.data(), ldc);
      rep.check(fmt("cuda gemm_bf16 %dx%dx%d %c%c ld+%d beta=%g", s.m, s.n, s.k, tA ? 'T' : 'N',
                    tB ? 'T' : 'N', s.pad, beta),
                rel_err(got, want), kF32);
    }
  {  // k == 0: C = beta C
    auto A = rand_bf16(rng, 40), B = rand_bf16(rng, 40);
    auto C = randv(rng, 5 * 6);
    auto want = C, got = C;
    CPU().gemm_bf16(false, false, 5, 6, 0, 1.0f, A.data(), 8, B.data(), 8, 0.5f, want.data(), 6);
    GPU().gemm_bf16(false, false, 5, 6, 0, 1.0f, A.data(), 8, B.data(), 8, 0.5f, got.data(), 6);
    rep.check("cuda gemm_bf16 k=0 (C = beta C)", rel_err(got, want), 0);
  }
}

// ---- tf32 tensor-core GEMM ----------------------------------------------------------------------
void check_sgemm_tf32(Report& rep) {
  struct S { int m, n, k, pad; };  // pad: extra leading-dim elements (multiple of 4: aligned path)
  const S shapes[] = {{200, 264, 96, 4}, {128, 128, 40, 0}, {77, 91, 133, 3}, {1, 33, 17, 1}, {300, 260, 200, 0}};
  Rng rng(73);
  for (const S& s : shapes)
    for (int t = 0; t < 4; t++) {
      const bool tA = t & 1, tB = t & 2;
      const int bc = t == 1 || t == 2;
      const int lda = (tA ? s.m : s.k) + s.pad, ldb = (tB ? s.k : s.n) + s.pad, ldc = s.n + 2;
      auto A = randv(rng, (size_t)(tA ? s.k : s.m) * lda), B = randv(rng, (size_t)(tB ? s.n : s.k) * ldb);
      const float alpha = 1.3f, beta = bc ? -0.6f : 0.0f;
      auto C0 = bc ? randv(rng, (size_t)s.m * ldc) : nanv((size_t)s.m * ldc);
      if (!bc)
        for (size_t i = 0; i < C0.size(); i++)
          if ((int)(i % ldc) >= s.n) C0[i] = 1.0f;
      auto want = C0, got = C0, exact = C0;
      CPU().sgemm_tf32(tA, tB, s.m, s.n, s.k, alpha, A.data(), lda, B.data(), ldb, beta, want.data(), ldc);
      GPU().sgemm_tf32(tA, tB, s.m, s.n, s.k, alpha, A.data(), lda, B.data(), ldb, beta, got.data(), ldc);
      CPU().sgemm(tA, tB, s.m, s.n, s.k, alpha, A.data(), lda, B.data(), ldb, beta, exact.data(), ldc);
      const std::string tag = fmt("%dx%dx%d %c%c ld+%d beta=%g", s.m, s.n, s.k, tA ? 'T' : 'N', tB ? 'T' : 'N', s.pad, beta);
      rep.check("cuda sgemm_tf32 vs CPU tf32 " + tag, rel_err(got, want), kF32);
      rep.check("cuda sgemm_tf32 vs exact fp32 " + tag, rel_err(got, exact), 1e-3);
    }
}

// ---- bf16 tensor-core attention forward ---------------------------------------------------------
std::vector<float> widen(const std::vector<uint16_t>& v) {
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); i++) f[i] = wst::bf16_to_float(v[i]);
  return f;
}

void check_attention_bf16(Report& rep) {
  // D 64 / 128 take the tensor-core kernel (ragged tiles, GQA, Tq < Tk, Tq > Tk with rows that
  // see no key, non-causal); D 40 takes the widen-to-fp32 path.
  const AttnShape shapes[] = {
      {2, 4, 2, 100, 100, 64, true}, {1, 4, 1, 37, 150, 128, true}, {1, 2, 2, 90, 37, 64, true},
      {1, 3, 3, 70, 129, 128, false}, {2, 2, 1, 65, 65, 128, true}, {1, 2, 1, 33, 50, 40, true},
  };
  Rng rng(97);
  for (const AttnShape& s : shapes) {
    const std::string tag = fmt("B%d H%d/%d Tq%d Tk%d D%d%s", s.B, s.H, s.KVH, s.Tq, s.Tk, s.D,
                                s.causal ? " causal" : "");
    const size_t nq = (size_t)s.B * s.Tq * s.H * s.D, nk = (size_t)s.B * s.Tk * s.KVH * s.D;
    const size_t nl = (size_t)s.B * s.H * s.Tq;
    // Scores of a realistic spread: q and k of unit-ish norm per element.
    auto q = rand_bf16(rng, nq), k = rand_bf16(rng, nk), v = rand_bf16(rng, nk);
    std::vector<uint16_t> out_c(nq, 0xffff), out_g(nq, 0xffff);
    auto lse_c = nanv(nl), lse_g = nanv(nl);
    CPU().attention_forward_bf16(out_c.data(), lse_c.data(), q.data(), k.data(), v.data(), s.B,
                                 s.H, s.KVH, s.Tq, s.Tk, s.D, s.causal);
    GPU().attention_forward_bf16(out_g.data(), lse_g.data(), q.data(), k.data(), v.data(), s.B,
                                 s.H, s.KVH, s.Tq, s.Tk, s.D, s.causal);
    rep.check("cuda attention_bf16 fwd out " + tag, rel_err(widen(out_g), widen(out_c)), kBF16);
    rep.check("cuda attention_bf16 fwd lse " + tag, rel_err(lse_g, lse_c), 1e-4);
  }
}

// ---- grpo ---------------------------------------------------------------------------------------
void check_grpo(Report& rep) {
  Rng rng(53);
  const int S = 37, T = 1500;  // two 1024-token chunks per sequence
  const size_t n = (size_t)S * T;
  auto lp = randv(rng, n, -5, -0.01f), old = lp, ref = lp, adv = randv(rng, S);
  for (size_t i = 0; i < n; i++) {
    old[i] = lp[i] + rng.nonzero(-0.4f, 0.4f);
    ref[i] = lp[i] + rng.nonzero(-0.2f, 0.2f);
  }
  std::vector<float> mask(n);
  for (auto& m : mask) m = rng.uniform() < 0.8 ? 1.0f : 0.0f;
  adv[3] = 0.0f;  // dropped
  for (int lt = 0; lt < 4; lt++)
    for (int with_ref = 0; with_ref < 2; with_ref++) {
      wst::GrpoParams p{0.2f, 0.28f, with_ref ? 0.04f : 0.0f, 0.25f, (wst::GrpoLossType)lt,
                        (double)n * 0.77};
      auto gc = nanv(n), gg = nanv(n);
      wst::GrpoResult rc = CPU().grpo_loss(gc.data(), lp.data(), old.data(),
                                           with_ref ? ref.data() : nullptr, adv.data(), mask.data(),
                                           S, T, p);
      wst::GrpoResult rg = GPU().grpo_loss(gg.data(), lp.data(), old.data(),
                                           with_ref ? ref.data() : nullptr, adv.data(), mask.data(),
                                           S, T, p);
      const std::string tag = fmt("type %d%s", lt, with_ref ? " beta=0.04" : "");
      rep.check("cuda grpo grad " + tag, rel_err(gg, gc), kF32);
      const double sc[4] = {rc.loss, rc.clip_fraction, rc.kl, rc.kept_tokens};
      const double sg[4] = {rg.loss, rg.clip_fraction, rg.kl, rg.kept_tokens};
      double e = rel_err(sg, sc, 4);
      if (rc.kept != rg.kept) e = INFINITY;
      rep.check("cuda grpo loss/kept/clip/kl " + tag, e, 1e-6);  // fp32 per token on the GPU
    }
  // More sequences than the fused one-block-per-sequence path takes (the chunked path), and a
  // length that is not a multiple of 4 (the fused path's one-token-at-a-time loop).
  // And a long sequence (a 5000-token row for one fused block).
  for (const auto& [S2, T2] : {std::pair<int, int>{4200, 7}, std::pair<int, int>{5, 1501},
                               std::pair<int, int>{3, 5000}}) {
    const size_t n2 = (size_t)S2 * T2;
    auto lp2 = randv(rng, n2, -5, -0.01f), old2 = lp2, adv2 = randv(rng, S2);
    for (size_t i = 0; i < n2; i++) old2[i] = lp2[i] + rng.nonzero(-0.4f, 0.4f);
    std::vector<float> mask2(n2);
    for (auto& m : mask2) m = rng.uniform() < 0.8 ? 1.0f : 0.0f;
    wst::GrpoParams p{0.2f, 0.28f, 0.0f, 0.25f, wst::GrpoLossType::grpo, 1.0};
    auto gc = nanv(n2), gg = nanv(n2);
    wst::GrpoResult rc = CPU().grpo_loss(gc.data(), lp2.data(), old2.data(), nullptr, adv2.data(),
                                         mask2.data(), S2, T2, p);
    wst::GrpoResult rg = GPU().grpo_loss(gg.data(), lp2.data(), old2.data(), nullptr, adv2.data(),
                                         mask2.data(), S2, T2, p);
    const std::string tag = fmt("S=%d T=%d", S2, T2);
    rep.check("cuda grpo grad " + tag, rel_err(gg, gc), kF32);
    const double sc[3] = {rc.loss, rc.clip_fraction, rc.kept_tokens};
    const double sg[3] = {rg.loss, rg.clip_fraction, rg.kept_tokens};
    rep.check("cuda grpo loss " + tag, rc.kept != rg.kept ? INFINITY : rel_err(sg, sc, 3), 1e-6);
  }
  // Everything filtered.
  {
    std::vector<float> small(S, 0.01f);
    wst::GrpoParams p{0.2f, 0.2f, 0.0f, 0.5f, wst::GrpoLossType::grpo, 1.0};
    auto gg = nanv(n);
    wst::GrpoResult r = GPU().grpo_loss(gg.data(), lp.data(), old.data(), nullptr, small.data(),
                                        mask.data(), S, T, p);
    double bad = r.kept != 0 || r.loss != 0 || r.kept_tokens != 0;
    for (float g : gg) bad += g != 0.0f;
    rep.check("cuda grpo all sequences filtered (nonzero outputs)", bad, 0);
  }
}

// ---- optimiser ----------------------------------------------------------------------------------
void check_optim(Report& rep) {
  Rng rng(59);
  const size_t n = 100003;
  for (int variant = 0; variant < 2; variant++) {
    auto p0 = randv(rng, n), g = randv(rng, n), m0 = randv(rng, n, -0.1f, 0.1f);
    auto v0 = randv(rng, n, 0.001f, 0.01f);
    auto pc = p0, mc = m0, vc = v0, pg = p0, mg = m0, vg = v0;
    const double beta1 = variant ? 0.3 : 0.9, wd = variant ? 0.0 : 0.01;
    CPU().adamw_update(pc.data(), g.data(), mc.data(), vc.data(), n, 1e-3, beta1, 0.999, 1e-8, wd, 7);
    GPU().adamw_update(pg.data(), g.data(), mg.data(), vg.data(), n, 1e-3, beta1, 0.999, 1e-8, wd, 7);
    rep.check(fmt("cuda adamw param/m/v (beta1 %g, wd %g)", beta1, wd),
              std::max({rel_err(pg, pc), rel_err(mg, mc), rel_err(vg, vc)}), kF32);
  }
  auto x = randv(rng, 1000003);
  const double sc = CPU().sum_squares(x.data(), x.size()), sg = GPU().sum_squares(x.data(), x.size());
  rep.check("cuda sum_squares 1000003", std::fabs(sg - sc) / sc, 1e-12);
  auto xc = x, xg = x;
  CPU().scale_inplace(xc.data(), x.size(), 0.37f);
  GPU().scale_inplace(xg.data(), x.size(), 0.37f);
  rep.check("cuda scale_inplace (mismatches)", mismatches(xg, xc), 0);
}

// ---- the whole model resident on the device vs the same model on the CPU --------------------------
// One tiny Llama (GQA, qk-norm off/on) built twice from the same seed: on cpu_backend() and on
// cuda_backend() (device pointers only: weights, activations, caches, AdamW state on the GPU).
// Logits, scores, every gradient after an SFT and a GRPO step, the parameters after AdamW, and
// generated tokens with their log-probs must agree.
void check_model_on_device(Report& rep) {
  for (int qk = 0; qk < 2; qk++) {
    const wst::LlamaConfig cfg = tiny_llama_config(61, qk);
    const std::string tag = qk ? " (qk-norm, tied)" : " (qkv bias)";
    wst::LlamaModel cpu(&wst::cpu_backend(), cfg), gpu(&wst::cuda_backend(), cfg);
    cpu.init_random(5, 0.3f);
    gpu.init_random(5, 0.3f);
    const int B = 3, T = 11, N = B * T;
    Rng rng(101 + qk);
    std::vector<int32_t> tokens, targets;
    random_rows(rng, cfg.vocab, B, T, tokens, targets);
    std::vector<float> lc((size_t)N * cfg.vocab), lg(lc.size(), NAN);
    cpu.forward_logits(tokens.data(), B, T, lc.data());
    gpu.forward_logits(tokens.data(), B, T, lg.data());
    rep.check("cuda model logits" + tag, rel_err(lg, lc), 1e-4);
    std::vector<float> sc(N), sg(N, NAN), ec(N), eg(N, NAN);
    cpu.score(tokens.data(), targets.data(), B, T, sc.data(), ec.data());
    gpu.score(tokens.data(), targets.data(), B, T, sg.data(), eg.data());
    rep.check("cuda model score logprobs" + tag, rel_err(sg, sc), 1e-4);
    rep.check("cuda model score entropy" + tag, rel_err(eg, ec), 1e-4);
    std::vector<float> sg2(N, NAN);  // without entropy
    gpu.score(tokens.data(), targets.data(), B, T, sg2.data(), nullptr);
    rep.check("cuda model score (no entropy)" + tag, rel_err(sg2, sc), 1e-4);

    auto grads_err = [&] { return tensors_rel_err(gpu, cpu, true); };
    wst::SftParams sp{(double)N};
    auto rc = cpu.train_sft(tokens.data(), targets.data(), B, T, sp);
    auto rg = gpu.train_sft(tokens.data(), targets.data(), B, T, sp);
    rep.check("cuda model sft loss" + tag, std::fabs(rg.loss - rc.loss) / std::fabs(rc.loss), 1e-5);
    rep.check("cuda model sft grads (every tensor)" + tag, grads_err(), 1e-3);

    std::vector<float> mask(N), old(N), ref(N), adv(B);
    for (int n = 0; n < N; n++) mask[n] = rng.uniform() < 0.9 ? 1.f : 0.f;
    cpu.score(tokens.data(), targets.data(), B, T, old.data(), nullptr);
    for (int n = 0; n < N; n++) {
      ref[n] = old[n] + rng.nonzero(-0.1f, 0.1f);
      old[n] += rng.nonzero(-0.3f, 0.3f);
    }
    adv = {0.9f, -0.7f, 0.05f};
    wst::GrpoParams gp{0.2f, 0.28f, 0.04f, 0.1f, wst::GrpoLossType::grpo, 1.0};
    auto gc = cpu.train_grpo(tokens.data(), targets.data(), mask.data(), old.data(), ref.data(),
                             adv.data(), B, T, gp, 0.5f);
    auto gg = gpu.train_grpo(tokens.data(), targets.data(), mask.data(), old.data(), ref.data(),
                             adv.data(), B, T, gp, 0.5f);
    // The GRPO loss is a difference of terms (A > 0 and A < 0): error relative to max(1, |loss|).
    rep.check("cuda model grpo loss/kept" + tag,
              gc.grpo.kept != gg.grpo.kept ? INFINITY : std::fabs(gg.loss - gc.loss) / std::max(1.0, std::fabs(gc.loss)), 1e-5);
    rep.check("cuda model sft+grpo grads (every tensor)" + tag, grads_err(), 1e-3);
    // No old / ref log-probs: the current ones, detached (ratio 1), no KL.
    wst::GrpoParams gp0{0.2f, 0.28f, 0.0f, 0.1f, wst::GrpoLossType::grpo, 1.0};
    auto dc = cpu.train_grpo(tokens.data(), targets.data(), mask.data(), nullptr, nullptr, adv.data(), B, T, gp0);
    auto dg = gpu.train_grpo(tokens.data(), targets.data(), mask.data(), nullptr, nullptr, adv.data(), B, T, gp0);
    rep.check("cuda model grpo (detached old, no ref) loss" + tag,
              std::fabs(dg.loss - dc.loss) / std::max(1.0, std::fabs(dc.loss)), 1e-5);
    rep.check("cuda model sft+grpo+grpo grads (every tensor)" + tag, grads_err(), 1e-3);

    // eps 0.1: AdamW's first step is lr * g / (|g| + eps); with a tiny eps it is lr * sign(g),
    // which float noise flips for g ~ 0, so the comparison would test the noise, not the path.
    wst::OptimizerParams op{1e-3, 0.9, 0.999, 0.1, 0.01, 1.0};
    const double nc = cpu.optimizer_step(op), ng = gpu.optimizer_step(op);
    rep.check("cuda model grad norm" + tag, std::fabs(ng - nc) / nc, 1e-4);
    rep.check("cuda model params after AdamW (every tensor)" + tag, tensors_rel_err(gpu, cpu, false), 1e-4);
    {  // AdamW state: downloaded from the device, and a round trip through set/get is exact
      const size_t P = cpu.num_params();
      std::vector<float> mc(P), vc(P), mg(P, NAN), vg(P, NAN);
      cpu.get_optimizer_state(mc.data(), vc.data());
      gpu.get_optimizer_state(mg.data(), vg.data());
      rep.check("cuda model AdamW m, v on the device" + tag, std::max(rel_err(mg, mc), rel_err(vg, vc)), 1e-4);
      gpu.set_optimizer_state(mc.data(), vc.data());
      std::fill(mg.begin(), mg.end(), NAN);
      std::fill(vg.begin(), vg.end(), NAN);
      gpu.get_optimizer_state(mg.data(), vg.data());
      rep.check("cuda model AdamW state set/get round trip" + tag,
                mismatches(mg, mc) + mismatches(vg, vc), 0);
    }

    // Generation, greedy and sampled: rows 0-2 are prefilled first and decode two steps, then
    // rows 3-4 (one prompt twice: prefix sharing) join the running batch.
    for (int greedy = 0; greedy < 2; greedy++) {
      std::vector<std::unique_ptr<wst::LlamaModel::Context>> ctx;
      ctx.push_back(cpu.create_context(5, 24));
      ctx.push_back(gpu.create_context(5, 24));
      const std::vector<int32_t> prompts_a = {1, 2, 3, 4, 5, 6, 7, 8, 9}, prompts_b = {5, 6, 7, 5, 6, 7};
      const std::vector<int64_t> off_a = {0, 4, 7, 9}, off_b = {0, 3, 6};
      for (int m = 0; m < 2; m++) {
        auto& c = *ctx[m];
        c.sampling = greedy ? wst::SamplingParams{0.f, 0, 1.f, 0.f} : wst::SamplingParams{1.f, 0, 0.9f, 0.f};
        c.stop_ids = {0};
        auto add_rows = [&](int count) {  // what the binding's addRows does before a prefill
          for (int b = 0; b < count; b++) c.add_row(1000 + c.rows(), 7 + c.rows());
        };
        wst::LlamaModel& model = m ? gpu : cpu;
        add_rows(3);
        model.prefill(c, prompts_a.data(), off_a.data(), 3);
        model.decode(c, 2);
        add_rows(2);
        model.prefill(c, prompts_b.data(), off_b.data(), 2);
        while (model.decode(c, 4) > 0) {
        }
      }
      double tok_mismatch = 0, lp_err = 0;
      for (int b = 0; b < 5; b++) {
        tok_mismatch += ctx[0]->out_tokens[b] != ctx[1]->out_tokens[b];
        if (ctx[0]->out_tokens[b] == ctx[1]->out_tokens[b])
          lp_err = std::max(lp_err, rel_err(ctx[1]->out_logprobs[b], ctx[0]->out_logprobs[b]));
      }
      const std::string how = greedy ? " greedy" : " top-p";
      rep.check("cuda model generate tokens (rows differing)" + how + tag, tok_mismatch, 0);
      rep.check("cuda model generate logprobs" + how + tag, lp_err, 1e-4);
    }
  }
}

// Row copies (KV-cache writes, slot moves): runs of odd lengths to scattered places.
void check_copy_rows(Report& rep) {
  Rng rng(91);
  const int n = 37;
  std::vector<float> src(5000);
  for (auto& x : src) x = rng.nonzero();
  std::vector<int64_t> doff(n), soff(n), count(n);
  int64_t at = 0;
  for (int i = 0; i < n; i++) {
    count[i] = 1 + rng.below(60);
    doff[i] = at + rng.below(5);  // gaps between the runs stay untouched
    at = doff[i] + count[i];
    soff[i] = rng.below((int)(src.size() - count[i]));
  }
  std::vector<float> want((size_t)at + 3, -7.f), got((size_t)at + 3, -7.f);
  CPU().copy_rows(want.data(), src.data(), doff.data(), soff.data(), count.data(), n);
  GPU().copy_rows(got.data(), src.data(), doff.data(), soff.data(), count.data(), n);
  rep.check("copy_rows: runs and the untouched gaps (values differing)", (double)mismatches(got, want), 0);
}

// bf16 casts: random values over many binades, the halfway cases, zeros, infinities and NaNs.
void check_cast_bf16(Report& rep) {
  Rng rng(92);
  std::vector<float> x(100003);
  for (auto& v : x) v = rng.nonzero() * std::ldexp(1.f, (int)rng.below(60) - 30);
  const float specials[] = {0.f, -0.f, INFINITY, -INFINITY, NAN, 1.00390625f, 1.01171875f, -3.0078125f, 1e-40f, 3.4e38f};
  for (size_t i = 0; i < sizeof(specials) / sizeof(float); i++) x[i] = specials[i];
  std::vector<uint16_t> want(x.size()), got(x.size());
  CPU().cast_bf16(want.data(), x.data(), x.size());
  GPU().cast_bf16(got.data(), x.data(), x.size());
  size_t bad = 0;
  for (size_t i = 0; i < x.size(); i++) bad += want[i] != got[i];
  rep.check("cuda cast_bf16 (bits differing)", (double)bad, 0);
}

// Last: every op of the op list went through a CUDA-vs-CPU case above.
void check_op_coverage(Report& rep) {
  if (!g_all_groups) return;  // a filter ran some groups only
  for (int i = 0; i < kOpCount; i++)
    rep.check(std::string("op list: ") + kOpNames[i] + " has a CUDA-vs-CPU check (calls)", g_op_calls[i] > 0 ? 0 : 1, 0);
}

}  // namespace

std::vector<Check> cuda_checks() {
  wst::cuda::set_poison_staged_outputs(true);
  return {
      {"philox", check_philox},     {"sgemm", check_sgemm},         {"gemm_bf16", check_gemm_bf16},
      {"sgemm_tf32", check_sgemm_tf32},
      {"attention_bf16", check_attention_bf16},         {"attention", check_attention},
      {"rmsnorm", check_rmsnorm},   {"rope", check_rope},           {"swiglu", check_swiglu},
      {"embedding", check_embedding}, {"residual", check_residual}, {"softmax", check_softmax},
      {"sampling", check_sampling}, {"grpo", check_grpo},           {"optim", check_optim},
      {"model", check_model_on_device},
      {"model prefix", [](Report& rep) { check_model_prefix_batch(rep, wst::cuda_backend(), " (cuda)"); }},
      {"model grpo many", [](Report& rep) { check_model_grpo_many(rep, wst::cuda_backend(), " (cuda)"); }},
      {"model value head", [](Report& rep) { check_model_value_head(rep, wst::cuda_backend(), " (cuda)"); }},
      {"model bf16", [](Report& rep) { check_model_bf16(rep, wst::cuda_backend(), " (cuda)"); }},
      {"copy_rows", check_copy_rows},
      {"cast_bf16", check_cast_bf16},
      {"op list coverage", check_op_coverage},
  };
}

}  // namespace wst_test

#else  // built without CUDA

namespace wst_test {
std::vector<Check> cuda_checks() { return {}; }
}  // namespace wst_test

#endif
