#include "node/empirical_audit_command.h"

#include <CLI/CLI.hpp>

#include <iostream>

#include "common/files.h"
#include "node/node_config.h"

namespace fedrad::node {

EmpiricalAuditCommand::EmpiricalAuditCommand(CLI::App* audit) {
  options_.model.architecture = "ctnet";
  options_.model.in_channels = 1;
  options_.model.input_size = 64;
  options_.model.num_classes = 0;
  command_ = audit->add_subcommand(
      "empirical",
      "Test the site's DP-SGD experimentally: train once on its data as the site ran it (each DP-SGD round of its "
      "privacy ledger: sigma, q, steps; its newest global model's network) plus gradient canaries (each in with "
      "probability 1/2, clipped like every unit), and compute a lower bound on epsilon from the canaries' scores "
      "(Steinke, Nasr, Jagielski 2023). Reads the data; sends nothing. Exit status 0 = epsilon_lower within the "
      "accountant's epsilon and the test could have refuted it, 1 = the guarantee does not hold, 3 = inconclusive (the "
      "claim is beyond what the canaries can refute)");
  command_->add_option("-c,--config", config_, "The site's node.toml")->capture_default_str()->check(CLI::ExistingFile);
  // The network and the schedule default to what the site ran; any of these
  // flags replaces that part with the flags.
  model_flags_ = {command_
                      ->add_option("--model", options_.model.architecture,
                                   "Architecture (default: the node's newest global model's, else ctnet)")
                      ->capture_default_str(),
                  command_->add_option("--size", options_.model.input_size, "Model input size (default: as --model)")
                      ->capture_default_str()
                      ->check(CLI::Range(8, 1024)),
                  command_->add_option("--classes", options_.model.num_classes,
                                       "Classes (default: as --model, else node.toml's class_names, else 2)")};
  schedule_flags_ = {
      command_
          ->add_option("--batch", options_.batch_size,
                       "Expected batch (default: the ledger's rounds; this and --epochs/--rounds audit a schedule "
                       "of your own instead)")
          ->capture_default_str()
          ->check(CLI::Range(1, 65536)),
      command_->add_option("--epochs", options_.local_epochs, "Local epochs per round")
          ->capture_default_str()
          ->check(CLI::PositiveNumber),
      command_->add_option("--rounds", options_.rounds, "Rounds of training the run stands for")
          ->capture_default_str()
          ->check(CLI::Range(1, 10000))};
  command_->add_option("--lr", options_.learning_rate, "Learning rate")->capture_default_str();
  command_->add_option("--canaries", options_.canaries, "Number of canaries m")
      ->capture_default_str()
      ->check(CLI::Range(2, 1000000));
  command_
      ->add_option("--canary-norm", options_.canary_norm,
                   "Each canary's gradient norm before clipping, in multiples of C (above 1 the clipping "
                   "is tested too; 1: Dirac canaries at the bound)")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1e6));
  command_
      ->add_option("--significance", options_.significance,
                   "1 - confidence of epsilon_lower (Bonferroni-corrected over thresholds)")
      ->capture_default_str()
      ->check(CLI::Range(1e-6, 0.49));
  command_->add_flag("--without-noise", options_.without_noise,
                     "Train with sigma = 0 while claiming the configured epsilon: shows what a broken "
                     "guarantee looks like");
  command_->add_flag("--without-clipping", options_.without_clipping,
                     "Train without clipping (noise still sigma C) while claiming the same epsilon: shows "
                     "that the canaries catch a broken clipping");
  command_->add_option("--json", json_, "Also write the result as JSON here");
}

bool EmpiricalAuditCommand::chosen() const { return command_->parsed(); }

int EmpiricalAuditCommand::Run() {
  absl::StatusOr<NodeConfig> config = LoadNodeConfig(config_, NodeConfigUse::kLocal);
  if (!config.ok()) {
    std::cerr << config.status().message() << "\n";
    return 2;
  }
  for (CLI::Option* o : model_flags_) options_.model_from_flags |= o->count() > 0;
  for (CLI::Option* o : schedule_flags_) options_.schedule_from_flags |= o->count() > 0;
  absl::StatusOr<EmpiricalAuditResult> r = RunEmpiricalAudit(*config, options_);
  if (!r.ok()) {
    std::cerr << r.status().message() << "\n";
    return 2;
  }
  std::cout << FormatEmpiricalAudit(*r);
  if (!json_.empty()) {
    absl::Status s = WriteFileAtomically(json_, EmpiricalAuditJson(*r));
    if (!s.ok()) {
      std::cerr << s.message() << "\n";
      return 2;
    }
  }
  switch (r->verdict()) {
    case EmpiricalAuditResult::Verdict::kPass:
      return 0;
    case EmpiricalAuditResult::Verdict::kFail:
      return 1;
    case EmpiricalAuditResult::Verdict::kInconclusive:
      return 3;
  }
  return 3;
}

}  // namespace fedrad::node
