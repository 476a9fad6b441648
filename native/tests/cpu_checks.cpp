// CPU kernels against naive float64 references (these run everywhere, GPU or not): SGEMM in
// every transposition with leading dimensions and both beta cases, causal GQA attention forward
// (Tq == Tk, Tq < Tk, Tq > Tk with key-less rows, non-causal), its backward, decode, and the
// Philox4x32-10 known-answer vectors.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include "../backend.h"
#include "../kernels.h"
#include "../cpu/threadpool.h"
#include "test_util.h"

namespace wst {
void philox4x32_10(const uint32_t ctr_in[4], const uint32_t key_in[2], uint32_t out[4]);
}

namespace wst_test {
namespace {

// ---- references ---------------------------------------------------------------------------------
std::vector<double> ref_sgemm(bool tA, bool tB, int m, int n, int k, double alpha,
                              const std::vector<float>& A, int lda, const std::vector<float>& B,
                              int ldb, double beta, const std::vector<float>& C, int ldc) {
  std::vector<double> out(C.begin(), C.end());
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double acc = 0;
      for (int p = 0; p < k; p++) {
        double a = tA ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
        double b = tB ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
        acc += a * b;
      }
      double c = beta == 0 ? 0.0 : beta * (double)C[(size_t)i * ldc + j];
      out[(size_t)i * ldc + j] = alpha * acc + c;
    }
  return out;
}

struct AttnShape {
  int B, H, KVH, Tq, Tk, D;
  bool causal;
  std::string str() const {
    char buf[96];
    std::snprintf(buf, sizeof buf, "B%d H%d/%d Tq%d Tk%d D%d%s", B, H, KVH, Tq, Tk, D,
                  causal ? " causal" : "");
    return buf;
  }
};

int visible(const AttnShape& s, int i) {
  if (!s.causal) return s.Tk;
  int v = s.Tk - s.Tq + i + 1;
  return v < 0 ? 0 : (v > s.Tk ? s.Tk : v);
}

struct AttnRef {
  std::vector<double> out, lse, dq, dk, dv;
};

// Forward and backward in float64, straight from the definition (a full score row per query).
AttnRef ref_attention(const AttnShape& s, const std::vector<float>& q, const std::vector<float>& k,
                      const std::vector<float>& v, const std::vector<float>& dout) {
  const int G = s.H / s.KVH, D = s.D;
  const double scale = 1.0 / std::sqrt((double)D);
  AttnRef r;
  r.out.assign(q.size(), 0.0);
  r.lse.assign((size_t)s.B * s.H * s.Tq, 0.0);
  r.dq.assign(q.size(), 0.0);
  r.dk.assign(k.size(), 0.0);
  r.dv.assign(v.size(), 0.0);
  std::vector<double> p(s.Tk), dp(s.Tk);
  for (int b = 0; b < s.B; b++)
    for (int h = 0; h < s.H; h++)
      for (int i = 0; i < s.Tq; i++) {
        const int kvh = h / G, vis = visible(s, i);
        const size_t qo = (((size_t)b * s.Tq + i) * s.H + h) * D;
        auto ko = [&](int j) { return (((size_t)b * s.Tk + j) * s.KVH + kvh) * D; };
        const size_t li = ((size_t)b * s.H + h) * s.Tq + i;
        if (vis == 0) {
          r.lse[li] = -INFINITY;
          continue;
        }
        double mx = -INFINITY;
        for (int j = 0; j < vis; j++) {
          double acc = 0;
          for (int d = 0; d < D; d++) acc += (double)q[qo + d] * k[ko(j) + d];
          p[j] = acc * scale;
          mx = std::fmax(mx, p[j]);
        }
        double sum = 0;
        for (int j = 0; j < vis; j++) sum += (p[j] = std::exp(p[j] - mx));
        for (int j = 0; j < vis; j++) p[j] /= sum;
        r.lse[li] = mx + std::log(sum);
        for (int j = 0; j < vis; j++)
          for (int d = 0; d < D; d++) r.out[qo + d] += p[j] * v[ko(j) + d];
        // backward: dP = dO V^T, Di = dO . O, dS = P (dP - Di)
        double di = 0;
        for (int d = 0; d < D; d++) di += (double)dout[qo + d] * r.out[qo + d];
        for (int j = 0; j < vis; j++) {
          double acc = 0;
          for (int d = 0; d < D; d++) acc += (double)dout[qo + d] * v[ko(j) + d];
          dp[j] = p[j] * (acc - di);
        }
        for (int j = 0; j < vis; j++)
          for (int d = 0; d < D; d++) {
            r.dq[qo + d] += scale * dp[j] * k[ko(j) + d];
            r.dk[ko(j) + d] += scale * dp[j] * q[qo + d];
            r.dv[ko(j) + d] += p[j] * dout[qo + d];
          }
      }
  return r;
}

// ---- checks -------------------------------------------------------------------------------------
void check_sgemm(Report& rep) {
  struct S { int m, n, k; };
  const S shapes[] = {{37, 53, 71}, {1, 129, 65}, {130, 3, 257}, {67, 131, 19}, {42, 96, 128}, {43, 33, 20}};
  Rng rng(11);
  for (const S& s : shapes)
    for (int t = 0; t < 4; t++)
      for (int bc = 0; bc < 2; bc++) {
        const bool tA = t & 1, tB = t & 2;
        const int lda = (tA ? s.m : s.k) + 3, ldb = (tB ? s.k : s.n) + 1, ldc = s.n + 2;
        auto A = randv(rng, (size_t)(tA ? s.k : s.m) * lda);
        auto B = randv(rng, (size_t)(tB ? s.n : s.k) * ldb);
        const float alpha = 0.7f, beta = bc ? 0.3f : 0.0f;
        auto C = bc ? randv(rng, (size_t)s.m * ldc) : nanv((size_t)s.m * ldc);
        auto want = ref_sgemm(tA, tB, s.m, s.n, s.k, alpha, A, lda, B, ldb, beta, C, ldc);
        if (!bc)  // the gaps between rows (j >= n) keep their old contents (NaN here)
          for (size_t i = 0; i < want.size(); i++)
            if ((int)(i % ldc) >= s.n) want[i] = 0, C[i] = 0;
        auto got = C;
        wst::sgemm(tA, tB, s.m, s.n, s.k, alpha, A.data(), lda, B.data(), ldb, beta, got.data(), ldc);
        if (!bc)
          for (size_t i = 0; i < got.size(); i++)
            if ((int)(i % ldc) >= s.n) got[i] = 0;
        char name[96];
        std::snprintf(name, sizeof name, "cpu sgemm %dx%dx%d %c%c beta=%g vs f64", s.m, s.n, s.k,
                      tA ? 'T' : 'N', tB ? 'T' : 'N', beta);
        rep.check(name, rel_err(got, want), 1e-5);
      }
}

const AttnShape kAttnShapes[] = {
    {2, 4, 2, 37, 37, 24, true},   // GQA, square causal
    {1, 6, 3, 13, 70, 40, true},   // Tq < Tk (a chunk after a cache)
    {1, 2, 1, 70, 45, 16, true},   // Tq > Tk: the first 25 queries see no key
    {1, 3, 3, 19, 33, 64, false},  // non-causal
};

void check_attention(Report& rep) {
  Rng rng(23);
  for (const AttnShape& s : kAttnShapes) {
    const size_t nq = (size_t)s.B * s.Tq * s.H * s.D, nk = (size_t)s.B * s.Tk * s.KVH * s.D;
    auto q = randv(rng, nq), k = randv(rng, nk), v = randv(rng, nk), dout = randv(rng, nq);
    AttnRef want = ref_attention(s, q, k, v, dout);
    auto out = nanv(nq), lse = nanv((size_t)s.B * s.H * s.Tq);
    wst::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.H, s.KVH,
                           s.Tq, s.Tk, s.D, s.causal);
    rep.check("cpu attention fwd out " + s.str(), rel_err(out, want.out), 1e-5);
    rep.check("cpu attention fwd lse " + s.str(), rel_err(lse, want.lse), 1e-5);
    auto dq = nanv(nq), dk = nanv(nk), dv = nanv(nk);
    wst::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(),
                            v.data(), out.data(), lse.data(), s.B, s.H, s.KVH, s.Tq, s.Tk, s.D,
                            s.causal);
    rep.check("cpu attention bwd dq " + s.str(), rel_err(dq, want.dq), 1e-5);
    rep.check("cpu attention bwd dk " + s.str(), rel_err(dk, want.dk), 1e-5);
    rep.check("cpu attention bwd dv " + s.str(), rel_err(dv, want.dv), 1e-5);
  }
}

void check_decode(Report& rep) {
  Rng rng(31);
  const int B = 4, H = 8, KVH = 2, maxT = 45, D = 36;
  const int32_t lengths[B] = {1, 45, 17, 0};
  auto q = randv(rng, (size_t)B * H * D);
  auto kc = randv(rng, (size_t)B * maxT * KVH * D), vc = randv(rng, (size_t)B * maxT * KVH * D);
  auto out = nanv(q.size());
  wst::attention_decode(out.data(), q.data(), kc.data(), vc.data(), lengths, B, H, KVH, maxT, D);
  // Reference: row b is a causal attention of one query over its first lengths[b] keys.
  std::vector<double> want(q.size(), 0.0);
  for (int b = 0; b < B; b++) {
    if (lengths[b] == 0) continue;
    AttnShape s{1, H, KVH, 1, lengths[b], D, false};
    std::vector<float> qb(q.begin() + (size_t)b * H * D, q.begin() + (size_t)(b + 1) * H * D);
    std::vector<float> kb, vb;
    for (int j = 0; j < lengths[b]; j++) {
      const size_t o = ((size_t)b * maxT + j) * KVH * D;
      kb.insert(kb.end(), kc.begin() + o, kc.begin() + o + (size_t)KVH * D);
      vb.insert(vb.end(), vc.begin() + o, vc.begin() + o + (size_t)KVH * D);
    }
    AttnRef r = ref_attention(s, qb, kb, vb, qb);
    std::copy(r.out.begin(), r.out.end(), want.begin() + (size_t)b * H * D);
  }
  rep.check("cpu attention decode (lengths 1,45,17,0) vs f64", rel_err(out, want), 1e-5);

  {  // Shared prompts: slots {4, 1, 6} share 130 positions (identical copies; three key blocks),
     // {0, 3} share 70, {2} and {5} alone (one with an empty shared part); own parts up to 80
     // positions; slots out of order inside groups.
    const int B2 = 7, maxT2 = 220;
    const std::vector<int32_t> len = {150, 200, 180, 71, 141, 1, 135};
    const std::vector<int32_t> members = {4, 1, 6, 0, 3, 2, 5}, start = {0, 3, 5, 6, 7}, shared = {130, 70, 33, 0};
    auto q2 = randv(rng, (size_t)B2 * H * D);
    auto k2 = randv(rng, (size_t)B2 * maxT2 * KVH * D), v2 = randv(rng, (size_t)B2 * maxT2 * KVH * D);
    const size_t row = (size_t)maxT2 * KVH * D;
    for (size_t g = 0; g + 1 < start.size(); g++)
      for (int i = start[g] + 1; i < start[g + 1]; i++) {
        const size_t n = (size_t)shared[g] * KVH * D;
        std::copy(k2.begin() + members[start[g]] * row, k2.begin() + members[start[g]] * row + n, k2.begin() + members[i] * row);
        std::copy(v2.begin() + members[start[g]] * row, v2.begin() + members[start[g]] * row + n, v2.begin() + members[i] * row);
      }
    auto plain = nanv(q2.size()), grouped = nanv(q2.size()), alone = nanv((size_t)H * D);
    wst::attention_decode(plain.data(), q2.data(), k2.data(), v2.data(), len.data(), B2, H, KVH, maxT2, D);
    wst::attention_decode_shared(grouped.data(), q2.data(), k2.data(), v2.data(), len.data(), B2, H, KVH,
                                 maxT2, D, members.data(), start.data(), shared.data(), 4);
    rep.check("cpu attention decode, shared prompts vs each slot's own copy", rel_err(grouped, plain), 1e-5);
    // Slot 1 decoded alone (a group of one with the same shared length) gives the same bits.
    const std::vector<int32_t> m1 = {0}, s1 = {0, 1}, l1 = {130}, len1 = {len[1]};
    wst::attention_decode_shared(alone.data(), q2.data() + (size_t)1 * H * D, k2.data() + row, v2.data() + row,
                                 len1.data(), 1, H, KVH, maxT2, D, m1.data(), s1.data(), l1.data(), 1);
    int diff = 0;
    for (size_t i = 0; i < alone.size(); i++) diff += alone[i] != grouped[(size_t)1 * H * D + i];
    rep.check("cpu attention decode, shared prompts: a row alone = the same row in its group (bits)", diff, 0);
  }
}

// bf16 casts against a reference that rounds by distance in double (ties to the even mantissa).
void check_cast_bf16(Report& rep) {
  Rng rng(93);
  std::vector<float> x(20011);
  for (auto& v : x) v = rng.nonzero() * std::ldexp(1.f, (int)rng.below(200) - 100);
  const float specials[] = {0.f, -0.f, INFINITY, -INFINITY, 1.00390625f, 1.01171875f, -3.0078125f, 1e-40f, 3.4e38f, 3.40282347e38f};
  for (size_t i = 0; i < sizeof(specials) / sizeof(float); i++) x[i] = specials[i];
  std::vector<uint16_t> got(x.size());
  wst::cast_bf16(got.data(), x.data(), x.size());
  size_t bad = 0;
  for (size_t i = 0; i < x.size(); i++) {
    uint32_t u;
    std::memcpy(&u, &x[i], 4);
    const uint16_t lo = (uint16_t)(u >> 16);
    uint16_t want = lo;
    if ((u & 0xffffu) != 0 && (u & 0x7f800000u) != 0x7f800000u) {
      const uint16_t hi = (uint16_t)(lo + 1);  // the next bf16 away from zero (may be infinity)
      // A bf16's value; infinity counts as 2^128 (the next power past the largest finite one), so
      // that rounding past the largest finite bf16 goes to infinity as IEEE rounding does.
      auto val = [](uint16_t h) {
        if ((h & 0x7fffu) == 0x7f80u) return std::copysign(std::ldexp(1.0, 128), (h & 0x8000u) ? -1.0 : 1.0);
        uint32_t w = (uint32_t)h << 16;
        float f;
        std::memcpy(&f, &w, 4);
        return (double)f;
      };
      const double dlo = std::fabs((double)x[i] - val(lo)), dhi = std::fabs(val(hi) - (double)x[i]);
      want = (dhi < dlo || (dhi == dlo && (lo & 1))) ? hi : lo;
    }
    bad += got[i] != want;
  }
  float nan = NAN;
  uint16_t h = 0;
  wst::cast_bf16(&h, &nan, 1);
  rep.check("cast_bf16 vs rounding by distance (bits differing)", (double)bad, 0);
  rep.check("cast_bf16 keeps NaN a NaN", ((h & 0x7f80u) == 0x7f80u && (h & 0x7fu) != 0) ? 0 : 1, 0);
}

void check_philox(Report& rep) {
  const uint32_t kats[3][10] = {
      {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
      {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
       0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
      {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
       0x94fdcceb, 0x5001e420, 0x24126ea1},
  };
  double bad = 0;
  for (const auto& t : kats) {
    uint32_t out[4];
    wst::philox4x32_10(t, t + 4, out);
    for (int i = 0; i < 4; i++) bad += out[i] != t[6 + i];
  }
  rep.check("cpu philox4x32-10 Random123 known answers (mismatches)", bad, 0);
  // philox_uniform = top 24 bits of word 0 of (lo(counter), hi(counter), 0, 0) under (lo, hi) key
  const uint64_t key = 0x0123456789abcdefull, ctr = 0xfedcba9876543210ull;
  const uint32_t c4[4] = {(uint32_t)ctr, (uint32_t)(ctr >> 32), 0, 0};
  const uint32_t k2[2] = {(uint32_t)key, (uint32_t)(key >> 32)};
  uint32_t o[4];
  wst::philox4x32_10(c4, k2, o);
  const float want = (float)(o[0] >> 8) / 16777216.0f;
  rep.check("cpu philox_uniform word layout (mismatches)", wst::philox_uniform(key, ctr) != want, 0);
}

}  // namespace

// Tasks flush subnormals (FTZ/DAZ, threadpool.h); the calling thread gets its own mode back.
void check_subnormal_mode(Report& rep) {
#if defined(__x86_64__) || defined(__aarch64__)
  volatile float tiny = 1e-39f;  // subnormal
  const bool before = wst::FlushSubnormals::active();
  std::vector<float> product(8, -1.0f);
  std::vector<int> flushing(8, 0);
  wst::parallel_for(8, [&](int i) {
    product[i] = tiny * (float)(i + 1);
    flushing[i] = wst::FlushSubnormals::active();
  });
  double nonzero = 0, not_flushing = 0;
  for (int i = 0; i < 8; i++) nonzero += product[i] != 0.0f, not_flushing += !flushing[i];
  rep.check("cpu tasks flush subnormals to zero (nonzero products)", nonzero, 0);
  rep.check("cpu tasks flush subnormals (tasks without the mode)", not_flushing, 0);
  float serial = -1.0f;
  wst::parallel_chunks(4, 16, [&](size_t, size_t) { serial = tiny * 2.0f; });  // one chunk: inline
  rep.check("cpu single-chunk work flushes subnormals too", serial != 0.0f, 0);
  rep.check("cpu caller's floating-point mode restored after parallel_for",
            wst::FlushSubnormals::active() != before, 0);
  const float after = tiny * 2.0f;
  rep.check("cpu caller still computes subnormals afterwards", before ? 0.0 : (after == 0.0f), 0);
#else
  (void)rep;
#endif
}

// The CPU backend keeps large freed blocks for reuse (cpu_backend.cpp): a block of the same size
// comes back, a much smaller request does not take a large block, and reused memory is usable.
void check_host_block_reuse(Report& rep) {
  const wst::Backend& be = wst::cpu_backend();
  const size_t big = ((size_t)3 << 20) + 4096 + 448;  // an unusual size: no other block matches
  float* a = (float*)be.alloc(big);
  for (size_t i = 0; i < big / sizeof(float); i += 1024) a[i] = (float)i;
  be.free(a);
  float* b = (float*)be.alloc(big);
  rep.check("host blocks: a freed 3 MB block is reused for the same size", b == a ? 0 : 1, 0);
  float* c = (float*)be.alloc((size_t)1 << 20);
  rep.check("host blocks: a 1 MB request does not take a free 3 MB block", c != a ? 0 : 1, 0);
  be.free(b);
  float* d = (float*)be.alloc((size_t)1 << 20);  // 3 MB is free again: still too large for 1 MB
  rep.check("host blocks: nor after it is freed again", d != a ? 0 : 1, 0);
  uintptr_t misaligned = ((uintptr_t)b | (uintptr_t)c | (uintptr_t)d) & 63;
  rep.check("host blocks: 64-byte aligned", (double)misaligned, 0);
  be.free(c);
  be.free(d);
}

// A task that throws: the caller gets the exception after every other task has run, and the pool
// (and this thread's state) works as before afterwards.
void check_pool_exceptions(Report& rep) {
  const int threads = wst::num_threads();
  for (int nt : {1, 3}) {
    wst::set_num_threads(nt);
    std::vector<int> ran(64, 0);
    bool caught = false;
    try {
      wst::parallel_for(64, [&](int i) {
        ran[i] = 1;
        if (i == 17) throw std::runtime_error("task 17");
      });
    } catch (const std::runtime_error& e) {
      caught = std::string(e.what()) == "task 17";
    }
    double missing = 0;
    for (int x : ran) missing += !x;
    const std::string tag = " (" + std::to_string(nt) + " thread" + (nt > 1 ? "s)" : ")");
    rep.check("cpu pool: a task's exception reaches the caller" + tag, caught ? 0 : 1, 0);
    rep.check("cpu pool: the other tasks all ran (missing)" + tag, missing, 0);
    std::vector<std::thread::id> who(64);
    // Task 0 waits (up to 2 s) until task 1 has started. Its thread is held, so on a working pool
    // another thread runs task 1, however late the workers wake on a loaded machine; a pool that
    // ran every task on one thread would time out here (no timing guess either way).
    std::atomic<bool> started1{false};
    wst::parallel_for(64, [&](int i) {
      who[i] = std::this_thread::get_id();
      if (i == 1) started1 = true;
      if (i == 0 && nt > 1) {
        const auto t0 = std::chrono::steady_clock::now();
        while (!started1 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2)) std::this_thread::yield();
      }
    });
    const size_t distinct = std::set<std::thread::id>(who.begin(), who.end()).size();
    rep.check("cpu pool: still runs on several threads afterwards (threads used < 2)" + tag,
              nt > 1 && distinct < 2 ? 1 : 0, 0);
  }
  wst::set_num_threads(threads);
}

std::vector<Check> cpu_checks() {
  return {
      {"sgemm", check_sgemm},
      {"attention", check_attention},
      {"decode", check_decode},
      {"philox", check_philox},
      {"cast_bf16", check_cast_bf16},
      {"subnormals", check_subnormal_mode},
      {"pool exceptions", check_pool_exceptions},
      {"model", [](Report& rep) { check_model_prefix_batch(rep, wst::cpu_backend(), ""); }},
      {"model grpo many", [](Report& rep) { check_model_grpo_many(rep, wst::cpu_backend(), ""); }},
      {"model value head", [](Report& rep) { check_model_value_head(rep, wst::cpu_backend(), ""); }},
      {"model bf16", [](Report& rep) { check_model_bf16(rep, wst::cpu_backend(), ""); }},
      {"model decode shards", check_model_decode_shards},
      {"lane deal", check_lane_deal},
      {"model finish row", check_model_finish_row},
      {"model prompt store", check_model_prompt_store},
      {"model prefill logits", check_model_prefill_logits},
      {"host block reuse", check_host_block_reuse},
  };
}

}  // namespace wst_test
