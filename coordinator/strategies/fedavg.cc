// FedAvg (McMahan et al. 2017), FedAvgM (Hsu et al. 2019) and FedProx (Li
// et al. 2020): the weighted mean delta, applied with a server step. All
// three need only the round's weighted sum, which the server folds as the
// updates' chunks arrive.

#include <memory>

#include "absl/strings/str_cat.h"
#include "coordinator/strategy.h"
#include "coordinator/strategy_registry.h"

namespace fedrad::coordinator {

absl::StatusOr<const UpdateSum*> MeanDelta::RoundSum(const RoundUpdates& in, size_t num_values) {
  from_files_.reset();
  const UpdateSum* sum = in.sum;
  if (sum == nullptr) {
    absl::StatusOr<std::unique_ptr<UpdateSum>> folded = FoldFiles(in.updates, num_values);
    if (!folded.ok()) return folded.status();
    from_files_ = std::move(*folded);
    sum = from_files_.get();
  }
  if (sum->size() != num_values) return absl::InternalError("the round's sum does not match the model");
  if (sum->accepted() == 0) return absl::FailedPreconditionError("no update to average");
  return sum;
}

absl::StatusOr<AggregateResult> MeanDelta::Aggregate(int, const RoundUpdates& in, std::vector<float>* model) {
  absl::StatusOr<const UpdateSum*> sum = RoundSum(in, model->size());
  if (!sum.ok()) return sum.status();
  Step(**sum, model);
  AggregateResult r;
  r.changed = true;
  r.note = absl::StrCat(name(), " of ", (*sum)->accepted(), " update(s)");
  from_files_.reset();  // *sum may be it
  return r;
}

namespace {

// x <- x + eta * mean delta.
class FedAvg : public MeanDelta {
 public:
  explicit FedAvg(const StrategySettings& s) : MeanDelta(s) {}
  std::string name() const override { return "fedavg"; }

 protected:
  void Step(const UpdateSum& sum, std::vector<float>* model) override {
    std::vector<float>& x = *model;
    const double eta = settings().server_learning_rate;
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(x[i] + eta * sum.Mean(i));
  }
};

// FedAvg whose local training adds the proximal term mu/2 |w - w_global|².
class FedProx : public FedAvg {
 public:
  using FedAvg::FedAvg;
  std::string name() const override { return "fedprox"; }
  TrainingSettings ConfigureTraining(int, const TrainingSettings& base) const override {
    TrainingSettings t = base;
    t.proximal_mu = settings().proximal_mu;
    return t;
  }
};

// Hsu et al. 2019: v <- beta v + delta; x <- x + eta v.
class FedAvgM : public MeanDelta {
 public:
  FedAvgM(const StrategySettings& s, size_t n) : MeanDelta(s), velocity_(n, 0.0f) {}
  std::string name() const override { return "fedavgm"; }
  bool HasState() const override { return true; }
  std::vector<float> SaveState() const override { return velocity_; }
  absl::Status RestoreState(const std::vector<float>& state) override {
    return RestoreMoments(name(), state, {&velocity_});
  }

 protected:
  void Step(const UpdateSum& sum, std::vector<float>* model) override {
    std::vector<float>& x = *model;
    const double eta = settings().server_learning_rate, beta = settings().server_momentum;
    for (size_t i = 0; i < x.size(); ++i) {
      velocity_[i] = static_cast<float>(beta * velocity_[i] + sum.Mean(i));
      x[i] = static_cast<float>(x[i] + eta * velocity_[i]);
    }
  }

 private:
  std::vector<float> velocity_;
};

}  // namespace

absl::Status RestoreMoments(const std::string& strategy, const std::vector<float>& state,
                            const std::vector<std::vector<float>*>& moments) {
  size_t want = 0;
  for (const std::vector<float>* m : moments) want += m->size();
  if (state.size() != want) {
    return absl::DataLossError(
        absl::StrCat("saved ", strategy, " state has ", state.size(), " values, expected ", want));
  }
  auto it = state.begin();
  for (std::vector<float>* m : moments) {
    std::copy(it, it + static_cast<std::ptrdiff_t>(m->size()), m->begin());
    it += static_cast<std::ptrdiff_t>(m->size());
  }
  return absl::OkStatus();
}

StrategyEntry FedAvgEntry() {
  return {"fedavg", "the example-weighted mean of the updates (McMahan et al. 2017)",
          [](const StrategySettings& s, size_t) -> std::unique_ptr<Strategy> { return std::make_unique<FedAvg>(s); },
          nullptr};
}

StrategyEntry FedProxEntry() {
  return {"fedprox", "fedavg with a proximal term in local training, strategy.proximal_mu (Li et al. 2020)",
          [](const StrategySettings& s, size_t) -> std::unique_ptr<Strategy> { return std::make_unique<FedProx>(s); },
          nullptr};
}

StrategyEntry FedAvgMEntry() {
  return {
      "fedavgm", "fedavg with server momentum, strategy.server_momentum (Hsu et al. 2019)",
      [](const StrategySettings& s, size_t n) -> std::unique_ptr<Strategy> { return std::make_unique<FedAvgM>(s, n); },
      nullptr, /*state_vectors=*/1};
}

}  // namespace fedrad::coordinator
