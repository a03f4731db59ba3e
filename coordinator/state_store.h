#ifndef FEDRAD_COORDINATOR_STATE_STORE_H_
#define FEDRAD_COORDINATOR_STATE_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/evaluation_release.h"
#include "common/ledger.h"
#include "common/metrics.h"
#include "common/multilabel_metrics.h"
#include "common/protocol.h"
#include "common/sqlite.h"

namespace fedrad::coordinator {

struct ModelVersion {
  int round = 0;  // 0 is the initial model
  std::string sha256;
};

// A site's evaluation of a round's model. The figures are post-processing
// of the site's DP release (common/evaluation_release.h): the count is the
// release's noisy total, rounded; nothing here is an exact statistic of a
// site's patients.
struct SiteEvaluation {
  std::string site;
  double loss = 0;
  double accuracy = 0;
  int64_t count = 0;
  // The site sent no release (below its min_report, budget spent, refused).
  bool suppressed = false;
  double noise_multiplier = 0;                  // of the release (0: not DP)
  std::optional<EvaluationStatistics> release;  // as received
  std::vector<int64_t> confusion;               // classes^2, [true][predicted]; multilabel labels x 2 x 2
  std::optional<double> roc_auc;
  double ece = 0;
  std::optional<double> mean_dice;  // segmentation: the release's mean Dice over patients
  // The node's audit-ledger head it reported with the figures (0/"" if not);
  // kept in the coordinator's ledger only.
  uint64_t node_ledger_seq = 0;
  std::string node_ledger_sha256;
};

// A round's federated evaluation: the reporting sites' figures combined.
struct RoundEvaluation {
  int round = 0;
  std::string model_sha256;
  int sites = 0;                 // sites that answered
  int reporting_sites = 0;       // of them, with figures (not suppressed)
  int64_t suppressed_count = 0;  // cases at suppressed sites (not in the figures)
  double loss = 0;               // count-weighted mean
  // MetricsFromConfusion of the pooled confusion matrix (exact count,
  // accuracy, balanced accuracy, per-class figures, sensitivity,
  // specificity); roc_auc and ece are count-weighted means of the sites'
  // values, which do not pool from counts.
  Metrics metrics;
  // Segmentation: the count-weighted mean of the sites' mean Dice.
  std::optional<double> mean_dice;
  // Multilabel: each label's pooled figures, the macro and micro averages
  // (macro_roc_auc the count-weighted mean of the sites'); `metrics` is
  // then the micro one, its count the images.
  std::optional<MultilabelMetrics> multilabel;
};

// A site's DP report for one round (its own accountant's figures), as its
// update or decline told it.
using SitePrivacy = protocol::PrivacyReport;

struct SubmissionRecord {
  std::string site;
  std::string update_sha256;
  int64_t num_examples = 0;
  double train_loss = 0;
  bool accepted = false;
  bool declined = false;  // the site did not train (its privacy budget is spent)
  std::string reason;
  std::optional<SitePrivacy> privacy;
  // The node's audit-ledger head as it reported it with the update (0/"" if not).
  uint64_t node_ledger_seq = 0;
  std::string node_ledger_sha256;

  std::string status() const { return declined ? "declined" : accepted ? "accepted" : "rejected"; }
};

// An update that went into a round's aggregate.
struct Contribution {
  std::string site;
  std::string update_sha256;
};

// The coordinator's durable state in state.db (SQLite, WAL). A round is
// applied exactly when its model row exists; the model row and the round's
// status change commit in one transaction, and a partial unique index makes a
// second applied attempt of the same round impossible. Each change is also an
// audit-ledger entry (common/ledger.h, signed with the coordinator's kit key)
// committed with it. Thread-safe.
class StateStore {
 public:
  // Without a signer (reading, or tests of the tables alone) nothing is
  // written to the audit ledger. With one the ledger's continuity is kept
  // (common/ledger.h: a marker beside the file; the folder's models/ as
  // evidence of one from before markers): a state.db found empty or
  // replaced is refused, unless `ledger_lost` gives the operator's account
  // of the loss (--ledger-lost).
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& path,
                                                          const std::optional<LedgerSigner>& signer = std::nullopt,
                                                          int64_t now_ms = 0, const std::string& ledger_lost = "");

  // The newest model, or nullopt before the initial model exists.
  absl::StatusOr<std::optional<ModelVersion>> LatestModel();
  absl::Status AddInitialModel(const std::string& sha256, int64_t now_ms);
  absl::StatusOr<bool> HasModel(const std::string& sha256);
  // Published models of rounds before `round`, oldest first.
  absl::StatusOr<std::vector<ModelVersion>> ModelsBefore(int round);

  // A round attempt left open by a crash or a shutdown: what a restarted
  // coordinator needs to resume it (the sites' kept updates answer it).
  struct OpenAttempt {
    int round = 0;
    int attempt = 0;
    std::string base_sha256;
    std::map<std::string, std::string> nonces;  // selected site -> nonce
  };
  // The newest open attempt, if any.
  absl::StatusOr<std::optional<OpenAttempt>> LatestOpenAttempt();
  // Marks attempts left open by a crash as abandoned, but `except` (round,
  // attempt), which is resumed; returns how many.
  absl::StatusOr<int> AbandonOpenRounds(int64_t now_ms, std::optional<std::pair<int, int>> except = std::nullopt);
  // A ledger entry ("round_resumed"): the open attempt goes on after a restart.
  absl::Status ResumeRound(int round, int attempt, int connected, int64_t now_ms);
  absl::StatusOr<int> NextAttempt(int round);
  // Opens an attempt for the sites in `nonces` (kept, for a resume).
  absl::Status OpenRound(int round, int attempt, const std::string& base_sha256,
                         const std::map<std::string, std::string>& nonces, int64_t now_ms);
  // Commits the new model and the round's status together, with ledger
  // entries for the aggregate (its inputs), the model published and the close.
  absl::Status ApplyRound(int round, int attempt, const std::string& model_sha256, int answered,
                          const std::string& strategy, const std::vector<Contribution>& contributions, int64_t now_ms);
  absl::Status FailRound(int round, int attempt, int answered, const std::string& note, int64_t now_ms);

  absl::Status RecordSubmission(int round, int attempt, const SubmissionRecord& s, int64_t now_ms);
  // A site's report refused for what it claims (an evaluation release out
  // of bounds, a decline whose epsilon is impossible): a ledger entry
  // ("report_refused": what, site, round, reason). Refused updates are
  // submissions (update_rejected).
  absl::Status RecordRefusal(const std::string& what, const std::string& site, int round, const std::string& reason,
                             int64_t now_ms);
  absl::Status RecordEvaluation(int round, const std::string& model_sha256, const SiteEvaluation& e, int64_t now_ms);
  absl::StatusOr<std::vector<SiteEvaluation>> Evaluations(int round);
  // Multilabel (e.multilabel): each label's figures as well, named by
  // `label_names` (the plan's class_names).
  absl::Status RecordRoundEvaluation(const RoundEvaluation& e, int64_t now_ms,
                                     const std::vector<std::string>& label_names = {});
  absl::StatusOr<std::optional<RoundEvaluation>> GetRoundEvaluation(int round);
  // Each site's latest DP report (from an accepted update or a decline), and
  // whether that latest answer was a decline.
  struct LatestPrivacy {
    SitePrivacy privacy;
    bool declined = false;  // and will not train again (budget or policy; not a refused model)
  };
  absl::StatusOr<std::map<std::string, LatestPrivacy>> LatestPrivacyBySite();
  // Every DP report of an accepted update and every decline, oldest first,
  // with its site (for PrivacyClaims after a restart).
  struct PrivacyAnswer {
    std::string site;
    LatestPrivacy answer;
    std::string update_sha256;  // empty for a decline
  };
  absl::StatusOr<std::vector<PrivacyAnswer>> PrivacyHistory();
  absl::Status TouchNode(const std::string& site, int64_t now_ms);

 private:
  StateStore(std::unique_ptr<Database> db, std::optional<LedgerSigner> signer)
      : db_(std::move(db)), signer_(std::move(signer)) {}
  // Appends an audit-ledger entry (nothing without a signer); the caller
  // holds mu_ and the transaction.
  template <class Entry>
  absl::Status Log(const Entry& entry, int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Mutex mu_;
  std::unique_ptr<Database> db_ ABSL_GUARDED_BY(mu_);
  const std::optional<LedgerSigner> signer_;
};

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_STATE_STORE_H_
