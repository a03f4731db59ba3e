#include "coordinator/strategy_registry.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/system_memory.h"

namespace fedrad::coordinator {

const std::vector<StrategyEntry>& Registry() {
  static const std::vector<StrategyEntry>* const registry = new std::vector<StrategyEntry>{
      FedAvgEntry(),  FedAvgMEntry(), FedProxEntry(),     FedAdagradEntry(), FedAdamEntry(),
      FedYogiEntry(), MedianEntry(),  TrimmedMeanEntry(), KrumEntry(),       MultiKrumEntry(),
  };
  return *registry;
}

const StrategyEntry* FindStrategy(const std::string& name) {
  for (const StrategyEntry& e : Registry()) {
    if (name == e.name) return &e;
  }
  return nullptr;
}

namespace {

std::string KnownNames() {
  std::vector<std::string> names;
  for (const StrategyEntry& e : Registry()) names.push_back(e.name);
  return absl::StrJoin(names, ", ");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Strategy>> CreateStrategy(const StrategySettings& settings, size_t num_values) {
  const StrategyEntry* e = FindStrategy(settings.name);
  if (e == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown strategy '", settings.name, "'; known: ", KnownNames()));
  }
  return e->create(settings, num_values);
}

absl::StatusOr<MemoryNeed> CoordinatorMemoryNeed(const StrategySettings& settings, size_t num_values) {
  const StrategyEntry* e = FindStrategy(settings.name);
  if (e == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown strategy '", settings.name, "'; known: ", KnownNames()));
  }
  // An instance for no values allocates nothing and says how it aggregates.
  const bool folds = e->create(settings, 0)->FoldsUpdatesAsTheyArrive();
  const uint64_t n = num_values, model = n * sizeof(float), sum = folds ? n * sizeof(double) : 0,
                 state = n * sizeof(float) * static_cast<uint64_t>(e->state_vectors), process = uint64_t{128} << 20;
  MemoryNeed need;
  need.bytes = model + 2 * sum + 2 * state + process;
  need.parts = absl::StrCat("the model ", HumanBytes(model));
  if (folds) absl::StrAppend(&need.parts, ", its running sum ", HumanBytes(sum), " twice while refolding");
  if (state > 0) absl::StrAppend(&need.parts, ", ", e->name, "'s state ", HumanBytes(state), " twice while saved");
  absl::StrAppend(&need.parts, ", the process ", HumanBytes(process));
  return need;
}

void CheckPlanStrategy(const FederationPlan& plan, const PlanFailure& fail) {
  const StrategyEntry* e = FindStrategy(plan.strategy.name);
  if (e == nullptr) {
    fail("strategy.name", absl::StrCat("is '", plan.strategy.name, "'; known: ", KnownNames()));
    return;
  }
  if (e->check != nullptr) e->check(plan.strategy, plan.min_nodes, fail);
}

}  // namespace fedrad::coordinator
