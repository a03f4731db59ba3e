// libFuzzer target for the TOML the programs start from, with our checks:
// the first byte picks node.toml (local use: no kit files; or for the
// federation, whose kit files it names are read), coordinator.toml
// (whose plan path, if any, is read) or a federation plan (with the
// strategy registry's checks). Any bytes are a config or an error naming
// the file and field (at least a message: fuzz_support.h).
#include <cstdint>

#include "common/plan.h"
#include "coordinator/config.h"
#include "coordinator/strategy_registry.h"
#include "node/node_config.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string path = fedrad::fuzz::WriteInput(data + 1, size - 1, "-config.toml");
  switch (data[0] % 4) {
    case 0:
      fedrad::fuzz::ExpectOkOrNamed(fedrad::node::LoadNodeConfig(path, fedrad::node::NodeConfigUse::kLocal));
      break;
    case 3:
      fedrad::fuzz::ExpectOkOrNamed(fedrad::node::LoadNodeConfig(path, fedrad::node::NodeConfigUse::kFederation));
      break;
    case 1:
      fedrad::fuzz::ExpectOkOrNamed(fedrad::coordinator::LoadCoordinatorConfig(path));
      break;
    default:
      fedrad::fuzz::ExpectOkOrNamed(fedrad::LoadPlan(path, fedrad::coordinator::CheckPlanStrategy));
      break;
  }
  return 0;
}
