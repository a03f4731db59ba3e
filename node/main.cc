// fedrad-node: a hospital's node in a fedrad federation.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <iostream>

#include "common/logging.h"
#include "node/inspect.h"
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
  fedrad::node::InspectOptions inspect_options;
  std::string inspect_config, data_dir, labels_csv;
  int size = 64, classes = 0;
  CLI::App* inspect = app.add_subcommand(
      "inspect",
      "Report what the node would train on: files by modality, transfer syntax, size and photometric "
      "interpretation; patients, images per patient, label balance; every unusable file counted by reason. "
      "Counts only: no identifiers are printed. Nothing is sent anywhere.");
  inspect->add_option("-c,--config", inspect_config, "Node config (TOML): its [data] and [preprocess]");
  inspect->add_option("--data", data_dir, "DICOM folder (instead of --config)");
  inspect->add_option("--labels", labels_csv, "labels.csv (instead of --config; default DATA/labels.csv)");
  inspect->add_option("--size", size, "Model input size (rows = columns) for the pipeline")
      ->capture_default_str()->check(CLI::Range(16, 1024));
  inspect->add_option("--classes", classes, "Number of classes (default: any integer label)");
  inspect->add_option("--preview", inspect_options.preview_dir,
                      "Write a PNG of exactly what the model sees for each image/frame into this folder");
  inspect->add_option("--export-raw", inspect_options.export_raw_dir,
                      "Write each frame's modality values (after rescale, before windowing) as float32 .npy");
  inspect->add_flag("--list-skipped", inspect_options.list_skipped,
                    "Also print the relative path of every unusable file (paths may contain identifiers)");
  CLI11_PARSE(app, argc, argv);
  fedrad::InitLogging("node", verbose);

  if (*inspect) {
    fedrad::node::DatasetSpec& spec = inspect_options.dataset;
    if (!inspect_config.empty()) {
      absl::StatusOr<fedrad::node::NodeConfig> config = fedrad::node::LoadNodeConfig(inspect_config);
      if (!config.ok()) return Fail(config.status(), 2);
      spec.data_dir = config->dicom_dir;
      spec.labels_csv = config->labels_csv;
      spec.class_names = config->class_names;
      spec.preprocess = config->preprocess;
      spec.loader.threads = config->loader_threads;
      if (config->cache) spec.loader.cache_dir = config->state_dir + "/cache";
    } else if (!data_dir.empty()) {
      spec.data_dir = data_dir;
      spec.labels_csv = labels_csv.empty() ? data_dir + "/labels.csv" : labels_csv;
    } else {
      std::cerr << "inspect needs --config node.toml, or --data DIR [--labels CSV]\n";
      return 2;
    }
    spec.preprocess.output_size = size;
    spec.num_classes = classes > 0 ? classes
                       : !spec.class_names.empty() ? static_cast<int>(spec.class_names.size())
                                                   : 1 << 20;
    absl::Status s = fedrad::node::Inspect(inspect_options, std::cout);
    if (!s.ok()) return Fail(s, 1);
    return 0;
  }

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
