// `fedrad`: tooling around a federation — provisioning, synthetic data,
// privacy planning and audits. Each subcommand is a class of its own
// (tools/commands.h).
#include <CLI/CLI.hpp>
#include <memory>
#include <vector>

#include "common/logging.h"
#include "tools/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"fedrad: tools for a fedrad federation (provisioning, synthetic data, privacy audits)"};
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "More log output");
  std::vector<std::unique_ptr<fedrad::tools::ToolCommand>> commands;
  commands.push_back(std::make_unique<fedrad::tools::ProvisionCommand>(&app));
  commands.push_back(std::make_unique<fedrad::tools::AddSiteCommand>(&app));
  commands.push_back(std::make_unique<fedrad::tools::SynthCommand>(&app));
  commands.push_back(std::make_unique<fedrad::tools::ImportCommand>(&app));
  commands.push_back(std::make_unique<fedrad::tools::PartitionCommand>(&app));
  commands.push_back(std::make_unique<fedrad::tools::DpCommand>(&app));
  commands.push_back(std::make_unique<fedrad::tools::AuditCommand>(&app));

  CLI11_PARSE(app, argc, argv);
  fedrad::InitProgram("fedrad", verbose);
  for (const auto& command : commands) {
    if (command->chosen()) return command->Run();
  }
  return 2;  // CLI11 requires one subcommand: not reached
}
