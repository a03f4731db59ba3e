#include "coordinator/round_driver.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/evaluation_release.h"
#include "common/files.h"
#include "common/metrics.h"
#include "common/model_publication.h"
#include "common/model_zoo.h"
#include "common/system_memory.h"
#include "coordinator/strategy_registry.h"
#include "crypto/random.h"
#include "crypto/sha256.h"

namespace fedrad::coordinator {

absl::StatusOr<std::unique_ptr<RoundDriver>> RoundDriver::Create(const CoordinatorConfig& config, const Clock* clock) {
  // What the plan asks the coordinator to hold, against what the machine
  // can give, before a byte of it is allocated or the state touched (the
  // largest flat model a plan allows, 2^31 values, ended in bad_alloc).
  absl::StatusOr<Manifest> manifest = ModelManifest(config.plan.model);
  if (!manifest.ok()) return manifest.status();
  absl::StatusOr<TrainedParameters> trained = TrainedParametersOf(config.plan.model);
  if (!trained.ok()) return trained.status();
  absl::StatusOr<MemoryNeed> need =
      CoordinatorMemoryNeed(config.plan.strategy, static_cast<size_t>(manifest->total_elements()));
  if (!need.ok()) return need.status();
  absl::Status s =
      CheckMemoryFits(absl::StrCat("federation '", config.plan.name, "' with a model of ", manifest->total_elements(),
                                   " values and strategy '", config.plan.strategy.name, "'"),
                      need->bytes, need->parts, AvailableMemoryBytes());
  if (!s.ok()) return s;
  s = EnsureDirectory(config.state_dir);
  if (!s.ok()) return s;
  LedgerSigner signer{config.tls.key_pem, config.tls.certificate_pem, config.tls.common_name};
  absl::StatusOr<std::unique_ptr<StateStore>> state =
      StateStore::Open(config.state_dir + "/state.db", signer, clock->NowMs(), config.ledger_lost);
  if (!state.ok()) return state.status();
  absl::StatusOr<std::unique_ptr<ModelStore>> models = ModelStore::Open(config.state_dir + "/models");
  if (!models.ok()) return models.status();
  std::unique_ptr<RoundDriver> driver(
      new RoundDriver(config, clock, std::move(*state), std::move(*models), std::move(*manifest), std::move(*trained)));
  s = EnsureDirectory(driver->spool_dir_);
  if (!s.ok()) return s;
  // Spooled updates of a round that did not close belong to no round now.
  driver->ClearSpool();
  absl::StatusOr<std::unique_ptr<Strategy>> strategy =
      CreateStrategy(config.plan.strategy, driver->trained_.elements());
  if (!strategy.ok()) return strategy.status();
  driver->strategy_ = std::move(*strategy);
  if (!driver->trained_.frozen.empty()) {
    spdlog::info("[model] freeze: {} of {} parameters train and travel in updates; frozen: {}",
                 driver->trained_.elements(), driver->manifest_.total_elements(),
                 absl::StrJoin(driver->trained_.frozen, ", "));
  }
  s = EnsureDirectory(driver->StrategyDir());
  if (!s.ok()) return s;
  s = driver->LoadOrCreateInitialModel();
  if (!s.ok()) return s;
  s = driver->RestoreStrategyState();
  if (!s.ok()) return s;
  // After the model is loaded (which briefly takes twice its size), so the
  // peak stays the model plus the sum.
  driver->intake_ = std::make_unique<UpdateIntake>(static_cast<size_t>(driver->trained_.elements()),
                                                   driver->strategy_->FoldsUpdatesAsTheyArrive());
  // Sites whose budget was spent in an earlier run of this federation stay
  // so, and their earlier reports still bound what they may claim.
  absl::StatusOr<std::vector<StateStore::PrivacyAnswer>> history = driver->state_->PrivacyHistory();
  if (!history.ok()) return history.status();
  absl::MutexLock lock(&driver->mu_);
  std::map<std::string, bool> declined;  // by each site's latest answer
  for (const StateStore::PrivacyAnswer& a : *history) {
    if (a.answer.declined || a.update_sha256.empty()) {
      driver->claims_.RecordDecline(a.site, a.answer.privacy);
    } else {
      driver->claims_.RecordUpdate(a.site, a.answer.privacy, a.update_sha256);
    }
    declined[a.site] = a.answer.declined;
  }
  for (const auto& [site, d] : declined) {
    if (d) driver->exhausted_.insert(site);
  }
  return driver;
}

RoundDriver::RoundDriver(CoordinatorConfig config, const Clock* clock, std::unique_ptr<StateStore> state,
                         std::unique_ptr<ModelStore> models, Manifest manifest, TrainedParameters trained)
    : config_(std::move(config)),
      clock_(clock),
      manifest_(std::move(manifest)),
      manifest_sha256_(manifest_.Sha256()),
      trained_(std::move(trained)),
      state_(std::move(state)),
      models_(std::move(models)),
      spool_dir_(config_.state_dir + "/spool") {}

RoundDriver::~RoundDriver() = default;

absl::Status RoundDriver::LoadOrCreateInitialModel() {
  absl::StatusOr<std::optional<ModelVersion>> latest = state_->LatestModel();
  if (!latest.ok()) return latest.status();
  if (!latest->has_value()) {
    absl::StatusOr<ModelParameters> init;
    if (config_.plan.model_init.empty()) {
      init = InitialParameters(config_.plan.model, config_.plan.seed);
    } else {
      absl::StatusOr<InitialWeights> given =
          WeightsFromFile(config_.plan.model, config_.plan.model_init, config_.plan.seed);
      if (!given.ok()) return given.status();
      for (const std::string& note : given->notes) spdlog::warn("initial model: {}", note);
      spdlog::info("the initial model starts from {} (the plan's [model] init)", config_.plan.model_init);
      init = std::move(given->parameters);
    }
    if (!init.ok()) return init.status();
    absl::StatusOr<std::string> sha = models_->Put(*init, ModelMetadata(0));
    if (!sha.ok()) return sha.status();
    absl::Status s = state_->AddInitialModel(*sha, clock_->NowMs());
    if (!s.ok()) return s;
    spdlog::info("created the initial '{}' model ({} parameters), sha256 {}", config_.plan.model.architecture,
                 manifest_.total_elements(), sha->substr(0, 12));
    global_ = std::move(*init);
    global_round_ = 0;
    return Publish(0, *sha);
  }
  absl::StatusOr<ModelParameters> params = models_->Load((*latest)->sha256);
  if (!params.ok()) return params.status();
  if (!(params->manifest == manifest_)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the stored model of round ", (*latest)->round, " does not match the plan's model '",
                     config_.plan.model.architecture, "'; was the plan changed under an existing state_dir?"));
  }
  global_ = std::move(*params);
  global_round_ = (*latest)->round;
  return Publish(global_round_, (*latest)->sha256);
}

absl::Status RoundDriver::Publish(int round, const std::string& sha256) {
  absl::StatusOr<std::string> signature = SignModelPublication(config_.tls.key_pem, {config_.plan.name, round, sha256});
  if (!signature.ok()) {
    return absl::InternalError(absl::StrCat("cannot sign the publication of the round ", round,
                                            " model with the coordinator's kit key: ", signature.status().message()));
  }
  absl::MutexLock lock(&mu_);
  global_sha256_ = sha256;
  global_signature_ = std::move(*signature);
  return absl::OkStatus();
}

void RoundDriver::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutdown_ = true;
  changed_.SignalAll();
}

absl::Status RoundDriver::Run() {
  // An attempt left open by a crash or a shutdown is resumed when it is the
  // next round's and its base is still the global model: the sites have
  // kept their updates (trained and charged already) and send them again.
  // Any other open attempt cannot close any more.
  absl::StatusOr<std::optional<StateStore::OpenAttempt>> open = state_->LatestOpenAttempt();
  if (!open.ok()) return open.status();
  std::optional<StateStore::OpenAttempt> resume;
  {
    absl::MutexLock lock(&mu_);
    if (open->has_value() && (*open)->round == global_round_ + 1 && (*open)->base_sha256 == global_sha256_ &&
        !(*open)->nonces.empty() && global_round_ < config_.plan.rounds) {
      resume = std::move(**open);
    }
  }
  absl::StatusOr<int> abandoned = state_->AbandonOpenRounds(
      clock_->NowMs(), resume ? std::optional(std::pair{resume->round, resume->attempt}) : std::nullopt);
  if (!abandoned.ok()) return abandoned.status();
  if (*abandoned > 0) {
    spdlog::warn("{} round attempt(s) left open by an earlier run were abandoned; they will be redone", *abandoned);
  }
  if (global_round_ > 0) {
    spdlog::info("resuming after round {} of {}", global_round_, config_.plan.rounds);
    absl::StatusOr<std::vector<SiteEvaluation>> evals = state_->Evaluations(global_round_);
    if (evals.ok() && evals->empty() && WaitForNodes()) EvaluateRound(global_round_);
  }
  std::string reason = "the federation has finished all rounds";
  int failed_attempts = 0;  // of the round under way
  while (global_round_ < config_.plan.rounds) {
    {
      absl::MutexLock lock(&mu_);
      if (TrainableSites() < static_cast<size_t>(config_.plan.min_nodes)) {
        reason = absl::StrCat("only ", TrainableSites(), " site(s) have privacy budget left and min_nodes is ",
                              config_.plan.min_nodes, "; the federation ends after round ", global_round_, " of ",
                              config_.plan.rounds);
        spdlog::warn("{}", reason);
        break;
      }
    }
    if (!WaitForNodes()) return absl::CancelledError("shut down while waiting for nodes");
    absl::StatusOr<bool> applied = RunRoundAttempt(global_round_ + 1, std::exchange(resume, std::nullopt));
    if (!applied.ok()) return applied.status();
    if (*applied) {
      failed_attempts = 0;
      EvaluateRound(global_round_);
      continue;
    }
    // Every attempt is a charged training task at every DP site: retried
    // after a pause that doubles, a bounded number of times.
    if (++failed_attempts >= config_.plan.max_attempts) {
      reason = absl::StrCat("round ", global_round_ + 1, " failed ", failed_attempts,
                            " attempt(s) (federation.max_attempts); the federation ends rather than ask the sites to "
                            "spend more privacy budget on it");
      spdlog::error("{}", reason);
      FinishFederation(reason);
      return absl::AbortedError(reason);
    }
    const double pause = std::min(300.0, config_.plan.retry_backoff_s * std::pow(2.0, failed_attempts - 1));
    spdlog::info("round {}: attempt {} of at most {} in {:.1f}s", global_round_ + 1, failed_attempts + 1,
                 config_.plan.max_attempts, pause);
    absl::MutexLock lock(&mu_);
    const absl::Time until = clock_->Now() + absl::Seconds(pause);
    while (!shutdown_ && clock_->Now() < until) clock_->WaitUntil(&changed_, &mu_, until);
  }
  FinishFederation(reason);
  return absl::OkStatus();
}

bool RoundDriver::WaitForNodes() {
  const size_t min_nodes = static_cast<size_t>(config_.plan.min_nodes);
  absl::MutexLock lock(&mu_);
  bool logged = false;
  while (true) {
    while (!shutdown_ && TrainableConnected() < min_nodes) {
      if (!logged) {
        spdlog::info("waiting for nodes: {} of at least {} connected", TrainableConnected(), min_nodes);
        logged = true;
      }
      changed_.WaitWithTimeout(&mu_, absl::Seconds(1));
    }
    if (shutdown_) return false;
    // Give the remaining sites a moment to join before starting without them.
    const absl::Time grace = clock_->Now() + absl::Seconds(config_.plan.start_grace_s);
    while (!shutdown_ && TrainableConnected() >= min_nodes && TrainableConnected() < TrainableSites() &&
           clock_->Now() < grace) {
      clock_->WaitUntil(&changed_, &mu_, grace);
    }
    if (shutdown_) return false;
    if (TrainableConnected() >= min_nodes) return true;
  }
}

size_t RoundDriver::TrainableConnected() const {
  size_t n = 0;
  for (const auto& [site, channel] : connected_) n += exhausted_.count(site) ? 0 : 1;
  return n;
}

size_t RoundDriver::TrainableSites() const {
  size_t n = 0;
  for (const std::string& site : config_.plan.sites) n += exhausted_.count(site) ? 0 : 1;
  return n;
}

absl::StatusOr<std::map<std::string, std::string>> RoundDriver::NoncesForConnectedSites(bool training) {
  std::map<std::string, std::string> nonces;
  for (const auto& [site, channel] : connected_) {
    if (training && exhausted_.count(site)) continue;
    absl::StatusOr<std::string> nonce = crypto::SecureRandomBytes(16);
    if (!nonce.ok()) return nonce.status();
    nonces[site] = *nonce;
  }
  return nonces;
}

void RoundDriver::SendTrainTask(const std::string& site) {
  auto channel = connected_.find(site);
  if (channel == connected_.end() || !round_) return;
  protocol::TrainingTask t;
  t.round = round_->round;
  t.attempt = round_->attempt;
  t.model_sha256 = round_->base_sha256;
  t.publication = {round_->round - 1, round_->base_signature};
  t.nonce = round_->nonces.at(site);
  t.deadline_unix_ms = absl::ToUnixMillis(round_->deadline);
  t.settings = strategy_->ConfigureTraining(round_->round, config_.plan.training);
  t.seed = config_.plan.seed * 1000003u + static_cast<uint64_t>(round_->round);
  channel->second->Send(t);
}

void RoundDriver::SendEvalTask(const std::string& site) {
  auto channel = connected_.find(site);
  if (channel == connected_.end() || !eval_) return;
  channel->second->Send(protocol::EvaluationTask{eval_->round, eval_->model_sha256, eval_->nonces.at(site),
                                                 absl::ToUnixMillis(eval_->deadline), config_.plan.min_report,
                                                 protocol::Publication{eval_->round, eval_->signature}});
}

absl::StatusOr<bool> RoundDriver::RunRoundAttempt(int round, std::optional<StateStore::OpenAttempt> resume) {
  int attempt = 0;
  if (resume) {
    attempt = resume->attempt;
  } else {
    absl::StatusOr<int> next = state_->NextAttempt(round);
    if (!next.ok()) return next.status();
    attempt = *next;
  }
  intake_->NewRound();
  OpenRound closed;
  {
    absl::MutexLock lock(&mu_);
    OpenRound r;
    r.round = round;
    r.attempt = attempt;
    r.base_sha256 = global_sha256_;
    r.base_signature = global_signature_;
    // A resumed attempt gets a whole deadline again: its sites are still
    // reconnecting.
    r.deadline = clock_->Now() + absl::Seconds(config_.plan.round_deadline_s);
    if (resume) {
      // The same nonces, so the updates the sites kept answer it as sent.
      r.nonces = std::move(resume->nonces);
      int connected = 0;
      for (const auto& [site, nonce] : r.nonces) connected += connected_.count(site) ? 1 : 0;
      absl::Status s = state_->ResumeRound(round, r.attempt, connected, clock_->NowMs());
      if (!s.ok()) return s;
    } else {
      absl::StatusOr<std::map<std::string, std::string>> nonces = NoncesForConnectedSites(true);
      if (!nonces.ok()) return nonces.status();
      r.nonces = std::move(*nonces);
      absl::Status s = state_->OpenRound(round, r.attempt, r.base_sha256, r.nonces, clock_->NowMs());
      if (!s.ok()) return s;
    }
    round_ = std::move(r);
    std::vector<std::string> sites;
    for (const auto& [site, nonce] : round_->nonces) sites.push_back(site);
    if (resume) {
      spdlog::info(
          "round {}/{} (attempt {}): resumed after a restart at the {} node(s) it was opened for: {} "
          "(their kept updates answer it, without training or charging again)",
          round, config_.plan.rounds, round_->attempt, sites.size(), absl::StrJoin(sites, ", "));
    } else {
      spdlog::info("round {}/{} (attempt {}): training at {} node(s): {}", round, config_.plan.rounds, round_->attempt,
                   sites.size(), absl::StrJoin(sites, ", "));
    }
    for (const auto& [site, nonce] : round_->nonces) SendTrainTask(site);
    const size_t enough = static_cast<size_t>(
        std::ceil(config_.plan.close_at_fraction * static_cast<double>(round_->nonces.size()) - 1e-9));
    auto closes = [&] {
      return round_->answered.size() >= round_->nonces.size() ||
             (round_->answered.size() >= enough &&
              round_->accepted.size() >= static_cast<size_t>(config_.plan.min_nodes));
    };
    while (!shutdown_ && !closes() && clock_->Now() < round_->deadline) {
      clock_->WaitUntil(&changed_, &mu_, round_->deadline);
    }
    closed = std::move(*round_);
    round_.reset();
    if (shutdown_) {
      ClearSpool();
      return absl::CancelledError("shut down during a round; it is resumed on restart");
    }
  }
  const int answered = static_cast<int>(closed.answered.size());
  const int accepted = static_cast<int>(closed.accepted.size());
  if (accepted < config_.plan.min_nodes) {
    std::string note = absl::StrCat(accepted, " accepted update(s) of ", closed.nonces.size(),
                                    " selected; min_nodes is ", config_.plan.min_nodes);
    if (!closed.coordinator_failures.empty()) {
      absl::StrAppend(&note, "; the coordinator could not take ", closed.coordinator_failures.size(),
                      " update(s) itself (", absl::StrJoin(closed.coordinator_failures, "; "), ")");
    }
    spdlog::warn("round {} (attempt {}) not applied: {}", round, closed.attempt, note);
    absl::Status s = state_->FailRound(round, closed.attempt, answered, note, clock_->NowMs());
    if (!s.ok()) return s;
    {
      // The sites whose updates were accepted hear that they were not
      // used, so their ledgers do not say "accepted" for nothing.
      absl::MutexLock lock(&mu_);
      for (const UpdateTicket& t : closed.accepted) {
        auto channel = connected_.find(t.site);
        if (channel == connected_.end()) continue;
        channel->second->Send(protocol::RoundFailedNotice{round, closed.attempt, note});
      }
    }
    if (!closed.coordinator_failures.empty()) {
      // The sites did their part and paid for it: asking again would charge
      // them again for the coordinator's own failure.
      return absl::FailedPreconditionError(
          absl::StrCat("round ", round, " (attempt ", closed.attempt,
                       ") failed because this coordinator could not store the "
                       "sites' updates (",
                       absl::StrJoin(closed.coordinator_failures, "; "),
                       "); stopping rather than ask them "
                       "to train and spend privacy budget again. Check the state directory ",
                       config_.state_dir, " (space, permissions) and the open-file limit, then restart"));
    }
    return false;
  }
  absl::StatusOr<std::optional<std::string>> kept = Aggregate(closed);
  if (!kept.ok()) return kept.status();
  if (kept->has_value()) {
    // The strategy kept the model: resuming the attempt after a restart
    // would only keep it again. It is closed as failed and the sites are
    // told to stop, which ends their kept updates.
    absl::Status failed = state_->FailRound(round, closed.attempt, answered, **kept, clock_->NowMs());
    if (!failed.ok()) return failed;
    FinishFederation(**kept);
    return absl::FailedPreconditionError(**kept);
  }
  LogPrivacy(closed);
  return true;
}

absl::StatusOr<std::unique_ptr<UpdateIntake::Upload>> RoundDriver::OpenUpload(const UpdateTicket& t) {
  // The claim's size, dtype and norm bound were checked against the plan in
  // BeginUpdate: the upload must be what the plan says.
  const WireDtype dtype = config_.plan.update_dtype;
  return intake_->Open(UploadSpec{t.upload_id, t.spool_path,
                                  static_cast<uint64_t>(trained_.elements()) * BytesPerValue(dtype), dtype,
                                  t.update_sha256, config_.plan.max_update_norm});
}

double RoundDriver::WeightOf(const UpdateTicket& t) const {
  return config_.plan.strategy.weighting == "equal" ? 1.0 : static_cast<double>(t.num_examples);
}

absl::StatusOr<std::optional<std::string>> RoundDriver::Aggregate(const OpenRound& r) {
  RoundUpdates in;
  // Strategies that read the files read them in site order, not arrival
  // order: float addition is not associative, and the same updates should
  // give the same model. (The running sum folds in arrival order, in
  // float64, which hides the order in the float32 model but for rare ties.)
  // Weights bounded by the plan: no claimed count outweighs the others
  // beyond max_weight_ratio times their median.
  std::vector<double> weights;
  for (const UpdateTicket& t : r.accepted) weights.push_back(WeightOf(t));
  const std::vector<double> capped = CappedWeights(weights, config_.plan.strategy.max_weight_ratio);
  std::map<uint64_t, double> reweighted;
  for (size_t i = 0; i < r.accepted.size(); ++i) {
    const UpdateTicket& t = r.accepted[i];
    in.updates.push_back({t.site, t.spool_path, capped[i]});
    if (capped[i] != weights[i]) {
      spdlog::warn("round {}: the weight of {} is capped from {:g} to {:g} (max_weight_ratio {:g} x the median)",
                   r.round, t.site, weights[i], capped[i], config_.plan.strategy.max_weight_ratio);
      reweighted[t.upload_id] = capped[i];
    }
  }
  std::sort(in.updates.begin(), in.updates.end(),
            [](const UpdateRef& a, const UpdateRef& b) { return a.site < b.site; });
  // Uploads still under way when the round closed come out of the sum.
  absl::StatusOr<const UpdateSum*> sealed = intake_->Seal(reweighted);
  if (!sealed.ok()) return sealed.status();
  if (*sealed != nullptr && (*sealed)->accepted() != static_cast<int>(r.accepted.size())) {
    return absl::InternalError(
        absl::StrCat("the round's sum holds ", (*sealed)->accepted(), " updates, not ", r.accepted.size()));
  }
  in.sum = *sealed;
  // The model is updated in place; if anything fails before the round
  // commits, the last committed model and strategy state are loaded again.
  absl::StatusOr<std::optional<std::string>> kept = AggregateInPlace(r, in);
  if (!kept.ok() || kept->has_value()) {
    absl::Status reloaded = LoadOrCreateInitialModel();
    if (reloaded.ok()) reloaded = RestoreStrategyState();
    if (!reloaded.ok()) spdlog::error("cannot reload the last model: {}", std::string(reloaded.message()));
  }
  return kept;
}

absl::StatusOr<std::optional<std::string>> RoundDriver::AggregateInPlace(const OpenRound& r, const RoundUpdates& in) {
  // Strategies see the trained parameters only (updates hold nothing else);
  // frozen ones stay as they are.
  absl::StatusOr<AggregateResult> result;
  if (trained_.frozen.empty()) {
    result = strategy_->Aggregate(r.round, in, &global_.values);
  } else {
    std::vector<float> part = trained_.Gather(global_.values);
    result = strategy_->Aggregate(r.round, in, &part);
    if (result.ok()) trained_.Scatter(part, &global_.values);
  }
  if (!result.ok()) return result.status();
  if (!result->changed) {
    // Every site paid for this round; a strategy that keeps the model would
    // make them pay again for nothing next round.
    return std::optional<std::string>(absl::StrCat(
        "round ", r.round, ": ", result->note, ": the ", strategy_->name(),
        " strategy kept the model, so the sites' charged round bought nothing; the federation stops rather than "
        "spend more of their budgets (change the plan's [strategy] or min_nodes)"));
  }
  spdlog::info("round {}: {}", r.round, result->note);
  // The strategy's state and the model file are durable before the round's
  // row commits, and the row commits before any node hears of the model.
  if (strategy_->HasState()) {
    const std::vector<float> state = strategy_->SaveState();
    absl::Status s = WriteFileAtomically(
        StrategyStatePath(r.round),
        std::string_view(reinterpret_cast<const char*>(state.data()), state.size() * sizeof(float)));
    if (!s.ok()) return s;
  }
  SafetensorsMetadata metadata = ModelMetadata(r.round);
  // The preprocessing the round's updates were trained on, so a site can
  // check that it prepares inputs the same way before running the model.
  std::set<std::string> pipelines;
  for (const UpdateTicket& t : r.accepted) {
    if (!t.pipeline.empty()) pipelines.insert(t.pipeline);
  }
  if (!pipelines.empty()) {
    std::vector<std::string> hashes;
    for (const std::string& p : pipelines) hashes.push_back(crypto::Sha256Hex(p));
    metadata["preprocessing"] = absl::StrJoin(pipelines, "\n");
    metadata["preprocessing_sha256"] = absl::StrJoin(hashes, ",");
    if (pipelines.size() > 1) {
      spdlog::warn(
          "round {}: the sites prepared their images {} different ways (node.toml [preprocess]); the "
          "model names them all",
          r.round, pipelines.size());
    }
  }
  absl::StatusOr<std::string> sha = models_->Put(global_, metadata);
  if (!sha.ok()) return sha.status();
  std::vector<Contribution> contributions;
  for (const UpdateTicket& t : r.accepted) contributions.push_back({t.site, t.update_sha256});
  std::sort(contributions.begin(), contributions.end(),
            [](const Contribution& a, const Contribution& b) { return a.site < b.site; });
  absl::Status s = state_->ApplyRound(r.round, r.attempt, *sha, static_cast<int>(r.answered.size()), strategy_->name(),
                                      contributions, clock_->NowMs());
  if (!s.ok()) return s;
  global_round_ = r.round;
  PruneStrategyState();
  PruneModels();
  s = Publish(r.round, *sha);
  if (!s.ok()) return s;
  return std::optional<std::string>();  // applied
}

std::string RoundDriver::StrategyDir() const { return config_.state_dir + "/strategy"; }

std::string RoundDriver::StrategyStatePath(int round) const {
  return absl::StrCat(StrategyDir(), "/round-", round, ".f32");
}

void RoundDriver::PruneStrategyState() {
  // Only the committed round's state is ever read again (on restart); the
  // others would grow by twice the model's size a round for FedAdam.
  const std::filesystem::path keep = std::filesystem::path(StrategyStatePath(global_round_)).filename();
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(StrategyDir(), ec)) {
    if (e.path().filename() != keep) std::filesystem::remove(e.path(), ec);
  }
}

void RoundDriver::PruneModels() {
  if (config_.keep_models <= 0) return;
  absl::StatusOr<std::vector<ModelVersion>> old = state_->ModelsBefore(global_round_ - config_.keep_models + 1);
  if (!old.ok()) {
    spdlog::warn("cannot list old models to remove (keep_models): {}", std::string(old.status().message()));
    return;
  }
  std::error_code ec;
  for (const ModelVersion& m : *old) std::filesystem::remove(models_->PathFor(m.sha256), ec);
}

absl::Status RoundDriver::RestoreStrategyState() {
  if (global_round_ == 0 || !strategy_->HasState()) return absl::OkStatus();
  const std::string path = StrategyStatePath(global_round_);
  absl::StatusOr<std::string> bytes = ReadFile(path, manifest_.total_bytes() * 4 + 4096);
  if (!bytes.ok()) {
    return absl::DataLossError(absl::StrCat("strategy '", strategy_->name(), "' needs its state after round ",
                                            global_round_, ": ", bytes.status().message()));
  }
  if (bytes->size() % sizeof(float) != 0) return absl::DataLossError(absl::StrCat("'", path, "' is truncated"));
  std::vector<float> state(bytes->size() / sizeof(float));
  std::memcpy(state.data(), bytes->data(), bytes->size());
  absl::Status s = strategy_->RestoreState(state);
  if (!s.ok()) return absl::DataLossError(absl::StrCat("'", path, "': ", s.message()));
  spdlog::info("restored the {} server state of round {}", strategy_->name(), global_round_);
  return absl::OkStatus();
}

SafetensorsMetadata RoundDriver::ModelMetadata(int round) const {
  SafetensorsMetadata m = ModelShapeMetadata(config_.plan.model);
  m["round"] = std::to_string(round);
  m["manifest_sha256"] = manifest_sha256_;
  m["federation"] = config_.plan.name;
  m["strategy"] = strategy_->name();
  return m;
}

void RoundDriver::ClearSpool() {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(spool_dir_, ec)) {
    std::filesystem::remove(e.path(), ec);
  }
}

void RoundDriver::EvaluateRound(int round) {
  OpenEval done;
  int selected = 0;
  {
    absl::MutexLock lock(&mu_);
    OpenEval e;
    e.round = round;
    e.model_sha256 = global_sha256_;
    e.signature = global_signature_;
    e.deadline = clock_->Now() + absl::Seconds(config_.plan.eval_deadline_s);
    absl::StatusOr<std::map<std::string, std::string>> nonces = NoncesForConnectedSites(false);
    if (!nonces.ok()) {
      spdlog::error("cannot evaluate round {}: {}", round, std::string(nonces.status().message()));
      return;
    }
    e.nonces = std::move(*nonces);
    eval_ = std::move(e);
    for (const auto& [site, nonce] : eval_->nonces) SendEvalTask(site);
    while (!shutdown_ && eval_->results.size() < eval_->nonces.size() && clock_->Now() < eval_->deadline) {
      clock_->WaitUntil(&changed_, &mu_, eval_->deadline);
    }
    done = std::move(*eval_);
    eval_.reset();
    selected = static_cast<int>(done.nonces.size());
  }
  std::vector<SiteEvaluation> results;
  std::vector<std::string> per_site;
  const bool multilabel = config_.plan.model.task == ModelTask::kMultilabel;
  for (const auto& [site, e] : done.results) {
    results.push_back(e);
    per_site.push_back(e.suppressed  ? absl::StrFormat("%s suppressed", site)
                       : e.mean_dice ? absl::StrFormat("%s Dice %.3f", site, *e.mean_dice)
                       : multilabel
                           ? absl::StrFormat("%s AUC %s", site, e.roc_auc ? absl::StrFormat("%.3f", *e.roc_auc) : "-")
                           : absl::StrFormat("%s %.3f", site, e.accuracy));
  }
  const RoundEvaluation g =
      CombineEvaluations(round, done.model_sha256, config_.plan.model.num_classes, results, config_.plan.model.task);
  absl::Status s = state_->RecordRoundEvaluation(g, clock_->NowMs(), config_.plan.model.class_names);
  if (!s.ok()) spdlog::error("cannot record round {}'s evaluation: {}", round, std::string(s.message()));
  // Post-processing of the sites' releases: under DP every figure, the
  // count included, carries the sites' noise.
  std::string agg = g.reporting_sites > 0
                        ? absl::StrFormat("validation accuracy %.3f (balanced %.3f), loss %.4f on about %d patients",
                                          g.metrics.accuracy, g.metrics.balanced_accuracy, g.loss, g.metrics.count)
                        : std::string("no validation figures");
  if (g.metrics.roc_auc) absl::StrAppendFormat(&agg, ", AUC %.3f", *g.metrics.roc_auc);
  if (g.mean_dice) agg = absl::StrFormat("validation mean Dice %.3f (%s)", *g.mean_dice, agg);
  if (g.multilabel && g.reporting_sites > 0) {
    const MultilabelMetrics& m = *g.multilabel;
    auto figure = [](const std::optional<double>& v) { return v ? absl::StrFormat("%.3f", *v) : std::string("-"); };
    agg = absl::StrFormat(
        "validation macro AUC %s, macro sensitivity %s, macro specificity %s, micro sensitivity %s, micro "
        "specificity %s, loss %.4f on about %d patients",
        figure(m.macro_roc_auc), figure(m.macro_sensitivity), figure(m.macro_specificity), figure(m.micro.sensitivity),
        figure(m.micro.specificity), g.loss, m.count);
  }
  if (g.reporting_sites > 0) absl::StrAppend(&agg, ", from the sites' DP releases");
  spdlog::info("round {}/{}: {} of {} node(s) answered; {} ({}); model {}", round, config_.plan.rounds,
               done.results.size(), selected, agg, absl::StrJoin(per_site, ", "), done.model_sha256.substr(0, 12));
  if (g.reporting_sites == 0) return;
  // The releases' counts carry noise: "one class" allows a few elsewhere.
  if (g.multilabel) {
    if (std::optional<std::string> constant =
            ConstantLabelWarning(*g.multilabel, config_.plan.model.class_names, kOneClassShare)) {
      spdlog::warn("round {}/{}: from the sites' DP releases: {}", round, config_.plan.rounds, *constant);
    }
  } else if (!g.mean_dice) {
    if (std::optional<std::string> one = SingleClassWarning(g.metrics, kOneClassShare)) {
      spdlog::warn("round {}/{}: from the sites' DP releases: {}", round, config_.plan.rounds, *one);
    }
  }
  if (std::optional<std::string> stalled = progress_.Note(round, g.loss)) {
    spdlog::warn("round {}/{}: {}", round, config_.plan.rounds, *stalled);
  }
}

std::optional<std::string> ValidationProgress::Note(int round, double loss) {
  if (!std::isfinite(loss)) return std::nullopt;
  if (best_round_ == 0 || loss < best_loss_ * (1 - kMinRelativeImprovement)) {
    best_loss_ = loss;
    best_round_ = round;
    return std::nullopt;
  }
  const int since = round - best_round_;
  if (since < kStallRounds) return std::nullopt;
  return absl::StrFormat(
      "the validation loss has not improved for %d rounds (best %.4f at round %d, now %.4f): the federation may have "
      "stalled; the learning rate, the clip norm and the noise per round decide how it learns",
      since, best_loss_, best_round_, loss);
}

RoundEvaluation CombineEvaluations(int round, const std::string& model_sha256, int num_classes,
                                   const std::vector<SiteEvaluation>& sites, ModelTask task) {
  const bool multilabel = task == ModelTask::kMultilabel;
  std::vector<int64_t> label_cells(multilabel ? static_cast<size_t>(num_classes) * 4 : 0, 0);
  RoundEvaluation g;
  g.round = round;
  g.model_sha256 = model_sha256;
  g.sites = static_cast<int>(sites.size());
  std::vector<std::vector<int64_t>> pooled(num_classes, std::vector<int64_t>(num_classes, 0));
  double loss = 0, auc = 0, auc_count = 0, ece = 0, dice = 0, dice_count = 0;
  for (const SiteEvaluation& e : sites) {
    if (e.suppressed) {
      g.suppressed_count += e.count;
      continue;
    }
    ++g.reporting_sites;
    const double n = static_cast<double>(e.count);
    loss += e.loss * n;
    ece += e.ece * n;
    if (e.roc_auc) {
      auc += *e.roc_auc * n;
      auc_count += n;
    }
    if (e.mean_dice) {
      dice += *e.mean_dice * n;
      dice_count += n;
    }
    if (multilabel) {
      for (size_t i = 0; i < e.confusion.size() && i < label_cells.size(); ++i) label_cells[i] += e.confusion[i];
      continue;
    }
    for (size_t i = 0; i < e.confusion.size() && static_cast<int>(i) < num_classes * num_classes; ++i) {
      pooled[i / num_classes][i % num_classes] += e.confusion[i];
    }
  }
  if (multilabel) {
    g.multilabel = MultilabelFromCounts(num_classes, label_cells);
    g.metrics = g.multilabel->micro;
    g.metrics.count = g.multilabel->count;
  } else {
    g.metrics = MetricsFromConfusion(std::move(pooled));
  }
  if (g.metrics.count == 0) return g;
  const double n = static_cast<double>(g.metrics.count);
  g.loss = loss / n;
  g.metrics.ece = ece / n;
  if (auc_count > 0) g.metrics.roc_auc = auc / auc_count;
  if (dice_count > 0) g.mean_dice = dice / dice_count;
  if (g.multilabel) {
    g.multilabel->macro_roc_auc = g.metrics.roc_auc;
    g.multilabel->micro.ece = g.metrics.ece;
  }
  return g;
}

void RoundDriver::LogPrivacy(const OpenRound& r) {
  // What each selected site reported this round: with its accepted update,
  // or with its decline.
  std::map<std::string, std::string> parts;
  bool any_dp = false;
  for (const auto& [site, nonce] : r.nonces) parts[site] = absl::StrCat(site, " -");
  for (const UpdateTicket& t : r.accepted) {
    parts[t.site] = t.privacy
                        ? absl::StrFormat("%s %.3f/%.3g", t.site, t.privacy->epsilon_spent, t.privacy->epsilon_max)
                        : absl::StrCat(t.site, " not DP");
    any_dp |= t.privacy.has_value();
  }
  for (const auto& [site, p] : r.declined) {
    parts[site] = absl::StrFormat("%s %.3f/%.3g (declined)", site, p.epsilon_spent, p.epsilon_max);
    any_dp = true;
  }
  if (!any_dp) {
    spdlog::warn("round {}/{}: no update was differentially private", r.round, config_.plan.rounds);
    return;
  }
  std::vector<std::string> joined;
  for (const auto& [site, text] : parts) joined.push_back(text);
  spdlog::info("round {}/{}: privacy, epsilon spent/max per site: {}", r.round, config_.plan.rounds,
               absl::StrJoin(joined, ", "));
}

void RoundDriver::FinishFederation(const std::string& reason) {
  ClearSpool();
  absl::MutexLock lock(&mu_);
  finished_ = true;
  spdlog::info("federation '{}' complete after {} round(s): {}; telling nodes to stop", config_.plan.name,
               global_round_, reason);
  finish_reason_ = reason;
  for (const auto& [site, channel] : connected_) {
    channel->Send(protocol::StopTask{reason});
    channel->Close();
  }
  const absl::Time until = clock_->Now() + absl::Seconds(config_.linger_s);
  while (!shutdown_ && !connected_.empty() && clock_->Now() < until) {
    clock_->WaitUntil(&changed_, &mu_, until);
  }
}

protocol::JoinedPlan RoundDriver::PlanFor(const std::string& site) const {
  const FederationPlan& p = config_.plan;
  protocol::JoinedPlan out;
  out.federation = p.name;
  out.site = site;
  out.model = p.model;
  out.manifest_sha256 = manifest_sha256_;
  out.trained_sha256 = trained_.trained.Sha256();
  out.rounds = p.rounds;
  out.chunk_bytes = p.chunk_bytes;
  out.update_dtype = p.update_dtype;
  out.require_dp = p.require_dp;
  out.min_report = p.min_report;
  return out;
}

absl::Status RoundDriver::Connect(const std::string& site, TaskChannel* channel, const std::string& peer) {
  worker_.Post([this, site, now = clock_->NowMs()] {  // a SQLite commit: not on the reactor's thread
    if (absl::Status touched = state_->TouchNode(site, now); !touched.ok()) {
      spdlog::warn("cannot record that site {} was seen: {}", site, std::string(touched.message()));
    }
  });
  absl::MutexLock lock(&mu_);
  auto it = connected_.find(site);
  if (it != connected_.end() && it->second != channel) {
    const Connection& first = connections_[site];
    const std::string why = absl::StrCat(
        "site ", site, " is already connected from ", first.peer, " (since ", absl::FormatTime(first.since),
        "); one node per kit: stop the other one. If that node is gone, its connection closes within 40 s and "
        "this one is accepted then");
    spdlog::warn("refused a second task stream of site {} from {}: its stream from {} is open", site, peer, first.peer);
    return absl::AlreadyExistsError(why);
  }
  connected_[site] = channel;
  connections_[site] = {peer, clock_->Now()};
  spdlog::info("site {} connected ({} of {} sites)", site, connected_.size(), config_.plan.sites.size());
  if (finished_) {
    channel->Send(protocol::StopTask{finish_reason_});
    channel->Close();
  } else if (round_ && round_->nonces.count(site) && !round_->answered.count(site) &&
             !round_->in_progress.count(site)) {
    SendTrainTask(site);  // it lost the task with its previous connection
  } else if (eval_ && eval_->nonces.count(site) && !eval_->results.count(site)) {
    SendEvalTask(site);
  }
  changed_.SignalAll();
  return absl::OkStatus();
}

void RoundDriver::Disconnect(const std::string& site, TaskChannel* channel) {
  absl::MutexLock lock(&mu_);
  auto it = connected_.find(site);
  if (it != connected_.end() && it->second == channel) {
    connected_.erase(it);
    connections_.erase(site);
    spdlog::info("site {} disconnected", site);
  }
  changed_.SignalAll();
}

absl::StatusOr<UpdateTicket> RoundDriver::BeginUpdate(const std::string& site, const protocol::UpdateClaim& h) {
  UpdateTicket t;
  absl::Status invalid;
  {
    absl::MutexLock lock(&mu_);
    if (!round_ || h.round != round_->round || h.attempt != round_->attempt) {
      return absl::FailedPreconditionError(
          absl::StrCat("round ", h.round, " attempt ", h.attempt, " is not open",
                       round_ ? absl::StrCat(" (open: round ", round_->round, " attempt ", round_->attempt, ")") : ""));
    }
    auto nonce = round_->nonces.find(site);
    if (nonce == round_->nonces.end()) {
      return absl::PermissionDeniedError(absl::StrCat("site ", site, " was not selected for round ", h.round));
    }
    if (h.nonce != nonce->second) return absl::PermissionDeniedError("wrong nonce for this round");
    if (round_->answered.count(site) || round_->in_progress.count(site)) {
      return absl::AlreadyExistsError(absl::StrCat("site ", site, " already submitted for round ", h.round));
    }
    // From here on it is this site's answer to this round: a bad header is
    // recorded as a rejected update and the round goes on without it.
    t.round = round_->round;
    t.attempt = round_->attempt;
    t.site = site;
    invalid = CheckUpdateClaim(h, round_->base_sha256, &t);
    if (invalid.ok()) {
      t.upload_id = ++next_upload_id_;
      invalid = intake_->Admit(t.upload_id, WeightOf(t), t.spool_path);
    }
    if (invalid.ok()) {
      round_->in_progress.insert(site);
      return t;
    }
    round_->answered.insert(site);
    changed_.SignalAll();
  }
  SubmissionRecord rec;
  rec.site = site;
  rec.update_sha256 = h.update_sha256.substr(0, 64);
  rec.reason = std::string(invalid.message());
  // (the service logs the refusal with its reason; the record commits on
  // the worker, off the reactor thread)
  worker_.Post([this, round = t.round, attempt = t.attempt, rec] {
    absl::Status s = state_->RecordSubmission(round, attempt, rec, clock_->NowMs());
    if (!s.ok()) spdlog::error("cannot record a submission: {}", std::string(s.message()));
  });
  return invalid;
}

absl::Status RoundDriver::CheckUpdateClaim(const protocol::UpdateClaim& h, const std::string& base_sha256,
                                           UpdateTicket* t) const {
  if (absl::Status own = protocol::CheckUpdateClaim(h); !own.ok()) return own;
  if (h.base_model_sha256 != base_sha256) {
    return absl::FailedPreconditionError("the update was trained from a different model than this round's");
  }
  if (h.dtype != config_.plan.update_dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat("the update is in ", h.dtype ? WireDtypeName(*h.dtype) : "a dtype this coordinator lacks",
                     "; the plan's update_dtype is ", WireDtypeName(config_.plan.update_dtype)));
  }
  const uint64_t wire_bytes = static_cast<uint64_t>(trained_.elements()) * BytesPerValue(config_.plan.update_dtype);
  if (h.total_bytes != wire_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("update has ", h.total_bytes, " bytes; the model's ",
                     trained_.frozen.empty() ? "manifest needs" : "trained parameters need", " ", wire_bytes, " in ",
                     WireDtypeName(config_.plan.update_dtype)));
  }
  if (h.privacy) {
    if (absl::Status possible = claims_.Check(t->site, *h.privacy, h.update_sha256); !possible.ok()) return possible;
    t->privacy = *h.privacy;
  } else if (config_.plan.require_dp) {
    return absl::FailedPreconditionError(
        "the plan requires differential privacy and this update has no DP report; enable [privacy] in node.toml");
  }
  // One spool file per site, overwritten in place every round: rewriting
  // cached pages costs far less than creating and deleting a model-sized file
  // per update (10M x 10 noop nodes: 0.84 s against 1.34 s a round). A site
  // has at most one upload at a time, and readers of an in-progress upload
  // stop at what it has written.
  t->spool_path = absl::StrCat(spool_dir_, "/", t->site, ".bin");
  t->update_sha256 = h.update_sha256;
  t->num_examples = static_cast<int64_t>(h.num_examples);
  t->train_loss = h.train_loss.value_or(0);
  t->pipeline = h.pipeline;
  t->node_ledger_seq = h.ledger_seq;
  t->node_ledger_sha256 = h.ledger_sha256;
  return absl::OkStatus();
}

void RoundDriver::FinishUpdate(const UpdateTicket& ticket, const absl::Status& outcome, Reply reply) {
  worker_.Post([this, ticket, outcome, reply = std::move(reply)] { reply(FinishUpdateNow(ticket, outcome)); });
}

void RoundDriver::RecordEvaluation(const std::string& site, const protocol::EvaluationReport& evaluation, Reply reply) {
  worker_.Post([this, site, evaluation, reply = std::move(reply)] { reply(RecordEvaluationNow(site, evaluation)); });
}

void RoundDriver::Decline(const std::string& site, const protocol::DeclineNotice& decline, Reply reply) {
  worker_.Post([this, site, decline, reply = std::move(reply)] { reply(DeclineNow(site, decline)); });
}

absl::Status RoundDriver::FinishUpdateNow(const UpdateTicket& t, const absl::Status& outcome) {
  SubmissionRecord rec;
  rec.site = t.site;
  rec.update_sha256 = t.update_sha256;
  rec.num_examples = t.num_examples;
  rec.train_loss = t.train_loss;
  rec.accepted = outcome.ok();
  rec.reason = std::string(outcome.message());
  rec.privacy = t.privacy;
  rec.node_ledger_seq = t.node_ledger_seq;
  rec.node_ledger_sha256 = t.node_ledger_sha256;
  absl::Status reply = outcome;
  bool interrupted = false;
  {
    absl::MutexLock lock(&mu_);
    const bool still_open = round_ && round_->round == t.round && round_->attempt == t.attempt;
    if (!still_open) {
      rec.accepted = false;
      rec.reason = "the round closed before the update completed";
      reply = absl::DeadlineExceededError(rec.reason);
    } else {
      if (rec.accepted) {
        absl::Status counted = intake_->Accept(t.upload_id);
        if (!counted.ok()) {
          rec.accepted = false;
          rec.reason = std::string(counted.message());
          reply = counted;
        }
      }
      round_->in_progress.erase(t.site);
      // An upload cut short (the connection broke, or it stalled) is not
      // the site's answer: the node keeps its update and sends it again.
      interrupted = !rec.accepted && outcome.code() == absl::StatusCode::kUnavailable;
      if (!interrupted) round_->answered.insert(t.site);
      if (rec.accepted) round_->accepted.push_back(t);
      // Internal: a failure of this coordinator's own (the spool, the sum),
      // not of the site's update.
      if (!rec.accepted && outcome.code() == absl::StatusCode::kInternal) {
        round_->coordinator_failures.push_back(absl::StrCat(t.site, ": ", rec.reason));
      }
      changed_.SignalAll();
    }
  }
  if (!rec.accepted) {
    // What was folded of it comes out again (a no-op if the round's close did that).
    absl::Status s = intake_->Withdraw(t.upload_id);
    if (!s.ok())
      spdlog::error("round {}: cannot take back the partial update of {}: {}", t.round, t.site,
                    std::string(s.message()));
  }
  if (rec.accepted && t.privacy) claims_.RecordUpdate(t.site, *t.privacy, t.update_sha256);
  if (rec.accepted) {
    spdlog::info("round {}: accepted the update of {} ({} examples, sha256 {})", t.round, t.site, t.num_examples,
                 t.update_sha256.substr(0, 12));
  } else if (interrupted) {
    spdlog::warn("round {}: the upload of {} was interrupted ({}); it may send the update again", t.round, t.site,
                 rec.reason);
  } else {
    spdlog::warn("round {}: rejected the update of {}: {}", t.round, t.site, rec.reason);
  }
  absl::Status s = state_->RecordSubmission(t.round, t.attempt, rec, clock_->NowMs());
  if (!s.ok()) spdlog::error("cannot record a submission: {}", std::string(s.message()));
  return reply;
}

absl::Status RoundDriver::DeclineNow(const std::string& site, const protocol::DeclineNotice& d) {
  if (absl::Status valid = protocol::CheckDeclineNotice(d); !valid.ok()) return valid;
  const bool policy = d.reason == protocol::DeclineReason::kPolicy;
  // A refused model ends this round for the site, not the federation: it
  // is asked again with the next model.
  const bool model_refused = d.reason == protocol::DeclineReason::kModelRefused;
  SubmissionRecord rec;
  rec.site = site;
  rec.declined = true;
  rec.reason = absl::StrCat(policy ? "POLICY: " : model_refused ? "MODEL_REFUSED: " : "BUDGET_EXHAUSTED: ", d.detail);
  rec.privacy = SitePrivacy{};
  rec.privacy->epsilon_spent = d.epsilon_spent;
  rec.privacy->epsilon_max = d.epsilon_max;
  if (absl::Status possible = claims_.CheckDecline(site, d.epsilon_spent); !possible.ok()) {
    spdlog::warn("round {}: refused the decline of {}: {}", d.round, site, std::string(possible.message()));
    absl::Status recorded = state_->RecordRefusal("decline", site, static_cast<int>(d.round),
                                                  std::string(possible.message()), clock_->NowMs());
    if (!recorded.ok()) return recorded;
    return possible;
  }
  int round = 0, attempt = 0;
  {
    absl::MutexLock lock(&mu_);
    if (!round_ || d.round != round_->round || d.attempt != round_->attempt) {
      return absl::FailedPreconditionError(absl::StrCat("round ", d.round, " attempt ", d.attempt, " is not open"));
    }
    auto nonce = round_->nonces.find(site);
    if (nonce == round_->nonces.end() || nonce->second != d.nonce) {
      return absl::PermissionDeniedError("wrong nonce for this round");
    }
    if (round_->answered.count(site) || round_->in_progress.count(site)) {
      return absl::AlreadyExistsError(absl::StrCat("site ", site, " already answered round ", d.round));
    }
    round_->answered.insert(site);
    round_->declined[site] = *rec.privacy;
    if (!model_refused) exhausted_.insert(site);
    claims_.RecordDecline(site, *rec.privacy);
    round = round_->round;
    attempt = round_->attempt;
    changed_.SignalAll();
  }
  if (model_refused) {
    spdlog::error("round {}: site {} refused the round's base model: {}", round, site, d.detail);
  } else if (policy) {
    spdlog::warn(
        "round {}: site {} declined: the task goes beyond its policy ({}); it will not be asked to train "
        "again in this run",
        round, site, d.detail);
  } else {
    spdlog::warn(
        "round {}: site {} declined: its privacy budget is spent (epsilon {:.4f} of {:.4g}); it will not "
        "be asked to train again in this run",
        round, site, d.epsilon_spent, d.epsilon_max);
  }
  return state_->RecordSubmission(round, attempt, rec, clock_->NowMs());
}

absl::Status RoundDriver::CheckEvaluation(const protocol::EvaluationReport& e, SiteEvaluation* out) const {
  std::optional<ReleasedFigures> figures;
  absl::Status valid = protocol::CheckEvaluationReport(
      e,
      {config_.plan.model.num_classes, config_.plan.require_dp, config_.plan.min_report,
       config_.plan.model.task == ModelTask::kSegmentation, config_.plan.model.task == ModelTask::kMultilabel},
      &figures);
  if (!valid.ok()) return valid;
  out->node_ledger_seq = e.ledger_seq;
  out->node_ledger_sha256 = e.ledger_sha256;
  out->suppressed = e.suppressed;
  if (!figures) return absl::OkStatus();
  const ReleasedFigures& f = *figures;
  out->count = f.metrics.count;
  out->loss = f.loss;
  out->accuracy = f.metrics.accuracy;
  if (f.multilabel) {
    out->confusion = MultilabelCells(*f.multilabel);
  } else {
    for (const std::vector<int64_t>& row : f.metrics.confusion)
      out->confusion.insert(out->confusion.end(), row.begin(), row.end());
  }
  out->roc_auc = f.metrics.roc_auc;
  out->ece = f.metrics.ece;
  out->mean_dice = f.mean_dice;
  out->noise_multiplier = e.release->noise_multiplier;
  out->release = e.release->statistics;
  return absl::OkStatus();
}

absl::Status RoundDriver::RecordEvaluationNow(const std::string& site, const protocol::EvaluationReport& e) {
  SiteEvaluation result;
  result.site = site;
  std::string sha;
  absl::Status valid;
  {
    absl::MutexLock lock(&mu_);
    if (!eval_ || e.round != eval_->round) {
      return absl::FailedPreconditionError(absl::StrCat("no evaluation of round ", e.round, " is open"));
    }
    auto nonce = eval_->nonces.find(site);
    if (nonce == eval_->nonces.end() || nonce->second != e.nonce) {
      return absl::PermissionDeniedError("wrong nonce for this evaluation");
    }
    if (e.model_sha256 != eval_->model_sha256) {
      return absl::InvalidArgumentError("the evaluation is of a different model");
    }
    valid = CheckEvaluation(e, &result);
    if (valid.ok()) {
      if (eval_->results.count(site)) return absl::AlreadyExistsError("already evaluated");
      eval_->results[site] = result;
      sha = eval_->model_sha256;
      changed_.SignalAll();
    }
  }
  if (!valid.ok()) {
    absl::Status recorded = state_->RecordRefusal("evaluation", site, static_cast<int>(e.round),
                                                  std::string(valid.message()), clock_->NowMs());
    if (!recorded.ok()) return recorded;
    return valid;
  }
  return state_->RecordEvaluation(static_cast<int>(e.round), sha, result, clock_->NowMs());
}

absl::StatusOr<std::string> RoundDriver::ModelPath(const std::string& sha256) {
  if (!crypto::IsSha256Hex(sha256)) return absl::InvalidArgumentError("not a SHA-256 model hash");
  absl::StatusOr<bool> known = state_->HasModel(sha256);
  if (!known.ok()) return known.status();
  if (!*known) return absl::NotFoundError(absl::StrCat("no published model ", sha256));
  std::string path = models_->PathFor(sha256);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat("model ", sha256.substr(0, 12),
                                            " is no longer kept (coordinator.toml keep_models = ", config_.keep_models,
                                            ")"));
  }
  return path;
}

absl::StatusOr<std::string> RoundDriver::Summary() {
  const bool segmentation = config_.plan.model.task == ModelTask::kSegmentation;
  const bool multilabel = config_.plan.model.task == ModelTask::kMultilabel;
  std::string out = absl::StrFormat(
      "\nFederation '%s': validation %s per round (post-processing of each site's differentially private "
      "evaluation release)\n",
      config_.plan.name,
      segmentation ? "mean Dice over patients"
      : multilabel ? "macro ROC AUC over the labels"
                   : "accuracy");
  absl::StrAppend(&out, absl::StrFormat("%-7s", "round"));
  for (const std::string& site : config_.plan.sites) absl::StrAppend(&out, absl::StrFormat("%14s", site));
  absl::StrAppend(&out, absl::StrFormat("%14s\n", "overall"));
  bool any_suppressed = false;
  for (int r = 1; r <= global_round_; ++r) {
    absl::StatusOr<std::vector<SiteEvaluation>> evals = state_->Evaluations(r);
    if (!evals.ok()) return evals.status();
    absl::StrAppend(&out, absl::StrFormat("%-7d", r));
    for (const std::string& site : config_.plan.sites) {
      std::string cell = "-";
      for (const SiteEvaluation& e : *evals) {
        if (e.site != site) continue;
        cell = e.suppressed ? std::string("(supp.)")
               : multilabel ? (e.roc_auc ? absl::StrFormat("%.3f", *e.roc_auc) : std::string("-"))
                            : absl::StrFormat("%.3f", segmentation ? e.mean_dice.value_or(0) : e.accuracy);
        any_suppressed |= e.suppressed;
      }
      absl::StrAppend(&out, absl::StrFormat("%14s", cell));
    }
    const RoundEvaluation g =
        CombineEvaluations(r, "", config_.plan.model.num_classes, *evals, config_.plan.model.task);
    const double overall = segmentation ? g.mean_dice.value_or(0)
                           : multilabel ? g.metrics.roc_auc.value_or(0)
                                        : g.metrics.accuracy;
    absl::StrAppend(&out, absl::StrFormat("%14s\n", g.metrics.count ? absl::StrFormat("%.3f", overall) : "-"));
  }
  if (any_suppressed) {
    absl::StrAppend(&out, absl::StrFormat("((supp.): the site sent no release (fewer validation patients than "
                                          "min_report = %d, or its evaluation budget is spent)\n",
                                          config_.plan.min_report));
  }
  absl::StatusOr<std::map<std::string, StateStore::LatestPrivacy>> privacy = state_->LatestPrivacyBySite();
  if (!privacy.ok()) return privacy.status();
  if (!privacy->empty()) {
    absl::StrAppend(&out, absl::StrFormat("%-7s", "eps"));
    for (const std::string& site : config_.plan.sites) {
      auto p = privacy->find(site);
      absl::StrAppend(&out, absl::StrFormat("%14s", p == privacy->end()
                                                        ? std::string("not DP")
                                                        : absl::StrFormat("%.3f", p->second.privacy.epsilon_spent)));
    }
    absl::StrAppend(&out, "\n(eps: each site's privacy spent, from its own accountant, at its delta)\n");
  }
  return out;
}

}  // namespace fedrad::coordinator
