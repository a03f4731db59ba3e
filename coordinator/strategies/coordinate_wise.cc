// Coordinate-wise robust aggregation (Yin et al. 2018): per value, the
// median or the trimmed mean of the updates, read side by side from the
// spool a slice at a time.

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "coordinator/strategy.h"
#include "coordinator/strategy_registry.h"

namespace fedrad::coordinator {
namespace {

class CoordinateWise : public Strategy {
 public:
  explicit CoordinateWise(const StrategySettings& s) : s_(s) {}

  absl::StatusOr<AggregateResult> Aggregate(int, const RoundUpdates& in, std::vector<float>* model) override {
    const std::vector<UpdateRef>& updates = in.updates;
    const size_t n = updates.size();
    AggregateResult r;
    if (std::optional<std::string> why = TooFew(n)) {
      r.note = absl::StrCat(*why, "; keeping the model");
      return r;
    }
    std::vector<float>& x = *model;  // updated in place: value i depends only on x[i] and the updates' i
    std::vector<float> column(n);
    const double eta = s_.server_learning_rate;
    absl::Status s = ForEachSlice(updates, x.size(), kSliceValues,
                                  [&](size_t offset, const std::vector<std::vector<float>>& slices) {
                                    const size_t len = slices[0].size();
                                    for (size_t j = 0; j < len; ++j) {
                                      for (size_t i = 0; i < n; ++i) column[i] = slices[i][j];
                                      x[offset + j] = static_cast<float>(x[offset + j] + eta * Combine(column));
                                    }
                                  });
    if (!s.ok()) return s;
    r.changed = true;
    r.note = Note(n);
    return r;
  }

 protected:
  const StrategySettings& settings() const { return s_; }
  // Why n updates are too few, if they are.
  virtual std::optional<std::string> TooFew(size_t n) const = 0;
  // One value from the updates' values at one coordinate (reordered at will).
  virtual double Combine(std::vector<float>& column) const = 0;
  virtual std::string Note(size_t n) const = 0;

 private:
  const StrategySettings s_;
};

class Median : public CoordinateWise {
 public:
  using CoordinateWise::CoordinateWise;
  std::string name() const override { return "median"; }

 protected:
  std::optional<std::string> TooFew(size_t n) const override {
    if (n > 0) return std::nullopt;
    return "median needs at least one update; got 0";
  }
  double Combine(std::vector<float>& column) const override {
    const size_t n = column.size(), mid = n / 2;
    std::nth_element(column.begin(), column.begin() + static_cast<std::ptrdiff_t>(mid), column.end());
    double value = column[mid];
    if (n % 2 == 0) {
      const float below = *std::max_element(column.begin(), column.begin() + static_cast<std::ptrdiff_t>(mid));
      value = (value + below) / 2;
    }
    return value;
  }
  std::string Note(size_t n) const override { return absl::StrCat("coordinate-wise median of ", n, " update(s)"); }
};

class TrimmedMean : public CoordinateWise {
 public:
  using CoordinateWise::CoordinateWise;
  std::string name() const override { return "trimmed-mean"; }

 protected:
  size_t Trim(size_t n) const { return static_cast<size_t>(std::floor(settings().trim_fraction * n)); }
  std::optional<std::string> TooFew(size_t n) const override {
    if (n > 0 && n > 2 * Trim(n)) return std::nullopt;
    return absl::StrCat("trimmed-mean needs more than ", 2 * Trim(n), " updates; got ", n);
  }
  double Combine(std::vector<float>& column) const override {
    const size_t n = column.size(), trim = Trim(n);
    std::sort(column.begin(), column.end());
    double sum = 0;
    for (size_t i = trim; i < n - trim; ++i) sum += column[i];
    return sum / static_cast<double>(n - 2 * trim);
  }
  std::string Note(size_t n) const override {
    return absl::StrCat("trimmed mean of ", n, " update(s), ", Trim(n), " dropped at each end");
  }
};

}  // namespace

StrategyEntry MedianEntry() {
  return {"median", "the coordinate-wise median of the updates (Yin et al. 2018); min_nodes >= 3",
          [](const StrategySettings& s, size_t) -> std::unique_ptr<Strategy> { return std::make_unique<Median>(s); },
          [](const StrategySettings&, int least, const PlanFailure& fail) {
            if (least < 3) {
              fail("federation.min_nodes", absl::StrCat("is ", least,
                                                        ", but a coordinate-wise median of fewer than 3 "
                                                        "updates resists no outlier; use min_nodes >= 3 or fedavg"));
            }
          }};
}

StrategyEntry TrimmedMeanEntry() {
  return {
      "trimmed-mean",
      "the coordinate-wise mean without the strategy.trim_fraction largest and smallest (Yin et al. 2018)",
      [](const StrategySettings& s, size_t) -> std::unique_ptr<Strategy> { return std::make_unique<TrimmedMean>(s); },
      [](const StrategySettings& st, int least, const PlanFailure& fail) {
        if (st.trim_fraction > 0 && st.trim_fraction * least < 1) {
          fail("strategy.trim_fraction",
               absl::StrFormat("is %g: with min_nodes = %d a round may trim nothing (floor(%g x %d) = 0 at each end); "
                               "raise min_nodes to at least %d or trim_fraction to at least %g",
                               st.trim_fraction, least, st.trim_fraction, least,
                               static_cast<int>(std::ceil(1 / st.trim_fraction)), 1.0 / least));
        }
      }};
}

}  // namespace fedrad::coordinator
