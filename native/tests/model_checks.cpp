// Model-level checks shared by both backends: a batch of rows continuing shared prompt prefixes
// (PrefixBatch: each prefix computed once, its gradient summed over its rows) against the same
// rows written out in full (prefix + row, right-padded) on the CPU model. Log-probs, entropy,
// the GRPO loss and every parameter gradient must agree.
#include <algorithm>
#include <cmath>

#include "../backend.h"
#include "../kernels.h"
#include "../model/llama.h"
#include "test_util.h"

namespace wst_test {

wst::LlamaConfig tiny_llama_config(int vocab, bool qk_norm) {
  wst::LlamaConfig cfg;
  cfg.vocab = vocab;
  cfg.dim = 64;
  cfg.hidden = 96;
  cfg.n_layers = 2;
  cfg.n_heads = 4;
  cfg.n_kv_heads = 2;
  cfg.head_dim = 16;
  cfg.qk_norm = qk_norm;
  cfg.qkv_bias = !qk_norm;
  cfg.tied_embeddings = qk_norm;
  return cfg;
}

void random_rows(Rng& rng, int vocab, int B, int T, std::vector<int32_t>& tokens, std::vector<int32_t>& targets) {
  tokens.resize((size_t)B * T);
  targets.resize((size_t)B * T);
  for (int n = 0; n < B * T; n++) {
    tokens[n] = (int32_t)(rng.uniform() * vocab) % vocab;
    targets[n] = n % T < 3 ? -1 : (int32_t)(rng.uniform() * vocab) % vocab;
  }
}

double tensors_rel_err(wst::LlamaModel& got, wst::LlamaModel& want, bool grads) {
  double e = 0;
  for (const auto& t : want.tensors()) {
    std::vector<float> w(t.size), g(t.size, NAN);
    const wst::TensorInfo& tg = *got.find(t.name);
    if (grads) {
      want.get_grad(t, w.data());
      got.get_grad(tg, g.data());
    } else {
      want.get_tensor(t, w.data());
      got.get_tensor(tg, g.data());
    }
    e = std::max(e, rel_err(g, w));
  }
  return e;
}

// Every parameter's accumulated gradient, concatenated in tensor order.
static std::vector<float> all_grads(wst::LlamaModel& m) {
  std::vector<float> all;
  for (const auto& t : m.tensors()) {
    std::vector<float> g(t.size, NAN);
    m.get_grad(t, g.data());
    all.insert(all.end(), g.begin(), g.end());
  }
  return all;
}

// A PrefixBatch over Bp prefixes of Tp tokens (right-padded), their lengths and each row's prefix.
static wst::PrefixBatch prefix_batch(const std::vector<int32_t>& tokens, int Bp, int Tp, const std::vector<int32_t>& lengths,
                                     const std::vector<int32_t>& row_prefix) {
  wst::PrefixBatch pb;
  pb.tokens = tokens.data();
  pb.Bp = Bp;
  pb.Tp = Tp;
  pb.lengths = lengths.data();
  pb.row_prefix = row_prefix.data();
  return pb;
}

// One GRPO micro-batch's data (rows, targets, advantages, optional shared prefixes) and the
// GrpoMicroBatch that points into it.
struct GrpoData {
  int B = 0, T = 0;
  std::vector<int32_t> tok, tgt, pre_tok, lengths, row_prefix;
  std::vector<float> adv;
  wst::PrefixBatch pb;
  bool prefixed = false;
  float scale = 1.f;
  // pb over pre_tok (Bp x Tp), lengths and row_prefix, as filled.
  void set_prefix(int Bp, int Tp) {
    prefixed = true;
    pb = prefix_batch(pre_tok, Bp, Tp, lengths, row_prefix);
  }
  wst::GrpoMicroBatch micro_batch(const wst::GrpoParams& gp) const {
    wst::GrpoMicroBatch m;
    m.tokens = tok.data();
    m.targets = tgt.data();
    m.advantages = adv.data();
    m.B = B;
    m.T = T;
    m.params = gp;
    m.loss_scale = scale;
    m.prefix = prefixed ? &pb : nullptr;
    return m;
  }
};

void check_model_prefix_batch(Report& rep, const wst::Backend& be, const std::string& what) {
  for (int layout = 0; layout < 3; layout++)
  for (int qk = 0; qk < 2; qk++) {
    if (layout > 0 && qk == 0) continue;  // the longer layouts on one architecture
    const wst::LlamaConfig cfg = tiny_llama_config(53, qk);
    const char* names[] = {"", ", prefixes over two key blocks", ", every prefix empty"};
    const std::string tag = what + (qk ? " (qk-norm, tied" : " (qkv bias") + names[layout] + ")";
    // Three prefixes (one empty), rows grouped 3 / 1 / 2, each row a block of T tokens whose
    // last targets are unscored on some rows (ragged completions). Layout 1: prefixes of 100 and
    // 70 tokens and blocks of 70 (attention over several key blocks of 64); layout 2: Tp = 0.
    const int Bp = 3, Tp = layout == 1 ? 100 : layout == 2 ? 0 : 7, B = 6, T = layout == 1 ? 70 : 5;
    const std::vector<int32_t> lengths = layout == 1 ? std::vector<int32_t>{100, 0, 70}
                                         : layout == 2 ? std::vector<int32_t>{0, 0, 0}
                                                       : std::vector<int32_t>{7, 0, 4};
    const std::vector<int32_t> row_prefix = {0, 0, 0, 1, 2, 2};
    Rng rng(77 + qk);
    std::vector<int32_t> pre_tok((size_t)Bp * Tp), tok((size_t)B * T), tgt((size_t)B * T);
    for (auto& t : pre_tok) t = rng.below(cfg.vocab);
    for (int p = 0; p < Bp; p++)  // padding past a prefix's length: any valid id
      for (int t = lengths[p]; t < Tp; t++) pre_tok[(size_t)p * Tp + t] = 0;
    for (int b = 0; b < B; b++)
      for (int t = 0; t < T; t++) {
        tok[(size_t)b * T + t] = rng.below(cfg.vocab);
        tgt[(size_t)b * T + t] = (b % 2 == 1 && t >= T - 2) ? -1 : rng.below(cfg.vocab);
      }
    // The same rows in full: prefix then block, right-padded to Tf.
    const int Tf = Tp + T;
    std::vector<int32_t> ftok((size_t)B * Tf, 0), ftgt((size_t)B * Tf, -1);
    auto at = [&](int b, int t) { return (size_t)b * Tf + lengths[row_prefix[b]] + t; };
    for (int b = 0; b < B; b++) {
      const int p = row_prefix[b];
      for (int t = 0; t < lengths[p]; t++) ftok[(size_t)b * Tf + t] = pre_tok[(size_t)p * Tp + t];
      for (int t = 0; t < T; t++) {
        ftok[at(b, t)] = tok[(size_t)b * T + t];
        ftgt[at(b, t)] = tgt[(size_t)b * T + t];
      }
    }
    const wst::PrefixBatch pb = prefix_batch(pre_tok, Bp, Tp, lengths, row_prefix);

    wst::LlamaModel ref(&wst::cpu_backend(), cfg), m(&be, cfg);
    ref.init_random(9, 0.3f);
    m.init_random(9, 0.3f);
    const size_t N = (size_t)B * T, Nf = (size_t)B * Tf;
    std::vector<float> lp_f(Nf), ent_f(Nf), lp(N, NAN), ent(N, NAN);
    ref.score(ftok.data(), ftgt.data(), B, Tf, lp_f.data(), ent_f.data());
    m.score(tok.data(), tgt.data(), B, T, lp.data(), ent.data(), &pb);
    std::vector<float> want_lp(N), want_ent(N);
    for (int b = 0; b < B; b++)
      for (int t = 0; t < T; t++) {
        want_lp[(size_t)b * T + t] = lp_f[at(b, t)];
        want_ent[(size_t)b * T + t] = ent_f[at(b, t)];
      }
    rep.check("model prefix batch: score log-probs" + tag, rel_err(lp, want_lp), 1e-5);
    rep.check("model prefix batch: score entropy" + tag, rel_err(ent, want_ent), 1e-5);

    // GRPO with old / ref log-probs, a mask and mixed-sign advantages.
    std::vector<float> mask(N), old(N), refl(N), fmask(Nf, 0.f), fold(Nf, 0.f), fref(Nf, 0.f);
    for (size_t n = 0; n < N; n++) {
      mask[n] = rng.uniform() < 0.85 ? 1.f : 0.f;
      old[n] = want_lp[n] + rng.nonzero(-0.3f, 0.3f);
      refl[n] = want_lp[n] + rng.nonzero(-0.1f, 0.1f);
    }
    for (int b = 0; b < B; b++)
      for (int t = 0; t < T; t++) {
        fmask[at(b, t)] = mask[(size_t)b * T + t];
        fold[at(b, t)] = old[(size_t)b * T + t];
        fref[at(b, t)] = refl[(size_t)b * T + t];
      }
    const std::vector<float> adv = {0.9f, -0.7f, 0.4f, -1.2f, 0.6f, -0.3f};
    wst::GrpoParams gp{0.2f, 0.28f, 0.04f, 0.0f, wst::GrpoLossType::grpo, 1.0};
    auto rf = ref.train_grpo(ftok.data(), ftgt.data(), fmask.data(), fold.data(), fref.data(),
                             adv.data(), B, Tf, gp, 0.5f);
    auto rp = m.train_grpo(tok.data(), tgt.data(), mask.data(), old.data(), refl.data(), adv.data(),
                           B, T, gp, 0.5f, &pb);
    rep.check("model prefix batch: grpo loss" + tag,
              std::fabs(rp.loss - rf.loss) / std::max(1.0, std::fabs(rf.loss)), 1e-5);
    rep.check("model prefix batch: grpo scored tokens" + tag, std::fabs(rp.tokens - rf.tokens), 0);
    double ge = 0, gmax = 0;
    for (const auto& t : ref.tensors()) {
      std::vector<float> gw(t.size), gg(t.size, NAN);
      ref.get_grad(t, gw.data());
      m.get_grad(*m.find(t.name), gg.data());
      ge = std::max(ge, rel_err(gg, gw));
      for (float x : gw) gmax = std::max(gmax, (double)std::fabs(x));
    }
    rep.check("model prefix batch: grpo grads (every tensor)" + tag, ge, 1e-4);
    rep.check("model prefix batch: gradients are not all zero" + tag, gmax > 1e-6 ? 0 : 1, 0);
    // The model still runs unprefixed batches after a prefixed one (buffers re-planned).
    std::vector<float> lp2(Nf, NAN);
    m.score(ftok.data(), ftgt.data(), B, Tf, lp2.data(), nullptr);
    rep.check("model prefix batch: plain batch afterwards" + tag, rel_err(lp2, lp_f), 1e-5);
  }
}

// train_grpo_many (several micro-batches at once; on the CPU one per thread, each in its own lane)
// against train_grpo called per micro-batch on the CPU model: losses and every gradient; on the
// CPU also the same bits at 1 and 3 threads. Micro-batches of different shapes, with and without
// shared prefixes, several loss scales, more micro-batches than lanes (a lane takes two).
// The value head of reward models: scores at each row's last position and the backbone's gradient
// from dL/dr on `be` against the CPU model; and rows continuing a shared prefix (a preference
// pair's common dialogue) against the same rows written out in full.
void check_model_value_head(Report& rep, const wst::Backend& be, const std::string& what) {
  for (int qk = 0; qk < 2; qk++) {
    const wst::LlamaConfig cfg = tiny_llama_config(53, qk);
    const std::string tag = what + (qk ? " (qk-norm, tied)" : " (qkv bias)");
    const int B = 4, T = 9, C = cfg.dim;
    Rng rng(31 + qk);
    std::vector<int32_t> tok((size_t)B * T);
    for (auto& t : tok) t = rng.below(cfg.vocab);
    const std::vector<int32_t> last = {8, 3, 6, 0};
    std::vector<float> w(C), dr = {0.5f, -1.f, 0.25f, 2.f};
    for (auto& x : w) x = rng.nonzero();
    wst::LlamaModel ref(&wst::cpu_backend(), cfg), m(&be, cfg);
    ref.init_random(11, 0.3f);
    m.init_random(11, 0.3f);
    std::vector<float> r_ref(B), r(B, NAN), dw_ref(C), dw(C, NAN);
    ref.value_forward(tok.data(), B, T, last.data(), w.data(), r_ref.data());
    m.value_forward(tok.data(), B, T, last.data(), w.data(), r.data());
    rep.check("model value head: scores" + tag, rel_err(r, r_ref), 1e-5);
    ref.value_backward(dr.data(), B, w.data(), dw_ref.data());
    m.value_backward(dr.data(), B, w.data(), dw.data());
    rep.check("model value head: head gradient" + tag, rel_err(dw, dw_ref), 1e-5);
    const auto g_ref = all_grads(ref), g = all_grads(m);
    rep.check("model value head: backbone gradients (every tensor)" + tag, rel_err(g, g_ref), 1e-4);
    double gmax = 0;
    for (float x : g) gmax = std::max(gmax, (double)std::fabs(x));
    rep.check("model value head: gradients are not all zero" + tag, gmax > 1e-6 ? 0 : 1, 0);
    bool refused = false;
    try {
      m.value_backward(dr.data(), B, w.data(), dw.data());
    } catch (const std::exception&) {
      refused = true;
    }
    rep.check("model value head: a second backward without a forward is refused" + tag, refused ? 0 : 1, 0);

    // Two rows on one prefix of 5 tokens (blocks of 4 and 3), one row on an empty prefix.
    const int Bp = 2, Tp = 5, B2 = 3, T2 = 4;
    const std::vector<int32_t> lengths = {5, 0}, row_prefix = {0, 0, 1}, blast = {3, 2, 3};
    std::vector<int32_t> pre((size_t)Bp * Tp, 0), blk((size_t)B2 * T2);
    for (int t = 0; t < 5; t++) pre[t] = rng.below(cfg.vocab);
    for (auto& t : blk) t = rng.below(cfg.vocab);
    const int Tf = Tp + T2;
    std::vector<int32_t> full((size_t)B2 * Tf, 0), flast(B2);
    for (int b = 0; b < B2; b++) {
      const int L = lengths[row_prefix[b]];
      for (int t = 0; t < L; t++) full[(size_t)b * Tf + t] = pre[t];
      for (int t = 0; t < T2; t++) full[(size_t)b * Tf + L + t] = blk[(size_t)b * T2 + t];
      flast[b] = L + blast[b];
    }
    const wst::PrefixBatch pb = prefix_batch(pre, Bp, Tp, lengths, row_prefix);
    wst::LlamaModel ref2(&wst::cpu_backend(), cfg), m2(&be, cfg);
    ref2.init_random(12, 0.3f);
    m2.init_random(12, 0.3f);
    std::vector<float> rf(B2), rp(B2, NAN), dwf(C), dwp(C, NAN), dr2 = {1.f, -1.f, 0.5f};
    ref2.value_forward(full.data(), B2, Tf, flast.data(), w.data(), rf.data());
    m2.value_forward(blk.data(), B2, T2, blast.data(), w.data(), rp.data(), &pb);
    rep.check("model value head: shared prefixes = rows in full (scores)" + tag, rel_err(rp, rf), 1e-5);
    ref2.value_backward(dr2.data(), B2, w.data(), dwf.data());
    m2.value_backward(dr2.data(), B2, w.data(), dwp.data());
    rep.check("model value head: shared prefixes = rows in full (head gradient)" + tag, rel_err(dwp, dwf), 1e-5);
    rep.check("model value head: shared prefixes = rows in full (every tensor)" + tag, rel_err(all_grads(m2), all_grads(ref2)), 1e-4);
  }
}

void check_model_grpo_many(Report& rep, const wst::Backend& be, const std::string& what) {
  const wst::LlamaConfig cfg = tiny_llama_config(41, true);
  Rng rng(505);
  std::vector<GrpoData> data(5);
  for (int i = 0; i < 5; i++) {
    GrpoData& d = data[i];
    d.B = 2 + i % 3;
    d.T = 4 + 3 * i;
    d.scale = 0.2f + 0.15f * (float)i;
    d.tok.resize((size_t)d.B * d.T);
    d.tgt.resize(d.tok.size());
    for (size_t n = 0; n < d.tok.size(); n++) {
      d.tok[n] = rng.below(cfg.vocab);
      d.tgt[n] = n % 7 == 6 ? -1 : rng.below(cfg.vocab);
    }
    for (int b = 0; b < d.B; b++) d.adv.push_back(rng.nonzero(-1.5f, 1.5f));
    if (i % 2 == 0) {
      const int Bp = 2, Tp = 9;
      d.pre_tok.resize((size_t)Bp * Tp);
      for (auto& t : d.pre_tok) t = rng.below(cfg.vocab);
      d.lengths = {Tp, 5};
      for (int b = 0; b < d.B; b++) d.row_prefix.push_back(b < 1 ? 0 : 1);
      d.set_prefix(Bp, Tp);
    }
  }
  const wst::GrpoParams gp{0.2f, 0.28f, 0.0f, 0.0f, wst::GrpoLossType::grpo, 1.0};
  std::vector<wst::GrpoMicroBatch> mbs;
  for (const GrpoData& d : data) mbs.push_back(d.micro_batch(gp));
  const int threads = wst::num_threads();
  wst::LlamaModel ref(&wst::cpu_backend(), cfg), m(&be, cfg);
  ref.init_random(4, 0.3f);
  m.init_random(4, 0.3f);
  double loss_err = 0;
  wst::set_num_threads(3);
  std::vector<wst::TrainStepResult> got = m.train_grpo_many(mbs);
  for (size_t i = 0; i < mbs.size(); i++) {
    const wst::GrpoMicroBatch& b = mbs[i];
    const wst::TrainStepResult want = ref.train_grpo(b.tokens, b.targets, nullptr, nullptr, nullptr, b.advantages,
                                                     b.B, b.T, b.params, b.loss_scale, b.prefix);
    loss_err = std::max(loss_err, std::fabs(got[i].loss - want.loss) / std::max(1.0, std::fabs(want.loss)) +
                                      std::fabs(got[i].tokens - want.tokens));
  }
  const std::vector<float> want = all_grads(ref), g3 = all_grads(m);
  double gmax = 0;
  for (float x : want) gmax = std::max(gmax, (double)std::fabs(x));
  rep.check("model grpo many: per-micro-batch losses and token counts" + what, loss_err, 1e-5);
  rep.check("model grpo many: gradients = micro-batch by micro-batch" + what, rel_err(g3, want), 1e-5);
  rep.check("model grpo many: gradients are not all zero" + what, gmax > 1e-6 ? 0 : 1, 0);
  // A second call accumulates on top (like trainGrpo), and one thread gives the same bits.
  wst::LlamaModel m1(&be, cfg);
  m1.init_random(4, 0.3f);
  wst::set_num_threads(1);
  m1.train_grpo_many(mbs);
  wst::set_num_threads(threads);
  rep.check("model grpo many: same bits at 1 and 3 threads" + what, mismatches(all_grads(m1), g3), 0);
  m1.train_grpo_many(mbs);
  std::vector<float> twice = g3;
  for (auto& x : twice) x *= 2.0f;
  rep.check("model grpo many: a second call accumulates" + what, rel_err(all_grads(m1), twice), 1e-6);
}

// Prefill and decode with enough prompts and rows to run in concurrent shards (LlamaModel::prefill,
// decode) give every row the
// same tokens and log-probs as one thread, and a row decoded alone the same as in the batch. Rows
// finish at different steps (stop ids, max_new), so slots move between shards as the batch shrinks.
void check_model_decode_shards(Report& rep) {
  const wst::LlamaConfig cfg = tiny_llama_config(37, false);
  wst::LlamaModel m(&wst::cpu_backend(), cfg);
  m.init_random(8, 0.4f);
  const int B = 56, prompts = 14;  // 14 prompts: prefill in 3 shards at 3 threads too
  Rng rng(606);
  std::vector<std::vector<int32_t>> prompt(prompts);
  for (int p = 0; p < prompts; p++)
    for (int t = 0; t < 3 + 2 * p; t++) prompt[p].push_back(rng.below(cfg.vocab));
  auto run_on = [&](wst::LlamaModel& m, int threads, const std::vector<int>& rows) {
    wst::set_num_threads(threads);
    const int n = (int)rows.size();
    auto ctx = m.create_context(n, 64);
    std::vector<int32_t> tokens;
    std::vector<int64_t> offsets{0};
    ctx->sampling = wst::SamplingParams{0.9f, 0, 1.f, 0.f};
    ctx->stop_ids = {5, 11};
    for (int r : rows) {
      const auto& p = prompt[r % prompts];
      tokens.insert(tokens.end(), p.begin(), p.end());
      offsets.push_back((int64_t)tokens.size());
      ctx->add_row(1000 + r, 6 + r % 9);
    }
    m.prefill(*ctx, tokens.data(), offsets.data(), n);
    while (m.decode(*ctx, 4) > 0) {
    }
    return std::make_pair(ctx->out_tokens, ctx->out_logprobs);
  };
  auto run = [&](int threads, const std::vector<int>& rows) { return run_on(m, threads, rows); };
  const int threads = wst::num_threads();
  std::vector<int> all(B);
  for (int r = 0; r < B; r++) all[r] = r;
  const auto one = run(1, all), three = run(3, all);
  double diff = 0, total = 0, lens = 0;
  for (int r = 0; r < B; r++) {
    diff += one.first[r] != three.first[r];
    diff += one.second[r] != three.second[r];
    total += (double)one.first[r].size();
    lens += one.first[r].size() != (size_t)(6 + r % 9);
  }
  rep.check("model decode in concurrent shards: tokens and log-probs at 1 and 3 threads (rows differing)", diff, 0);
  rep.check("model decode in concurrent shards: rows stopped early (some must)", lens > 0 ? 0 : 1, 0);
  // Alone, a row's tokens are the same and its log-probs equal up to rounding (the prefill's
  // matrix shapes differ with the batch).
  double alone = 0, lp_err = 0;
  for (int r : {0, 17, 55}) {
    const auto a = run(3, {r});
    alone += a.first[0] != three.first[r];
    lp_err = std::max(lp_err, rel_err(a.second[0], three.second[r]));
  }
  rep.check("model decode in concurrent shards: a row alone = the row in the batch (tokens)", alone, 0);
  rep.check("model decode in concurrent shards: a row alone = the row in the batch (log-probs)", lp_err, 1e-5);
  // Decode reads transposed copies of the weights (LlamaModel::ensure_decode_weights): after the
  // weights change (a tensor set, an optimizer step) it must use the new ones, as a fresh model does.
  {
    const wst::TensorInfo& wq = *m.find("model.layers.1.self_attn.q_proj.weight");
    std::vector<float> w(wq.size);
    for (auto& x : w) x = rng.nonzero(-0.5f, 0.5f);
    m.set_tensor(wq, w.data());
    wst::LlamaModel fresh(&wst::cpu_backend(), cfg);
    fresh.init_random(8, 0.4f);
    fresh.set_tensor(*fresh.find(wq.name), w.data());
    const auto changed = run(3, all), want = run_on(fresh, 3, all);
    double stale = 0, differs = 0;
    for (int r = 0; r < B; r++) {
      stale += changed.first[r] != want.first[r];
      stale += changed.second[r] != want.second[r];
      differs += changed.first[r] != three.first[r];
    }
    rep.check("model decode after a weight changes: the fresh model's rows (rows differing)", stale, 0);
    rep.check("model decode after a weight changes: the new weight is used (rows changed)", differs > 0 ? 0 : 1, 0);
  }
  wst::set_num_threads(threads);
  (void)total;
}

// train_grpo_many's deal of micro-batches to lanes (LlamaModel::deal_lanes, plan_slots): every
// micro-batch once, the two halves and the lanes within each balanced to within one micro-batch,
// and two threads given the two halves.
void check_lane_deal(Report& rep) {
  const std::vector<double> cost = {516, 196, 195, 194, 193, 193, 191, 190, 184, 179, 85};
  const auto lanes = wst::LlamaModel::deal_lanes(cost, 4);
  std::vector<int> seen(cost.size(), 0);
  std::vector<double> load;
  bool sorted = true;
  for (const auto& lane : lanes) {
    double c = 0;
    for (size_t i = 0; i < lane.size(); i++) {
      seen[lane[i]]++;
      c += cost[lane[i]];
      if (i && lane[i] < lane[i - 1]) sorted = false;
    }
    load.push_back(c);
  }
  double wrong = 0;
  for (int x : seen) wrong += x != 1;
  rep.check("lane deal: 4 lanes, every micro-batch exactly once (wrong)", lanes.size() == 4 ? wrong : 99, 0);
  rep.check("lane deal: each lane in micro-batch order", sorted ? 0 : 1, 0);
  const double biggest = 516;
  rep.check("lane deal: the halves differ by at most one micro-batch (cost over the largest)",
            std::fabs((load[0] + load[1]) - (load[2] + load[3])) / biggest, 1);
  rep.check("lane deal: two threads take the halves (slots != {0,1},{2,3})",
            wst::LlamaModel::plan_slots(load, 2) == std::vector<std::vector<int>>{{0, 1}, {2, 3}} ? 0 : 1, 0);
  // Round-robin on this list left one thread 1277 of 2316 (55 %); the deal must do better.
  const double total = load[0] + load[1] + load[2] + load[3];
  rep.check("lane deal: the busier half's share of the work (<= 0.53)",
            std::max(load[0] + load[1], load[2] + load[3]) / total, 0.53);
  const auto again = wst::LlamaModel::deal_lanes(cost, 4);
  rep.check("lane deal: deterministic", again == lanes ? 0 : 1, 0);
}

// A row stopped between decode calls (the binding's finishRow, e.g. a stop string seen by the
// caller) leaves its slot to the last row, which must then sample from its own next-token
// logits: the other rows' tokens are those of a run where nothing was stopped.
void check_model_finish_row(Report& rep) {
  const wst::LlamaConfig cfg = tiny_llama_config(37, false);
  wst::LlamaModel m(&wst::cpu_backend(), cfg);
  m.init_random(9, 0.5f);
  Rng rng(707);
  const int B = 5;
  std::vector<int32_t> tokens;
  std::vector<int64_t> offsets{0};
  for (int b = 0; b < B; b++) {
    for (int t = 0; t < 4 + b; t++) tokens.push_back(rng.below(cfg.vocab));
    offsets.push_back((int64_t)tokens.size());
  }
  auto run = [&](bool stop_row0) {
    auto ctx = m.create_context(B, 32);
    ctx->sampling = wst::SamplingParams{1.0f, 0, 1.f, 0.f};
    for (int b = 0; b < B; b++) ctx->add_row(300 + b, 10);
    m.prefill(*ctx, tokens.data(), offsets.data(), B);
    m.decode(*ctx, 3);
    if (stop_row0) {
      std::vector<uint8_t> done(ctx->active, 0);
      for (int s = 0; s < ctx->active; s++) done[s] = ctx->row_of_slot[s] == 0;
      ctx->finish_slots(done, &wst::cpu_backend(), cfg.n_layers, (size_t)cfg.n_kv_heads * cfg.head_dim, cfg.vocab);
    }
    while (m.decode(*ctx, 4) > 0) {
    }
    return ctx->out_tokens;
  };
  const auto full = run(false), stopped = run(true);
  double differ = 0;
  for (int b = 1; b < B; b++) differ += stopped[b] != full[b];
  rep.check("model finishRow between decode calls: the other rows' tokens unchanged (rows differing)", differ, 0);
  rep.check("model finishRow between decode calls: the stopped row ends (tokens kept)", stopped[0].size() == 3 ? 0 : 1, 0);
}

// The prompt store (LlamaModel::prefill with ctx.keep_prompts): a prefixed training step whose
// prefixes begin stored prompts copies their rows instead of computing them, with the same
// gradients as a model that computes them; a micro-batch with any prefix not stored computes all
// of its own; an optimizer step makes the store stale. Prefixes of different lengths in one
// micro-batch exercise the zeroed pad rows. Both layer variants (qk_norm's extra activations).
void check_model_prompt_store(Report& rep) {
  for (bool qk_norm : {false, true}) {
    const std::string tag = qk_norm ? " (qk_norm)" : "";
    const wst::LlamaConfig cfg = tiny_llama_config(43, qk_norm);
    wst::LlamaModel stored(&wst::cpu_backend(), cfg), plain(&wst::cpu_backend(), cfg);
    stored.init_random(21, 0.4f);
    plain.init_random(21, 0.4f);
    Rng rng(qk_norm ? 919 : 818);
    // Biases and norm weights away from init_random's 0 and 1, so that their rows are checked too.
    for (const auto& t : stored.tensors())
      if (t.shape.size() == 1) {
        std::vector<float> w(t.size);
        for (auto& x : w) x = rng.nonzero(0.6f, 1.4f) * (t.name.find("bias") != std::string::npos ? 0.3f : 1.f);
        stored.set_tensor(t, w.data());
        plain.set_tensor(*plain.find(t.name), w.data());
      }
    // 6 distinct prompts (two prefill parts of up to 4), each prefilled for 2 rows.
    const int U = 6;
    std::vector<std::vector<int32_t>> prompt(U);
    std::vector<int32_t> tokens;
    std::vector<int64_t> offsets{0};
    for (int u = 0; u < U; u++) {
      prompt[u].resize(6 + (u * 5) % 9);
      for (auto& t : prompt[u]) t = rng.below(cfg.vocab);
      for (int r = 0; r < 2; r++) {
        tokens.insert(tokens.end(), prompt[u].begin(), prompt[u].end());
        offsets.push_back((int64_t)tokens.size());
      }
    }
    auto prefill = [&](wst::LlamaModel& m, bool keep) {
      auto ctx = m.create_context(2 * U, 40);
      ctx->keep_prompts = keep;
      for (int b = 0; b < 2 * U; b++) ctx->add_row(b, 4);
      m.prefill(*ctx, tokens.data(), offsets.data(), 2 * U);
    };
    prefill(stored, true);
    prefill(plain, false);
    rep.check("prompt store: prefill keeps every distinct prompt" + tag, std::fabs(stored.stored_prompts() - U), 0);
    rep.check("prompt store: nothing kept unless asked" + tag, plain.stored_prompts(), 0);
    // Micro-batches of rows continuing prefixes = prompt less its last token (as trainers build
    // them); micro-batch 1 also has a prefix that no prompt begins with.
    const std::vector<std::vector<int>> mb_prompts{{0, 3}, {1, -1}, {2, 4, 5}};
    std::vector<GrpoData> data(mb_prompts.size());
    for (size_t i = 0; i < data.size(); i++) {
      GrpoData& d = data[i];
      const auto& ps = mb_prompts[i];
      const int Bp = (int)ps.size();
      int Tp = 0;
      for (int u : ps) Tp = std::max(Tp, u < 0 ? 7 : (int)prompt[u].size() - 1);
      d.pre_tok.assign((size_t)Bp * Tp, 0);
      for (int p = 0; p < Bp; p++) {
        const int len = ps[p] < 0 ? 7 : (int)prompt[ps[p]].size() - 1;
        for (int t = 0; t < len; t++) d.pre_tok[(size_t)p * Tp + t] = ps[p] < 0 ? rng.below(cfg.vocab) : prompt[ps[p]][t];
        d.lengths.push_back(len);
      }
      d.B = 2 * Bp;
      d.T = 5;
      for (int b = 0; b < d.B; b++) {
        const int p = b / 2;
        d.row_prefix.push_back(p);
        for (int t = 0; t < d.T; t++) {
          // The row starts with its prompt's last token (it scores the first completion token).
          d.tok.push_back(t == 0 && ps[p] >= 0 ? prompt[ps[p]].back() : rng.below(cfg.vocab));
          d.tgt.push_back(t == d.T - 1 ? -1 : rng.below(cfg.vocab));
        }
        d.adv.push_back(rng.nonzero(-1.5f, 1.5f));
      }
      d.set_prefix(Bp, Tp);
    }
    const wst::GrpoParams gp{0.2f, 0.28f, 0.0f, 0.0f, wst::GrpoLossType::grpo, 1.0};
    std::vector<wst::GrpoMicroBatch> mbs;
    for (const GrpoData& d : data) mbs.push_back(d.micro_batch(gp));
      const auto got = stored.train_grpo_many(mbs), want = plain.train_grpo_many(mbs);
    double loss_err = 0;
    for (size_t i = 0; i < got.size(); i++) loss_err = std::max(loss_err, std::fabs(got[i].loss - want[i].loss));
    const std::vector<float> gs = all_grads(stored), gp_ = all_grads(plain);
    double gmax = 0;
    for (float x : gp_) gmax = std::max(gmax, (double)std::fabs(x));
    rep.check("prompt store: micro-batches whose prefixes are all stored take them (hits)" + tag,
              std::fabs((double)stored.prompt_store_hits() - 2), 0);
    rep.check("prompt store: no hits without a store" + tag, (double)plain.prompt_store_hits(), 0);
    rep.check("prompt store: losses = computed prefixes" + tag, loss_err, 1e-6);
    rep.check("prompt store: gradients = computed prefixes (every tensor)" + tag, rel_err(gs, gp_), 1e-5);
    rep.check("prompt store: gradients are not all zero" + tag, gmax > 1e-6 ? 0 : 1, 0);
    // New weights: the store is stale and a step computes its prefixes again.
    const wst::OptimizerParams op{1e-2, 0.9, 0.999, 1e-8, 0.0, 0.0};
    stored.optimizer_step(op);
    plain.optimizer_step(op);
    rep.check("prompt store: stale after an optimizer step" + tag, stored.stored_prompts(), 0);
    stored.train_grpo_many(mbs);
    plain.train_grpo_many(mbs);
    rep.check("prompt store: no hits once stale" + tag, std::fabs((double)stored.prompt_store_hits() - 2), 0);
    rep.check("prompt store: gradients after the step = computed" + tag, rel_err(all_grads(stored), all_grads(plain)), 1e-5);
    // New weights through set_tensor make it stale too.
    prefill(stored, true);
    rep.check("prompt store: kept again for the new weights" + tag, std::fabs(stored.stored_prompts() - U), 0);
    {
      const wst::TensorInfo& t = stored.tensors().back();
      std::vector<float> w(t.size);
      stored.get_tensor(t, w.data());
      stored.set_tensor(t, w.data());
      plain.set_tensor(*plain.find(t.name), w.data());
    }
    rep.check("prompt store: stale after set_tensor" + tag, stored.stored_prompts(), 0);
    // Over its byte limit the store keeps nothing (and training computes as usual).
    stored.set_prompt_store_limit(stored.activation_floats_per_token() * sizeof(float) * 8);
    prefill(stored, true);
    rep.check("prompt store: a prefill over the byte limit keeps nothing" + tag, stored.stored_prompts(), 0);
    stored.set_prompt_store_limit((size_t)1 << 30);
    // Under it again, in the stale store's spare activations; then a prefill of 3 prompts runs as
    // one part in the model's own activations (no lanes), added to the store. Training takes all.
    prefill(stored, true);
    rep.check("prompt store: under the limit it keeps them again" + tag, std::fabs(stored.stored_prompts() - U), 0);
    const int64_t hits_before = stored.prompt_store_hits();
    stored.zero_grad();
    plain.zero_grad();
    stored.train_grpo_many(mbs);
    plain.train_grpo_many(mbs);
    rep.check("prompt store: hits again in reused activations" + tag, std::fabs((double)(stored.prompt_store_hits() - hits_before) - 2), 0);
    rep.check("prompt store: gradients in reused activations = computed" + tag, rel_err(all_grads(stored), all_grads(plain)), 1e-5);
    stored.optimizer_step(op);
    plain.optimizer_step(op);
    {
      // Prompts 2, 4 and 5, two rows each.
      std::vector<int32_t> few;
      std::vector<int64_t> few_off{0};
      for (int u : {2, 4, 5})
        for (int r = 0; r < 2; r++) {
          few.insert(few.end(), prompt[u].begin(), prompt[u].end());
          few_off.push_back((int64_t)few.size());
        }
      auto ctx = stored.create_context(6, 40);
      ctx->keep_prompts = true;
      for (int b = 0; b < 6; b++) ctx->add_row(b, 4);
      stored.prefill(*ctx, few.data(), few_off.data(), 6);
    }
    rep.check("prompt store: a one-part prefill keeps its prompts" + tag, std::fabs(stored.stored_prompts() - 3), 0);
    const std::vector<wst::GrpoMicroBatch> missing{mbs[0]};  // prompts 0 and 3: not stored now
    const std::vector<wst::GrpoMicroBatch> all_stored{mbs[2]};  // prompts 2, 4, 5
    int64_t h0 = stored.prompt_store_hits();
    stored.zero_grad();
    plain.zero_grad();
    stored.train_grpo_many(missing);
    plain.train_grpo_many(missing);
    rep.check("prompt store: a micro-batch with a prefix not stored computes (no hit)" + tag,
              (double)(stored.prompt_store_hits() - h0), 0);
    h0 = stored.prompt_store_hits();
    stored.train_grpo_many(all_stored);
    plain.train_grpo_many(all_stored);
    rep.check("prompt store: the one-part prefill's prompts are taken (hit)" + tag,
              std::fabs((double)(stored.prompt_store_hits() - h0) - 1), 0);
    rep.check("prompt store: gradients after the one-part prefill = computed" + tag, rel_err(all_grads(stored), all_grads(plain)), 1e-5);
  }
}

// Prefill's next-token logits (the top layer run for each prompt's last token only) against a
// full forward's logits at that position, for prompts of several lengths in concurrent parts,
// prompts repeated for several rows, both layer variants.
void check_model_prefill_logits(Report& rep) {
  for (bool qk_norm : {false, true}) {
    const wst::LlamaConfig cfg = tiny_llama_config(29, qk_norm);
    wst::LlamaModel m(&wst::cpu_backend(), cfg);
    m.init_random(33, 0.5f);
    Rng rng(qk_norm ? 61 : 62);
    std::vector<std::vector<int32_t>> prompt(7);
    std::vector<int32_t> tokens;
    std::vector<int64_t> offsets{0};
    std::vector<int> row_prompt;
    for (int u = 0; u < 7; u++) {
      prompt[u].resize(1 + (u * 4) % 11);
      for (auto& t : prompt[u]) t = rng.below(cfg.vocab);
    }
    for (int u : {0, 1, 2, 1, 3, 4, 5, 6, 6, 2}) {
      tokens.insert(tokens.end(), prompt[u].begin(), prompt[u].end());
      offsets.push_back((int64_t)tokens.size());
      row_prompt.push_back(u);
    }
    const int B = (int)row_prompt.size();
    auto ctx = m.create_context(B, 16);
    for (int b = 0; b < B; b++) ctx->add_row(b, 2);
    m.prefill(*ctx, tokens.data(), offsets.data(), B);
    std::vector<float> got((size_t)B * cfg.vocab), want;
    m.backend()->download(got.data(), ctx->logits.data(), got.size() * sizeof(float));
    for (int b = 0; b < B; b++) {
      const auto& pr = prompt[row_prompt[b]];
      const int T = (int)pr.size();
      std::vector<float> full((size_t)T * cfg.vocab);
      m.forward_logits(pr.data(), 1, T, full.data());
      want.insert(want.end(), full.end() - cfg.vocab, full.end());
    }
    rep.check(std::string("model prefill: next-token logits = a full forward's") + (qk_norm ? " (qk_norm)" : ""),
              rel_err(got, want), 1e-5);
  }
}

// Mixed precision (LlamaConfig::bf16): a bf16 model on `be` against the same model in fp32 on the
// CPU: logits, log-probs and every gradient within bf16 tolerances (and not equal: the bf16 GEMMs
// ran), the bf16 weight copy refreshed by an optimizer step, and generation's log-probs against
// the bf16 model's own scores of what it generated.
void check_model_bf16(Report& rep, const wst::Backend& be, const std::string& what) {
  for (int qk = 0; qk < 2; qk++) {
    wst::LlamaConfig cfg = tiny_llama_config(61, qk);
    const std::string tag = what + (qk ? " (qk-norm, tied)" : " (qkv bias)");
    wst::LlamaModel ref(&wst::cpu_backend(), cfg);
    cfg.bf16 = true;
    wst::LlamaModel m(&be, cfg);
    ref.init_random(5, 0.1f);
    m.init_random(5, 0.1f);
    const int B = 3, T = 11, N = B * T;
    Rng rng(301 + qk);
    std::vector<int32_t> tokens, targets;
    random_rows(rng, cfg.vocab, B, T, tokens, targets);
    auto logits_err = [&] {
      std::vector<float> lr((size_t)N * cfg.vocab), lm(lr.size(), NAN);
      ref.forward_logits(tokens.data(), B, T, lr.data());
      m.forward_logits(tokens.data(), B, T, lm.data());
      return rel_err(lm, lr);
    };
    const double e_logits = logits_err();
    rep.check("bf16 model logits vs fp32" + tag, e_logits, 2e-2);
    rep.check("bf16 model logits differ from fp32 (the bf16 GEMMs ran)" + tag, e_logits > 1e-5 ? 0 : 1, 0);
    std::vector<float> sr(N), sm(N, NAN);
    ref.score(tokens.data(), targets.data(), B, T, sr.data(), nullptr);
    m.score(tokens.data(), targets.data(), B, T, sm.data(), nullptr);
    rep.check("bf16 model score logprobs vs fp32" + tag, rel_err(sm, sr), 1e-2);

    wst::SftParams sp{(double)N};
    auto rr = ref.train_sft(tokens.data(), targets.data(), B, T, sp);
    auto rm = m.train_sft(tokens.data(), targets.data(), B, T, sp);
    rep.check("bf16 model sft loss vs fp32" + tag, std::fabs(rm.loss - rr.loss) / std::fabs(rr.loss), 2e-3);
    rep.check("bf16 model sft grads vs fp32 (every tensor)" + tag, tensors_rel_err(m, ref, true), 5e-2);

    // The optimizer updates the fp32 master weights; the next forward must read a refreshed bf16
    // copy: against the fp32 model given the same updated weights (a stale copy is off by the
    // step, several times the tolerance).
    const wst::OptimizerParams op{1e-2, 0.9, 0.999, 1e-8, 0.0, 1.0};
    m.optimizer_step(op);
    for (const auto& t : m.tensors()) {
      std::vector<float> w(t.size);
      m.get_tensor(t, w.data());
      ref.set_tensor(*ref.find(t.name), w.data());
    }
    rep.check("bf16 model logits vs fp32 after an optimizer step" + tag, logits_err(), 2e-2);

    // Generation (prefill + decode through the bf16 GEMMs) against the model's own scores.
    auto ctx = m.create_context(2, 16);
    ctx->sampling = wst::SamplingParams{1.f, 0, 1.f, 0.f};
    for (int b = 0; b < 2; b++) ctx->add_row(77 + b, 6);
    const std::vector<int32_t> prompts = {3, 4, 5, 6, 7, 8, 9};
    const std::vector<int64_t> off = {0, 4, 7};
    m.prefill(*ctx, prompts.data(), off.data(), 2);
    while (m.decode(*ctx, 3) > 0) {
    }
    double e_gen = 0;
    for (int b = 0; b < 2; b++) {
      std::vector<int32_t> seq(prompts.begin() + off[b], prompts.begin() + off[b + 1]);
      const int P = (int)seq.size(), G = (int)ctx->out_tokens[b].size();
      seq.insert(seq.end(), ctx->out_tokens[b].begin(), ctx->out_tokens[b].end());
      std::vector<int32_t> tgt(seq.size(), -1);
      for (int t = P - 1; t + 1 < (int)seq.size(); t++) tgt[t] = seq[t + 1];
      std::vector<float> lp(seq.size(), NAN);
      m.score(seq.data(), tgt.data(), 1, (int)seq.size(), lp.data(), nullptr);
      std::vector<float> got(ctx->out_logprobs[b].begin(), ctx->out_logprobs[b].end()), want(lp.begin() + P - 1, lp.begin() + P - 1 + G);
      e_gen = std::max(e_gen, G == 6 ? rel_err(got, want) : INFINITY);
    }
    rep.check("bf16 model generated logprobs vs its scores" + tag, e_gen, 1e-4);
  }
}

}  // namespace wst_test
