#ifndef FEDRAD_NODE_COMMANDS_H_
#define FEDRAD_NODE_COMMANDS_H_

// fedrad-node's subcommands, one class each: its options bound to a CLI11
// subcommand, and its run (the exit status). node/main.cc only builds them
// and runs the one chosen; `audit empirical` is EmpiricalAuditCommand.

#include <string>

#include "node/inspect.h"
#include "node/predict.h"

namespace CLI {
class App;
}  // namespace CLI

namespace fedrad::node {

class NodeCommand {
 public:
  virtual ~NodeCommand() = default;
  bool chosen() const;
  // 0 done; 1 it failed; 2 the command line or the config is wrong.
  virtual int Run() = 0;

 protected:
  CLI::App* command_ = nullptr;
};

// `fedrad-node run`: joins the federation and serves its rounds until it
// finishes; SIGTERM/SIGINT stop it cleanly (a second signal at once).
class RunCommand final : public NodeCommand {
 public:
  explicit RunCommand(CLI::App* app);
  int Run() override;

 private:
  std::string config_ = "node.toml";
  std::string ledger_lost_;
};

// `fedrad-node check`: the config, then one Hello.
class CheckCommand final : public NodeCommand {
 public:
  explicit CheckCommand(CLI::App* app);
  int Run() override;

 private:
  std::string config_ = "node.toml";
};

// `fedrad-node privacy`: the privacy officer's view of the site's ledger.
class PrivacyCommand final : public NodeCommand {
 public:
  explicit PrivacyCommand(CLI::App* app);
  int Run() override;

 private:
  std::string config_ = "node.toml";
  bool all_ = false;
};

// `fedrad-node inspect`: what the node would train on, counted.
class InspectCommand final : public NodeCommand {
 public:
  explicit InspectCommand(CLI::App* app);
  int Run() override;

 private:
  std::string task_ = "classification";
  fedrad::node::InspectOptions inspect_options_;
  std::string inspect_config_, data_dir_, labels_csv_;
  int size_ = 64, classes_ = 0;
};

// `fedrad-node train-local`: the central baseline, the node's trainer and DP-SGD without a coordinator.
class TrainLocalCommand final : public NodeCommand {
 public:
  explicit TrainLocalCommand(CLI::App* app);
  int Run() override;

 private:
  std::string tl_data_, tl_labels_, tl_test_data_, tl_test_labels_, tl_arch_ = "ctnet", tl_unit_ = "patient", tl_save_;
  int tl_depth_ = 3, tl_base_width_ = 0;  // 0: the architecture's default
  int tl_size_ = 64, tl_classes_ = 2, tl_epochs_ = 5, tl_batch_ = 64, tl_threads_ = 0;
  std::string tl_normalize_ = "none";
  double tl_lr_ = 0.05, tl_momentum_ = 0.9, tl_center_ = 40, tl_width_ = 400, tl_clip_ = 1.0, tl_noise_ = -1,
         tl_epsilon_ = -1, tl_delta_ = 1e-5;
  bool tl_dp_ = false;
  std::string tl_config_, tl_plan_;
};

// `fedrad-node evaluate`: a saved model's figures on labelled local data.
class EvaluateCommand final : public NodeCommand {
 public:
  explicit EvaluateCommand(CLI::App* app);
  int Run() override;

 private:
  std::string ev_model_, ev_data_, ev_labels_, ev_config_;
  int ev_size_ = 64, ev_classes_ = 2, ev_bootstrap_ = 1000;
  bool ev_json_ = false;
  double ev_center_ = 40, ev_width_ = 400;
};

// `fedrad-node predict`: a model run on local studies for clinicians (no network).
class PredictCommand final : public NodeCommand {
 public:
  explicit PredictCommand(CLI::App* app);
  int Run() override;

 private:
  fedrad::node::PredictOptions pr_;
  std::string pr_config_ = "node.toml";
};

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_COMMANDS_H_
