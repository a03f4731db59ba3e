// FedAdagrad, FedAdam and FedYogi (Reddi et al. 2021, Algorithm 2): the
// mean delta as a pseudo-gradient for an adaptive server optimizer. They
// differ only in how the second moment follows the squared delta.

#include <cmath>
#include <memory>

#include "coordinator/strategy.h"
#include "coordinator/strategy_registry.h"

namespace fedrad::coordinator {
namespace {

// m <- b1 m + (1 - b1) delta; v <- SecondMoment(v, delta²);
// x <- x + eta m / (sqrt(v) + tau).
class FedOpt : public MeanDelta {
 public:
  FedOpt(const StrategySettings& s, size_t n)
      : MeanDelta(s),
        m_(n, 0.0f),
        // Reddi et al. 2021 start the second moment at v_{-1} >= tau².
        v_(n, static_cast<float>(s.tau * s.tau)) {}

  bool HasState() const override { return true; }
  std::vector<float> SaveState() const override {
    std::vector<float> out = m_;
    out.insert(out.end(), v_.begin(), v_.end());
    return out;
  }
  absl::Status RestoreState(const std::vector<float>& state) override {
    return RestoreMoments(name(), state, {&m_, &v_});
  }

 protected:
  virtual double SecondMoment(double v, double d2) const = 0;

  void Step(const UpdateSum& sum, std::vector<float>* model) override {
    std::vector<float>& x = *model;
    const StrategySettings& s = settings();
    for (size_t i = 0; i < x.size(); ++i) {
      const double di = sum.Mean(i);
      const double m = s.beta1 * m_[i] + (1 - s.beta1) * di;
      const double v = SecondMoment(v_[i], di * di);
      m_[i] = static_cast<float>(m);
      v_[i] = static_cast<float>(v);
      x[i] = static_cast<float>(x[i] + s.server_learning_rate * m / (std::sqrt(v) + s.tau));
    }
  }

 private:
  std::vector<float> m_, v_;
};

// v <- v + delta².
class FedAdagrad : public FedOpt {
 public:
  using FedOpt::FedOpt;
  std::string name() const override { return "fedadagrad"; }

 protected:
  double SecondMoment(double v, double d2) const override { return v + d2; }
};

// v <- b2 v + (1 - b2) delta².
class FedAdam : public FedOpt {
 public:
  using FedOpt::FedOpt;
  std::string name() const override { return "fedadam"; }

 protected:
  double SecondMoment(double v, double d2) const override { return settings().beta2 * v + (1 - settings().beta2) * d2; }
};

// v <- v - (1 - b2) delta² sign(v - delta²).
class FedYogi : public FedOpt {
 public:
  using FedOpt::FedOpt;
  std::string name() const override { return "fedyogi"; }

 protected:
  double SecondMoment(double v, double d2) const override {
    const double sign = v - d2 > 0 ? 1.0 : v - d2 < 0 ? -1.0 : 0.0;
    return v - (1 - settings().beta2) * d2 * sign;
  }
};

template <typename T>
std::unique_ptr<Strategy> Make(const StrategySettings& s, size_t n) {
  return std::make_unique<T>(s, n);
}

}  // namespace

StrategyEntry FedAdagradEntry() {
  return {"fedadagrad", "adaptive server steps, Adagrad (Reddi et al. 2021): strategy.beta1, tau", &Make<FedAdagrad>,
          nullptr, /*state_vectors=*/2};
}

StrategyEntry FedAdamEntry() {
  return {"fedadam", "adaptive server steps, Adam (Reddi et al. 2021): strategy.beta1, beta2, tau", &Make<FedAdam>,
          nullptr, /*state_vectors=*/2};
}

StrategyEntry FedYogiEntry() {
  return {"fedyogi", "adaptive server steps, Yogi (Reddi et al. 2021): strategy.beta1, beta2, tau", &Make<FedYogi>,
          nullptr, /*state_vectors=*/2};
}

}  // namespace fedrad::coordinator
