#ifndef FEDRAD_COORDINATOR_STRATEGY_REGISTRY_H_
#define FEDRAD_COORDINATOR_STRATEGY_REGISTRY_H_

// The strategies a plan's [strategy] name may choose, each known once: its
// name, what it does, how to make one, and what it needs of the plan.
// Adding a strategy is its file under coordinator/strategies/ (the class and
// its StrategyEntry), one line in Registry() (strategy_registry.cc) and its
// test; nothing else lists strategies.

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/plan.h"
#include "coordinator/strategy.h"

namespace fedrad::coordinator {

struct StrategyEntry {
  const char* name;
  const char* summary;  // one line, for the plan's errors and docs
  std::unique_ptr<Strategy> (*create)(const StrategySettings& settings, size_t num_values);
  // Reports (through `fail`) what in the plan the strategy cannot work
  // with when a round applies with as few as `min_nodes` updates: such a
  // strategy would keep the model while every DP site pays for the round.
  // Null: it works with any.
  void (*check)(const StrategySettings& settings, int min_nodes, const PlanFailure& fail);
  // Model-sized float vectors the strategy keeps (optimizer moments): its
  // SaveState holds this many times the model's values.
  int state_vectors = 0;
};

// Every strategy, in the order the docs list them.
const std::vector<StrategyEntry>& Registry();

// The entry named `name`, or null.
const StrategyEntry* FindStrategy(const std::string& name);

// The plan's [strategy], made for a model of `num_values` values.
absl::StatusOr<std::unique_ptr<Strategy>> CreateStrategy(const StrategySettings& settings, size_t num_values);

// What the coordinator holds at its peak for the plan's [strategy] on a
// model of `num_values` values, and what that is made of (for a refusal's
// message): the global model (4 bytes a value); for strategies that fold
// updates as they arrive the running sum (8), taken twice while a withdrawn
// update is refolded; the strategy's state vectors, twice while saved; plus
// 128 MiB for the process itself. Robust strategies read slices of the
// spooled updates, not whole ones.
struct MemoryNeed {
  uint64_t bytes = 0;
  std::string parts;  // "model 4.0 GiB, running sum 8.0 GiB x 2, ..."
};
absl::StatusOr<MemoryNeed> CoordinatorMemoryNeed(const StrategySettings& settings, size_t num_values);

// The StrategyCheck LoadPlan runs (common/plan.h): an unknown name, and
// what the named strategy's check finds.
void CheckPlanStrategy(const FederationPlan& plan, const PlanFailure& fail);

// Each defined in its strategy's file.
StrategyEntry FedAvgEntry();
StrategyEntry FedAvgMEntry();
StrategyEntry FedProxEntry();
StrategyEntry FedAdagradEntry();
StrategyEntry FedAdamEntry();
StrategyEntry FedYogiEntry();
StrategyEntry MedianEntry();
StrategyEntry TrimmedMeanEntry();
StrategyEntry KrumEntry();
StrategyEntry MultiKrumEntry();

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_STRATEGY_REGISTRY_H_
