#ifndef FEDRAD_COORDINATOR_ROUND_DRIVER_H_
#define FEDRAD_COORDINATOR_ROUND_DRIVER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/model_zoo.h"
#include "common/protocol.h"
#include "common/safetensors.h"
#include "common/tensor.h"
#include "coordinator/config.h"
#include "coordinator/model_store.h"
#include "coordinator/privacy_claims.h"
#include "coordinator/serial_worker.h"
#include "coordinator/state_store.h"
#include "coordinator/strategy.h"
#include "coordinator/update_intake.h"

namespace fedrad::coordinator {

// A connected node's WaitTask stream as the driver sees it. Both methods are
// thread-safe and never block.
class TaskChannel {
 public:
  virtual ~TaskChannel() = default;
  virtual void Send(const protocol::Task& task) = 0;
  // Ends the stream once queued tasks are written.
  virtual void Close() = 0;
};

// Permission to stream one update into the spool; see BeginUpdate().
struct UpdateTicket {
  int round = 0;
  int attempt = 0;
  std::string site;
  std::string spool_path;
  std::string update_sha256;
  int64_t num_examples = 0;
  double train_loss = 0;
  std::string pipeline;          // the node's preprocessing description (may be empty)
  uint64_t node_ledger_seq = 0;  // the node's audit-ledger head after recording the update
  std::string node_ledger_sha256;
  std::optional<SitePrivacy> privacy;
  uint64_t upload_id = 0;  // its contribution in the intake
};

// A round's federated evaluation from the sites' reports: suppressed sites
// add only to suppressed_count; the others' confusion matrices are pooled
// (exact accuracy, balanced accuracy, F1, sensitivity, specificity), loss,
// AUC and ECE are count-weighted means. Multilabel: the sites' per-label
// 2x2 matrices are pooled label by label (RoundEvaluation::multilabel) and
// `metrics` holds the micro figures; the AUC is the count-weighted mean of
// the sites' macro AUCs.
RoundEvaluation CombineEvaluations(int round, const std::string& model_sha256, int num_classes,
                                   const std::vector<SiteEvaluation>& sites,
                                   ModelTask task = ModelTask::kClassification);

// The coordinator's server loop: waits for nodes, opens rounds, hands out
// train and evaluation tasks, enforces deadlines and min_nodes, folds
// accepted updates with the plan's strategy, and commits each new model before telling
// any node. Run() is called on one thread; every other method may be called
// from gRPC reactors on any thread and never waits on disk: what does
// (state.db commits, ledger signatures, taking a rejected update out of the
// running sum) runs on the driver's SerialWorker, in the order it was asked,
// and replies from there. Updates come in through the UpdateIntake, which
// alone holds the spool and the running sum.
// Whether the federated evaluation's validation loss still improves: a
// round whose loss is not below the best by kMinRelativeImprovement for
// kStallRounds rounds or more is said (each round, until it improves).
class ValidationProgress {
 public:
  static constexpr int kStallRounds = 5;
  static constexpr double kMinRelativeImprovement = 1e-3;
  // A sentence when the loss has stalled, else nothing.
  std::optional<std::string> Note(int round, double loss);

 private:
  double best_loss_ = 0;
  int best_round_ = 0;
};

// A global model that predicts one class for this share of the pooled
// (noisy) validation counts is said to hold the class prior.
inline constexpr double kOneClassShare = 0.98;

class RoundDriver {
 public:
  // `clock`: deadlines, pauses and grace periods run on it (a FakeClock in
  // unit tests); it outlives the driver.
  static absl::StatusOr<std::unique_ptr<RoundDriver>> Create(const CoordinatorConfig& config,
                                                             const Clock* clock = Clock::Real());
  ~RoundDriver();

  // Runs the remaining rounds, then tells connected nodes to stop. Returns
  // OK when the federation is complete; an error if storage fails or
  // Shutdown() was called first.
  absl::Status Run();
  // Makes Run() return soon (signal handler thread). The open round
  // attempt, if any, stays open and the next start resumes it.
  void Shutdown();

  // --- for the gRPC service ---
  bool IsSite(const std::string& site) const { return config_.plan.HasSite(site); }
  // The plan as Hello tells it to `site`.
  protocol::JoinedPlan PlanFor(const std::string& site) const;
  uint32_t chunk_bytes() const { return config_.plan.chunk_bytes; }
  // A site's task stream from `peer`. AlreadyExists while another stream of
  // the site is open: two processes with one kit would otherwise take the
  // stream from each other forever, both training and charging. (A stream
  // whose node is gone closes within the keepalive's 40 s.)
  absl::Status Connect(const std::string& site, TaskChannel* channel, const std::string& peer);
  void Disconnect(const std::string& site, TaskChannel* channel);
  // Checks an update's claim (its header) against the open round: known
  // round, attempt and nonce for this site, then its own content
  // (protocol::CheckUpdateClaim), the round's base model, the plan's dtype
  // and the manifest's size.
  absl::StatusOr<UpdateTicket> BeginUpdate(const std::string& site, const protocol::UpdateClaim& claim);
  // What the node is told, handed over once the driver's worker has done
  // what waits on disk; called on that worker's thread.
  using Reply = std::function<void(const absl::Status&)>;
  // Records the outcome of a streamed update (`outcome` not OK: rejected,
  // with its message as the reason; what was folded of it is taken out),
  // then replies with what to tell the node. Never blocks.
  void FinishUpdate(const UpdateTicket& ticket, const absl::Status& outcome, Reply reply);
  // The upload of an admitted update: where the service puts its bytes.
  absl::StatusOr<std::unique_ptr<UpdateIntake::Upload>> OpenUpload(const UpdateTicket& ticket);
  // An update's weight before capping: its count, or 1 with weighting = "equal".
  double WeightOf(const UpdateTicket& ticket) const;
  // Checks a site's evaluation (suppressed: the count alone; otherwise at
  // least min_report cases and figures consistent with the confusion
  // matrix), records it, then replies. Never blocks.
  void RecordEvaluation(const std::string& site, const protocol::EvaluationReport& evaluation, Reply reply);
  // A node will not train the open round (its budget is spent, its policy
  // says no, or it refused the base model): recorded, then replied to.
  // Never blocks.
  void Decline(const std::string& site, const protocol::DeclineNotice& decline, Reply reply);
  // Waits until what was posted to the worker before the call has run (tests).
  void DrainWorker() { worker_.Drain(); }
  // The file of a published model, or NotFound.
  absl::StatusOr<std::string> ModelPath(const std::string& sha256);

  // One table of every applied round with per-site and overall validation
  // accuracy, for the end of a run.
  absl::StatusOr<std::string> Summary();

 private:
  struct OpenRound {
    int round = 0;
    int attempt = 0;
    std::string base_sha256;
    std::string base_signature;                 // the base's publication, as every task carries it
    std::map<std::string, std::string> nonces;  // selected site -> nonce
    std::set<std::string> in_progress;
    std::set<std::string> answered;
    std::vector<UpdateTicket> accepted;
    std::map<std::string, SitePrivacy> declined;  // what each declining site reported
    // Updates this coordinator failed to take for reasons of its own (its
    // spool unwritable, out of descriptors): site and reason.
    std::vector<std::string> coordinator_failures;
    absl::Time deadline;
  };
  struct OpenEval {
    int round = 0;
    std::string model_sha256;
    std::string signature;  // of the model's publication
    std::map<std::string, std::string> nonces;
    std::map<std::string, SiteEvaluation> results;
    absl::Time deadline;
  };

  RoundDriver(CoordinatorConfig config, const Clock* clock, std::unique_ptr<StateStore> state,
              std::unique_ptr<ModelStore> models, Manifest manifest, TrainedParameters trained);
  // The work FinishUpdate, RecordEvaluation and Decline hand the worker.
  absl::Status FinishUpdateNow(const UpdateTicket& ticket, const absl::Status& outcome);
  absl::Status RecordEvaluationNow(const std::string& site, const protocol::EvaluationReport& evaluation);
  absl::Status DeclineNow(const std::string& site, const protocol::DeclineNotice& decline);
  // Makes `sha256` the global model of `round`, signed for the tasks that name it.
  absl::Status Publish(int round, const std::string& sha256);

  absl::Status LoadOrCreateInitialModel();
  bool WaitForNodes();
  // true: applied; false: too few answers, retry. `resume`: the attempt
  // an earlier run left open, continued with its nonces.
  absl::StatusOr<bool> RunRoundAttempt(int round, std::optional<StateStore::OpenAttempt> resume);
  // Applies the round (nullopt), or says why the strategy kept the model
  // (then nothing is committed). An error status is a failure to do either.
  absl::StatusOr<std::optional<std::string>> Aggregate(const OpenRound& r);
  absl::StatusOr<std::optional<std::string>> AggregateInPlace(const OpenRound& r, const RoundUpdates& in);
  // Checks a header that carries a valid round, attempt and nonce, and fills
  // the rest of `t` from it.
  absl::Status CheckUpdateClaim(const protocol::UpdateClaim& h, const std::string& base_sha256, UpdateTicket* t) const;
  // What a published model file says of itself: the model's shape (so a
  // site can evaluate or run it without the plan), its round and origin.
  SafetensorsMetadata ModelMetadata(int round) const;
  absl::Status CheckEvaluation(const protocol::EvaluationReport& e, SiteEvaluation* out) const;
  std::string StrategyDir() const;
  std::string StrategyStatePath(int round) const;
  absl::Status RestoreStrategyState();
  // Removes every strategy state file but the committed round's.
  void PruneStrategyState();
  // With keep_models = K, removes the files of models older than the newest K.
  void PruneModels();
  void EvaluateRound(int round);
  void FinishFederation(const std::string& reason);
  void LogPrivacy(const OpenRound& r);
  // Sites that can still train (their budget is not spent): connected ones,
  // and all of the plan's.
  size_t TrainableConnected() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  size_t TrainableSites() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A fresh random nonce per connected site (for training: per trainable
  // site), binding its answer to one task.
  absl::StatusOr<std::map<std::string, std::string>> NoncesForConnectedSites(bool training)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendTrainTask(const std::string& site) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendEvalTask(const std::string& site) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes every spooled update (at start, on shutdown, at the end).
  void ClearSpool();

  const CoordinatorConfig config_;
  const Clock* const clock_;
  const Manifest manifest_;
  const std::string manifest_sha256_;
  // What updates hold: all parameters but the plan's frozen ones.
  const TrainedParameters trained_;
  // Touched only by EvaluateRound, which rounds call one at a time.
  ValidationProgress progress_;
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<ModelStore> models_;
  std::unique_ptr<Strategy> strategy_;
  std::string spool_dir_;
  // Every update's way in: spool, checks, hash and the running sum (for
  // strategies that fold updates as they arrive), reused from round to round.
  std::unique_ptr<UpdateIntake> intake_;

  // Owned by Run()'s thread.
  ModelParameters global_;
  int global_round_ = 0;

  mutable absl::Mutex mu_;
  absl::CondVar changed_;
  std::map<std::string, TaskChannel*> connected_ ABSL_GUARDED_BY(mu_);
  struct Connection {
    std::string peer;
    absl::Time since;
  };
  std::map<std::string, Connection> connections_ ABSL_GUARDED_BY(mu_);  // of connected_, by site
  std::set<std::string> exhausted_ ABSL_GUARDED_BY(mu_);                // declined (budget spent, or its policy)
  PrivacyClaims claims_;                                                // what each site may still claim (its own lock)
  std::optional<OpenRound> round_ ABSL_GUARDED_BY(mu_);
  std::optional<OpenEval> eval_ ABSL_GUARDED_BY(mu_);
  std::string global_sha256_ ABSL_GUARDED_BY(mu_);
  // The coordinator's signature of global_sha256_'s publication as round
  // global_round_ (common/model_publication.h), made once per model.
  std::string global_signature_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::string finish_reason_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_upload_id_ ABSL_GUARDED_BY(mu_) = 0;
  // Last member: destroyed (its queue run) before what its work uses.
  SerialWorker worker_;
};

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_ROUND_DRIVER_H_
