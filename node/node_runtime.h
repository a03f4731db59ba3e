#ifndef FEDRAD_NODE_NODE_RUNTIME_H_
#define FEDRAD_NODE_NODE_RUNTIME_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/evaluation_release.h"
#include "common/plan.h"
#include "common/protocol.h"
#include "common/tensor.h"
#include "node/coordinator_client.h"
#include "node/dataset.h"
#include "node/node_config.h"
#include "node/node_store.h"
#include "node/trainer.h"

namespace fedrad::node {

// What the coordinator told this node in Hello (checked there: a known
// update dtype, this site's name, a usable model, the manifest).
using JoinedPlan = protocol::JoinedPlan;

// A hospital's node: dials out to the coordinator over mutual TLS, waits for
// tasks, trains and evaluates locally, and sends only model deltas and
// aggregate figures. Images, labels and identifiers never leave it.
class NodeRuntime {
 public:
  // Talks to config.coordinator_address over gRPC unless given `client`;
  // times, deadlines and pauses are `clock`'s.
  static absl::StatusOr<std::unique_ptr<NodeRuntime>> Create(const NodeConfig& config,
                                                             const Clock* clock = Clock::Real(),
                                                             std::unique_ptr<CoordinatorClient> client = nullptr);
  ~NodeRuntime();

  // One Hello: checks that the coordinator is reachable and accepts this
  // site's certificate, and that both sides agree on the model.
  absl::StatusOr<JoinedPlan> Check();

  // Serves tasks until the coordinator says Stop (OK), RequestStop() (OK),
  // or a permanent error (identity refused, model mismatch, unreadable
  // data, a fatal task: see TaskResult). While the coordinator is
  // unreachable it retries with exponential backoff.
  absl::Status Run();
  // From a signal thread: Run() returns soon. Training stops at its next
  // step (its charge stands and is marked interrupted); an upload under way
  // is cut off, and the update stays kept, to be sent when the coordinator
  // asks again after a restart.
  void RequestStop();

 private:
  NodeRuntime(NodeConfig config, const Clock* clock, std::unique_ptr<NodeStore> store,
              std::unique_ptr<CoordinatorClient> client);

  absl::StatusOr<JoinedPlan> Hello();

 public:
  // What became of one task that did not fail: done (trained and sent, or
  // evaluated and released), or declined (the coordinator was told no:
  // budget, [policy], a refused model, an improper evaluation ask; no data
  // was read for it). A failure is an error status.
  enum class TaskOutcome { kDone, kDeclined };

  // What Run() does after a task: kDone and kDeclined as the handler said;
  // a failure is kFatal when it is this node's own (common/local_fault.h:
  // its records cannot be written, training itself failed; going on would
  // charge round after round for work that fails), and Run() ends with it;
  // any other failure is kRetry: the coordinator re-asks or goes on without
  // this site, and the next task is served.
  struct TaskResult {
    enum class Kind { kDone, kDeclined, kRetry, kFatal };
    Kind kind;
    absl::Status why;  // OK unless kRetry or kFatal
  };
  TaskResult Resolve(const absl::StatusOr<TaskOutcome>& outcome);

 private:
  // Once per process, after the first Hello: reports the budget and reads
  // the data unless the budget is already spent.
  absl::Status StartUp();
  absl::Status PrepareData(const JoinedPlan& plan);
  // The model of `sha256`: the one in memory, the node's cached copy, or
  // downloaded (and cached) from the coordinator; always checked against its hash.
  // `round` is the task's, for the audit ledger. PermissionDenied (with a
  // model_refused entry) for a model with a non-finite value.
  absl::StatusOr<std::shared_ptr<const ModelParameters>> EnsureModel(const std::string& sha256, int round,
                                                                     int64_t deadline_ms);
  // OK if `publication` is the coordinator's signature (checked with the
  // certificate it presented over TLS) of `sha256` published as
  // `published_round` of this federation; the first check of each is kept
  // in the audit ledger. PermissionDenied, with a model_refused entry, if
  // not: the model is then neither fetched nor used. `task_round` is for the
  // ledger.
  absl::Status CheckPublication(const protocol::Publication& publication, int published_round,
                                const std::string& sha256, int task_round);
  absl::StatusOr<TaskOutcome> HandleTrain(const protocol::TrainingTask& task);
  // The coordinator did not aggregate this site's accepted update (its
  // round attempt failed the quorum): the ledger's outcome and the charge's
  // status say so; the charge stands.
  absl::Status RecordRoundFailed(const protocol::RoundFailedNotice& failed);
  // Before a DP round: charges the ledger (committed) and fills the DP
  // settings and the count to report, or declines (budget, [policy]; then
  // returns nullopt and the data is not touched).
  struct PrivateRound {
    PrivacyCharge training;
    int64_t reported_count = 0;
    int64_t count_charge_id = 0;  // a count released with this round, if any
    double site_epsilon = 0;      // what the update reports: the larger ledger part after this round
  };
  absl::StatusOr<std::optional<PrivateRound>> ChargeRound(const protocol::TrainingTask& task,
                                                          const LocalTrainingSettings& settings);
  // A round whose run a stop interrupted (its charge marked so, nothing
  // sent) is trained again under that charge: nullopt when there is none
  // to resume, or node.toml changed the mechanism since.
  absl::StatusOr<std::optional<PrivateRound>> ResumeInterruptedRound(const protocol::TrainingTask& task,
                                                                     const std::vector<PrivacyCharge>& ledger,
                                                                     double spent);
  // Tells the coordinator this site will not train this round, after
  // recording why in the ledger; kDeclined once the coordinator has it.
  using DeclineReason = protocol::DeclineReason;
  absl::StatusOr<TaskOutcome> DeclineRound(const protocol::TrainingTask& task, DeclineReason reason,
                                           const std::string& detail);
  // An update as it travels: in the plan's update_dtype, with the SHA-256
  // of those bytes. Float32 is sent from the delta itself, without a copy.
  struct WireUpdate {
    std::vector<float> delta;
    std::string encoded;  // bfloat16 / float16 only
    std::string sha256;
    std::string_view bytes() const {
      if (!encoded.empty()) return encoded;
      return {reinterpret_cast<const char*>(delta.data()), delta.size() * sizeof(float)};
    }
  };
  absl::StatusOr<WireUpdate> Encode(std::vector<float> delta, int round) const;
  // What an update trained for `task` says of itself (its header's facts,
  // the charges it answers for); the bytes' hash, size and file are the caller's.
  KeptUpdate UpdateFacts(const protocol::TrainingTask& task, const TrainingOutcome& outcome,
                         const std::optional<PrivateRound>& dp) const;
  // Writes the update's bytes (durably) and its facts to node.db.
  absl::Status Keep(const KeptUpdate& facts, const WireUpdate& wire);
  // Removes kept updates of rounds before `before_round` and of other federations.
  void ForgetKeptUpdates(int before_round);
  // Answers `task` with the update kept for its round, when it was trained
  // on the task's base: sent again with this task's attempt and nonce, no
  // training and no new charge. nullopt when there is none to send.
  absl::StatusOr<std::optional<TaskOutcome>> ResendKept(const protocol::TrainingTask& task);
  // Streams `wire` with the header `facts` describe, as the answer to
  // `task` (`resent`: a kept update trained for facts.attempt). An upload
  // cut short is tried again while the deadline allows.
  absl::Status SendUpdate(const protocol::TrainingTask& task, std::shared_ptr<const WireUpdate> wire,
                          const KeptUpdate& facts, bool resent, absl::Time start);
  // true if the node is stopping (at once, or during the pause).
  bool SleepUnlessStopping(absl::Duration d);
  // One federated evaluation: refused (suppressed, with a ledger entry)
  // without the model or the data when the site's policy, its evaluation
  // budget or the one-release-per-round rule says no; otherwise charged in
  // the privacy ledger, then released (common/evaluation_release.h).
  absl::StatusOr<TaskOutcome> HandleEval(const protocol::EvaluationTask& task);
  struct EvaluationRelease {
    EvaluationStatistics statistics;  // noised (unless the node is not DP)
    double noise_multiplier = 0;
    double epsilon_spent = 0;  // the evaluation part after this release
  };
  absl::StatusOr<TaskOutcome> RefuseEvaluation(const protocol::EvaluationTask& task, const std::string& why);
  // Answers an evaluation task with a suppressed report (nothing released).
  absl::StatusOr<TaskOutcome> AnswerSuppressed(const protocol::EvaluationTask& task);
  // Records and sends `release`, or a suppressed report when it is null;
  // `exact` (the node's own figures, kept in node.db only) when the data was
  // evaluated.
  absl::Status SendEvaluation(const protocol::EvaluationTask& task, const EvaluationRelease* release,
                              const Evaluation* exact = nullptr);

  const NodeConfig config_;
  const Clock* const clock_;
  std::unique_ptr<NodeStore> store_;
  std::unique_ptr<CoordinatorClient> client_;
  std::optional<JoinedPlan> plan_;
  // The plan's update dtype (Hello refuses a plan without a known one).
  WireDtype UpdateDtype() const { return plan_->update_dtype.value_or(WireDtype::kFloat32); }
  Manifest manifest_;
  std::optional<PatientSplit> data_;
  std::string train_uids_sha256_, validation_uids_sha256_;  // SopInstanceUidsSha256 of data_'s sets
  // The last model used: a round's evaluation and the next round's training
  // use the same one.
  std::string model_sha256_;
  std::shared_ptr<ModelParameters> model_;         // handed out as const; its memory is reused for the next
  std::shared_ptr<const WireUpdate> noop_update_;  // trainer = "noop": the same every round
  // The coordinator's TLS certificate, as the last Hello saw it: the key
  // model publications must be signed with.
  std::string coordinator_certificate_pem_;
  std::string recorded_coordinator_certificate_;                 // the one last put in the audit ledger
  std::set<std::pair<int, std::string>> verified_publications_;  // (round, sha256) recorded as verified
  // The noisy unit count released (and charged) in this federation: q,
  // steps and the update's weight derive from it (CountReleaseOf).
  std::optional<PrivacyCharge> count_release_;
  // An evaluation release came out below min_report: later ones are not sent.
  bool evaluation_suppressed_ = false;
  bool started_ = false;

  std::atomic<bool> stopping_{false};  // RequestStop() was called
  absl::Mutex stop_mu_;
  absl::CondVar stop_changed_;
};

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_NODE_RUNTIME_H_
