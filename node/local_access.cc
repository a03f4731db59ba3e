#include "node/local_access.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "node/node_store.h"

namespace fedrad::node {

absl::Status RecordLocalDataAccess(const NodeConfig& config, const std::string& purpose, int64_t images,
                                   int64_t patients, const std::string& sop_instance_uids_sha256) {
  if (config.tls.key_pem.empty() || config.tls.certificate_pem.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(config.path, " names no usable kit key to sign the record"));
  }
  absl::Status s = EnsureDirectory(config.state_dir);
  if (!s.ok()) return s;
  const int64_t now = absl::ToUnixMillis(absl::Now());
  LedgerSigner signer{config.tls.key_pem, config.tls.certificate_pem, config.tls.common_name};
  absl::StatusOr<std::unique_ptr<NodeStore>> store = NodeStore::Open(config.state_dir + "/node.db", signer, now);
  if (!store.ok()) return store.status();
  return (*store)->RecordDataAccess(purpose, 0, images, patients, sop_instance_uids_sha256, now);
}

absl::Status RecordLocalDataAccess(const NodeConfig& config, const std::string& purpose, const ImageSet& set) {
  return RecordLocalDataAccess(config, purpose, set.count(), DistinctPatients(set), SopInstanceUidsSha256(set));
}

std::function<void(const ImageSet&)> RecordWhenLoaded(const NodeConfig& config, const std::string& purpose) {
  return [config, purpose](const ImageSet& set) {
    absl::Status s = RecordLocalDataAccess(config, purpose, set);
    if (!s.ok()) {
      spdlog::warn("this data access ({}) is not in the site's audit ledger: {}", purpose, std::string(s.message()));
    }
  };
}

}  // namespace fedrad::node
