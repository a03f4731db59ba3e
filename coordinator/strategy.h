#ifndef FEDRAD_COORDINATOR_STRATEGY_H_
#define FEDRAD_COORDINATOR_STRATEGY_H_

// Aggregation strategies: pure policy. The round driver owns I/O, threads,
// deadlines and persistence; a strategy decides the settings of a round's
// training and turns the round's accepted updates into the next global
// model (or keeps the previous one). One class per strategy, each in its
// file under coordinator/strategies/, known by name through the registry
// (coordinator/strategy_registry.h).
//
// Updates are weight deltas, spooled to files (raw float32, manifest order)
// as they stream in. Memory is never every update at once: FedAvg-family
// strategies get one running sum that the server folds as chunks arrive;
// the robust ones (median, trimmed mean, Krum) read the same slice of every
// spooled update together.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/plan.h"
#include "coordinator/fedavg.h"

namespace fedrad::coordinator {

// One accepted update of the round.
struct UpdateRef {
  std::string site;
  std::string path;   // spooled float32 deltas
  double weight = 1;  // its example count (FedAvg weighting)
};

// A round's accepted updates as a strategy sees them.
struct RoundUpdates {
  std::vector<UpdateRef> updates;  // in site order
  // For strategies that fold updates as they arrive: the weighted sum of
  // exactly these updates, sealed. Null otherwise (then read the files).
  const UpdateSum* sum = nullptr;
};

// What a strategy did to the model.
struct AggregateResult {
  bool changed = false;
  std::string note;  // what was done (selected sites, trimmed counts) or why nothing was
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string name() const = 0;

  // The local settings of one round's training tasks.
  virtual TrainingSettings ConfigureTraining(int round, const TrainingSettings& base) const;

  // True if the strategy needs only the weighted sum of the updates, which
  // the server then folds as their chunks arrive (FedAvg family); false if
  // it needs every update (robust strategies: they read the spooled files).
  virtual bool FoldsUpdatesAsTheyArrive() const { return false; }

  // Turns `*model` (the global model) into the next one in place, or leaves
  // it and says why.
  virtual absl::StatusOr<AggregateResult> Aggregate(int round, const RoundUpdates& in, std::vector<float>* model) = 0;

  // Server-side state (optimizer moments) to persist with the model it
  // produced, and to restore after a restart. Empty for stateless ones.
  virtual bool HasState() const { return false; }
  virtual std::vector<float> SaveState() const { return {}; }
  virtual absl::Status RestoreState(const std::vector<float>& state);
};

// The FedAvg family's shape: the round's weighted mean delta (the folded
// sum, or the spooled files folded now), then a server step in Step.
class MeanDelta : public Strategy {
 public:
  explicit MeanDelta(const StrategySettings& s) : s_(s) {}
  bool FoldsUpdatesAsTheyArrive() const override { return true; }
  absl::StatusOr<AggregateResult> Aggregate(int round, const RoundUpdates& in, std::vector<float>* model) final;

 protected:
  const StrategySettings& settings() const { return s_; }
  // x <- the next model, from the round's sum (accepted() > 0).
  virtual void Step(const UpdateSum& sum, std::vector<float>* model) = 0;

 private:
  absl::StatusOr<const UpdateSum*> RoundSum(const RoundUpdates& in, size_t num_values);

  const StrategySettings s_;
  std::unique_ptr<UpdateSum> from_files_;
};

// Copies saved state into `moments` in order, or says the sizes differ.
absl::Status RestoreMoments(const std::string& strategy, const std::vector<float>& state,
                            const std::vector<std::vector<float>*>& moments);

// Values per slice when every update is read side by side: 64 Ki floats
// (256 KiB) per update.
inline constexpr size_t kSliceValues = size_t{1} << 16;

// --- the arithmetic, exposed for tests ---

// The weighted sum of spooled updates (sum of w_i * d_i, and of w_i), sealed.
absl::StatusOr<std::unique_ptr<UpdateSum>> FoldFiles(const std::vector<UpdateRef>& updates, size_t num_values);

// Calls `fn(offset, slices)` for consecutive slices [offset, offset + n) of
// every update at once (slices[i] holds update i's n values).
absl::Status ForEachSlice(const std::vector<UpdateRef>& updates, size_t num_values, size_t slice_values,
                          const std::function<void(size_t, const std::vector<std::vector<float>>&)>& fn);

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_STRATEGY_H_
