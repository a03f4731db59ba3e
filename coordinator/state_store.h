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
#include "common/metrics.h"
#include "common/sqlite.h"

namespace fedrad::coordinator {

struct ModelVersion {
  int round = 0;  // 0 is the initial model
  std::string sha256;
};

struct SiteEvaluation {
  std::string site;
  double loss = 0;
  double accuracy = 0;
  int64_t count = 0;
  // Fewer cases than min_report: only `count` was reported.
  bool suppressed = false;
  std::vector<int64_t> confusion;  // classes^2, [true][predicted]
  std::optional<double> roc_auc;
  double ece = 0;
};

// A round's federated evaluation: the reporting sites' figures combined.
struct RoundEvaluation {
  int round = 0;
  std::string model_sha256;
  int sites = 0;             // sites that answered
  int reporting_sites = 0;   // of them, with figures (not suppressed)
  int64_t suppressed_count = 0;  // cases at suppressed sites (not in the figures)
  double loss = 0;               // count-weighted mean
  // MetricsFromConfusion of the pooled confusion matrix (exact count,
  // accuracy, balanced accuracy, per-class figures, sensitivity,
  // specificity); roc_auc and ece are count-weighted means of the sites'
  // values, which do not pool from counts.
  Metrics metrics;
};

// A site's DP report for one round (its own accountant's figures).
struct SitePrivacy {
  std::string unit;
  double noise_multiplier = 0;
  double clip_norm = 0;
  double sampling_rate = 0;
  int64_t steps = 0;
  double delta = 0;
  double epsilon_spent = 0;
  double epsilon_max = 0;
};

struct SubmissionRecord {
  std::string site;
  std::string update_sha256;
  int64_t num_examples = 0;
  double train_loss = 0;
  bool accepted = false;
  bool declined = false;  // the site did not train (its privacy budget is spent)
  std::string reason;
  std::optional<SitePrivacy> privacy;

  std::string status() const { return declined ? "declined" : accepted ? "accepted" : "rejected"; }
};

// The coordinator's durable state in state.db (SQLite, WAL). A round is
// applied exactly when its model row exists; the model row and the round's
// status change commit in one transaction, and a partial unique index makes a
// second applied attempt of the same round impossible. Thread-safe.
class StateStore {
 public:
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& path);

  // The newest model, or nullopt before the initial model exists.
  absl::StatusOr<std::optional<ModelVersion>> LatestModel();
  absl::Status AddInitialModel(const std::string& sha256, int64_t now_ms);
  absl::StatusOr<bool> HasModel(const std::string& sha256);

  // Marks rounds left open by a crash as abandoned; returns how many.
  absl::StatusOr<int> AbandonOpenRounds(int64_t now_ms);
  absl::StatusOr<int> NextAttempt(int round);
  absl::Status OpenRound(int round, int attempt, const std::string& base_sha256, int selected,
                         int64_t now_ms);
  // Commits the new model and the round's status together.
  absl::Status ApplyRound(int round, int attempt, const std::string& model_sha256, int answered,
                          int64_t now_ms);
  absl::Status FailRound(int round, int attempt, int answered, const std::string& note,
                         int64_t now_ms);

  absl::Status RecordSubmission(int round, int attempt, const SubmissionRecord& s, int64_t now_ms);
  absl::Status RecordEvaluation(int round, const std::string& model_sha256, const SiteEvaluation& e,
                                int64_t now_ms);
  absl::StatusOr<std::vector<SiteEvaluation>> Evaluations(int round);
  absl::Status RecordRoundEvaluation(const RoundEvaluation& e, int64_t now_ms);
  absl::StatusOr<std::optional<RoundEvaluation>> GetRoundEvaluation(int round);
  // Each site's latest DP report (from an accepted update or a decline), and
  // whether that latest answer was a decline.
  struct LatestPrivacy {
    SitePrivacy privacy;
    bool declined = false;
  };
  absl::StatusOr<std::map<std::string, LatestPrivacy>> LatestPrivacyBySite();
  absl::Status TouchNode(const std::string& site, int64_t now_ms);

 private:
  explicit StateStore(std::unique_ptr<Database> db) : db_(std::move(db)) {}
  absl::Mutex mu_;
  std::unique_ptr<Database> db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_STATE_STORE_H_
