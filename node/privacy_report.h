#ifndef FEDRAD_NODE_PRIVACY_REPORT_H_
#define FEDRAD_NODE_PRIVACY_REPORT_H_

#include <ostream>

#include "absl/status/status.h"
#include "node/node_config.h"

namespace fedrad::node {

// `fedrad-node privacy`: ε spent and left, rounds left at the current
// settings, from the ledger in state_dir/node.db (and, with `charges`, every
// charge). Reads no images; ε is recomputed from the charges, not copied.
absl::Status PrintPrivacyReport(const NodeConfig& config, bool charges, std::ostream& out);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_PRIVACY_REPORT_H_
