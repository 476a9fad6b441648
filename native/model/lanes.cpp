// CPU scheduling of train_grpo_many: the micro-batches of one optimizer step are dealt to lanes
// (each single-threaded, with its own activations and gradient buffer) that run at once on the
// pool, largest first for balance; the lane gradients are summed in lane order, so results do not
// depend on the thread count. A(), acts_owner() and G() give the calling thread's lane's buffers.
#include "llama.h"

#include <algorithm>
#include <stdexcept>

#include "../cpu/threadpool.h"
#include "llama_internal.h"

namespace wst {

namespace {
// The lane that this thread works in (train_grpo_many's tasks), and whose model it is.
thread_local const LlamaModel* tl_lane_model = nullptr;
thread_local void* tl_lane = nullptr;
}  // namespace

// Puts this thread in `lane` of `model` for a scope, out of it again also when the work throws.
struct LaneScope {
  LaneScope(const LlamaModel* model, void* lane) {
    tl_lane_model = model;
    tl_lane = lane;
  }
  ~LaneScope() {
    tl_lane_model = nullptr;
    tl_lane = nullptr;
  }
};

bool in_lane_of(const LlamaModel* model) { return tl_lane_model == model; }

LlamaModel::Activations& LlamaModel::A() {
  return tl_lane_model == this ? *static_cast<Lane*>(tl_lane)->acts : *acts_;
}

std::unique_ptr<LlamaModel::Activations>& LlamaModel::acts_owner() {
  return tl_lane_model == this ? static_cast<Lane*>(tl_lane)->acts : acts_;
}

float* LlamaModel::G(size_t off) {
  return (tl_lane_model == this ? static_cast<Lane*>(tl_lane)->grads.data() : grads_.data()) + off;
}

int LlamaModel::lanes_for(int n) {
  const int L = std::min(n, kLanes);
  while (lanes_.size() < (size_t)L) lanes_.push_back(std::make_unique<Lane>());
  return L;
}

namespace {
// `items` sorted by cost, largest first (ties keep their order).
std::vector<int> by_cost(const std::vector<double>& cost, const std::vector<int>& items) {
  std::vector<int> order(items);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return cost[a] > cost[b]; });
  return order;
}
// items split into `parts` groups, largest first, each to the least loaded group (lowest index on ties).
std::vector<std::vector<int>> greedy_split(const std::vector<double>& cost, const std::vector<int>& items, int parts) {
  std::vector<std::vector<int>> out(parts);
  std::vector<double> load(parts, 0.0);
  for (int i : by_cost(cost, items)) {
    int best = 0;
    for (int p = 1; p < parts; p++)
      if (load[p] < load[best]) best = p;
    out[best].push_back(i);
    load[best] += cost[i];
  }
  for (auto& g : out) std::sort(g.begin(), g.end());  // a lane runs its tasks in index order
  return out;
}
}  // namespace

std::vector<std::vector<int>> LlamaModel::deal_lanes(const std::vector<double>& cost, int n_lanes) {
  const int n = (int)cost.size();
  std::vector<int> all(n);
  for (int i = 0; i < n; i++) all[i] = i;
  if (n_lanes < 4) return greedy_split(cost, all, n_lanes);
  std::vector<std::vector<int>> lanes;
  for (auto& half : greedy_split(cost, all, 2))
    for (auto& lane : greedy_split(cost, half, n_lanes / 2)) lanes.push_back(std::move(lane));
  return lanes;
}

std::vector<std::vector<int>> LlamaModel::plan_slots(const std::vector<double>& lane_cost, int threads) {
  const int L = (int)lane_cost.size();
  std::vector<int> all(L);
  for (int j = 0; j < L; j++) all[j] = j;
  if (threads >= L) {
    std::vector<std::vector<int>> one;
    for (int j : by_cost(lane_cost, all)) one.push_back({j});  // the longest lane starts first
    return one;
  }
  if (threads == 2 && L == 4) return {{0, 1}, {2, 3}};  // deal_lanes' halves
  return greedy_split(lane_cost, all, std::max(1, threads));
}

void LlamaModel::in_lanes(int n, const std::function<void(int)>& fn, const std::vector<double>& cost) {
  const int L = lanes_for(n);
  const std::vector<double> c = cost.empty() ? std::vector<double>(n, 1.0) : cost;
  const std::vector<std::vector<int>> lanes = deal_lanes(c, L);
  auto lane_work = [&](int j) {
    LaneScope scope(this, lanes_[j].get());
    for (int t : lanes[j]) fn(t);
  };
  if (L == 1) {
    lane_work(0);  // alone: its ops use every thread
    return;
  }
  std::vector<double> lane_cost(L, 0.0);
  for (int j = 0; j < L; j++)
    for (int t : lanes[j]) lane_cost[j] += c[t];
  const std::vector<std::vector<int>> slots = plan_slots(lane_cost, num_threads());
  parallel_for((int)slots.size(), [&](int s) {
    for (int j : slots[s]) lane_work(j);
  });
}

std::vector<TrainStepResult> LlamaModel::train_grpo_many(const std::vector<GrpoMicroBatch>& mbs) {
  std::vector<TrainStepResult> out(mbs.size());
  auto run = [&](int i) {
    const GrpoMicroBatch& m = mbs[i];
    out[i] = train_grpo(m.tokens, m.targets, m.mask, m.old_logprobs, m.ref_logprobs, m.advantages,
                        m.B, m.T, m.params, m.loss_scale, m.prefix);
  };
  if (!be_->concurrent_pieces) {  // one device queue: nothing to gain from lanes
    for (size_t i = 0; i < mbs.size(); i++) run((int)i);
    return out;
  }
  ensure_grads();
  ensure_decode_weights();  // before the lanes (their forwards only read it)
  // Each lane accumulates its micro-batches into its own gradient; the lanes' sums are then added
  // in lane order: the same sum for any thread count. Lanes are dealt by the micro-batches' token
  // counts (deal_lanes), so that the threads finish together.
  const int L = lanes_for((int)mbs.size());
  for (int j = 0; j < L; j++) {
    Lane& lane = *lanes_[j];
    if (lane.grads.size() != total_) {
      lane.grads.resize(be_, total_);
      lane.grads_zero = false;
    }
    if (!lane.grads_zero) lane.grads.zero();
    lane.grads_zero = false;  // until the sum below has cleared it (not if a micro-batch throws)
  }
  // A micro-batch's cost: the tokens it computes (rows x padded length, plus its prefixes).
  std::vector<double> cost(mbs.size());
  for (size_t i = 0; i < mbs.size(); i++)
    cost[i] = (double)mbs[i].B * mbs[i].T + (mbs[i].prefix ? (double)mbs[i].prefix->Bp * mbs[i].prefix->Tp : 0.0);
  in_lanes((int)mbs.size(), run, cost);
  // grads += lane 0 + lane 1 + ... (added in lane order, element by element), and each lane's
  // gradient cleared for the next call in the same pass.
  float* lg[kLanes];
  for (int j = 0; j < L; j++) lg[j] = lanes_[j]->grads.data();
  float* g = grads_.data();
  parallel_chunks(total_, 1 << 14, [&](size_t i0, size_t i1) {
    for (int j = 0; j < L; j++) {
      float* l = lg[j];
      for (size_t i = i0; i < i1; i++) g[i] += l[i];
      std::memset(l + i0, 0, (i1 - i0) * sizeof(float));
    }
  });
  for (int j = 0; j < L; j++) lanes_[j]->grads_zero = true;
  return out;
}

}  // namespace wst
