#ifndef FEDRAD_NODE_LOCAL_ACCESS_H_
#define FEDRAD_NODE_LOCAL_ACCESS_H_

// What stays on site is on record too: the site's local commands (predict,
// evaluate, train-local, inspect, audit empirical) write a "data_access"
// entry to the node's audit ledger (state_dir/node.db), signed with the
// site's kit key: the purpose, how many images and patients, and the
// SHA-256 of the sorted SOPInstanceUIDs, never a UID.

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "node/dataset.h"
#include "node/node_config.h"

namespace fedrad::node {

// `config` must hold the kit (LoadNodeConfig with [tls]); fails otherwise,
// and when node.db cannot be written. The caller says so and goes on: a
// local command is not stopped by its record.
absl::Status RecordLocalDataAccess(const NodeConfig& config, const std::string& purpose, int64_t images,
                                   int64_t patients, const std::string& sop_instance_uids_sha256);
absl::Status RecordLocalDataAccess(const NodeConfig& config, const std::string& purpose, const ImageSet& set);

// A DatasetSpec::on_loaded that records `purpose` and logs a failure as a
// warning.
std::function<void(const ImageSet&)> RecordWhenLoaded(const NodeConfig& config, const std::string& purpose);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_LOCAL_ACCESS_H_
