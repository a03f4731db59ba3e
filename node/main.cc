// fedrad-node: a hospital's node in a fedrad federation.
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "common/bench_floor.h"
#include "common/logging.h"
#include "node/empirical_audit_command.h"
#include "node/inspect.h"
#include "node/local_access.h"
#include "node/node_config.h"
#include "node/node_runtime.h"
#include "node/predict.h"
#include "node/privacy_report.h"
#include "node/train_local.h"
#include "node/trainer.h"

namespace {

// The node's stop signals: the first is written to the pipe for the
// watcher in main; a second ends the process at once.
int g_signal_pipe[2] = {-1, -1};
std::atomic<int> g_signals{0};

void OnStopSignal(int sig) {
  if (g_signals.fetch_add(1) > 0) {
    static const char kAgain[] = "fedrad-node: second signal, exiting now\n";
    (void)!::write(2, kAgain, sizeof(kAgain) - 1);  // the process ends here either way
    std::_Exit(1);
  }
  const char c = static_cast<char>(sig);
  (void)!::write(g_signal_pipe[1], &c, 1);  // async-signal-safe; a full pipe cannot happen (one byte)
}

int Fail(const absl::Status& s, int code) {
  spdlog::error("{}", std::string(s.message()));
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "fedrad-node: trains the federation's model on this site's DICOM data; only DP-protected "
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
  CLI::App* privacy =
      app.add_subcommand("privacy",
                         "The privacy officer's view of this site's ledger (state_dir/node.db): epsilon spent, epsilon "
                         "left, rounds left at the current settings, and every charge. Reads no images.");
  privacy->add_option("-c,--config", config_path, "Node config (TOML)")->capture_default_str();
  bool privacy_all = false;
  privacy->add_flag("--charges", privacy_all, "Also list every charge in the ledger");
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
      ->capture_default_str()
      ->check(CLI::Range(16, 1024));
  inspect->add_option("--classes", classes, "Number of classes (default: any integer label)");
  inspect->add_option("--preview", inspect_options.preview_dir,
                      "Write a PNG of exactly what the model sees for each image/frame into this folder");
  inspect->add_option("--export-raw", inspect_options.export_raw_dir,
                      "Write each frame's modality values (after rescale, before windowing) as float32 .npy");
  inspect->add_flag("--list-skipped", inspect_options.list_skipped,
                    "Also print the relative path of every unusable file (paths may contain identifiers)");
  // train-local: the central baseline, the same trainer and DP without a coordinator.
  std::string tl_data, tl_labels, tl_test_data, tl_test_labels, tl_arch = "ctnet", tl_unit = "patient", tl_save;
  int tl_size = 64, tl_classes = 2, tl_epochs = 5, tl_batch = 64, tl_threads = 0;
  double tl_lr = 0.05, tl_momentum = 0.9, tl_center = 40, tl_width = 400, tl_clip = 1.0, tl_noise = -1, tl_epsilon = -1,
         tl_delta = 1e-5;
  bool tl_dp = false;
  CLI::App* train_local =
      app.add_subcommand("train-local",
                         "Train on this site's data alone (the central baseline): the node's trainer and DP-SGD, no "
                         "coordinator, nothing sent anywhere");
  std::string tl_config;
  train_local->add_option("-c,--config", tl_config,
                          "Node config (TOML): its [data], [preprocess] and [privacy] (DP on unless disabled there; "
                          "the ledger is not charged: nothing leaves the site)");
  train_local->add_option("--data", tl_data, "DICOM folder (instead of --config)");
  train_local->add_option("--labels", tl_labels, "labels.csv (default DATA/labels.csv)");
  train_local->add_option("--test-data", tl_test_data, "Held-out DICOM folder (default: a patient split of --data)");
  train_local->add_option("--test-labels", tl_test_labels, "Its labels.csv (default TEST_DATA/labels.csv)");
  train_local->add_option("--model", tl_arch, "Model zoo architecture")->capture_default_str();
  train_local->add_option("--size", tl_size, "Input size")->capture_default_str()->check(CLI::Range(16, 1024));
  train_local->add_option("--classes", tl_classes, "Number of classes")
      ->capture_default_str()
      ->check(CLI::Range(2, 100000));
  train_local->add_option("--epochs", tl_epochs, "Epochs (under DP: steps = epochs / sampling rate)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  train_local->add_option("--batch", tl_batch, "Batch size (under DP: the expected batch)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  train_local->add_option("--lr", tl_lr, "Learning rate")->capture_default_str()->check(CLI::Range(1e-8, 100.0));
  train_local->add_option("--momentum", tl_momentum, "SGD momentum")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.999));
  train_local->add_option("--window-center", tl_center, "Window center")->capture_default_str();
  train_local->add_option("--window-width", tl_width, "Window width")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  train_local->add_flag("--dp", tl_dp, "Train with DP-SGD");
  train_local->add_option("--clip", tl_clip, "DP: clipping norm C")->capture_default_str()->check(CLI::PositiveNumber);
  train_local->add_option("--noise", tl_noise, "DP: noise multiplier sigma (or give --epsilon)")
      ->check(CLI::NonNegativeNumber);
  train_local->add_option("--epsilon", tl_epsilon, "DP: target epsilon; sigma is the smallest that meets it")
      ->check(CLI::PositiveNumber);
  train_local->add_option("--delta", tl_delta, "DP: delta")->capture_default_str()->check(CLI::Range(1e-300, 0.999));
  train_local->add_option("--unit", tl_unit, "DP: privacy unit, patient or image")
      ->capture_default_str()
      ->check(CLI::IsMember({"patient", "image"}));
  train_local->add_option("--threads", tl_threads, "LibTorch threads (0: all cores)")->check(CLI::Range(0, 1024));
  train_local->add_option("--save", tl_save, "Write the trained model here (.safetensors)");

  std::string ev_model, ev_data, ev_labels, ev_config;
  int ev_size = 64, ev_classes = 2, ev_bootstrap = 1000;
  bool ev_json = false;
  double ev_center = 40, ev_width = 400;
  CLI::App* evaluate =
      app.add_subcommand("evaluate",
                         "How well a saved model (.safetensors) does on a labelled DICOM folder: accuracy, balanced "
                         "accuracy, per-class precision/recall/F1, sensitivity/specificity, ROC AUC, calibration, with "
                         "bootstrap 95% intervals; local only");
  evaluate->add_option("--model", ev_model, "Model file (.safetensors with an 'architecture' entry)")->required();
  evaluate->add_option("-c,--config", ev_config,
                       "Node config (TOML): evaluate on the site's validation split (its [data], [preprocess] "
                       "and split), or on --data with the site's preprocessing");
  evaluate->add_option("--data", ev_data, "Labelled DICOM folder (all of it)");
  evaluate->add_option("--labels", ev_labels, "labels.csv (default DATA/labels.csv)");
  evaluate->add_option("--size", ev_size, "Input size, if the model file does not name it")
      ->capture_default_str()
      ->check(CLI::Range(16, 1024));
  evaluate->add_option("--classes", ev_classes, "Number of classes, if the model file does not name them")
      ->capture_default_str()
      ->check(CLI::Range(2, 100000));
  evaluate->add_option("--window-center", ev_center, "Window center (without --config)")->capture_default_str();
  evaluate->add_option("--window-width", ev_width, "Window width (without --config)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  evaluate->add_option("--bootstrap", ev_bootstrap, "Bootstrap resamples for the 95% intervals")
      ->capture_default_str()
      ->check(CLI::Range(2, 100000));
  evaluate->add_flag("--json", ev_json, "Print the figures as JSON");
  fedrad::node::PredictOptions pr;
  std::string pr_config = "node.toml";
  pr.model_path = "latest";
  CLI::App* predict = app.add_subcommand(
      "predict",
      "Run a model on this site's studies for its clinicians: one CSV row per image/frame with the predicted class "
      "and every class probability, and optionally a Grad-CAM heatmap of where the model looked (PNG, and DICOM "
      "Secondary Capture for the site's viewer). Local only: opens no network connection.");
  predict->add_option("-c,--config", pr_config, "Node config (TOML): its [preprocess] and class names")
      ->capture_default_str();
  predict
      ->add_option("--model", pr.model_path,
                   "Model file (.safetensors), or 'latest': the newest global model this node received")
      ->capture_default_str();
  predict->add_option("--input", pr.input, "A DICOM file, or a folder (searched recursively)")->required();
  predict->add_option("--out", pr.out_csv, "Predictions CSV to write")->required();
  predict->add_option("--heatmaps", pr.heatmap_dir, "Write a Grad-CAM overlay PNG per image/frame into this folder");
  predict->add_flag("--dicom-overlays", pr.dicom_overlays,
                    "With --heatmaps: also write each overlay as a DICOM Secondary Capture in the source's study");
  predict->add_option("--batch", pr.batch, "Images per forward pass")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));

  CLI::App* audit = app.add_subcommand("audit", "Audits of this site's privacy that run here, on its own data");
  audit->require_subcommand(1);
  fedrad::node::EmpiricalAuditCommand audit_empirical(audit);

  CLI11_PARSE(app, argc, argv);
  fedrad::InitProgram("node", verbose);
  if (audit_empirical.chosen()) return audit_empirical.Run();

  if (*predict) {
    if (pr.dicom_overlays && pr.heatmap_dir.empty()) {
      std::cerr << "--dicom-overlays needs --heatmaps DIR\n";
      return 2;
    }
    // Never the coordinator's address or the TLS keys: predict is local only.
    absl::StatusOr<fedrad::node::NodeConfig> config =
        fedrad::node::LoadNodeConfig(pr_config, fedrad::node::NodeConfigUse::kLocal);
    if (!config.ok()) return Fail(config.status(), 2);
    if (pr.model_path == "latest") {
      absl::StatusOr<std::string> latest = fedrad::node::LatestModel(*config);
      if (!latest.ok()) return Fail(latest.status(), 1);
      pr.model_path = *latest;
    }
    pr.preprocess = config->preprocess;
    pr.class_names = config->class_names;
    pr.loader_threads = config->loader_threads;
    if (config->threads > 0) fedrad::node::SetTorchThreads(config->threads);
    absl::StatusOr<fedrad::node::PredictReport> r = fedrad::node::Predict(pr);
    if (!r.ok()) return Fail(r.status(), 1);
    std::cout << r->images << " image(s) from " << r->files << " file(s) -> " << pr.out_csv << "\n";
    for (const auto& [reason, n] : r->skipped) std::cout << "  skipped " << n << " file(s): " << reason << "\n";
    if (!pr.heatmap_dir.empty()) {
      std::cout << r->heatmaps << " heatmap(s) in " << pr.heatmap_dir
                << (pr.dicom_overlays ? " (PNG and DICOM)" : " (PNG)") << "\n";
    }
    std::cout << "model " << pr.model_path << " (sha256 " << r->model_sha256.substr(0, 12) << ")\n";
    // On the site's audit ledger, signed with its kit key (read from disk:
    // still no connection). A broken kit does not stop a clinician's run.
    absl::StatusOr<fedrad::node::NodeConfig> kit = fedrad::node::LoadNodeConfig(pr_config);
    absl::Status recorded = kit.ok() ? fedrad::node::RecordLocalDataAccess(*kit, "predict", r->images, r->patients,
                                                                           r->sop_instance_uids_sha256)
                                     : kit.status();
    if (!recorded.ok()) {
      std::cerr << "warning: this run is not in the site's audit ledger: " << recorded.message() << "\n";
    }
    return 0;
  }

  if (*evaluate) {
    fedrad::node::EvaluateOptions eo;
    if (!ev_config.empty()) {
      absl::StatusOr<fedrad::node::NodeConfig> config = fedrad::node::LoadNodeConfig(ev_config);
      if (!config.ok()) return Fail(config.status(), 2);
      eo.spec = fedrad::node::SiteDataset(*config);
      eo.spec.on_loaded = fedrad::node::RecordWhenLoaded(*config, "evaluate (local)");
      if (ev_data.empty()) {
        eo.validation_fraction = config->validation_fraction;
        eo.split_seed = config->split_seed;
      }
    } else if (ev_data.empty()) {
      std::cerr << "evaluate needs --config node.toml, or --data DIR [--labels CSV]\n";
      return 2;
    }
    if (!ev_data.empty()) {
      eo.spec.data_dir = ev_data;
      eo.spec.labels_csv = ev_labels.empty() ? ev_data + "/labels.csv" : ev_labels;
    }
    if (ev_config.empty()) {
      eo.spec.preprocess.window_center = ev_center;
      eo.spec.preprocess.window_width = ev_width;
    } else if (evaluate->count("--window-center") || evaluate->count("--window-width")) {
      std::cerr << "--window-center/--window-width apply only without --config: " << ev_config
                << "'s [preprocess] is the site's pipeline\n";
      return 2;
    }
    // The model file names its shape; flags only where it does not (or to check it).
    eo.spec.preprocess.output_size = evaluate->count("--size") ? ev_size : 0;
    eo.spec.num_classes = evaluate->count("--classes") ? ev_classes : 0;
    eo.default_size = ev_size;
    eo.default_classes = ev_classes;
    absl::StatusOr<fedrad::node::Evaluation> e = fedrad::node::EvaluateModelFile(ev_model, eo);
    if (!e.ok()) return Fail(e.status(), 1);
    absl::StatusOr<fedrad::Metrics> metrics = fedrad::ComputeMetrics(e->scores);
    if (!metrics.ok()) return Fail(metrics.status(), 1);
    absl::StatusOr<std::map<std::string, fedrad::Interval>> ci = fedrad::BootstrapIntervals(e->scores, ev_bootstrap);
    if (!ci.ok()) return Fail(ci.status(), 1);
    if (ev_json) {
      std::cout << fedrad::MetricsJson(*metrics, *ci) << "\n";
    } else {
      std::cout << ev_model << " on " << e->count << " images, loss " << e->loss << "\n\n"
                << fedrad::FormatMetrics(*metrics, *ci);
    }
    return 0;
  }

  if (*train_local) {
    fedrad::node::TrainLocalOptions o;
    if (!tl_config.empty()) {
      absl::StatusOr<fedrad::node::NodeConfig> config = fedrad::node::LoadNodeConfig(tl_config);
      if (!config.ok()) return Fail(config.status(), 2);
      o.spec = fedrad::node::SiteDataset(*config);
      o.spec.on_loaded = fedrad::node::RecordWhenLoaded(*config, "train-local");
      if (!config->class_names.empty() && train_local->count("--classes") == 0) {
        tl_classes = static_cast<int>(config->class_names.size());
      }
      o.validation_fraction = config->validation_fraction;
      o.split_seed = config->split_seed;
      if (tl_threads == 0) tl_threads = config->threads;
      const fedrad::node::PrivacySettings& p = config->privacy;
      // The site's [privacy], unless flags on the command line say otherwise.
      if (p.enabled && !tl_dp) {
        tl_dp = true;
        if (train_local->count("--clip") == 0) tl_clip = p.clip_norm;
        if (train_local->count("--delta") == 0) tl_delta = p.delta;
        if (train_local->count("--unit") == 0) tl_unit = p.unit();
        if (train_local->count("--noise") == 0 && train_local->count("--epsilon") == 0) {
          tl_noise = p.noise_multiplier;
          tl_epsilon = p.target_epsilon;
        }
      }
    } else if (!tl_data.empty()) {
      o.spec.data_dir = tl_data;
      o.spec.labels_csv = tl_labels.empty() ? tl_data + "/labels.csv" : tl_labels;
      o.spec.preprocess.window_center = tl_center;
      o.spec.preprocess.window_width = tl_width;
    } else {
      std::cerr << "train-local needs --config node.toml, or --data DIR [--labels CSV]\n";
      return 2;
    }
    o.spec.num_classes = tl_classes;
    o.spec.preprocess.output_size = tl_size;
    if (!tl_test_data.empty()) {
      o.test = o.spec;
      o.test->data_dir = tl_test_data;
      o.test->labels_csv = tl_test_labels.empty() ? tl_test_data + "/labels.csv" : tl_test_labels;
    }
    o.model = {tl_arch, 1, tl_size, tl_classes};
    o.epochs = tl_epochs;
    o.batch = tl_batch;
    o.learning_rate = tl_lr;
    o.momentum = tl_momentum;
    o.threads = tl_threads;
    o.save_path = tl_save;
    if (tl_dp) {
      o.dp = fedrad::node::TrainLocalOptions::Dp{tl_clip, tl_noise, tl_epsilon, tl_delta, tl_unit == "patient"};
    }
    absl::Status s = fedrad::node::TrainLocal(o, std::cout);
    if (!s.ok()) return Fail(s, 1);
    return 0;
  }

  if (*inspect) {
    fedrad::node::DatasetSpec& spec = inspect_options.dataset;
    if (!inspect_config.empty()) {
      absl::StatusOr<fedrad::node::NodeConfig> config = fedrad::node::LoadNodeConfig(inspect_config);
      if (!config.ok()) return Fail(config.status(), 2);
      spec = fedrad::node::SiteDataset(*config);
      spec.on_loaded = fedrad::node::RecordWhenLoaded(*config, "inspect");
    } else if (!data_dir.empty()) {
      spec.data_dir = data_dir;
      spec.labels_csv = labels_csv.empty() ? data_dir + "/labels.csv" : labels_csv;
    } else {
      std::cerr << "inspect needs --config node.toml, or --data DIR [--labels CSV]\n";
      return 2;
    }
    spec.preprocess.output_size = size;
    spec.num_classes = classes > 0                 ? classes
                       : !spec.class_names.empty() ? static_cast<int>(spec.class_names.size())
                                                   : 1 << 20;
    absl::Status s = fedrad::node::Inspect(inspect_options, std::cout);
    if (!s.ok()) return Fail(s, 1);
    return 0;
  }

  absl::StatusOr<fedrad::node::NodeConfig> config = fedrad::node::LoadNodeConfig(config_path);
  if (!config.ok()) return Fail(config.status(), 2);
  if (*privacy) {
    absl::Status s = fedrad::node::PrintPrivacyReport(*config, privacy_all, std::cout);
    if (!s.ok()) return Fail(s, 1);
    return 0;
  }
  absl::StatusOr<std::unique_ptr<fedrad::node::NodeRuntime>> runtime = fedrad::node::NodeRuntime::Create(*config);
  if (!runtime.ok()) return Fail(runtime.status(), 1);
  if (*check) {
    absl::StatusOr<fedrad::node::JoinedPlan> plan = (*runtime)->Check();
    if (!plan.ok()) return Fail(plan.status(), 1);
    spdlog::info("ok: the coordinator at {} accepts this node as site '{}' of federation '{}' (model '{}')",
                 config->coordinator_address, plan->site, plan->federation, plan->model.architecture);
    return 0;
  }
  if (fedrad::kBenchFloor) {
    spdlog::warn(
        "this fedrad-node is a benchmark-floor build (FEDRAD_BENCH_FLOOR): it does not check the models it "
        "is sent. Never use it for a federation");
  }
  spdlog::info("site {}: connecting to {}", config->tls.common_name, config->coordinator_address);
  // SIGINT and SIGTERM reach a handler on whichever thread they land on
  // (LibTorch's and OpenBLAS's threads start before main, so blocking them
  // for sigwait is not possible); it wakes this watcher through a pipe.
  if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) return Fail(absl::InternalError("cannot create a pipe"), 1);
  struct sigaction action {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  std::thread signal_thread([&] {
    char sig = 0;
    if (::read(g_signal_pipe[0], &sig, 1) != 1 || sig == 0) return;  // 0: woken by main to exit
    spdlog::warn(
        "received signal {}; stopping: training stops at its next step (its charge stands), a trained "
        "update stays kept and is sent when the coordinator asks again after a restart. A second signal "
        "exits at once",
        static_cast<int>(sig));
    (*runtime)->RequestStop();
  });
  absl::Status s = (*runtime)->Run();
  const char wake = 0;
  if (::write(g_signal_pipe[1], &wake, 1) != 1) spdlog::warn("cannot wake the signal watcher");
  signal_thread.join();
  if (!s.ok()) return Fail(s, 1);
  return 0;
}
