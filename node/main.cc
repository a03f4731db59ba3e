// fedrad-node: a hospital's node in a fedrad federation.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "common/logging.h"
#include "node/node_config.h"
#include "node/node_runtime.h"

namespace {

int Fail(const absl::Status& s, int code) {
  spdlog::error("{}", std::string(s.message()));
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fedrad-node: trains the federation's model on this site's DICOM data; only DP-protected "
               "model updates and aggregate figures leave the site"};
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "More log output");
  std::string config_path = "node.toml";
  CLI::App* run = app.add_subcommand("run", "Join the federation and serve its rounds until it finishes");
  run->add_option("-c,--config", config_path, "Node config (TOML)")->capture_default_str();
  CLI::App* check = app.add_subcommand(
      "check", "Check the config, then connect once: is the coordinator reachable and does it accept this site?");
  check->add_option("-c,--config", config_path, "Node config (TOML)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  fedrad::InitLogging("node", verbose);

  absl::StatusOr<fedrad::node::NodeConfig> config = fedrad::node::LoadNodeConfig(config_path);
  if (!config.ok()) return Fail(config.status(), 2);
  absl::StatusOr<std::unique_ptr<fedrad::node::NodeRuntime>> runtime =
      fedrad::node::NodeRuntime::Create(*config);
  if (!runtime.ok()) return Fail(runtime.status(), 1);
  if (*check) {
    absl::StatusOr<fedrad::node::JoinedPlan> plan = (*runtime)->Check();
    if (!plan.ok()) return Fail(plan.status(), 1);
    spdlog::info("ok: the coordinator at {} accepts this node as site '{}' of federation '{}' (model '{}')",
                 config->coordinator_address, plan->site, plan->federation, plan->model.architecture);
    return 0;
  }
  spdlog::info("site {}: connecting to {}", config->tls.common_name, config->coordinator_address);
  absl::Status s = (*runtime)->Run();
  if (!s.ok()) return Fail(s, 1);
  return 0;
}
