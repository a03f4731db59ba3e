#include "node/node_runtime.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <limits>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/bench_floor.h"
#include "common/evaluation_release.h"
#include "common/files.h"
#include "common/local_fault.h"
#include "common/metrics.h"
#include "common/model_publication.h"
#include "common/model_zoo.h"
#include "common/multilabel_metrics.h"
#include "common/safetensors.h"
#include "common/system_memory.h"
#include "crypto/pki.h"
#include "crypto/secure_noise.h"
#include "crypto/sha256.h"
#include "node/trainer.h"

namespace fedrad::node {
namespace {

absl::Time Deadline(int64_t unix_ms) { return absl::FromUnixMillis(unix_ms); }

// The status of a round's charge whose run a stop (SIGTERM, SIGINT: from
// outside, whatever the data) cut short before anything was sent.
constexpr char kInterrupted[] = "interrupted: ";

// Errors after which retrying cannot help: the coordinator refused who we are
// or what we run.
bool IsPermanent(absl::StatusCode code) {
  return code == absl::StatusCode::kPermissionDenied || code == absl::StatusCode::kUnauthenticated ||
         code == absl::StatusCode::kFailedPrecondition || code == absl::StatusCode::kInvalidArgument;
}

absl::StatusOr<NodeRuntime::TaskOutcome> Done(const absl::Status& s) {
  if (!s.ok()) return s;
  return NodeRuntime::TaskOutcome::kDone;
}

// A record of what became of a charge or an update, written after the fact:
// the charge itself stands (committed before training), so a failure to
// write the record does not undo the work; it is reported, never dropped.
void KeepRecord(const absl::Status& written) {
  if (!written.ok()) {
    spdlog::error("the node's ledger could not record an outcome (the charge stands; its status there is stale): {}",
                  std::string(written.message()));
  }
}

// Largest model file we accept from the coordinator (the manifest's bytes
// plus a generous header allowance).
uint64_t MaxModelBytes(const Manifest& m) { return m.total_bytes() + (uint64_t{16} << 20); }

// What the audit ledger records of node.toml: the file's hash and the
// settings that decide what is read and what leaves the site.
ledger::Config ConfigFacts(const NodeConfig& config) {
  absl::StatusOr<std::string> file = ReadFile(config.path, 1 << 20);
  const PrivacySettings& p = config.privacy;
  ledger::Config facts{.file = config.path,
                       .file_sha256 = file.ok() ? crypto::Sha256Hex(*file) : std::string("unreadable"),
                       .coordinator = config.coordinator_address,
                       .site = config.tls.common_name,
                       .dicom_dir = config.dicom_dir,
                       .labels = config.labels_csv,
                       .trainer = config.trainer,
                       .validation_fraction = config.validation_fraction,
                       .split_seed = static_cast<int64_t>(config.split_seed),
                       .preprocess = DescribePipeline(config.preprocess)};
  facts.privacy = {
      .enabled = p.enabled, .unit = p.unit(), .clip_norm = p.clip_norm, .delta = p.delta, .epsilon_max = p.epsilon_max};
  if (p.noise_multiplier > 0) facts.privacy.noise_multiplier = p.noise_multiplier;
  if (p.target_epsilon > 0) facts.privacy.target_epsilon = p.target_epsilon;
  return facts;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NodeRuntime>> NodeRuntime::Create(const NodeConfig& config, const Clock* clock,
                                                                 std::unique_ptr<CoordinatorClient> client) {
  absl::Status s = EnsureDirectory(config.state_dir + "/models");
  if (s.ok()) s = EnsureDirectory(config.state_dir + "/updates");
  if (!s.ok()) return s;
  LedgerSigner signer{config.tls.key_pem, config.tls.certificate_pem, config.tls.common_name};
  absl::StatusOr<std::unique_ptr<NodeStore>> store =
      NodeStore::Open(config.state_dir + "/node.db", signer, clock->NowMs(), config.ledger_lost);
  if (!store.ok()) return store.status();
  if (config.privacy.enabled) {
    absl::StatusOr<std::vector<PrivacyCharge>> ledger = (*store)->PrivacyLedger();
    if (!ledger.ok()) return ledger.status();
    s = CheckUnitUnchanged(config.privacy, *ledger, config.path);
    if (!s.ok()) return s;
    // Parallel composition of the two parts holds only while each patient
    // stays on its side of the split: with evaluation charges in the
    // ledger, the split's settings may not change.
    const bool evaluated = std::any_of(ledger->begin(), ledger->end(),
                                       [](const PrivacyCharge& c) { return c.kind == ChargeKind::kEvaluation; });
    // Read only then: an older node.db's config entry that the schema
    // cannot read stops a node only where the check needs it.
    absl::StatusOr<std::optional<ledger::Config>> last =
        evaluated ? (*store)->LastConfig() : std::optional<ledger::Config>();
    if (!last.ok()) return last.status();
    if (evaluated && last->has_value() &&
        ((*last)->validation_fraction != config.validation_fraction ||
         (*last)->split_seed != static_cast<int64_t>(config.split_seed))) {
      return absl::FailedPreconditionError(absl::StrCat(
          config.path,
          " changes [data] validation_fraction or split_seed, but this node's ledger holds evaluation "
          "releases: a patient moved across the split would have both parts' epsilon, which the node no longer "
          "bounds. Set them back (",
          (*last)->validation_fraction, ", ", (*last)->split_seed,
          "), or start a new state_dir, and with it a new budget, with your "
          "privacy officer's agreement"));
    }
  }
  s = (*store)->RecordConfig(ConfigFacts(config), clock->NowMs());
  if (!s.ok()) return s;
  if (!client) client = MakeGrpcCoordinatorClient(config);
  SetTorchThreads(config.threads);
  return std::unique_ptr<NodeRuntime>(new NodeRuntime(config, clock, std::move(*store), std::move(client)));
}

NodeRuntime::NodeRuntime(NodeConfig config, const Clock* clock, std::unique_ptr<NodeStore> store,
                         std::unique_ptr<CoordinatorClient> client)
    : config_(std::move(config)), clock_(clock), store_(std::move(store)), client_(std::move(client)) {}

NodeRuntime::~NodeRuntime() = default;

absl::StatusOr<JoinedPlan> NodeRuntime::Hello() {
  absl::StatusOr<Joined> joined = client_->Hello(clock_->Now() + absl::Seconds(10));
  if (!joined.ok()) return joined.status();
  std::string coordinator_pem = std::move(joined->coordinator_certificate_pem);
  if (coordinator_pem.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the coordinator at ", config_.coordinator_address,
                     " presented no certificate this node can check model signatures with"));
  }
  JoinedPlan p = std::move(joined->plan);
  if (p.require_dp && !config_.privacy.enabled) {
    return absl::FailedPreconditionError(absl::StrCat("federation '", p.federation,
                                                      "' accepts only differentially private updates, and ",
                                                      config_.path, " sets [privacy] enabled = false"));
  }
  if (p.site != config_.tls.common_name) {
    return absl::FailedPreconditionError(absl::StrCat("the coordinator sees this node as '", p.site,
                                                      "' but its certificate says '", config_.tls.common_name, "'"));
  }
  absl::StatusOr<Manifest> manifest = protocol::CheckJoinedPlan(p);
  if (!manifest.ok()) return manifest.status();
  // What a round makes the node hold, against what the machine can give,
  // before any of it is allocated: the model, its update and the update as
  // sent, 4 bytes a value each, and 256 MiB for the process (LibTorch).
  // Measured 2026-12-02 with trainer = "noop" (bench/round_overhead.sh and
  // /usr/bin/time -v on the nodes): peak RSS 285 MiB at 10M values, 620 MiB
  // at 50M, 8.8 bytes a value on top of the process.
  {
    const uint64_t values = static_cast<uint64_t>(manifest->total_elements());
    const absl::Status fits =
        CheckMemoryFits(absl::StrCat("the plan's model of ", values, " values"), values * 12 + (uint64_t{256} << 20),
                        absl::StrCat("the model, its update and the update as sent, ", HumanBytes(values * 4),
                                     " each, and the process 256.0 MiB"),
                        AvailableMemoryBytes());
    if (!fits.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("the plan's model is not usable here: ", fits.message()));
    }
  }
  if (plan_ && (plan_->model.architecture != p.model.architecture || plan_->model.input_size != p.model.input_size ||
                plan_->model.num_classes != p.model.num_classes || plan_->model.task != p.model.task ||
                plan_->model.freeze != p.model.freeze)) {
    return absl::FailedPreconditionError("the federation's model changed while this node was running; restart it");
  }
  if (!p.model.freeze.empty() && !plan_) {
    spdlog::info("the plan freezes {}: those layers do not train, and updates hold the other parameters only",
                 absl::StrJoin(p.model.freeze, ", "));
  }
  manifest_ = std::move(*manifest);
  coordinator_certificate_pem_ = std::move(coordinator_pem);
  return p;
}

absl::StatusOr<JoinedPlan> NodeRuntime::Check() { return Hello(); }

void NodeRuntime::RequestStop() {
  absl::MutexLock lock(&stop_mu_);
  stopping_.store(true);
  client_->CancelAll();
  stop_changed_.SignalAll();
}

bool NodeRuntime::SleepUnlessStopping(absl::Duration d) {
  absl::MutexLock lock(&stop_mu_);
  const absl::Time until = clock_->Now() + d;
  while (!stopping_.load() && clock_->Now() < until) clock_->WaitUntil(&stop_changed_, &stop_mu_, until);
  return stopping_.load();
}

absl::Status NodeRuntime::PrepareData(const JoinedPlan& plan) {
  if (data_) return absl::OkStatus();
  DatasetSpec spec = SiteDataset(config_);
  spec.num_classes = plan.model.num_classes;
  spec.task = plan.model.task;
  if (spec.class_names.empty()) spec.class_names = plan.model.class_names;
  spec.preprocess.output_size = plan.model.input_size;
  LoadReport report;
  absl::StatusOr<ImageSet> images = LoadImageSet(spec, &report);
  if (!images.ok()) return images.status();
  int skipped = 0;
  for (const auto& [reason, n] : report.skipped) {
    spdlog::warn("skipped {} file(s): {}", n, reason);
    skipped += n;
  }
  if (report.rows_without_file > 0) {
    spdlog::warn("{} row(s) of {} name a file that does not exist", report.rows_without_file, config_.labels_csv);
  }
  if (report.files_without_row > 0) {
    spdlog::warn("{} file(s) under {} have no row in the labels and were not used", report.files_without_row,
                 config_.dicom_dir);
  }
  for (const std::string& w : PatientKeyWarnings(report, spec.require_patient_key)) spdlog::warn("patient keys: {}", w);
  PatientSplit split = SplitByPatient(*images, config_.validation_fraction, config_.split_seed);
  spdlog::info("data: {} images of {} patients ({} skipped); train {} images / {} patients, validation {} / {}",
               images->count(), report.patients, skipped, split.train.count(), split.train_patients,
               split.validation.count(), split.validation_patients);
  if (split.train.count() == 0) {
    return absl::FailedPreconditionError(absl::StrCat("no readable labelled images in ", config_.dicom_dir));
  }
  absl::Status s = store_->RecordDataAccess("load", 0, images->count(), report.patients, SopInstanceUidsSha256(*images),
                                            clock_->NowMs());
  if (!s.ok()) return s;
  train_uids_sha256_ = SopInstanceUidsSha256(split.train);
  validation_uids_sha256_ = SopInstanceUidsSha256(split.validation);
  data_ = std::move(split);
  return absl::OkStatus();
}

absl::Status NodeRuntime::StartUp() {
  if (started_) return absl::OkStatus();
  started_ = true;
  if (config_.trainer == "noop") {
    spdlog::warn(
        "[node] trainer = \"noop\": this node reads no data and sends the model back nearly unchanged "
        "(for measuring round overhead only)");
    return absl::OkStatus();
  }
  if (!config_.privacy.enabled) {
    spdlog::warn("[privacy] enabled = false: this node's updates are NOT differentially private");
    return PrepareData(*plan_);
  }
  absl::StatusOr<std::vector<PrivacyCharge>> ledger = store_->PrivacyLedger();
  if (!ledger.ok()) return ledger.status();
  const BudgetReport report = ReportBudget(config_.privacy, *ledger);
  spdlog::info(
      "privacy: {}-level DP, epsilon spent {:.4f} of {:.4g} (delta {:g}): training {:.4f} over {} "
      "earlier round(s), evaluation {:.4f} over {} release(s)",
      config_.privacy.unit(), report.site_epsilon, config_.privacy.epsilon_max, config_.privacy.delta,
      report.spent.epsilon, report.dp_rounds, report.evaluation.epsilon, report.evaluations);
  if (BudgetSpent(config_.privacy, report.spent.epsilon)) {
    spdlog::warn("privacy budget exhausted: this node will decline to train and does not read its data for it");
    return absl::OkStatus();
  }
  // Read (and check) the data now, so a bad archive is reported at start-up.
  return PrepareData(*plan_);
}

absl::StatusOr<std::shared_ptr<const ModelParameters>> NodeRuntime::EnsureModel(const std::string& sha256, int round,
                                                                                int64_t deadline_ms) {
  if (!crypto::IsSha256Hex(sha256)) return absl::InvalidArgumentError("the task names no valid model hash");
  if (model_ && model_sha256_ == sha256) return model_;
  const std::string path = absl::StrCat(config_.state_dir, "/models/", sha256, ".safetensors");
  const std::string what = absl::StrCat("model ", sha256.substr(0, 12));
  // The previous model's memory is reused when nothing else holds it: a
  // model-sized allocation per round would be fresh pages to fault in.
  std::vector<float> reuse;
  if (model_ && model_.use_count() == 1) reuse = std::move(model_->values);
  model_.reset();
  model_sha256_.clear();
  std::optional<SafetensorsFile> file;
  absl::StatusOr<std::string> cached = ReadFile(path, MaxModelBytes(manifest_));
  if (cached.ok() && crypto::Sha256Hex(*cached) == sha256) {
    absl::StatusOr<SafetensorsFile> decoded = DecodeSafetensors(*cached, what);
    if (!decoded.ok()) return decoded.status();
    file = std::move(*decoded);
  } else {
    // Decoded as it arrives: each chunk goes once, from gRPC's buffers, into
    // the values, hashed on the way.
    ModelStream stream(MaxModelBytes(manifest_), what, std::move(reuse), /*hash=*/!kBenchFloor);
    absl::Status s = client_->FetchModel(sha256, Deadline(deadline_ms), [&](const ModelChunkView& chunk) {
      return stream.Add(chunk.total_bytes, chunk.offset, chunk.data);
    });
    if (!s.ok()) return s;
    std::string header;
    absl::StatusOr<SafetensorsFile> decoded = stream.Finish(sha256, &header);
    if (!decoded.ok()) return decoded.status();
    file = std::move(*decoded);
    // A cache, checked against the hash when read: no fsync. Written from
    // the values themselves: the header as received, then their bytes.
    const std::vector<float>& v = file->parameters.values;
    if (!kBenchFloor) {
      s = WriteFileAtomically(
          path, {header, std::string_view(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float))}, 0644,
          /*durable=*/false);
    }
    if (!s.ok()) return s;
    s = store_->RecordModelReceived(sha256, round, stream.received(), clock_->NowMs());
    if (!s.ok()) return s;
    // Only the newest global model is kept: one file of the model's size,
    // not one per round (100 rounds of a 400 MB model would be 40 GB).
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(config_.state_dir + "/models", ec)) {
      if (e.path().filename() != sha256 + ".safetensors") std::filesystem::remove(e.path(), ec);
    }
  }
  if (!(file->parameters.manifest == manifest_)) {
    return absl::DataLossError("the model's tensors do not match the plan's manifest");
  }
  if (std::optional<size_t> bad = kBenchFloor ? std::nullopt : FirstNonFinite(file->parameters.values)) {
    const std::string reason = absl::StrCat("value ", *bad, " of the model is ", file->parameters.values[*bad],
                                            "; a model must be finite to train or evaluate on");
    absl::Status recorded = store_->RecordModelRefused(sha256, round, reason, clock_->NowMs());
    if (!recorded.ok()) return recorded;
    return absl::PermissionDeniedError(absl::StrCat("model ", sha256.substr(0, 12), " refused: ", reason));
  }
  model_ = std::make_shared<ModelParameters>(std::move(file->parameters));
  model_sha256_ = sha256;
  return model_;
}

absl::Status NodeRuntime::CheckPublication(const protocol::Publication& publication, int published_round,
                                           const std::string& sha256, int task_round) {
  std::string why;
  if (static_cast<int64_t>(publication.round) != published_round) {
    why = absl::StrCat("the task names model ", sha256.substr(0, 12), " as published in round ", publication.round,
                       ", but a round ", task_round, " ", published_round == task_round ? "evaluation" : "training",
                       " task must use the model published as round ", published_round);
  } else if (absl::Status v = VerifyModelPublication(
                 coordinator_certificate_pem_, {plan_->federation, published_round, sha256}, publication.signature);
             !v.ok()) {
    if (v.code() != absl::StatusCode::kPermissionDenied) return v;
    why = std::string(v.message());
  }
  if (!why.empty()) {
    spdlog::error("round {}: model refused: {}", task_round, why);
    absl::Status recorded = store_->RecordModelRefused(sha256, task_round, why, clock_->NowMs());
    if (!recorded.ok()) return recorded;
    return absl::PermissionDeniedError(why);
  }
  if (verified_publications_.count({published_round, sha256})) return absl::OkStatus();
  if (recorded_coordinator_certificate_ != coordinator_certificate_pem_) {
    absl::StatusOr<crypto::CertificateInfo> info =
        crypto::ParseCertificate(coordinator_certificate_pem_, "the coordinator's certificate");
    if (!info.ok()) return info.status();
    absl::Status s =
        store_->RecordCoordinatorCertificate(coordinator_certificate_pem_, info->common_name, clock_->NowMs());
    if (!s.ok()) return s;
    recorded_coordinator_certificate_ = coordinator_certificate_pem_;
  }
  absl::Status s =
      store_->RecordModelVerified(plan_->federation, published_round, sha256, crypto::HexEncode(publication.signature),
                                  crypto::Sha256Hex(coordinator_certificate_pem_), clock_->NowMs());
  if (!s.ok()) return s;
  verified_publications_.insert({published_round, sha256});
  return absl::OkStatus();
}

absl::Status NodeRuntime::RecordRoundFailed(const protocol::RoundFailedNotice& failed) {
  const int round = static_cast<int>(failed.round), attempt = static_cast<int>(failed.attempt);
  // Only the node's record changes: the charge stands either way.
  std::string reason = failed.reason.substr(0, 512);
  for (char& c : reason) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  // Only an update this node sent and saw accepted can be discarded: a
  // coordinator cannot write outcomes for updates that never were.
  absl::StatusOr<std::optional<std::string>> sent = store_->UpdateOutcome(round, attempt);
  if (!sent.ok()) return sent.status();
  if (!sent->has_value() || **sent != "accepted") {
    spdlog::warn(
        "round {} (attempt {}): the coordinator says it discarded an update this node has no accepted "
        "record of; ignored",
        round, attempt);
    return absl::OkStatus();
  }
  spdlog::warn(
      "round {} (attempt {}): the coordinator did not use this site's accepted update: {} (its privacy "
      "charge stands)",
      round, attempt, reason);
  absl::Status s = store_->RecordUpdateOutcome(round, attempt, absl::StrCat("discarded: ", reason), clock_->NowMs());
  if (!s.ok()) return s;
  absl::StatusOr<std::vector<PrivacyCharge>> ledger = store_->PrivacyLedger();
  if (!ledger.ok()) return ledger.status();
  for (const PrivacyCharge& c : *ledger) {
    // The round's charge, whichever attempt it was trained for (a kept
    // update sent again answers later attempts).
    if (c.kind == ChargeKind::kDpSgd && plan_ && c.federation == plan_->federation && c.round == round) {
      s = store_->SetChargeStatus(c.id,
                                  "discarded: the round failed its quorum (the update is kept, to send again "
                                  "if the round is retried on the same model)");
      if (!s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<NodeRuntime::TaskOutcome> NodeRuntime::DeclineRound(const protocol::TrainingTask& task,
                                                                   DeclineReason reason, const std::string& detail) {
  spdlog::warn("round {}: not training: {}", task.round, detail);
  // The site's ε as every update reports it: the larger ledger part.
  double epsilon_spent = 0;
  if (config_.privacy.enabled) {
    absl::StatusOr<std::vector<PrivacyCharge>> ledger = store_->PrivacyLedger();
    if (!ledger.ok()) return ledger.status();
    epsilon_spent = SiteEpsilon(*ledger, config_.privacy.delta);
  }
  const int round = static_cast<int>(task.round), attempt = static_cast<int>(task.attempt);
  // A refused model has its model_refused entry already.
  absl::Status recorded = reason == DeclineReason::kBudgetExhausted
                              ? store_->RecordBudgetRefusal(round, attempt, epsilon_spent, config_.privacy.epsilon_max,
                                                            config_.privacy.delta, detail, clock_->NowMs())
                          : reason == DeclineReason::kPolicy
                              ? store_->RecordPolicyRefusal("train", round, attempt, detail, clock_->NowMs())
                              : absl::OkStatus();
  if (!recorded.ok()) return recorded;
  // ε so far is what every update already reports; the detail names
  // settings, never a count (q and steps derive from the released count).
  absl::Status s = client_->Decline(protocol::DeclineNotice{task.round, task.attempt, task.nonce, reason, epsilon_spent,
                                                            config_.privacy.epsilon_max, detail.substr(0, 1024)},
                                    Deadline(task.deadline_unix_ms));
  if (!s.ok()) return s;
  return TaskOutcome::kDeclined;
}

absl::StatusOr<std::optional<NodeRuntime::PrivateRound>> NodeRuntime::ChargeRound(
    const protocol::TrainingTask& task, const LocalTrainingSettings& settings) {
  const PrivacySettings& privacy = config_.privacy;
  // The round answered with a decline: nothing to train.
  auto decline = [&](DeclineReason reason, const std::string& detail) -> absl::StatusOr<std::optional<PrivateRound>> {
    absl::StatusOr<TaskOutcome> declined = DeclineRound(task, reason, detail);
    if (!declined.ok()) return declined.status();
    return std::optional<PrivateRound>();
  };
  absl::StatusOr<std::vector<PrivacyCharge>> ledger = store_->PrivacyLedger();
  if (!ledger.ok()) return ledger.status();
  const double spent = SpentBy(*ledger).GetEpsilon(privacy.delta).epsilon;
  // Before the budget check: this round may be paid for already.
  absl::StatusOr<std::optional<PrivateRound>> resumed = ResumeInterruptedRound(task, *ledger, spent);
  if (!resumed.ok() || resumed->has_value()) return resumed;
  // Spent already: say so without reading the data at all.
  if (BudgetSpent(privacy, spent)) {
    return decline(DeclineReason::kBudgetExhausted,
                   absl::StrFormat("privacy budget exhausted: epsilon %.4f of %.4g is spent (delta %g)", spent,
                                   privacy.epsilon_max, privacy.delta));
  }
  absl::Status s = PrepareData(*plan_);
  if (!s.ok()) return s;
  const int64_t units = CountUnits(data_->train.patients, privacy.patient_level);
  const int64_t now = clock_->NowMs();
  PrivateRound out;
  if (!count_release_) count_release_ = CountReleaseOf(*ledger, plan_->federation);
  if (count_release_ && std::fabs(count_release_->released - static_cast<double>(units)) > 5 * kCountNoiseMultiplier) {
    // Said here only: the exact count never leaves.
    spdlog::warn(
        "this federation's released unit count ({:.0f}) is far from the {} units in the data now: q and "
        "the update's weight follow the release (a utility cost, not a privacy one)",
        count_release_->released, units);
  }
  if (!count_release_) {
    // Once per federation: the noisy unit count, charged and committed
    // before anything derived from it (q, steps, the weight, even a decline)
    // leaves.
    absl::StatusOr<ChargePlan> count_plan = PlanCountRelease(privacy, *ledger, units);
    if (!count_plan.ok()) return count_plan.status();
    if (const BudgetRefusal* refused = std::get_if<BudgetRefusal>(&*count_plan)) {
      return decline(DeclineReason::kBudgetExhausted, refused->detail);
    }
    PrivacyCharge* count = &std::get<PrivacyCharge>(*count_plan);
    // Gaussian noise of std kCountNoiseMultiplier (the count's sensitivity is
    // one unit), from the OS-seeded generator.
    absl::StatusOr<std::unique_ptr<crypto::SecureRandom>> rng = crypto::SecureRandom::Create();
    if (!rng.ok()) return rng.status();
    double noise = 0;
    (*rng)->Gaussian(&noise, 1, kCountNoiseMultiplier);
    count->released = std::max(1.0, std::round(static_cast<double>(units) + noise));
    count->federation = plan_->federation;
    count->round = static_cast<int>(task.round);
    count->attempt = static_cast<int>(task.attempt);
    count->status = "charged";
    count->at_ms = now;
    s = store_->ChargePrivacy({&*count});
    if (!s.ok()) return s;
    ledger->push_back(*count);
    count_release_ = *count;
    out.count_charge_id = count->id;  // marked sent with the first update that carries it
  }
  // The site counts its own rounds: the rounds of this federation it has
  // trained in, this one aside (a retried round is still one round of the
  // plan). Announcing a late round number cannot make it spend faster: each
  // new number is one more round, never a jump.
  std::set<int> trained_rounds;
  for (const PrivacyCharge& c : *ledger) {
    if (c.kind == ChargeKind::kDpSgd && c.federation == plan_->federation && c.round != static_cast<int>(task.round)) {
      trained_rounds.insert(c.round);
    }
  }
  const int trained = static_cast<int>(trained_rounds.size());
  RoundRequest request;
  request.units = units;
  request.released_units = count_release_->released;
  request.expected_batch = settings.batch_size;
  request.local_epochs = settings.local_epochs;
  // The site's own plan when it has one ([policy] rounds), else the
  // plan's, as Hello stated it.
  const int planned_rounds = config_.policy.rounds > 0 ? config_.policy.rounds : plan_->rounds;
  request.rounds_left = std::max(1, planned_rounds - trained);
  request.max_round_epsilon = config_.policy.max_round_epsilon;
  absl::StatusOr<RoundPlan> plan = PlanRound(privacy, *ledger, request);
  if (!plan.ok()) return plan.status();
  if (const RoundRefusal* refused = std::get_if<RoundRefusal>(&*plan)) {
    return decline(
        refused->reason == RoundRefusal::Reason::kBudget ? DeclineReason::kBudgetExhausted : DeclineReason::kPolicy,
        refused->detail);
  }
  RoundCharges* planned = &std::get<RoundCharges>(*plan);
  PrivacyCharge& training = planned->training;
  training.federation = plan_->federation;
  training.round = static_cast<int>(task.round);
  training.attempt = static_cast<int>(task.attempt);
  training.status = "charged";
  training.at_ms = now;
  out.reported_count = static_cast<int64_t>(count_release_->released);
  // Committed before a single step touches the data.
  s = store_->ChargePrivacy({&training});
  if (!s.ok()) return s;
  out.training = training;
  out.site_epsilon = std::max(training.epsilon_after, EvaluationSpentBy(*ledger).GetEpsilon(privacy.delta).epsilon);
  spdlog::info(
      "round {}: DP-SGD at {}-level over {} units: sigma {:.4f}, C {:g}, q {:.5f}, {} steps; epsilon "
      "{:.4f} -> {:.4f} of {:.4g} (delta {:g}), charged before training",
      task.round, privacy.unit(), units, out.training.noise_multiplier, out.training.clip_norm,
      out.training.sampling_rate, out.training.steps, planned->epsilon_before, out.training.epsilon_after,
      privacy.epsilon_max, privacy.delta);
  return std::optional<PrivateRound>(std::move(out));
}

absl::StatusOr<std::optional<NodeRuntime::PrivateRound>> NodeRuntime::ResumeInterruptedRound(
    const protocol::TrainingTask& task, const std::vector<PrivacyCharge>& ledger, double spent) {
  const PrivacySettings& privacy = config_.privacy;
  const PrivacyCharge* interrupted = nullptr;
  for (const PrivacyCharge& c : ledger) {
    if (c.kind == ChargeKind::kDpSgd && c.federation == plan_->federation && c.round == static_cast<int>(task.round) &&
        absl::StartsWith(c.status, kInterrupted)) {
      interrupted = &c;
    }
  }
  if (interrupted == nullptr) return std::optional<PrivateRound>();
  // Why one charge covers the run again: what leaves the site is one update,
  // the output of one complete run of the mechanism the charge was made
  // for (its sigma, C, q and steps), with fresh noise and sampling; the run
  // that was cut short released nothing and kept nothing (no update, no
  // checkpoint), and where it stopped depended on the signal, not on the
  // data. A crash (SIGKILL, a fault) leaves the charge "charged" and is paid
  // again: its cause may be the data. Settings of node.toml that change the
  // mechanism make it a new charge.
  if (interrupted->unit != privacy.unit() || interrupted->clip_norm != privacy.clip_norm ||
      interrupted->delta != privacy.delta) {
    spdlog::warn("round {}: node.toml's [privacy] changed since the interrupted run; charging the round anew",
                 task.round);
    return std::optional<PrivateRound>();
  }
  if (!count_release_) count_release_ = CountReleaseOf(ledger, plan_->federation);
  if (!count_release_) return std::optional<PrivateRound>();
  absl::Status s = PrepareData(*plan_);
  if (!s.ok()) return s;
  s = store_->SetChargeStatus(interrupted->id, absl::StrCat("charged (trained again in attempt ", task.attempt,
                                                            " after a stop cut the first run short; nothing had been "
                                                            "sent)"));
  if (!s.ok()) return s;
  PrivateRound out;
  out.training = *interrupted;
  out.reported_count = static_cast<int64_t>(count_release_->released);
  // A count charged for this federation but never sent goes with this update.
  if (count_release_->status != "sent") out.count_charge_id = count_release_->id;
  out.site_epsilon = std::max(spent, EvaluationSpentBy(ledger).GetEpsilon(privacy.delta).epsilon);
  spdlog::info(
      "round {}: training again under the charge of the run a stop interrupted (sigma {:.4f}, C {:g}, q {:.5f}, "
      "{} steps; epsilon stays {:.4f} of {:.4g}): no second charge",
      task.round, out.training.noise_multiplier, out.training.clip_norm, out.training.sampling_rate, out.training.steps,
      spent, privacy.epsilon_max);
  return std::optional<PrivateRound>(std::move(out));
}

absl::StatusOr<NodeRuntime::TaskOutcome> NodeRuntime::HandleTrain(const protocol::TrainingTask& task) {
  const int round = static_cast<int>(task.round);
  const int attempt = static_cast<int>(task.attempt);
  spdlog::info("round {} (attempt {}): training", round, attempt);
  absl::Status joined =
      store_->RecordRoundJoined(plan_->federation, round, attempt, task.model_sha256, clock_->NowMs());
  if (!joined.ok()) return joined;
  const TrainingSettings& asked = task.settings;
  LocalTrainingSettings settings;
  settings.local_epochs = std::clamp(asked.local_epochs, 1, 1000);
  settings.batch_size = std::clamp(asked.batch_size, 1, 65536);
  settings.learning_rate = asked.learning_rate;
  settings.momentum = asked.momentum;
  settings.seed = task.seed;
  settings.proximal_mu = asked.proximal_mu;
  if (absl::Status valid = protocol::CheckTrainingSettings(asked); !valid.ok()) return valid;
  // Before the model or the data is touched: what the site allows (the
  // task's own figures, before any clamping).
  if (std::optional<std::string> beyond =
          PolicyViolation(config_.policy, {plan_->model.architecture, asked.local_epochs, asked.batch_size})) {
    return DeclineRound(task, DeclineReason::kPolicy, *beyond);
  }
  // The base is the model published as the round before: signed, or never
  // fetched nor trained on. A refusal's detail (sent with the decline) is
  // about the task and the model alone, public to the coordinator: no
  // patient data is read to write it.
  if (absl::Status published = CheckPublication(task.publication, round - 1, task.model_sha256, round);
      !published.ok()) {
    if (published.code() != absl::StatusCode::kPermissionDenied) return published;
    return DeclineRound(task, DeclineReason::kModelRefused, std::string(published.message()));
  }
  // Kept updates of earlier rounds are answered: the coordinator asks for
  // round `round` now. One of this round, trained on this base, answers
  // the task as it is, without training or a new charge.
  ForgetKeptUpdates(round);
  absl::StatusOr<std::optional<TaskOutcome>> resent = ResendKept(task);
  if (!resent.ok()) return resent.status();
  if (resent->has_value()) return **resent;
  absl::StatusOr<std::shared_ptr<const ModelParameters>> global =
      EnsureModel(task.model_sha256, round, task.deadline_unix_ms);
  if (global.status().code() == absl::StatusCode::kPermissionDenied) {
    return DeclineRound(task, DeclineReason::kModelRefused, std::string(global.status().message()));
  }
  if (!global.ok()) return global.status();
  std::optional<PrivateRound> dp;
  if (config_.trainer == "noop") {
    const absl::Time start = clock_->Now();
    if (config_.noop_seconds > 0 && SleepUnlessStopping(absl::Seconds(config_.noop_seconds))) {
      return absl::CancelledError("the node is stopping");
    }
    // The same tiny change every round: encoded and hashed once, so the
    // benchmark measures the coordinator and the transport, not this.
    TrainingOutcome noop;  // the received model plus 1e-7 everywhere, from one example
    noop.examples = 1;
    noop.mean_loss = 0;
    const size_t n = (*global)->values.size();
    if (!noop_update_ || noop_update_->bytes().size() != n * BytesPerValue(UpdateDtype())) {
      absl::StatusOr<WireUpdate> wire = Encode(std::vector<float>(n, 1e-7f), round);
      if (!wire.ok()) return wire.status();
      noop_update_ = std::make_shared<const WireUpdate>(std::move(*wire));
    }
    // Not kept: a noop update costs nothing to make again.
    KeptUpdate facts = UpdateFacts(task, noop, std::nullopt);
    return Done(SendUpdate(task, noop_update_, facts, /*resent=*/false, start));
  }
  if (config_.privacy.enabled) {
    absl::StatusOr<std::optional<PrivateRound>> charged = ChargeRound(task, settings);
    if (!charged.ok()) return charged.status();
    if (!charged->has_value()) return TaskOutcome::kDeclined;
    dp = **charged;
    settings.dp = DpTrainingSettings{dp->training.noise_multiplier, dp->training.clip_norm,
                                     dp->training.sampling_rate,    dp->training.steps,
                                     config_.privacy.patient_level, 0};
    settings.dp->released_units = count_release_->released;
  } else {
    absl::Status s = PrepareData(*plan_);
    if (!s.ok()) return s;
  }
  absl::Status accessed = store_->RecordDataAccess("train", round, data_->train.count(), data_->train_patients,
                                                   train_uids_sha256_, clock_->NowMs());
  if (!accessed.ok()) return accessed;
  const absl::Time start = clock_->Now();
  settings.stop = &stopping_;
  absl::StatusOr<TrainingOutcome> outcome = TrainLocally(plan_->model, **global, data_->train, settings);
  if (!outcome.ok()) {
    const bool stopped = outcome.status().code() == absl::StatusCode::kAborted && stopping_.load();
    if (stopped) {
      spdlog::warn("round {}: {} because the node is stopping; {}", round, std::string(outcome.status().message()),
                   dp ? "the round's charge stands (nothing was sent)" : "nothing was sent");
    }
    if (dp) {
      KeepRecord(store_->SetChargeStatus(dp->training.id,
                                         stopped ? absl::StrCat(kInterrupted, "the node was stopped during training (",
                                                                outcome.status().message(), "); nothing was sent")
                                                 : absl::StrCat("failed: ", outcome.status().message())));
    }
    // A stop is the node's to resume; training that failed by itself would
    // fail again, each time after a new charge.
    return stopped ? outcome.status() : MarkLocalFault(outcome.status());
  }
  if (outcome->dp_nonfinite_units > 0) {
    spdlog::warn(
        "round {}: {} sampled unit gradient(s) were not finite (NaN or Inf) and contributed nothing; "
        "counted here only, never sent",
        round, outcome->dp_nonfinite_units);
  }
  absl::StatusOr<WireUpdate> wire = Encode(std::move(outcome->delta), round);
  if (!wire.ok()) {
    if (dp) KeepRecord(store_->SetChargeStatus(dp->training.id, absl::StrCat("failed: ", wire.status().message())));
    return MarkLocalFault(wire.status());  // the plan's dtype cannot carry this site's updates
  }
  KeptUpdate facts = UpdateFacts(task, *outcome, dp);
  facts.update_sha256 = wire->sha256;
  facts.bytes = wire->bytes().size();
  facts.path = absl::StrCat(config_.state_dir, "/updates/round-", round, ".bin");
  if (!Keep(facts, *wire).ok()) facts.path.clear();
  return Done(SendUpdate(task, std::make_shared<const WireUpdate>(std::move(*wire)), facts, /*resent=*/false, start));
}

KeptUpdate NodeRuntime::UpdateFacts(const protocol::TrainingTask& task, const TrainingOutcome& outcome,
                                    const std::optional<PrivateRound>& dp) const {
  KeptUpdate k;
  k.federation = plan_->federation;
  k.round = static_cast<int>(task.round);
  k.attempt = static_cast<int>(task.attempt);
  k.base_sha256 = task.model_sha256;
  k.dtype = WireDtypeName(UpdateDtype());
  // Under DP only protected figures leave: the noised count, no loss.
  k.examples = dp ? dp->reported_count : outcome.examples;
  if (!dp) k.train_loss = outcome.mean_loss;
  PreprocessSettings pipeline = config_.preprocess;
  pipeline.output_size = plan_->model.input_size;
  k.pipeline = DescribePipeline(pipeline);
  if (dp) {
    k.privacy = KeptUpdate::Privacy{config_.privacy.unit(), dp->training.noise_multiplier,
                                    dp->training.clip_norm, dp->training.sampling_rate,
                                    dp->training.steps,     dp->training.delta,
                                    dp->site_epsilon,       config_.privacy.epsilon_max};
    k.charge_id = dp->training.id;
    k.count_charge_id = dp->count_charge_id;
  }
  return k;
}

absl::StatusOr<NodeRuntime::WireUpdate> NodeRuntime::Encode(std::vector<float> delta, int round) const {
  WireUpdate wire;
  const WireDtype dtype = UpdateDtype();
  if (dtype != WireDtype::kFloat32) {
    wire.encoded.resize(delta.size() * BytesPerValue(dtype));
    if (std::optional<size_t> i = EncodeValues(delta.data(), delta.size(), dtype, wire.encoded.data())) {
      return absl::OutOfRangeError(absl::StrCat(
          "round ", round, ": the update's value ", delta[*i], " at parameter ", *i, " does not fit ",
          WireDtypeName(dtype),
          dtype == WireDtype::kFloat16 ? " (largest 65504); the plan should use update_dtype = \"bfloat16\"" : ""));
    }
  } else {
    wire.delta = std::move(delta);
  }
  wire.sha256 = crypto::Sha256Hex(wire.bytes());
  return wire;
}

absl::Status NodeRuntime::Keep(const KeptUpdate& facts, const WireUpdate& wire) {
  // Durable: the update was paid for, and a crash must not lose it.
  absl::Status s = WriteFileAtomically(facts.path, wire.bytes(), 0600);
  if (s.ok()) s = store_->KeepUpdate(facts);
  if (!s.ok()) {
    // Sent all the same; only a later resend is lost.
    spdlog::error(
        "round {}: cannot keep the update in {} ({}); if the coordinator asks for it again, the node "
        "will have to train (and be charged) again",
        facts.round, facts.path, std::string(s.message()));
  }
  return s;
}

void NodeRuntime::ForgetKeptUpdates(int before_round) {
  absl::StatusOr<std::vector<KeptUpdate>> kept = store_->KeptUpdates();
  if (!kept.ok()) {
    spdlog::warn("cannot list the kept updates: {}", std::string(kept.status().message()));
    return;
  }
  for (const KeptUpdate& k : *kept) {
    if (plan_ && k.federation == plan_->federation && k.round >= before_round) continue;
    std::error_code ec;
    std::filesystem::remove(k.path, ec);
    KeepRecord(store_->ForgetKeptUpdate(k.federation, k.round));
  }
}

absl::StatusOr<std::optional<NodeRuntime::TaskOutcome>> NodeRuntime::ResendKept(const protocol::TrainingTask& task) {
  const int round = static_cast<int>(task.round);
  absl::StatusOr<std::optional<KeptUpdate>> kept = store_->KeptUpdateOf(plan_->federation, round);
  if (!kept.ok()) return kept.status();
  if (!kept->has_value()) return std::optional<TaskOutcome>();
  const KeptUpdate& k = **kept;
  if (k.base_sha256 != task.model_sha256 || k.dtype != WireDtypeName(UpdateDtype())) {
    // Trained on another base (or for another dtype): it does not answer
    // this task, and no later task can want it.
    spdlog::warn(
        "round {}: the kept update (attempt {}) was trained on model {}, this task's base is {}; training "
        "again",
        round, k.attempt, k.base_sha256.substr(0, 12), task.model_sha256.substr(0, 12));
    std::error_code ec;
    std::filesystem::remove(k.path, ec);
    KeepRecord(store_->ForgetKeptUpdate(k.federation, k.round));
    return std::optional<TaskOutcome>();
  }
  auto wire = std::make_shared<WireUpdate>();
  absl::StatusOr<std::string> bytes = ReadFile(k.path, k.bytes);
  if (bytes.ok()) wire->encoded = std::move(*bytes);
  if (!bytes.ok() || wire->encoded.size() != k.bytes || crypto::Sha256Hex(wire->encoded) != k.update_sha256) {
    spdlog::error("round {}: the kept update in {} is missing or damaged; training again", round, k.path);
    KeepRecord(store_->ForgetKeptUpdate(k.federation, k.round));
    return std::optional<TaskOutcome>();
  }
  wire->sha256 = k.update_sha256;
  spdlog::info(
      "round {} (attempt {}): sending again the update trained for attempt {} (already charged; no "
      "training, no new charge)",
      round, task.attempt, k.attempt);
  absl::Status sent = SendUpdate(task, std::move(wire), k, /*resent=*/true, clock_->Now());
  if (!sent.ok()) return sent;
  return std::optional<TaskOutcome>(TaskOutcome::kDone);
}

absl::Status NodeRuntime::SendUpdate(const protocol::TrainingTask& task, std::shared_ptr<const WireUpdate> wire,
                                     const KeptUpdate& facts, bool resent, absl::Time start) {
  const int round = static_cast<int>(task.round);
  const int attempt = static_cast<int>(task.attempt);
  const std::string_view bytes = wire->bytes();
  const std::string& update_sha = wire->sha256;
  absl::StatusOr<LedgerEntry> sent = store_->RecordUpdateSending(
      round, attempt, task.model_sha256, update_sha, bytes.size(), WireDtypeName(UpdateDtype()), facts.examples,
      facts.train_loss.value_or(0.0), resent ? facts.attempt : 0, clock_->NowMs());
  if (!sent.ok()) return sent.status();
  if (facts.charge_id) KeepRecord(store_->SetChargeStatus(facts.charge_id, "sending"));

  protocol::UpdateClaim claim;
  claim.round = task.round;
  claim.attempt = task.attempt;
  claim.nonce = task.nonce;
  claim.base_model_sha256 = task.model_sha256;
  claim.update_sha256 = update_sha;
  claim.total_bytes = bytes.size();
  claim.dtype = UpdateDtype();
  claim.num_examples = static_cast<uint64_t>(facts.examples);
  claim.pipeline = facts.pipeline;
  claim.ledger_seq = static_cast<uint64_t>(sent->seq);
  claim.ledger_sha256 = sent->sha256;
  if (facts.privacy) {
    const KeptUpdate::Privacy& dp = *facts.privacy;
    claim.privacy = protocol::PrivacyReport{dp.unit,  dp.noise_multiplier, dp.clip_norm,  dp.sampling_rate, dp.steps,
                                            dp.delta, dp.epsilon_spent,    dp.epsilon_max};
  } else {
    claim.train_loss = facts.train_loss;  // without DP only: under DP it would be an unprotected statistic
  }
  // The coordinator says when it is ready for the bytes (it receives a few
  // updates at a time); until then they stay here. An upload cut short
  // (UNAVAILABLE: the connection broke, or the coordinator saw the stream
  // end early) is tried again while the task's deadline allows: the update
  // is the same release, so sending it again costs no privacy.
  const size_t chunk = plan_->chunk_bytes / sizeof(float) * sizeof(float);  // whole values in every dtype
  absl::Status s;
  double pause = 1;
  for (int tries = 1;; ++tries) {
    s = client_->SubmitUpdate(claim, bytes, wire, chunk, Deadline(task.deadline_unix_ms));
    if (s.ok() || s.code() != absl::StatusCode::kUnavailable || tries >= 5 || stopping_.load() ||
        clock_->Now() + absl::Seconds(pause) >= Deadline(task.deadline_unix_ms)) {
      break;
    }
    spdlog::warn("round {}: the upload was cut short ({}); sending it again in {:.0f}s", round,
                 std::string(s.message()), pause);
    if (SleepUnlessStopping(absl::Seconds(pause))) break;
    pause *= 2;
  }
  std::string outcome_text = s.ok() ? "accepted" : std::string(s.message());
  KeepRecord(store_->RecordUpdateOutcome(round, attempt, outcome_text, clock_->NowMs()));
  if (facts.charge_id) {
    if (resent) outcome_text = absl::StrCat(outcome_text, " (sent again in attempt ", attempt, ")");
    if (!s.ok() && !facts.path.empty()) absl::StrAppend(&outcome_text, "; kept, to send again if asked");
    KeepRecord(store_->SetChargeStatus(facts.charge_id, outcome_text));
    if (facts.count_charge_id) {
      KeepRecord(store_->SetChargeStatus(facts.count_charge_id, s.ok() ? "sent" : outcome_text));
    }
  }
  if (!s.ok()) return s;
  const double took = absl::ToDoubleSeconds(clock_->Now() - start);
  if (facts.privacy) {
    spdlog::info(
        "round {}: update accepted ({} units, noised; {:.1f}s); privacy spent: epsilon {:.4f} of {:.4g} "
        "(delta {:g})",
        round, facts.examples, took, facts.privacy->epsilon_spent, config_.privacy.epsilon_max, config_.privacy.delta);
  } else {
    spdlog::info("round {}: update accepted ({} examples, loss {:.4f}, {:.1f}s; NOT differentially private)", round,
                 facts.examples, facts.train_loss.value_or(0.0), took);
  }
  return absl::OkStatus();
}

absl::StatusOr<NodeRuntime::TaskOutcome> NodeRuntime::RefuseEvaluation(const protocol::EvaluationTask& task,
                                                                       const std::string& why) {
  spdlog::warn("round {}: evaluation refused: {}", task.round, why);
  absl::Status s = store_->RecordPolicyRefusal("evaluate", static_cast<int>(task.round), 0, why, clock_->NowMs());
  if (!s.ok()) return s;
  return AnswerSuppressed(task);
}

absl::StatusOr<NodeRuntime::TaskOutcome> NodeRuntime::AnswerSuppressed(const protocol::EvaluationTask& task) {
  absl::Status sent = SendEvaluation(task, nullptr);
  if (!sent.ok()) return sent;
  return TaskOutcome::kDeclined;
}

absl::Status NodeRuntime::SendEvaluation(const protocol::EvaluationTask& task, const EvaluationRelease* release,
                                         const Evaluation* exact) {
  const int round = static_cast<int>(task.round);
  nlohmann::json released;
  if (release) {
    const EvaluationStatistics& st = release->statistics;
    released = {{"noise_multiplier", release->noise_multiplier},
                {"num_classes", st.num_classes},
                {"confusion", st.confusion},
                {"loss_sum", st.loss_sum},
                {"confidence", st.confidence},
                {"scores", st.scores},
                {"multilabel", st.multilabel},
                {"epsilon_spent", release->epsilon_spent},
                {"delta", config_.privacy.delta}};
  }
  absl::StatusOr<LedgerEntry> recorded = store_->RecordEvaluation(
      round, task.model_sha256, exact ? exact->loss : 0, exact ? exact->accuracy : 0, exact ? exact->count : 0,
      release == nullptr, release ? released.dump() : "", clock_->NowMs());
  if (!recorded.ok()) return recorded.status();
  protocol::EvaluationReport report{task.round, task.nonce, task.model_sha256, release == nullptr};
  report.ledger_seq = static_cast<uint64_t>(recorded->seq);
  report.ledger_sha256 = recorded->sha256;
  if (release) {
    report.release = protocol::ReleasedEvaluation{release->noise_multiplier, release->statistics.num_classes,
                                                  release->statistics,       release->epsilon_spent,
                                                  config_.privacy.delta,     config_.privacy.unit()};
  }
  return client_->SubmitEvaluation(report, Deadline(task.deadline_unix_ms));
}

absl::StatusOr<NodeRuntime::TaskOutcome> NodeRuntime::HandleEval(const protocol::EvaluationTask& task) {
  const int round = static_cast<int>(task.round);
  const PrivacySettings& privacy = config_.privacy;
  // Refusals that need neither the model nor the data.
  if (std::optional<std::string> beyond = ArchitectureViolation(config_.policy, plan_->model.architecture)) {
    return RefuseEvaluation(task, *beyond);
  }
  if (static_cast<int64_t>(task.min_report) < config_.policy.min_report) {
    return RefuseEvaluation(
        task, absl::StrCat("[policy] min_report: the task asks figures from ", task.min_report,
                           " validation patients, fewer than this site's floor of ", config_.policy.min_report));
  }
  const int min_report = EffectiveMinReport(config_.policy, static_cast<int>(task.min_report));
  // Only the model the coordinator signed as this round's: a model it did
  // not publish (a probe) is neither fetched nor run on the data.
  if (absl::Status published = CheckPublication(task.publication, round, task.model_sha256, round); !published.ok()) {
    if (published.code() != absl::StatusCode::kPermissionDenied) return published;
    return AnswerSuppressed(task);  // its model_refused entry is written
  }
  // The round's model is fetched whatever follows: it is the newest the
  // site's clinicians can run (predict --model latest), and fetching it
  // touches no patient data.
  absl::StatusOr<std::shared_ptr<const ModelParameters>> model =
      EnsureModel(task.model_sha256, round, task.deadline_unix_ms);
  if (model.status().code() == absl::StatusCode::kPermissionDenied) return AnswerSuppressed(task);
  if (!model.ok()) return model.status();
  if (config_.trainer == "noop") return Done(SendEvaluation(task, nullptr));  // benchmarks: nothing counted
  std::optional<PrivacyCharge> charge;
  if (privacy.enabled) {
    absl::StatusOr<std::vector<PrivacyCharge>> ledger = store_->PrivacyLedger();
    if (!ledger.ok()) return ledger.status();
    // One release per published round: a coordinator asking again gets no
    // second look at the same patients.
    std::set<int> evaluated;
    for (const PrivacyCharge& c : *ledger) {
      if (c.kind == ChargeKind::kEvaluation && c.federation == plan_->federation) evaluated.insert(c.round);
    }
    if (evaluated.count(round)) {
      return RefuseEvaluation(task, absl::StrCat("round ", round, " was evaluated already: one release per round"));
    }
    if (evaluation_suppressed_) {
      // An earlier release came out below min_report: deciding from it is
      // post-processing, and spends nothing more.
      return RefuseEvaluation(task, absl::StrCat("an earlier release counted fewer validation patients than "
                                                 "min_report ",
                                                 min_report, "; no further evaluation is sent"));
    }
    const int planned = config_.policy.rounds > 0 ? config_.policy.rounds : plan_->rounds;
    absl::StatusOr<ChargePlan> planned_charge = PlanEvaluation(privacy, config_.policy.evaluation_epsilon, *ledger,
                                                               planned - static_cast<int>(evaluated.size()));
    if (!planned_charge.ok()) return planned_charge.status();
    if (const BudgetRefusal* refused = std::get_if<BudgetRefusal>(&*planned_charge)) {
      return RefuseEvaluation(task, refused->detail);
    }
    charge = std::get<PrivacyCharge>(*planned_charge);
  }
  absl::Status s = PrepareData(*plan_);
  if (!s.ok()) return s;
  if (charge) {
    // Committed before the data is touched, like a training round.
    charge->federation = plan_->federation;
    charge->round = round;
    charge->units = data_->validation_patients;  // stays in the node's ledger
    charge->status = "charged";
    charge->at_ms = clock_->NowMs();
    s = store_->ChargePrivacy({&*charge});
    if (!s.ok()) return s;
  }
  s = store_->RecordDataAccess("evaluate", round, data_->validation.count(), data_->validation_patients,
                               validation_uids_sha256_, clock_->NowMs());
  if (!s.ok()) return s;
  // An empty validation split is released like any other (zeros plus the
  // noise): refusing instead would tell the coordinator it is empty.
  Evaluation exact;
  const bool segmentation = plan_->model.task == ModelTask::kSegmentation;
  const bool multilabel = plan_->model.task == ModelTask::kMultilabel;
  absl::StatusOr<EvaluationStatistics> statistics =
      EvaluationStatistics::Empty(plan_->model.num_classes, segmentation, multilabel);
  if (data_->validation.count() > 0) {
    absl::StatusOr<Evaluation> e = EvaluateModel(plan_->model, **model, data_->validation);
    if (!e.ok()) return e.status();
    exact = std::move(*e);
    std::vector<double> losses(exact.scores.size());
    for (size_t i = 0; i < losses.size(); ++i) losses[i] = ExampleLoss(exact.scores, i);
    std::vector<std::string> units = data_->validation.patients;
    if (!privacy.patient_level) {
      for (size_t i = 0; i < units.size(); ++i) units[i] = absl::StrCat("image:", i);
    }
    statistics = segmentation ? CollectSegmentationStatistics(exact.scores, losses, exact.dice, units)
                 : multilabel ? CollectMultilabelStatistics(exact.scores, losses, units)
                              : CollectStatistics(exact.scores, losses, units);
    if (!statistics.ok()) return statistics.status();
  }
  EvaluationRelease release{std::move(*statistics), charge ? charge->noise_multiplier : 0.0, 0.0};
  if (charge) {
    absl::StatusOr<std::unique_ptr<crypto::SecureRandom>> rng = crypto::SecureRandom::Create();
    if (!rng.ok()) return rng.status();
    AddReleaseNoise(release.noise_multiplier, **rng, &release.statistics);
    release.epsilon_spent = charge->epsilon_after;
  }
  // Suppression decided from the release itself: post-processing, never
  // the exact count.
  const ReleasedFigures figures = FiguresFromRelease(release.statistics);
  const bool suppressed = figures.metrics.count < min_report;
  if (suppressed && charge) evaluation_suppressed_ = true;
  s = SendEvaluation(task, suppressed ? nullptr : &release, &exact);
  if (charge) {
    // The charge stands whatever happened; its status is the node's record
    // of what became of it, and a failure to write it is reported too.
    absl::Status marked = store_->SetChargeStatus(charge->id, s.ok() ? (suppressed ? "suppressed" : "sent") : "failed");
    if (s.ok()) s = marked;
  }
  if (!s.ok()) return s;
  // The exact figures stay in this log; only the release left.
  double mean_dice = 0;
  for (double d : exact.dice) mean_dice += d / static_cast<double>(exact.dice.size());
  std::optional<Metrics> exact_metrics;
  std::optional<MultilabelMetrics> exact_labels;
  if (multilabel && exact.count > 0) {
    absl::StatusOr<MultilabelMetrics> m = ComputeMultilabelMetrics(exact.scores);
    if (m.ok()) exact_labels = std::move(*m);
  } else if (!segmentation && exact.count > 0) {
    absl::StatusOr<Metrics> m = ComputeMetrics(exact.scores);
    if (m.ok()) exact_metrics = std::move(*m);
  }
  auto auc = [](const std::optional<double>& v) { return v ? absl::StrFormat("%.3f", *v) : std::string("-"); };
  const std::string here =
      segmentation ? absl::StrFormat("mean Dice %.3f, pixel accuracy %.3f", mean_dice, exact.accuracy)
      : exact_labels
          ? absl::StrFormat("macro AUC %s, micro AUC %s, label accuracy %.3f", auc(exact_labels->macro_roc_auc),
                            auc(exact_labels->micro.roc_auc), exact.accuracy)
      : exact_metrics
          ? absl::StrFormat("accuracy %.3f (balanced %.3f)", exact.accuracy, exact_metrics->balanced_accuracy)
          : absl::StrFormat("accuracy %.3f", exact.accuracy);
  const std::string released = segmentation ? absl::StrFormat("mean Dice %.3f", figures.mean_dice.value_or(0))
                               : multilabel ? absl::StrFormat("macro AUC %s, label accuracy %.3f",
                                                              auc(figures.metrics.roc_auc), figures.metrics.accuracy)
                                            : absl::StrFormat("accuracy %.3f", figures.metrics.accuracy);
  spdlog::info(
      "round {}: global model validation {}, loss {:.4f} on {} images here; {}", round, here, exact.loss, exact.count,
      suppressed ? absl::StrFormat("the release counted fewer than min_report %d patients: not sent", min_report)
      : charge   ? absl::StrFormat("released under DP (sigma %.3f, evaluation epsilon %.4f): %s",
                                   release.noise_multiplier, release.epsilon_spent, released)
                 : std::string("sent exactly (NOT differentially private)"));
  if (exact_metrics) {
    if (std::optional<std::string> one = SingleClassWarning(*exact_metrics)) {
      spdlog::warn("round {}: the global model on this site's validation images: {}", round, *one);
    }
  }
  if (exact_labels) {
    if (std::optional<std::string> constant = ConstantLabelWarning(*exact_labels, plan_->model.class_names)) {
      spdlog::warn("round {}: the global model on this site's validation images: {}", round, *constant);
    }
  }
  return TaskOutcome::kDone;
}

NodeRuntime::TaskResult NodeRuntime::Resolve(const absl::StatusOr<TaskOutcome>& outcome) {
  if (outcome.ok()) {
    return {*outcome == TaskOutcome::kDeclined ? TaskResult::Kind::kDeclined : TaskResult::Kind::kDone,
            absl::OkStatus()};
  }
  // A stop cancels what is under way: not the node's fault.
  if (stopping_.load()) return {TaskResult::Kind::kRetry, outcome.status()};
  return {IsLocalFault(outcome.status()) ? TaskResult::Kind::kFatal : TaskResult::Kind::kRetry, outcome.status()};
}

absl::Status NodeRuntime::Run() {
  double backoff = 0.5;
  bool announced = false;
  // A stop asked for by a signal: the kept updates wait for the restart.
  auto stopped = [&]() -> absl::Status {
    absl::StatusOr<std::vector<KeptUpdate>> kept = store_->KeptUpdates();
    std::vector<std::string> rounds;
    if (kept.ok()) {
      for (const KeptUpdate& k : *kept) rounds.push_back(absl::StrCat(k.round));
    }
    spdlog::info("stopped{}", rounds.empty() ? std::string()
                                             : absl::StrCat("; the update(s) of round(s) ", absl::StrJoin(rounds, ", "),
                                                            " are kept and are sent if the coordinator asks again "
                                                            "after a restart (no new training or charge)"));
    return absl::OkStatus();
  };
  while (true) {
    if (stopping_.load()) return stopped();
    absl::StatusOr<JoinedPlan> plan = Hello();
    if (!plan.ok()) {
      if (IsPermanent(plan.status().code())) return plan.status();
      spdlog::warn(
          "cannot reach the coordinator at {} ({}); check the address, that it is running, and that "
          "this kit comes from the federation's CA; retrying in {:.1f}s",
          config_.coordinator_address, std::string(plan.status().message()), backoff);
      if (SleepUnlessStopping(absl::Seconds(backoff))) return stopped();
      backoff = std::min(backoff * 2, config_.max_backoff_s);
      continue;
    }
    plan_ = *plan;
    if (!announced) {
      spdlog::info("joined federation '{}' as site {}: model '{}', {} round(s)", plan_->federation, plan_->site,
                   plan_->model.architecture, plan_->rounds);
      announced = true;
    }
    absl::Status s = StartUp();
    if (!s.ok()) return s;

    absl::StatusOr<std::unique_ptr<TaskStream>> stream = client_->WaitTask();
    if (!stream.ok()) {
      if (stopping_.load()) return stopped();
      return stream.status();
    }
    std::optional<protocol::Task> next;
    while (!stopping_.load() && (next = (*stream)->Next())) {
      // A stream that delivers work is a working connection; one refused at
      // once (another node holds this kit's stream) keeps backing off.
      backoff = 0.5;
      absl::StatusOr<TaskOutcome> result = TaskOutcome::kDone;
      const protocol::Task& task = *next;
      if (const auto* stop = std::get_if<protocol::StopTask>(&task)) {
        spdlog::info("the coordinator says stop: {}", stop->reason);
        ForgetKeptUpdates(std::numeric_limits<int>::max());  // the federation is over
        // Ended from this side: Cancelled is how it ends, nothing to report.
        const absl::Status end = (*stream)->Finish();
        if (end.code() != absl::StatusCode::kCancelled && !end.ok()) {
          spdlog::debug("task stream after stop: {}", end.ToString());
        }
        return absl::OkStatus();
      } else if (const auto* train = std::get_if<protocol::TrainingTask>(&task)) {
        result = HandleTrain(*train);
      } else if (const auto* evaluate = std::get_if<protocol::EvaluationTask>(&task)) {
        result = HandleEval(*evaluate);
      } else if (const auto* failed = std::get_if<protocol::RoundFailedNotice>(&task)) {
        result = Done(RecordRoundFailed(*failed));
      } else {
        result = absl::InvalidArgumentError("a task of a kind this node does not know; update fedrad");
      }
      switch (const TaskResult r = Resolve(result); r.kind) {
        case TaskResult::Kind::kFatal: {
          spdlog::error("this node cannot go on: {}", std::string(r.why.message()));
          const absl::Status end = (*stream)->Finish();
          if (!end.ok() && end.code() != absl::StatusCode::kCancelled) {
            spdlog::debug("task stream after a fatal task: {}", end.ToString());
          }
          return r.why;
        }
        case TaskResult::Kind::kRetry:
          // The coordinator re-asks or goes on without this site; the next
          // task is served as usual.
          spdlog::warn("task failed: {}", std::string(r.why.message()));
          break;
        case TaskResult::Kind::kDeclined:
          spdlog::info("task declined; the coordinator was told why");
          break;
        case TaskResult::Kind::kDone:
          break;
      }
    }
    const absl::Status end = (*stream)->Finish();
    if (stopping_.load()) return stopped();
    if (end.code() == absl::StatusCode::kAlreadyExists) {
      spdlog::error("the coordinator refused this node's task stream: {}; retrying in {:.1f}s",
                    std::string(end.message()), backoff);
    } else {
      spdlog::warn("task stream ended ({}); reconnecting in {:.1f}s", std::string(end.message()), backoff);
    }
    if (SleepUnlessStopping(absl::Seconds(backoff))) return stopped();
    backoff = std::min(backoff * 2, config_.max_backoff_s);
  }
}

}  // namespace fedrad::node
