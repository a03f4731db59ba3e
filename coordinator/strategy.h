#ifndef FEDRAD_COORDINATOR_STRATEGY_H_
#define FEDRAD_COORDINATOR_STRATEGY_H_

// Aggregation strategies: pure policy. The round driver owns I/O, threads,
// deadlines and persistence; a strategy decides the settings of a round's
// training and turns the round's accepted updates into the next global
// model (or keeps the previous one).
//
// Updates are weight deltas in spooled files (raw float32, manifest order).
// Every strategy reads them a slice at a time, so memory is the model plus
// one slice per update, never every update at once: FedAvg-family
// strategies keep one running sum; the robust ones (median, trimmed mean,
// Krum) look at the same slice of every update together.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/plan.h"

namespace fedrad::coordinator {

// One accepted update of the round.
struct UpdateRef {
  std::string site;
  std::string path;    // spooled float32 deltas
  double weight = 1;   // its example count (FedAvg weighting)
};

// What a strategy decided: a new model, or keep the previous one and why.
struct AggregateResult {
  std::optional<std::vector<float>> model;
  std::string note;  // what was done (selected sites, trimmed counts) or why nothing was
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string name() const = 0;

  // The local settings of one round's training tasks.
  virtual TrainingSettings ConfigureTraining(int round, const TrainingSettings& base) const;

  // The next global model from `global` and the round's accepted updates
  // (in site order).
  virtual absl::StatusOr<AggregateResult> Aggregate(int round, const std::vector<float>& global,
                                                    const std::vector<UpdateRef>& updates) = 0;

  // Server-side state (optimizer moments) to persist with the model it
  // produced, and to restore after a restart. Empty for stateless ones.
  virtual bool HasState() const { return false; }
  virtual std::vector<float> SaveState() const { return {}; }
  virtual absl::Status RestoreState(const std::vector<float>& state);
};

// The plan's [strategy].
absl::StatusOr<std::unique_ptr<Strategy>> CreateStrategy(const StrategySettings& settings, size_t num_values);

// --- the arithmetic, exposed for tests ---

// Weighted mean of the updates' deltas (sum of w_i * d_i over sum of w_i).
absl::StatusOr<std::vector<float>> WeightedMeanDelta(const std::vector<UpdateRef>& updates, size_t num_values);

// Calls `fn(offset, slices)` for consecutive slices [offset, offset + n) of
// every update at once (slices[i] holds update i's n values).
absl::Status ForEachSlice(const std::vector<UpdateRef>& updates, size_t num_values, size_t slice_values,
                          const std::function<void(size_t, const std::vector<std::vector<float>>&)>& fn);

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_STRATEGY_H_
