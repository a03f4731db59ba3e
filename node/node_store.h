#ifndef FEDRAD_NODE_NODE_STORE_H_
#define FEDRAD_NODE_NODE_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/sqlite.h"
#include "node/privacy_budget.h"

namespace fedrad::node {

// The node's local record in node.db: which models it received, which
// updates it sent, what it reported, and the privacy ledger. Only aggregate numbers and hashes; no
// identifier of a patient or image is stored here.
class NodeStore {
 public:
  static absl::StatusOr<std::unique_ptr<NodeStore>> Open(const std::string& path);

  absl::Status RecordModelReceived(const std::string& sha256, int64_t now_ms);
  // Written before the update is streamed, so the record never misses an
  // update that may have left the node.
  absl::Status RecordUpdateSending(int round, int attempt, const std::string& base_sha256,
                                   const std::string& update_sha256, int64_t examples,
                                   double train_loss, int64_t now_ms);
  absl::Status RecordUpdateOutcome(int round, int attempt, const std::string& outcome);
  absl::Status RecordEvaluation(int round, const std::string& model_sha256, double loss,
                                double accuracy, int64_t count, int64_t now_ms);

  // The privacy ledger. Charges are appended (and their ids set) in one
  // transaction, committed before the data is touched: a crash afterwards
  // can only over-count.
  absl::Status ChargePrivacy(std::vector<PrivacyCharge*> charges);
  absl::Status SetChargeStatus(int64_t id, const std::string& status);
  absl::StatusOr<std::vector<PrivacyCharge>> PrivacyLedger();

 private:
  explicit NodeStore(std::unique_ptr<Database> db) : db_(std::move(db)) {}
  absl::Mutex mu_;
  std::unique_ptr<Database> db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_NODE_STORE_H_
