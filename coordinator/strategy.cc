#include "coordinator/strategy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace fedrad::coordinator {
namespace {

// Values per slice when every update is read side by side: 64 Ki floats
// (256 KiB) per update.
constexpr size_t kSliceValues = size_t{1} << 16;

// ----- FedAvg family: a weighted mean delta, then a server step -----

class FedAvgFamily : public Strategy {
 public:
  FedAvgFamily(std::string name, const StrategySettings& s, size_t n) : name_(std::move(name)), s_(s) {
    if (name_ == "fedavgm") velocity_.assign(n, 0.0f);
    if (name_ == "fedadagrad" || name_ == "fedadam" || name_ == "fedyogi") {
      m_.assign(n, 0.0f);
      // Reddi et al. 2021 start the second moment at v_{-1} >= tau².
      v_.assign(n, static_cast<float>(s.tau * s.tau));
    }
  }

  std::string name() const override { return name_; }

  TrainingSettings ConfigureTraining(int, const TrainingSettings& base) const override {
    TrainingSettings t = base;
    if (name_ == "fedprox") t.proximal_mu = s_.proximal_mu;
    return t;
  }

  bool FoldsUpdatesAsTheyArrive() const override { return true; }

  absl::StatusOr<AggregateResult> Aggregate(int, const RoundUpdates& in, std::vector<float>* model) override {
    std::unique_ptr<UpdateSum> from_files;
    const UpdateSum* sum = in.sum;
    if (sum == nullptr) {
      absl::StatusOr<std::unique_ptr<UpdateSum>> folded = FoldFiles(in.updates, model->size());
      if (!folded.ok()) return folded.status();
      from_files = std::move(*folded);
      sum = from_files.get();
    }
    if (sum->size() != model->size()) return absl::InternalError("the round's sum does not match the model");
    if (sum->accepted() == 0) return absl::FailedPreconditionError("no update to average");
    std::vector<float>& x = *model;  // updated in place
    const double eta = s_.server_learning_rate;
    if (name_ == "fedavgm") {
      // Hsu et al. 2019: v <- beta v + delta; x <- x + eta v.
      for (size_t i = 0; i < x.size(); ++i) {
        velocity_[i] = static_cast<float>(s_.server_momentum * velocity_[i] + sum->Mean(i));
        x[i] = static_cast<float>(x[i] + eta * velocity_[i]);
      }
    } else if (!m_.empty()) {
      // Reddi et al. 2021, Algorithm 2: m <- b1 m + (1 - b1) delta, then
      //   adagrad: v <- v + delta²
      //   adam:    v <- b2 v + (1 - b2) delta²
      //   yogi:    v <- v - (1 - b2) delta² sign(v - delta²)
      // and x <- x + eta m / (sqrt(v) + tau).
      for (size_t i = 0; i < x.size(); ++i) {
        const double di = sum->Mean(i), d2 = di * di;
        const double m = s_.beta1 * m_[i] + (1 - s_.beta1) * di;
        double v = v_[i];
        if (name_ == "fedadagrad") {
          v += d2;
        } else if (name_ == "fedadam") {
          v = s_.beta2 * v + (1 - s_.beta2) * d2;
        } else {
          v -= (1 - s_.beta2) * d2 * (v - d2 > 0 ? 1.0 : v - d2 < 0 ? -1.0 : 0.0);
        }
        m_[i] = static_cast<float>(m);
        v_[i] = static_cast<float>(v);
        x[i] = static_cast<float>(x[i] + eta * m / (std::sqrt(v) + s_.tau));
      }
    } else {
      for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(x[i] + eta * sum->Mean(i));
    }
    AggregateResult r;
    r.changed = true;
    r.note = absl::StrCat(name_, " of ", sum->accepted(), " update(s)");
    return r;
  }

  bool HasState() const override { return !velocity_.empty() || !m_.empty(); }

  std::vector<float> SaveState() const override {
    std::vector<float> out = velocity_;
    out.insert(out.end(), m_.begin(), m_.end());
    out.insert(out.end(), v_.begin(), v_.end());
    return out;
  }

  absl::Status RestoreState(const std::vector<float>& state) override {
    const size_t want = velocity_.size() + m_.size() + v_.size();
    if (state.size() != want) {
      return absl::DataLossError(
          absl::StrCat("saved ", name_, " state has ", state.size(), " values, expected ", want));
    }
    auto it = state.begin();
    std::copy(it, it + static_cast<std::ptrdiff_t>(velocity_.size()), velocity_.begin());
    it += static_cast<std::ptrdiff_t>(velocity_.size());
    std::copy(it, it + static_cast<std::ptrdiff_t>(m_.size()), m_.begin());
    it += static_cast<std::ptrdiff_t>(m_.size());
    std::copy(it, it + static_cast<std::ptrdiff_t>(v_.size()), v_.begin());
    return absl::OkStatus();
  }

 private:
  const std::string name_;
  const StrategySettings s_;
  std::vector<float> velocity_, m_, v_;
};

// ----- Robust: per-coordinate order statistics -----

class OrderStatistic : public Strategy {
 public:
  OrderStatistic(std::string name, const StrategySettings& s) : name_(std::move(name)), s_(s) {}
  std::string name() const override { return name_; }

  absl::StatusOr<AggregateResult> Aggregate(int, const RoundUpdates& in, std::vector<float>* model) override {
    const std::vector<UpdateRef>& updates = in.updates;
    const size_t n = updates.size();
    const size_t trim = name_ == "trimmed-mean" ? static_cast<size_t>(std::floor(s_.trim_fraction * n)) : 0;
    AggregateResult r;
    if (n == 0 || (name_ == "trimmed-mean" && n <= 2 * trim)) {
      r.note = absl::StrCat(name_, " needs more than ", 2 * trim, " updates; got ", n, "; keeping the model");
      return r;
    }
    std::vector<float>& x = *model;  // updated in place: value i depends only on x[i] and the updates' i
    std::vector<float> column(n);
    const double eta = s_.server_learning_rate;
    absl::Status s = ForEachSlice(
        updates, x.size(), kSliceValues, [&](size_t offset, const std::vector<std::vector<float>>& slices) {
          const size_t len = slices[0].size();
          for (size_t j = 0; j < len; ++j) {
            for (size_t i = 0; i < n; ++i) column[i] = slices[i][j];
            double value;
            if (name_ == "median") {
              const size_t mid = n / 2;
              std::nth_element(column.begin(), column.begin() + static_cast<std::ptrdiff_t>(mid), column.end());
              value = column[mid];
              if (n % 2 == 0) {
                const float below =
                    *std::max_element(column.begin(), column.begin() + static_cast<std::ptrdiff_t>(mid));
                value = (value + below) / 2;
              }
            } else {
              std::sort(column.begin(), column.end());
              double sum = 0;
              for (size_t i = trim; i < n - trim; ++i) sum += column[i];
              value = sum / static_cast<double>(n - 2 * trim);
            }
            x[offset + j] = static_cast<float>(x[offset + j] + eta * value);
          }
        });
    if (!s.ok()) return s;
    r.changed = true;
    r.note = name_ == "median" ? absl::StrCat("coordinate-wise median of ", n, " update(s)")
                               : absl::StrCat("trimmed mean of ", n, " update(s), ", trim, " dropped at each end");
    return r;
  }

 private:
  const std::string name_;
  const StrategySettings s_;
};

// ----- Robust: Krum and Multi-Krum (Blanchard et al. 2017) -----

class Krum : public Strategy {
 public:
  Krum(bool multi, const StrategySettings& s) : multi_(multi), s_(s) {}
  std::string name() const override { return multi_ ? "multi-krum" : "krum"; }

  absl::StatusOr<AggregateResult> Aggregate(int, const RoundUpdates& in, std::vector<float>* model) override {
    const std::vector<UpdateRef>& updates = in.updates;
    const size_t n = updates.size();
    const size_t f = static_cast<size_t>(s_.byzantine);
    AggregateResult r;
    if (n < 2 * f + 3) {
      r.note = absl::StrCat(name(), " with byzantine = ", f, " needs at least ", 2 * f + 3, " updates; got ", n,
                            "; keeping the model");
      return r;
    }
    // Squared distances between every pair, accumulated slice by slice.
    std::vector<double> dist(n * n, 0.0);
    absl::Status s =
        ForEachSlice(updates, model->size(), kSliceValues, [&](size_t, const std::vector<std::vector<float>>& slices) {
          const size_t len = slices[0].size();
          for (size_t a = 0; a < n; ++a) {
            for (size_t b = a + 1; b < n; ++b) {
              double acc = 0;
              for (size_t j = 0; j < len; ++j) {
                const double d = static_cast<double>(slices[a][j]) - slices[b][j];
                acc += d * d;
              }
              dist[a * n + b] += acc;
              dist[b * n + a] += acc;
            }
          }
        });
    if (!s.ok()) return s;
    // Score: the sum of squared distances to the n - f - 2 nearest others.
    std::vector<std::pair<double, size_t>> scores;
    for (size_t a = 0; a < n; ++a) {
      std::vector<double> row;
      for (size_t b = 0; b < n; ++b) {
        if (b != a) row.push_back(dist[a * n + b]);
      }
      std::sort(row.begin(), row.end());
      scores.emplace_back(std::accumulate(row.begin(), row.begin() + static_cast<std::ptrdiff_t>(n - f - 2), 0.0), a);
    }
    std::sort(scores.begin(), scores.end());
    size_t m = 1;
    if (multi_) m = s_.multi_krum_select > 0 ? std::min<size_t>(s_.multi_krum_select, n) : n - f;
    std::vector<UpdateRef> chosen;
    std::vector<std::string> names;
    for (size_t k = 0; k < m; ++k) {
      UpdateRef u = updates[scores[k].second];
      u.weight = 1;  // an unweighted mean of the selected updates
      names.push_back(u.site);
      chosen.push_back(std::move(u));
    }
    std::sort(chosen.begin(), chosen.end(), [](const UpdateRef& a, const UpdateRef& b) { return a.site < b.site; });
    absl::StatusOr<std::unique_ptr<UpdateSum>> sum = FoldFiles(chosen, model->size());
    if (!sum.ok()) return sum.status();
    std::vector<float>& x = *model;
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = static_cast<float>(x[i] + s_.server_learning_rate * (*sum)->Mean(i));
    }
    r.changed = true;
    r.note = absl::StrCat(name(), " selected ", absl::StrJoin(names, ", "), " of ", n);
    return r;
  }

 private:
  const bool multi_;
  const StrategySettings s_;
};

}  // namespace

TrainingSettings Strategy::ConfigureTraining(int, const TrainingSettings& base) const { return base; }

absl::Status Strategy::RestoreState(const std::vector<float>& state) {
  if (!state.empty()) return absl::DataLossError(absl::StrCat(name(), " keeps no state, but some was saved"));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Strategy>> CreateStrategy(const StrategySettings& s, size_t num_values) {
  const std::string& name = s.name;
  if (name == "fedavg" || name == "fedavgm" || name == "fedprox" || name == "fedadagrad" || name == "fedadam" ||
      name == "fedyogi") {
    return std::unique_ptr<Strategy>(new FedAvgFamily(name, s, num_values));
  }
  if (name == "median" || name == "trimmed-mean") return std::unique_ptr<Strategy>(new OrderStatistic(name, s));
  if (name == "krum" || name == "multi-krum") return std::unique_ptr<Strategy>(new Krum(name == "multi-krum", s));
  return absl::InvalidArgumentError(absl::StrCat("unknown strategy '", name, "'"));
}

absl::StatusOr<std::unique_ptr<UpdateSum>> FoldFiles(const std::vector<UpdateRef>& updates, size_t num_values) {
  auto sum = std::make_unique<UpdateSum>(num_values);
  for (const UpdateRef& u : updates) {
    absl::Status s = sum->AddFile(u.path, u.weight);
    if (!s.ok()) return s;
  }
  absl::Status s = sum->Seal();
  if (!s.ok()) return s;
  return sum;
}

absl::Status ForEachSlice(const std::vector<UpdateRef>& updates, size_t num_values, size_t slice_values,
                          const std::function<void(size_t, const std::vector<std::vector<float>>&)>& fn) {
  std::vector<FILE*> files;
  auto close_all = [&] {
    for (FILE* f : files) std::fclose(f);
  };
  for (const UpdateRef& u : updates) {
    FILE* f = std::fopen(u.path.c_str(), "rb");
    if (f == nullptr) {
      close_all();
      return absl::NotFoundError(absl::StrCat("cannot open spooled update '", u.path, "'"));
    }
    files.push_back(f);
  }
  std::vector<std::vector<float>> slices(updates.size());
  for (size_t offset = 0; offset < num_values; offset += slice_values) {
    const size_t len = std::min(slice_values, num_values - offset);
    for (size_t i = 0; i < files.size(); ++i) {
      slices[i].resize(len);
      if (std::fread(slices[i].data(), sizeof(float), len, files[i]) != len) {
        close_all();
        return absl::DataLossError(
            absl::StrCat("spooled update '", updates[i].path, "' is shorter than ", num_values, " values"));
      }
    }
    fn(offset, slices);
  }
  close_all();
  return absl::OkStatus();
}

}  // namespace fedrad::coordinator
