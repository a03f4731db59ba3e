#ifndef FEDRAD_NODE_EMPIRICAL_AUDIT_COMMAND_H_
#define FEDRAD_NODE_EMPIRICAL_AUDIT_COMMAND_H_

#include <string>
#include <vector>

#include "node/empirical_audit.h"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace fedrad::node {

// `fedrad-node audit empirical`: its options, bound to a subcommand of
// `audit`, and its run. It trains on the site's data (LibTorch), so it is the
// node's command, not the `fedrad` tool's.
class EmpiricalAuditCommand {
 public:
  explicit EmpiricalAuditCommand(CLI::App* audit);
  bool chosen() const;
  // The exit status: 0 pass, 1 the guarantee does not hold, 3 inconclusive,
  // 2 the audit could not run.
  int Run();

 private:
  CLI::App* command_ = nullptr;
  std::string config_ = "node.toml";
  std::string json_;
  EmpiricalAuditOptions options_;
  std::vector<CLI::Option*> model_flags_, schedule_flags_;
};

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_EMPIRICAL_AUDIT_COMMAND_H_
