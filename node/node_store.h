#ifndef FEDRAD_NODE_NODE_STORE_H_
#define FEDRAD_NODE_NODE_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/ledger.h"
#include "common/ledger_entries.h"
#include "common/sqlite.h"
#include "node/privacy_budget.h"

namespace fedrad::node {

// A trained update this node keeps (its bytes in a file under the state
// directory) until the coordinator no longer needs it: it was charged when
// trained, so a coordinator restart, a failed quorum or a broken upload is
// answered by sending it again, never by training and charging again.
struct KeptUpdate {
  std::string federation;
  int round = 0;
  int attempt = 0;  // the attempt it was trained for
  std::string base_sha256;
  std::string update_sha256;  // of the bytes as sent
  std::string dtype;          // WireDtypeName
  uint64_t bytes = 0;
  std::string path;  // the file of the bytes
  // What travels with it in the update's header.
  int64_t examples = 0;              // under DP the released count
  std::optional<double> train_loss;  // without DP only
  std::string pipeline;
  struct Privacy {
    std::string unit;
    double noise_multiplier = 0, clip_norm = 0, sampling_rate = 0;
    int64_t steps = 0;
    double delta = 0, epsilon_spent = 0, epsilon_max = 0;
  };
  std::optional<Privacy> privacy;
  int64_t charge_id = 0;        // the round's dp-sgd charge (0 without DP)
  int64_t count_charge_id = 0;  // a count released with it, if any
};

// The node's local record in node.db: which models it received, which
// updates it sent, what it reported, the privacy ledger, and the audit
// ledger (common/ledger.h: hash-chained, signed with the site's kit key)
// whose entries commit with the rows they describe. Only aggregate numbers
// and hashes; no identifier of a patient or image is stored here.
class NodeStore {
 public:
  // With a signer, every record is also an audit-ledger entry; without one
  // (reading the ledger for a report), recording fails. With a signer the
  // ledger's continuity is kept (common/ledger.h: a marker beside the file;
  // the folder's models/ and updates/ as evidence of one from before
  // markers): a node.db found empty or replaced is refused, unless
  // `ledger_lost` gives the operator's account of the loss (--ledger-lost).
  // OK unless the ledger is empty or another than its marker at `path`
  // names (common/ledger.h), for readers.
  absl::Status CheckContinuity(const std::string& path);

  static absl::StatusOr<std::unique_ptr<NodeStore>> Open(const std::string& path,
                                                         const std::optional<LedgerSigner>& signer = std::nullopt,
                                                         int64_t now_ms = 0, const std::string& ledger_lost = "");

  // The facts of the node's configuration that bear on privacy; a "config"
  // entry is written when they differ from the last one.
  absl::Status RecordConfig(const ledger::Config& facts, int64_t now_ms);
  // The facts of the last "config" entry, or none before the first.
  absl::StatusOr<std::optional<ledger::Config>> LastConfig();
  absl::Status RecordRoundJoined(const std::string& federation, int round, int attempt, const std::string& model_sha256,
                                 int64_t now_ms);
  absl::Status RecordModelReceived(const std::string& sha256, int round, uint64_t bytes, int64_t now_ms);
  // A model the node will not use (e.g. a non-finite value): nothing was
  // trained or evaluated on it.
  absl::Status RecordModelRefused(const std::string& sha256, int round, const std::string& reason, int64_t now_ms);
  // The certificate of the coordinator this node authenticated over TLS,
  // whose key signs model publications: recorded before the first
  // publication it verifies ("coordinator_certificate": PEM, subject, SHA-256).
  absl::Status RecordCoordinatorCertificate(const std::string& certificate_pem, const std::string& subject,
                                            int64_t now_ms);
  // A publication checked before its model was used ("model_verified"):
  // the federation and round it was published as, the model, the signature (hex) and the
  // SHA-256 of the coordinator certificate it verified with.
  absl::Status RecordModelVerified(const std::string& federation, int published_round, const std::string& sha256,
                                   const std::string& signature_hex, const std::string& certificate_sha256,
                                   int64_t now_ms);
  // The data read or used: a purpose ("load", "train", "evaluate"), the
  // round (0 for load), how many images and patients, and the SHA-256 of the
  // sorted distinct SOPInstanceUIDs (DataAccessDigest), never the UIDs.
  absl::Status RecordDataAccess(const std::string& purpose, int round, int64_t images, int64_t patients,
                                const std::string& sop_uids_sha256, int64_t now_ms);
  // Written before the update is streamed, so the record never misses an
  // update that may have left the node. Returns the ledger's new head (the
  // "update_sent" entry), which the node reports with the update.
  // `resent_from_attempt` > 0: the update is a kept one, trained for that
  // attempt of the round and sent again (the entry says so; no new charge).
  absl::StatusOr<LedgerEntry> RecordUpdateSending(int round, int attempt, const std::string& base_sha256,
                                                  const std::string& update_sha256, uint64_t bytes,
                                                  const std::string& dtype, int64_t examples, double train_loss,
                                                  int resent_from_attempt, int64_t now_ms);
  absl::Status RecordUpdateOutcome(int round, int attempt, const std::string& outcome, int64_t now_ms);
  // Kept updates (at most one per federation and round; a newer one replaces it).
  absl::Status KeepUpdate(const KeptUpdate& update);
  absl::StatusOr<std::optional<KeptUpdate>> KeptUpdateOf(const std::string& federation, int round);
  absl::StatusOr<std::vector<KeptUpdate>> KeptUpdates();
  absl::Status ForgetKeptUpdate(const std::string& federation, int round);
  // The recorded outcome of this node's update of (round, attempt), if it sent one.
  absl::StatusOr<std::optional<std::string>> UpdateOutcome(int round, int attempt);
  // A round declined because the privacy budget is spent (or would be).
  absl::Status RecordBudgetRefusal(int round, int attempt, double epsilon_spent, double epsilon_max, double delta,
                                   const std::string& detail, int64_t now_ms);
  // A task declined because it goes beyond the site's [policy] (or a model
  // or evaluation refused by it); `detail` names the field.
  absl::Status RecordPolicyRefusal(const std::string& task, int round, int attempt, const std::string& detail,
                                   int64_t now_ms);
  // Written before the report is sent. `released` is the release as a JSON
  // object (the noisy statistics, σ, ε), or empty when only `suppressed`
  // left; it goes into the ledger entry. loss, accuracy and count are the
  // node's own exact figures (0 when it did not evaluate), kept in the
  // evaluations table for the site only. Returns the ledger's new head
  // ("evaluation_sent"), which the node reports with the release.
  absl::StatusOr<LedgerEntry> RecordEvaluation(int round, const std::string& model_sha256, double loss, double accuracy,
                                               int64_t count, bool suppressed, const std::string& released,
                                               int64_t now_ms);

  // The privacy ledger. Charges are appended (and their ids set) in one
  // transaction, committed before the data is touched: a crash afterwards
  // can only over-count.
  absl::Status ChargePrivacy(std::vector<PrivacyCharge*> charges);
  absl::Status SetChargeStatus(int64_t id, const std::string& status);
  absl::StatusOr<std::vector<PrivacyCharge>> PrivacyLedger();
  absl::StatusOr<std::vector<LedgerEntry>> AuditLedger();

 private:
  NodeStore(std::unique_ptr<Database> db, std::optional<LedgerSigner> signer)
      : db_(std::move(db)), signer_(std::move(signer)) {}
  // Appends to the audit ledger; the caller holds mu_ (and the transaction).
  template <class Entry>
  absl::StatusOr<LedgerEntry> Log(const Entry& entry, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Mutex mu_;
  std::unique_ptr<Database> db_ ABSL_GUARDED_BY(mu_);
  const std::optional<LedgerSigner> signer_;
};

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_NODE_STORE_H_
