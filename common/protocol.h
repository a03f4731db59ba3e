#ifndef FEDRAD_COMMON_PROTOCOL_H_
#define FEDRAD_COMMON_PROTOCOL_H_

// What the node and the coordinator tell each other (proto/federation.proto),
// as project types. The round driver and the node runtime speak only these;
// common/wire_codec.h turns them into protobuf messages and back, and the
// Check functions here are the checks of a message's own content (ranges,
// formats, shapes) that hold whatever the plan says. Checks against the
// plan and the open round stay with whoever knows them.

#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/evaluation_release.h"
#include "common/plan.h"
#include "common/tensor.h"
#include "common/wire_dtype.h"

namespace fedrad::protocol {

// Hello's answer: the plan as the coordinator tells it to one site.
struct JoinedPlan {
  std::string federation;
  std::string site;  // the name the coordinator read from the caller's certificate
  ModelSpec model;
  std::string manifest_sha256;
  // Of TrainedParametersOf(model).trained; may be empty when nothing is frozen.
  std::string trained_sha256;
  int rounds = 0;
  uint32_t chunk_bytes = 0;
  bool require_dp = false;
  // Unknown to this build when the coordinator names a dtype it lacks.
  std::optional<WireDtype> update_dtype = WireDtype::kFloat32;
  int min_report = 10;
};

// The coordinator's signature of a model's publication as a round
// (common/model_publication.h).
struct Publication {
  int64_t round = 0;
  std::string signature;  // DER
};

struct TrainingTask {
  int64_t round = 0;
  int64_t attempt = 0;
  std::string model_sha256;  // the base: the global model published as round - 1
  std::string nonce;
  TrainingSettings settings;
  uint64_t seed = 0;
  int64_t deadline_unix_ms = 0;
  Publication publication;
};

struct EvaluationTask {
  int64_t round = 0;
  std::string model_sha256;  // the global model published as `round`
  std::string nonce;
  int64_t deadline_unix_ms = 0;
  int64_t min_report = 0;  // the plan's; a site refuses a task below its own floor
  Publication publication;
};

struct StopTask {
  std::string reason;
};

// A round attempt that failed its quorum, told to the sites whose updates
// it had accepted.
struct RoundFailedNotice {
  int64_t round = 0;
  int64_t attempt = 0;
  std::string reason;
};

// Empty: a task message of a kind this build does not know.
using Task = std::variant<std::monostate, TrainingTask, EvaluationTask, StopTask, RoundFailedNotice>;

// What a site's accountant charged for an update, and its total so far.
struct PrivacyReport {
  std::string unit;  // "patient" or "image"
  double noise_multiplier = 0;
  double clip_norm = 0;
  double sampling_rate = 0;
  int64_t steps = 0;
  double delta = 0;
  double epsilon_spent = 0;  // the site's total ε after this round
  double epsilon_max = 0;
};

// An update's header: which task it answers and what the site says of it.
struct UpdateClaim {
  int64_t round = 0;
  int64_t attempt = 0;
  std::string nonce;
  std::string base_model_sha256;
  std::string update_sha256;  // of the bytes as sent
  uint64_t total_bytes = 0;
  uint64_t num_examples = 0;             // under DP the noisy released count
  std::optional<double> train_loss;      // without DP only
  std::optional<PrivacyReport> privacy;  // present when the update is DP
  std::optional<WireDtype> dtype;        // empty: one this build does not know
  std::string pipeline;                  // node/preprocess.h DescribePipeline
  uint64_t ledger_seq = 0;               // the node's audit-ledger head after "update_sent"
  std::string ledger_sha256;
};

enum class DeclineReason {
  kUnspecified,
  kBudgetExhausted,
  kPolicy,        // beyond node.toml's [policy]; the site will not train under this plan
  kModelRefused,  // the base model is unsigned or unusable; asked again next round
};

struct DeclineNotice {
  int64_t round = 0;
  int64_t attempt = 0;
  std::string nonce;
  DeclineReason reason = DeclineReason::kUnspecified;
  double epsilon_spent = 0;
  double epsilon_max = 0;
  std::string detail;
};

// A site's DP release of its evaluation statistics.
struct ReleasedEvaluation {
  double noise_multiplier = 0;  // 0: the site is not DP and these are exact
  int64_t num_classes = 0;
  EvaluationStatistics statistics;  // num_classes as the message says
  double epsilon_spent = 0;         // over the site's evaluation releases
  double delta = 0;
  std::string unit;
};

struct EvaluationReport {
  int64_t round = 0;
  std::string nonce;
  std::string model_sha256;
  bool suppressed = false;
  std::optional<ReleasedEvaluation> release;
  uint64_t ledger_seq = 0;  // the node's audit-ledger head after "evaluation_sent"
  std::string ledger_sha256;
};

// Most examples one update may claim (a count above is no site's).
inline constexpr uint64_t kMaxExamplesPerUpdate = 1000000000;

// A node's audit-ledger head as it reports it: both fields, or neither.
absl::Status CheckLedgerHead(uint64_t seq, const std::string& sha256);
// Ranges of a privacy report: a known unit, σ, C, q, δ in their ranges,
// ε not past the site's own limit.
absl::Status CheckPrivacyReport(const PrivacyReport& r);
// Everything in an update claim that does not depend on the plan or round:
// the hash, the ledger head, the count, the loss, the pipeline text, the
// privacy report.
absl::Status CheckUpdateClaim(const UpdateClaim& c);

// What the plan requires of a site's evaluation report.
struct EvaluationRules {
  int num_classes = 2;
  bool require_dp = false;
  int64_t min_report = 10;
  // A segmentation plan's releases carry the Dice blocks; a classification
  // plan's do not.
  bool segmentation = false;
  // A multilabel plan's releases are multilabel, and only those.
  bool multilabel = false;
};
// Everything in an evaluation report that does not depend on the round
// (the ledger head; a suppressed report carries no release; the release's
// classes, noise, ε, δ and statistics in range, DP if the plan requires it,
// counting at least min_report cases). The release's figures are set in
// `figures` (left empty for a suppressed report).
absl::Status CheckEvaluationReport(const EvaluationReport& e, const EvaluationRules& rules,
                                   std::optional<ReleasedFigures>* figures);

// A decline's reason is given and its figures and detail are in range
// (printable, at most 1024 bytes).
absl::Status CheckDeclineNotice(const DeclineNotice& d);

// What a node checks of the coordinator's plan before anything else: a model
// the zoo supports within its bounds, a chunk size in range, and a manifest
// the node computes the same. Returns that manifest.
absl::StatusOr<Manifest> CheckJoinedPlan(const JoinedPlan& p);

// A training task's hyperparameters: the learning rate (0, 100], the
// momentum [0, 1), the proximal term [0, 100].
absl::Status CheckTrainingSettings(const TrainingSettings& t);

}  // namespace fedrad::protocol

#endif  // FEDRAD_COMMON_PROTOCOL_H_
