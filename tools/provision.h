#ifndef FEDRAD_TOOLS_PROVISION_H_
#define FEDRAD_TOOLS_PROVISION_H_

#include <string>

#include "absl/status/status.h"

namespace fedrad::tools {

struct ProvisionOptions {
  std::string plan_path;
  std::string out_dir;
  // The CA's folder (ca.key, ca.pem): never inside out_dir, whose kits are
  // handed out. Empty: DefaultCaDir(out_dir).
  std::string ca_dir;
  // Folder holding one data folder per site (<data_root>/<site>/ with
  // labels.csv); written into each node.toml. Empty: a placeholder path.
  std::string data_root;
  int validity_days = 825;
  bool force = false;  // overwrite an existing kits folder
};

// Creates the federation CA, the coordinator's kit and one kit per site:
//   <ca_dir>/{ca.pem, ca.key}           kept by the consortium, offline
//   <out>/coordinator/{ca.pem, coordinator.pem, coordinator.key, federation.toml, coordinator.toml}
//   <out>/<site>/{ca.pem, site.pem, site.key, node.toml}
// Private keys are written mode 0600. A CA folder inside <out> is refused:
// every folder there is a kit to hand to someone.
absl::Status Provision(const ProvisionOptions& options);

// "<out>-ca", beside the kits folder ("kits" -> "kits-ca").
std::string DefaultCaDir(const std::string& out_dir);

// Issues a certificate for one more site from the CA in `ca_dir` (empty:
// DefaultCaDir(kits_dir)) and writes <kits>/<site>/. The site must then be
// added to the plan.
absl::Status ProvisionSite(const std::string& kits_dir, const std::string& ca_dir, const std::string& site,
                           const std::string& coordinator_address, const std::string& data_root, int validity_days);

}  // namespace fedrad::tools

#endif  // FEDRAD_TOOLS_PROVISION_H_
