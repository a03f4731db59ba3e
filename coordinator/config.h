#ifndef FEDRAD_COORDINATOR_CONFIG_H_
#define FEDRAD_COORDINATOR_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/plan.h"
#include "common/tls_identity.h"

namespace fedrad::coordinator {

// coordinator.toml, with the plan it names already loaded and checked.
struct CoordinatorConfig {
  std::string path;
  std::string plan_path;
  FederationPlan plan;
  std::string listen;     // host:port
  std::string state_dir;  // state.db, models/, spool/
  double linger_s = 5;
  // Model downloads, and update uploads, served at once; more wait their
  // turn, so memory stays about this many chunks whatever the number of nodes.
  int max_concurrent_streams = 16;
  // An admitted upload that brings nothing for this long is cut off and
  // rejected (a node that stalls mid-upload; one training for hours is
  // not uploading yet, and is not affected).
  double upload_idle_timeout_s = 60;
  // Model files kept in state_dir/models: 0 keeps every round's; K keeps
  // the newest K (the hashes of all stay in state.db and its ledger).
  int keep_models = 0;
  TlsIdentity tls;
  // Not from coordinator.toml: `serve --ledger-lost`, the operator's
  // account of a state.db lost for good, which starts a new ledger (and a
  // new federation at round 0) there (common/ledger.h).
  std::string ledger_lost;
};

// Loads coordinator.toml and everything it points to. Any problem — missing
// file, wrong type, unknown field, a key that does not match its certificate,
// a certificate not signed by the CA — is an error naming the file and field.
absl::StatusOr<CoordinatorConfig> LoadCoordinatorConfig(const std::string& path);

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_CONFIG_H_
