// Krum and Multi-Krum (Blanchard et al. 2017): the update (or the m
// updates) closest to their n - f - 2 nearest others, by squared distance
// accumulated over the spool a slice at a time.

#include <algorithm>
#include <memory>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "coordinator/strategy.h"
#include "coordinator/strategy_registry.h"

namespace fedrad::coordinator {
namespace {

class Krum : public Strategy {
 public:
  explicit Krum(const StrategySettings& s) : s_(s) {}
  std::string name() const override { return "krum"; }

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
    const size_t m = Selected(n);
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

 protected:
  const StrategySettings& settings() const { return s_; }
  // How many of n updates, best scores first, are averaged.
  virtual size_t Selected(size_t) const { return 1; }

 private:
  const StrategySettings s_;
};

class MultiKrum : public Krum {
 public:
  using Krum::Krum;
  std::string name() const override { return "multi-krum"; }

 protected:
  size_t Selected(size_t n) const override {
    const StrategySettings& s = settings();
    return s.multi_krum_select > 0 ? std::min<size_t>(s.multi_krum_select, n) : n - s.byzantine;
  }
};

void CheckKrum(const StrategySettings& st, int least, const PlanFailure& fail) {
  const int needed = 2 * st.byzantine + 3;
  if (least < needed) {
    fail("federation.min_nodes",
         absl::StrCat("is ", least, ", but ", st.name, " with strategy.byzantine = ", st.byzantine,
                      " needs at least 2f + 3 = ", needed, " updates in every round it applies; raise min_nodes to ",
                      needed, " (with that many sites) or lower byzantine"));
  }
}

}  // namespace

StrategyEntry KrumEntry() {
  return {"krum", "the one update nearest its n - f - 2 neighbours, f = strategy.byzantine (Blanchard et al. 2017)",
          [](const StrategySettings& s, size_t) -> std::unique_ptr<Strategy> { return std::make_unique<Krum>(s); },
          &CheckKrum};
}

StrategyEntry MultiKrumEntry() {
  return {"multi-krum", "the mean of the strategy.multi_krum_select best krum scores (0: n - f)",
          [](const StrategySettings& s, size_t) -> std::unique_ptr<Strategy> { return std::make_unique<MultiKrum>(s); },
          [](const StrategySettings& st, int least, const PlanFailure& fail) {
            CheckKrum(st, least, fail);
            if (st.multi_krum_select > 0 && st.multi_krum_select > least - st.byzantine) {
              fail("strategy.multi_krum_select",
                   absl::StrCat("is ", st.multi_krum_select, ", more than min_nodes - byzantine = ",
                                least - st.byzantine, " (the honest updates of the smallest round it applies)"));
            }
          }};
}

}  // namespace fedrad::coordinator
