#include "node/commands.h"

#include "common/model_zoo.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/bench_floor.h"
#include "common/multilabel_metrics.h"
#include "common/plan.h"
#include "node/local_access.h"
#include "node/node_config.h"
#include "node/node_runtime.h"
#include "node/privacy_report.h"
#include "node/train_local.h"
#include "node/trainer.h"

namespace fedrad::node {
namespace {

// The node's stop signals: the first is written to the pipe for the
// watcher in RunCommand; a second ends the process at once.
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

bool NodeCommand::chosen() const { return command_->parsed(); }

RunCommand::RunCommand(CLI::App* app) {
  command_ = app->add_subcommand("run", "Join the federation and serve its rounds until it finishes");
  command_->add_option("-c,--config", config_, "Node config (TOML)")->capture_default_str();
  command_->add_option("--ledger-lost", ledger_lost_,
                       "Only when node.db (the privacy ledger) is gone for good: what happened. A new ledger starts "
                       "and records this for the audit; the privacy spent before is not in it");
}

int RunCommand::Run() {
  absl::StatusOr<NodeConfig> config = LoadNodeConfig(config_);
  if (!config.ok()) return Fail(config.status(), 2);
  config->ledger_lost = ledger_lost_;
  absl::StatusOr<std::unique_ptr<NodeRuntime>> runtime = NodeRuntime::Create(*config);
  if (!runtime.ok()) return Fail(runtime.status(), 1);
  if (kBenchFloor) {
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
    if (::read(g_signal_pipe[0], &sig, 1) != 1 || sig == 0) return;  // 0: woken to exit
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

CheckCommand::CheckCommand(CLI::App* app) {
  command_ = app->add_subcommand(
      "check", "Check the config, then connect once: is the coordinator reachable and does it accept this site?");
  command_->add_option("-c,--config", config_, "Node config (TOML)")->capture_default_str();
}

int CheckCommand::Run() {
  absl::StatusOr<NodeConfig> config = LoadNodeConfig(config_);
  if (!config.ok()) return Fail(config.status(), 2);
  absl::StatusOr<std::unique_ptr<NodeRuntime>> runtime = NodeRuntime::Create(*config);
  if (!runtime.ok()) return Fail(runtime.status(), 1);
  absl::StatusOr<JoinedPlan> plan = (*runtime)->Check();
  if (!plan.ok()) return Fail(plan.status(), 1);
  spdlog::info("ok: the coordinator at {} accepts this node as site '{}' of federation '{}' (model '{}')",
               config->coordinator_address, plan->site, plan->federation, plan->model.architecture);
  return 0;
}

PrivacyCommand::PrivacyCommand(CLI::App* app) {
  command_ = app->add_subcommand(
      "privacy",
      "The privacy officer's view of this site's ledger (state_dir/node.db): epsilon spent, epsilon "
      "left, rounds left at the current settings, and every charge. Reads no images.");
  command_->add_option("-c,--config", config_, "Node config (TOML)")->capture_default_str();
  command_->add_flag("--charges", all_, "Also list every charge in the ledger");
}

int PrivacyCommand::Run() {
  absl::StatusOr<NodeConfig> config = LoadNodeConfig(config_);
  if (!config.ok()) return Fail(config.status(), 2);
  absl::Status s = PrintPrivacyReport(*config, all_, std::cout);
  if (!s.ok()) return Fail(s, 1);
  return 0;
}

InspectCommand::InspectCommand(CLI::App* app) {
  command_ = app->add_subcommand(
      "inspect",
      "Report what the node would train on: files by modality, transfer syntax, size and photometric "
      "interpretation; patients, images per patient, label balance; every unusable file counted by reason. "
      "Counts only: no identifiers are printed. Nothing is sent anywhere.");
  command_->add_option("-c,--config", inspect_config_, "Node config (TOML): its [data] and [preprocess]");
  command_->add_option("--data", data_dir_, "DICOM folder (instead of --config)");
  command_->add_option("--labels", labels_csv_, "labels.csv (instead of --config; default DATA/labels.csv)");
  command_->add_option("--size", size_, "Model input size (rows = columns) for the pipeline")
      ->capture_default_str()
      ->check(CLI::Range(16, 1024));
  command_->add_option("--classes", classes_, "Number of classes (default: any integer label)");
  command_
      ->add_option("--task", task_,
                   "classification (labels.csv), segmentation (masks from the folder's DICOM SEG and RT "
                   "Structure Set objects) or multilabel (labels.csv with several findings per image; the labels "
                   "are [data] class_names, or the header's columns)")
      ->capture_default_str()
      ->check(CLI::IsMember({"classification", "segmentation", "multilabel"}));
  command_->add_option("--preview", inspect_options_.preview_dir,
                       "Write a PNG of exactly what the model sees for each image/frame into this folder");
  command_->add_option("--export-raw", inspect_options_.export_raw_dir,
                       "Write each frame's modality values (after rescale, before windowing) as float32 .npy");
  command_->add_flag("--list-skipped", inspect_options_.list_skipped,
                     "Also print the relative path of every unusable file (paths may contain identifiers)");
}

int InspectCommand::Run() {
  fedrad::node::DatasetSpec& spec = inspect_options_.dataset;
  if (!inspect_config_.empty()) {
    absl::StatusOr<fedrad::node::NodeConfig> config = fedrad::node::LoadNodeConfig(inspect_config_);
    if (!config.ok()) return Fail(config.status(), 2);
    spec = fedrad::node::SiteDataset(*config);
    spec.on_loaded = fedrad::node::RecordWhenLoaded(*config, "inspect");
  } else if (!data_dir_.empty()) {
    spec.data_dir = data_dir_;
    spec.labels_csv = labels_csv_.empty() ? data_dir_ + "/labels.csv" : labels_csv_;
  } else {
    std::cerr << "inspect needs --config node.toml, or --data DIR [--labels CSV]\n";
    return 2;
  }
  spec.preprocess.output_size = size_;
  if (task_ == "multilabel") {
    spec.task = fedrad::ModelTask::kMultilabel;
    if (spec.class_names.empty()) {
      absl::StatusOr<std::vector<std::string>> names = fedrad::node::LabelColumnNames(spec.labels_csv);
      if (!names.ok()) return Fail(names.status(), 2);
      spec.class_names = std::move(*names);
    }
  }
  spec.num_classes = classes_ > 0                ? classes_
                     : !spec.class_names.empty() ? static_cast<int>(spec.class_names.size())
                                                 : 1 << 20;
  if (task_ == "segmentation") inspect_options_.dataset.task = fedrad::ModelTask::kSegmentation;
  absl::Status s = fedrad::node::Inspect(inspect_options_, std::cout);
  if (!s.ok()) return Fail(s, 1);
  return 0;
}

TrainLocalCommand::TrainLocalCommand(CLI::App* app) {
  // train-local: the central baseline, the same trainer and DP without a coordinator.
  command_ =
      app->add_subcommand("train-local",
                          "Train on this site's data alone (the central baseline): the node's trainer and DP-SGD, no "
                          "coordinator, nothing sent anywhere");
  command_->add_option("-c,--config", tl_config_,
                       "Node config (TOML): its [data], [preprocess] and [privacy] (DP on unless disabled there; "
                       "the ledger is not charged: nothing leaves the site)");
  command_->add_option("--data", tl_data_, "DICOM folder (instead of --config)");
  command_->add_option("--labels", tl_labels_, "labels.csv (default DATA/labels.csv)");
  command_->add_option("--plan", tl_plan_,
                       "Federation plan (TOML): train its [model] (from its init weights, if any) with its [training] "
                       "batch, learning rate and momentum for rounds x local_epochs epochs, the central baseline of "
                       "that federation "
                       "(--epochs may differ; the other model and training flags must agree with it)");
  command_->add_option("--test-data", tl_test_data_, "Held-out DICOM folder (default: a patient split of --data)");
  command_->add_option("--test-labels", tl_test_labels_, "Its labels.csv (default TEST_DATA/labels.csv)");
  command_
      ->add_option("--model", tl_arch_,
                   "Model zoo architecture: ctnet, tbcnn28, resnet18 or resnet34 classify images; unet2d segments "
                   "them (its labels are the DICOM SEG objects in the data folder)")
      ->capture_default_str();
  command_->add_option("--depth", tl_depth_, "unet2d: levels down (the input size must be a multiple of 2^depth)")
      ->capture_default_str()
      ->check(CLI::Range(1, fedrad::kMaxUnetDepth));
  command_
      ->add_option("--width", tl_base_width_,
                   "unet2d: channels of the first level (doubled per level; default 16); resnet18/34: of the stem "
                   "and first stage (default 64)")
      ->check(CLI::Range(4, std::max(fedrad::kMaxUnetBaseWidth, fedrad::kMaxResNetWidth)));
  command_->add_option("--size", tl_size_, "Input size")->capture_default_str()->check(CLI::Range(16, 1024));
  command_->add_option("--classes", tl_classes_, "Number of classes")
      ->capture_default_str()
      ->check(CLI::Range(2, 100000));
  command_->add_option("--epochs", tl_epochs_, "Epochs (under DP: steps = epochs / sampling rate)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  command_->add_option("--batch", tl_batch_, "Batch size (under DP: the expected batch)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  command_->add_option("--lr", tl_lr_, "Learning rate")->capture_default_str()->check(CLI::Range(1e-8, 100.0));
  command_->add_option("--momentum", tl_momentum_, "SGD momentum")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.999));
  command_->add_option("--window-center", tl_center_, "Window center")->capture_default_str();
  command_->add_option("--window-width", tl_width_, "Window width")->capture_default_str()->check(CLI::PositiveNumber);
  command_
      ->add_option("--normalize", tl_normalize_,
                   "Without --config: none (keep [0, 1]) or zscore (each image mean 0, std 1), as node.toml's "
                   "[preprocess] normalize")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "zscore"}));
  command_->add_flag("--dp", tl_dp_, "Train with DP-SGD");
  command_->add_option("--clip", tl_clip_, "DP: clipping norm C")->capture_default_str()->check(CLI::PositiveNumber);
  command_->add_option("--noise", tl_noise_, "DP: noise multiplier sigma (or give --epsilon)")
      ->check(CLI::NonNegativeNumber);
  command_->add_option("--epsilon", tl_epsilon_, "DP: target epsilon; sigma is the smallest that meets it")
      ->check(CLI::PositiveNumber);
  command_->add_option("--delta", tl_delta_, "DP: delta")->capture_default_str()->check(CLI::Range(1e-300, 0.999));
  command_->add_option("--unit", tl_unit_, "DP: privacy unit, patient or image")
      ->capture_default_str()
      ->check(CLI::IsMember({"patient", "image"}));
  command_->add_option("--threads", tl_threads_, "LibTorch threads (0: all cores)")->check(CLI::Range(0, 1024));
  command_->add_option("--save", tl_save_, "Write the trained model here (.safetensors)");
}

int TrainLocalCommand::Run() {
  fedrad::node::TrainLocalOptions o;
  if (!tl_config_.empty()) {
    if (command_->count("--normalize") > 0) {
      std::cerr << "--normalize applies only without --config: " << tl_config_ << "'s [preprocess] normalize says it\n";
      return 2;
    }
    absl::StatusOr<fedrad::node::NodeConfig> config = fedrad::node::LoadNodeConfig(tl_config_);
    if (!config.ok()) return Fail(config.status(), 2);
    o.spec = fedrad::node::SiteDataset(*config);
    o.spec.on_loaded = fedrad::node::RecordWhenLoaded(*config, "train-local");
    if (!config->class_names.empty() && command_->count("--classes") == 0) {
      tl_classes_ = static_cast<int>(config->class_names.size());
    }
    o.validation_fraction = config->validation_fraction;
    o.split_seed = config->split_seed;
    if (tl_threads_ == 0) tl_threads_ = config->threads;
    const fedrad::node::PrivacySettings& p = config->privacy;
    // The site's [privacy], unless flags on the command line say otherwise.
    if (p.enabled && !tl_dp_) {
      tl_dp_ = true;
      if (command_->count("--clip") == 0) tl_clip_ = p.clip_norm;
      if (command_->count("--delta") == 0) tl_delta_ = p.delta;
      if (command_->count("--unit") == 0) tl_unit_ = p.unit();
      if (command_->count("--noise") == 0 && command_->count("--epsilon") == 0) {
        tl_noise_ = p.noise_multiplier;
        tl_epsilon_ = p.target_epsilon;
      }
    }
  } else if (!tl_data_.empty()) {
    o.spec.data_dir = tl_data_;
    o.spec.labels_csv = tl_labels_.empty() ? tl_data_ + "/labels.csv" : tl_labels_;
    o.spec.preprocess.window_center = tl_center_;
    o.spec.preprocess.window_width = tl_width_;
    o.spec.preprocess.normalize = tl_normalize_;
  } else {
    std::cerr << "train-local needs --config node.toml, or --data DIR [--labels CSV]\n";
    return 2;
  }
  std::optional<fedrad::FederationPlan> plan;
  if (!tl_plan_.empty()) {
    // The strategy is the coordinator's business, not checked here.
    absl::StatusOr<fedrad::FederationPlan> loaded =
        fedrad::LoadPlan(tl_plan_, [](const fedrad::FederationPlan&, const fedrad::PlanFailure&) {});
    if (!loaded.ok()) return Fail(loaded.status(), 2);
    plan = std::move(*loaded);
    // A flag given as well must say what the plan says: a baseline of
    // another model or step would not be the federation's.
    std::string conflict;
    auto agree = [&](const char* flag, const std::string& given, const std::string& planned, const char* key) {
      if (conflict.empty() && command_->count(flag) > 0 && given != planned) {
        conflict = absl::StrCat(flag, " ", given, " disagrees with the plan's ", key, " ", planned, " (", tl_plan_,
                                "): drop the flag or change the plan");
      }
    };
    const fedrad::ModelSpec& m = plan->model;
    agree("--model", tl_arch_, m.architecture, "[model] architecture");
    agree("--size", std::to_string(tl_size_), std::to_string(m.input_size), "[model] input_size");
    agree("--classes", std::to_string(tl_classes_), std::to_string(m.num_classes), "[model] num_classes");
    agree("--depth", std::to_string(tl_depth_), std::to_string(m.depth), "[model] depth");
    agree("--width", std::to_string(tl_base_width_), std::to_string(m.base_width), "[model] base_width");
    agree("--batch", std::to_string(tl_batch_), std::to_string(plan->training.batch_size), "[training] batch_size");
    agree("--lr", absl::StrCat(tl_lr_), absl::StrCat(plan->training.learning_rate), "[training] learning_rate");
    agree("--momentum", absl::StrCat(tl_momentum_), absl::StrCat(plan->training.momentum), "[training] momentum");
    if (!conflict.empty()) {
      std::cerr << "error: " << conflict << "\n";
      return 2;
    }
    tl_arch_ = m.architecture;
    tl_size_ = m.input_size;
    tl_classes_ = m.num_classes;
    tl_batch_ = plan->training.batch_size;
    tl_lr_ = plan->training.learning_rate;
    tl_momentum_ = plan->training.momentum;
    if (command_->count("--epochs") == 0) tl_epochs_ = plan->rounds * plan->training.local_epochs;
    if (!m.class_names.empty()) o.spec.class_names = m.class_names;
  }
  o.spec.num_classes = tl_classes_;
  o.spec.preprocess.output_size = tl_size_;
  if (!tl_test_data_.empty()) {
    o.test = o.spec;
    o.test->data_dir = tl_test_data_;
    o.test->labels_csv = tl_test_labels_.empty() ? tl_test_data_ + "/labels.csv" : tl_test_labels_;
  }
  o.model = {tl_arch_, 1, tl_size_, tl_classes_};
  if (tl_arch_ == "unet2d") {
    o.model.task = fedrad::ModelTask::kSegmentation;
    o.model.depth = tl_depth_;
    o.model.base_width = tl_base_width_ > 0 ? tl_base_width_ : 16;
  } else if (fedrad::IsResNet(tl_arch_)) {
    o.model.base_width = tl_base_width_ > 0 ? tl_base_width_ : 64;
  }
  o.model.class_names = o.spec.class_names;
  if (plan) {
    o.init_path = plan->model_init;  // the federation's starting weights, if it has them
    o.model = plan->model;           // in_channels, depth, base_width and task as well
    if (o.model.class_names.empty()) o.model.class_names = o.spec.class_names;
  }
  o.spec.task = o.model.task;
  if (o.test) o.test->task = o.model.task;
  if (absl::Status s = fedrad::CheckModelSpec(o.model); !s.ok()) return Fail(s, 2);
  o.epochs = tl_epochs_;
  o.batch = tl_batch_;
  o.learning_rate = tl_lr_;
  o.momentum = tl_momentum_;
  o.threads = tl_threads_;
  o.save_path = tl_save_;
  if (tl_dp_) {
    o.dp = fedrad::node::TrainLocalOptions::Dp{tl_clip_, tl_noise_, tl_epsilon_, tl_delta_, tl_unit_ == "patient"};
  }
  absl::Status s = fedrad::node::TrainLocal(o, std::cout);
  if (!s.ok()) return Fail(s, 1);
  return 0;
}

EvaluateCommand::EvaluateCommand(CLI::App* app) {
  command_ = app->add_subcommand(
      "evaluate",
      "How well a saved model (.safetensors) does on a labelled DICOM folder: accuracy, balanced "
      "accuracy, per-class precision/recall/F1, sensitivity/specificity, ROC AUC, calibration, with "
      "bootstrap 95% intervals (a multilabel model: each label's sensitivity, specificity, F1 and AUC, "
      "and their macro and micro averages); local only");
  command_->add_option("--model", ev_model_, "Model file (.safetensors with an 'architecture' entry)")->required();
  command_->add_option("-c,--config", ev_config_,
                       "Node config (TOML): evaluate on the site's validation split (its [data], [preprocess] "
                       "and split), or on --data with the site's preprocessing");
  command_->add_option("--data", ev_data_, "Labelled DICOM folder (all of it)");
  command_->add_option("--labels", ev_labels_, "labels.csv (default DATA/labels.csv)");
  command_->add_option("--size", ev_size_, "Input size, if the model file does not name it")
      ->capture_default_str()
      ->check(CLI::Range(16, 1024));
  command_->add_option("--classes", ev_classes_, "Number of classes, if the model file does not name them")
      ->capture_default_str()
      ->check(CLI::Range(2, 100000));
  command_->add_option("--window-center", ev_center_, "Window center (without --config)")->capture_default_str();
  command_->add_option("--window-width", ev_width_, "Window width (without --config)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  command_->add_option("--bootstrap", ev_bootstrap_, "Bootstrap resamples for the 95% intervals")
      ->capture_default_str()
      ->check(CLI::Range(2, 100000));
  command_->add_flag("--json", ev_json_, "Print the figures as JSON");
}

int EvaluateCommand::Run() {
  fedrad::node::EvaluateOptions eo;
  if (!ev_config_.empty()) {
    absl::StatusOr<fedrad::node::NodeConfig> config = fedrad::node::LoadNodeConfig(ev_config_);
    if (!config.ok()) return Fail(config.status(), 2);
    eo.spec = fedrad::node::SiteDataset(*config);
    eo.spec.on_loaded = fedrad::node::RecordWhenLoaded(*config, "evaluate (local)");
    if (ev_data_.empty()) {
      eo.validation_fraction = config->validation_fraction;
      eo.split_seed = config->split_seed;
    }
  } else if (ev_data_.empty()) {
    std::cerr << "evaluate needs --config node.toml, or --data DIR [--labels CSV]\n";
    return 2;
  }
  if (!ev_data_.empty()) {
    eo.spec.data_dir = ev_data_;
    eo.spec.labels_csv = ev_labels_.empty() ? ev_data_ + "/labels.csv" : ev_labels_;
  }
  if (ev_config_.empty()) {
    eo.spec.preprocess.window_center = ev_center_;
    eo.spec.preprocess.window_width = ev_width_;
  } else if (command_->count("--window-center") || command_->count("--window-width")) {
    std::cerr << "--window-center/--window-width apply only without --config: " << ev_config_
              << "'s [preprocess] is the site's pipeline\n";
    return 2;
  }
  // The model file names its shape; flags only where it does not (or to check it).
  eo.spec.preprocess.output_size = command_->count("--size") ? ev_size_ : 0;
  eo.spec.num_classes = command_->count("--classes") ? ev_classes_ : 0;
  eo.default_size = ev_size_;
  eo.default_classes = ev_classes_;
  absl::StatusOr<fedrad::node::Evaluation> e = fedrad::node::EvaluateModelFile(ev_model_, eo);
  if (!e.ok()) return Fail(e.status(), 1);
  if (!e->mask_metrics.empty()) {
    absl::StatusOr<fedrad::SegmentationSummary> summary =
        fedrad::SummarizeSegmentation(e->mask_metrics, e->patients, ev_bootstrap_);
    if (!summary.ok()) return Fail(summary.status(), 1);
    if (ev_json_) {
      std::cout << fedrad::SegmentationSummaryJson(*summary) << "\n";
    } else {
      std::cout << ev_model_ << " on " << e->count << " images, loss " << e->loss << ", pixel accuracy " << e->accuracy
                << "\n\n"
                << fedrad::FormatSegmentationSummary(*summary);
    }
    return 0;
  }
  absl::StatusOr<std::map<std::string, fedrad::Interval>> ci = fedrad::BootstrapIntervals(e->scores, ev_bootstrap_);
  if (!ci.ok()) return Fail(ci.status(), 1);
  if (e->scores.multilabel()) {
    absl::StatusOr<fedrad::MultilabelMetrics> labels = fedrad::ComputeMultilabelMetrics(e->scores);
    if (!labels.ok()) return Fail(labels.status(), 1);
    if (ev_json_) {
      std::cout << fedrad::MultilabelMetricsJson(*labels, *ci, e->class_names) << "\n";
    } else {
      std::cout << ev_model_ << " on " << e->count << " images, loss " << e->loss << "\n\n"
                << fedrad::FormatMultilabelMetrics(*labels, *ci, e->class_names);
    }
    return 0;
  }
  absl::StatusOr<fedrad::Metrics> metrics = fedrad::ComputeMetrics(e->scores);
  if (!metrics.ok()) return Fail(metrics.status(), 1);
  if (ev_json_) {
    std::cout << fedrad::MetricsJson(*metrics, *ci) << "\n";
  } else {
    std::cout << ev_model_ << " on " << e->count << " images, loss " << e->loss << "\n\n"
              << fedrad::FormatMetrics(*metrics, *ci);
  }
  return 0;
}

PredictCommand::PredictCommand(CLI::App* app) {
  pr_.model_path = "latest";
  command_ = app->add_subcommand(
      "predict",
      "Run a model on this site's studies for its clinicians: one CSV row per image/frame with the predicted "
      "class and every class probability, and optionally a Grad-CAM heatmap of where the model looked (PNG, and DICOM "
      "Secondary Capture for the site's viewer). Local only: opens no network connection.");
  command_->add_option("-c,--config", pr_config_, "Node config (TOML): its [preprocess] and class names")
      ->capture_default_str();
  command_
      ->add_option("--model", pr_.model_path,
                   "Model file (.safetensors), or 'latest': the newest global model this node received")
      ->capture_default_str();
  command_->add_option("--input", pr_.input, "A DICOM file, or a folder (searched recursively)")->required();
  command_->add_option("--out", pr_.out_csv, "Predictions CSV to write")->required();
  command_->add_option("--heatmaps", pr_.heatmap_dir,
                       "Write a Grad-CAM overlay PNG per image/frame into this folder (a segmentation model: the "
                       "predicted outline over the image)");
  command_->add_flag("--dicom-overlays", pr_.dicom_overlays,
                     "With --heatmaps: also write each overlay as a DICOM Secondary Capture (RLE lossless) in the "
                     "source's study; for a segmentation model, one DICOM SEG object per series");
  command_->add_flag("--heatmap-negatives", pr_.heatmap_negatives,
                     "Also draw heatmaps of images predicted as class 0 (by default they get none: a Grad-CAM of "
                     "'nothing there' points anywhere)");
  command_->add_option("--batch", pr_.batch, "Images per forward pass")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
}

int PredictCommand::Run() {
  if (pr_.dicom_overlays && pr_.heatmap_dir.empty()) {
    std::cerr << "--dicom-overlays needs --heatmaps DIR\n";
    return 2;
  }
  // Never the coordinator's address or the TLS keys: predict is local only.
  absl::StatusOr<fedrad::node::NodeConfig> config =
      fedrad::node::LoadNodeConfig(pr_config_, fedrad::node::NodeConfigUse::kLocal);
  if (!config.ok()) return Fail(config.status(), 2);
  if (pr_.model_path == "latest") {
    absl::StatusOr<std::string> latest = fedrad::node::LatestModel(*config);
    if (!latest.ok()) return Fail(latest.status(), 1);
    pr_.model_path = *latest;
  }
  pr_.preprocess = config->preprocess;
  pr_.class_names = config->class_names;
  pr_.loader_threads = config->loader_threads;
  fedrad::node::SetTorchThreads(config->threads);
  absl::StatusOr<fedrad::node::PredictReport> r = fedrad::node::Predict(pr_);
  if (!r.ok()) return Fail(r.status(), 1);
  std::cout << r->images << " image(s) from " << r->files << " file(s) -> " << pr_.out_csv << "\n";
  for (const auto& [reason, n] : r->skipped) std::cout << "  skipped " << n << " file(s): " << reason << "\n";
  if (!pr_.heatmap_dir.empty()) {
    std::cout << r->heatmaps << " heatmap(s) in " << pr_.heatmap_dir
              << (pr_.dicom_overlays ? " (PNG and DICOM)" : " (PNG)") << "\n";
  }
  std::cout << "model " << pr_.model_path << " (sha256 " << r->model_sha256.substr(0, 12) << ")\n";
  // On the site's audit ledger, signed with its kit key (read from disk:
  // still no connection). A broken kit does not stop a clinician's run.
  absl::StatusOr<fedrad::node::NodeConfig> kit = fedrad::node::LoadNodeConfig(pr_config_);
  absl::Status recorded = kit.ok() ? fedrad::node::RecordLocalDataAccess(*kit, "predict", r->images, r->patients,
                                                                         r->sop_instance_uids_sha256)
                                   : kit.status();
  if (!recorded.ok()) {
    std::cerr << "warning: this run is not in the site's audit ledger: " << recorded.message() << "\n";
  }
  return 0;
}

}  // namespace fedrad::node
