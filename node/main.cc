// fedrad-node: a hospital's node in a fedrad federation. Each subcommand is
// a class of its own (node/commands.h, node/empirical_audit_command.h).
#include <CLI/CLI.hpp>
#include <memory>
#include <vector>

#include "common/logging.h"
#include "node/commands.h"
#include "node/empirical_audit_command.h"

int main(int argc, char** argv) {
  CLI::App app{
      "fedrad-node: trains the federation's model on this site's DICOM data; only DP-protected "
      "model updates and aggregate figures leave the site"};
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "More log output");
  std::vector<std::unique_ptr<fedrad::node::NodeCommand>> commands;
  commands.push_back(std::make_unique<fedrad::node::RunCommand>(&app));
  commands.push_back(std::make_unique<fedrad::node::CheckCommand>(&app));
  commands.push_back(std::make_unique<fedrad::node::PrivacyCommand>(&app));
  commands.push_back(std::make_unique<fedrad::node::InspectCommand>(&app));
  commands.push_back(std::make_unique<fedrad::node::TrainLocalCommand>(&app));
  commands.push_back(std::make_unique<fedrad::node::EvaluateCommand>(&app));
  commands.push_back(std::make_unique<fedrad::node::PredictCommand>(&app));
  CLI::App* audit = app.add_subcommand("audit", "Audits of this site's privacy that run here, on its own data");
  audit->require_subcommand(1);
  fedrad::node::EmpiricalAuditCommand audit_empirical(audit);

  CLI11_PARSE(app, argc, argv);
  fedrad::InitProgram("node", verbose);
  if (audit_empirical.chosen()) return audit_empirical.Run();
  for (const auto& command : commands) {
    if (command->chosen()) return command->Run();
  }
  return 2;  // CLI11 requires one subcommand: not reached
}
