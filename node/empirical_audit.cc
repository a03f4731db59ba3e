#include "node/empirical_audit.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <random>
#include <unordered_set>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/model_zoo.h"
#include "common/privacy_accountant.h"
#include "crypto/secure_noise.h"
#include "node/local_access.h"
#include "node/node_store.h"
#include "node/privacy_budget.h"
#include "node/saved_model.h"
#include "node/trainer.h"

namespace fedrad::node {

namespace {

// The DP-SGD rounds of the site's latest federation in its privacy ledger
// (empty when there is no node.db or no round yet), and a line saying so.
absl::StatusOr<std::vector<AuditedRound>> LedgerRounds(const NodeConfig& config, std::string* source) {
  const std::string path = config.state_dir + "/node.db";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::vector<AuditedRound>{};
  absl::StatusOr<std::unique_ptr<NodeStore>> store =
      NodeStore::Open(path, std::nullopt, absl::ToUnixMillis(absl::Now()));
  if (!store.ok()) return store.status();
  absl::StatusOr<std::vector<PrivacyCharge>> ledger = (*store)->PrivacyLedger();
  if (!ledger.ok()) return ledger.status();
  std::string federation;
  for (const PrivacyCharge& c : *ledger) {
    if (c.kind == ChargeKind::kDpSgd) federation = c.federation;
  }
  std::vector<AuditedRound> rounds;
  double clip = 0;
  for (const PrivacyCharge& c : *ledger) {
    if (c.kind != ChargeKind::kDpSgd || c.federation != federation) continue;
    rounds.push_back({c.noise_multiplier, c.sampling_rate, c.steps});
    clip = c.clip_norm;
  }
  if (!rounds.empty()) {
    if (clip != config.privacy.clip_norm) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "the ledger's rounds clipped at C = %g but %s now sets clip_norm = %g; audit with --batch/--epochs/--rounds "
          "to test the current settings",
          clip, config.path, config.privacy.clip_norm));
    }
    *source = absl::StrCat("the site's privacy ledger (", path, "): ", rounds.size(),
                           " DP-SGD round(s) of federation '", federation, "'");
  }
  return rounds;
}

}  // namespace

absl::StatusOr<EmpiricalAuditResult> RunEmpiricalAudit(const NodeConfig& config, const EmpiricalAuditOptions& o) {
  const PrivacySettings& privacy = config.privacy;
  if (!privacy.enabled) {
    return absl::FailedPreconditionError(
        absl::StrCat(config.path,
                     " sets [privacy] enabled = false: the site's updates are not differentially private, so there "
                     "is no guarantee to audit"));
  }
  if (o.canaries < 2 || o.canaries > 1000000) return absl::InvalidArgumentError("canaries must be in [2, 1000000]");
  if (!(o.significance > 0 && o.significance < 0.5)) {
    return absl::InvalidArgumentError("significance must be in (0, 0.5)");
  }
  if (o.batch_size < 1 || !(o.local_epochs > 0) || o.rounds < 1) {
    return absl::InvalidArgumentError("batch, epochs and rounds must be positive");
  }
  if (!(o.canary_norm >= 1 && o.canary_norm <= 1e6)) {
    return absl::InvalidArgumentError("the canaries' norm must be in [1, 10^6] times C");
  }
  EmpiricalAuditResult r;
  // The network: as the site runs it (its newest global model), unless named.
  ModelSpec spec = o.model;
  r.model_source = "flags";
  if (!o.model_from_flags) {
    if (absl::StatusOr<std::string> latest = LatestModel(config); latest.ok()) {
      absl::StatusOr<SavedModel> saved = LoadSavedModel(*latest);
      if (!saved.ok()) return saved.status();
      spec = saved->spec;
      r.model_source = *latest;
    }
  }
  if (spec.num_classes == 0)
    spec.num_classes = config.class_names.empty() ? 2 : static_cast<int>(config.class_names.size());
  r.model = spec;
  // The schedule: as the site ran it, unless given.
  std::vector<AuditedRound> ledger_rounds;
  if (!o.schedule_from_flags) {
    absl::StatusOr<std::vector<AuditedRound>> from_ledger = LedgerRounds(config, &r.schedule_source);
    if (!from_ledger.ok()) return from_ledger.status();
    ledger_rounds = std::move(*from_ledger);
  }
  // The model first: a wrong --model or too many canaries is said before the data is read.
  absl::StatusOr<Manifest> manifest = ModelManifest(spec);
  if (!manifest.ok()) return manifest.status();
  const int64_t parameters = manifest->total_elements();
  if (o.canaries > parameters) {
    return absl::InvalidArgumentError(absl::StrCat("the model has ", parameters,
                                                   " parameters: at most that many "
                                                   "canaries (one coordinate each)"));
  }
  DatasetSpec data_spec = SiteDataset(config);
  data_spec.on_loaded = RecordWhenLoaded(config, "audit empirical");
  data_spec.num_classes = spec.num_classes;
  data_spec.preprocess.output_size = spec.input_size;
  LoadReport report;
  absl::StatusOr<ImageSet> images = LoadImageSet(data_spec, &report);
  if (!images.ok()) return images.status();
  PatientSplit split = SplitByPatient(*images, config.validation_fraction, config.split_seed);
  if (split.train.count() == 0) {
    return absl::FailedPreconditionError(absl::StrCat("no readable labelled images in ", config.dicom_dir));
  }
  absl::StatusOr<ModelParameters> initial = InitialParameters(spec, 1);
  if (!initial.ok()) return initial.status();

  // The canaries: distinct coordinates, random signs, each in with probability ½.
  absl::StatusOr<std::unique_ptr<crypto::SecureRandom>> rng = crypto::SecureRandom::Create();
  if (!rng.ok()) return rng.status();
  auto canaries = std::make_shared<GradientCanaries>();
  canaries->norm_in_clips = o.canary_norm;
  // Floyd's sampling: m distinct coordinates in O(m) memory, whatever the model's size.
  std::mt19937_64 draw(static_cast<uint64_t>((*rng)->Uniform() * 9007199254740992.0));
  std::unordered_set<int64_t> chosen;
  for (int64_t j = parameters - o.canaries; j < parameters; ++j) {
    const int64_t t = std::uniform_int_distribution<int64_t>(0, j)(draw);
    const int64_t pick = chosen.count(t) ? j : t;
    chosen.insert(pick);
    canaries->coordinates.push_back(pick);
  }
  for (int i = 0; i < o.canaries; ++i) {
    canaries->signs.push_back((*rng)->Bernoulli(0.5) ? 1.0 : -1.0);
    canaries->included.push_back((*rng)->Bernoulli(0.5));
  }

  r.unit = privacy.unit();
  r.data_units = CountUnits(split.train.patients, privacy.patient_level);
  r.canaries = o.canaries;
  r.canaries_in = std::count(canaries->included.begin(), canaries->included.end(), true);
  r.canary_norm = o.canary_norm;
  r.without_clipping = o.without_clipping;
  r.clip_norm = privacy.clip_norm;
  r.delta = privacy.delta;
  r.significance = o.significance;
  if (!ledger_rounds.empty()) {
    r.rounds = std::move(ledger_rounds);
  } else {
    // The site's own schedule over its data; the canaries are sampled at the same rate.
    const DpSchedule schedule = ScheduleFor(r.data_units, o.batch_size, o.local_epochs * static_cast<double>(o.rounds));
    double sigma = privacy.noise_multiplier;
    if (!(sigma > 0)) {
      // A target ε: the σ that reaches it over this run.
      absl::StatusOr<double> for_target =
          NoiseMultiplierFor(privacy.target_epsilon, privacy.delta, schedule.sampling_rate, schedule.steps);
      if (!for_target.ok()) return for_target.status();
      sigma = *for_target;
    }
    r.rounds.push_back({sigma, schedule.sampling_rate, schedule.steps});
    r.schedule_source = absl::StrFormat("flags: batch %d, %g epoch(s) x %d round(s) over %d %ss", o.batch_size,
                                        o.local_epochs, o.rounds, r.data_units, r.unit);
  }
  PrivacyAccountant accountant;
  r.noise_multiplier = r.rounds[0].noise_multiplier;
  for (const AuditedRound& round : r.rounds) {
    accountant.Compose(round.noise_multiplier, round.sampling_rate, round.steps);
    r.noise_multiplier = std::min(r.noise_multiplier, round.noise_multiplier);
    r.steps += round.steps;
  }
  r.epsilon = accountant.GetEpsilon(r.delta).epsilon;
  r.noise_used = o.without_noise ? 0.0 : r.noise_multiplier;
  spdlog::info(
      "empirical audit: {} {}s + {} canaries ({} in, {:g} C before clipping), {} round(s), {} steps, "
      "sigma {:.4f}{}, C {:g}{}; settings from {}",
      r.data_units, r.unit, r.canaries, r.canaries_in, r.canary_norm, r.rounds.size(), r.steps, r.noise_used,
      o.without_noise ? " (noise switched off)" : "", r.clip_norm, o.without_clipping ? " (clipping switched off)" : "",
      r.schedule_source);

  // Round after round from the model the last one left, the canaries'
  // scores adding up.
  ModelParameters current = std::move(*initial);
  std::vector<double> scores(static_cast<size_t>(o.canaries), 0.0);
  for (size_t k = 0; k < r.rounds.size(); ++k) {
    const AuditedRound& round = r.rounds[k];
    LocalTrainingSettings settings;
    settings.learning_rate = o.learning_rate;
    settings.momentum = o.momentum;
    DpTrainingSettings dp;
    dp.noise_multiplier = o.without_noise ? 0.0 : round.noise_multiplier;
    dp.clip_norm = r.clip_norm;
    dp.sampling_rate = round.sampling_rate;
    dp.steps = round.steps;
    dp.patient_level = privacy.patient_level;
    dp.canaries = canaries;
    dp.without_clipping = o.without_clipping;
    settings.dp = dp;
    if (r.rounds.size() > 1) spdlog::info("empirical audit: round {}/{}", k + 1, r.rounds.size());
    absl::StatusOr<TrainingOutcome> outcome = TrainLocally(spec, current, split.train, settings);
    if (!outcome.ok()) return outcome.status();
    absl::StatusOr<TrainedParameters> trained = TrainedParametersOf(spec);
    if (!trained.ok()) return trained.status();
    trained->AddTo(outcome->delta, &current.values);
    for (int i = 0; i < o.canaries; ++i) scores[i] += outcome->canary_scores[i];
  }
  std::vector<double> in, out;
  for (int i = 0; i < o.canaries; ++i) (canaries->included[i] ? in : out).push_back(scores[i]);
  r.audit = AuditOneRun(in, out, o.significance, r.delta);
  // Perfect guesses give a hull of three thresholds.
  r.reach = OneRunEpsilon(r.canaries, r.canaries_in, r.canaries_in, o.significance / 3, r.delta);
  r.detectable_noise_ratio = DetectableNoiseRatio(r);
  return r;
}

double DetectableNoiseRatio(const EmpiricalAuditResult& r) {
  double noise_steps = 0;  // Σ σ_r² steps_r
  for (const AuditedRound& round : r.rounds) {
    noise_steps += round.noise_multiplier * round.noise_multiplier * static_cast<double>(round.steps);
  }
  // One simulated run at σ = ratio·σ_claimed, with a fixed seed so that the
  // bisection sees one monotone curve.
  auto refuted = [&](double ratio) {
    std::mt19937_64 rng(12345);
    std::vector<std::binomial_distribution<int64_t>> sampled;
    for (const AuditedRound& round : r.rounds) sampled.emplace_back(round.steps, round.sampling_rate);
    std::normal_distribution<double> noise(0, ratio * r.clip_norm * std::sqrt(noise_steps));
    std::vector<double> in, out;
    for (int64_t i = 0; i < r.canaries; ++i) {
      const double n = ratio > 0 ? noise(rng) : 0.0;
      if (i < r.canaries_in) {
        int64_t steps_in = 0;
        for (auto& b : sampled) steps_in += b(rng);
        in.push_back(r.clip_norm * static_cast<double>(steps_in) + n);
      } else {
        out.push_back(n);
      }
    }
    return AuditOneRun(in, out, r.significance, r.delta).epsilon_lower > r.epsilon;
  };
  if (!(noise_steps > 0) || r.canaries_in == 0 || r.canaries_in == r.canaries || !refuted(0)) return 0;
  double lo = 0, hi = 1;  // refuted at lo; the question is up to where
  if (refuted(hi)) return 1;
  for (int i = 0; i < 10; ++i) {  // to 0.001: the figure is a guide, not a bound
    const double mid = (lo + hi) / 2;
    (refuted(mid) ? lo : hi) = mid;
  }
  return lo;
}

std::string FormatEmpiricalAudit(const EmpiricalAuditResult& r) {
  // Rounds as printed, runs of equal ones together (target-mode sigmas
  // differ past the printed digits).
  std::vector<std::pair<std::string, int>> runs;
  for (const AuditedRound& x : r.rounds) {
    const std::string text =
        absl::StrFormat("q = %.5f, %d steps, sigma = %.4f", x.sampling_rate, x.steps, x.noise_multiplier);
    if (!runs.empty() && runs.back().first == text) {
      ++runs.back().second;
    } else {
      runs.push_back({text, 1});
    }
  }
  std::vector<std::string> each;
  for (const auto& [text, n] : runs) each.push_back(absl::StrCat(n, " round(s) of ", text));
  const std::string rounds = absl::StrJoin(each, "; ");
  std::string s = absl::StrFormat("settings: %s; model %s %dx%d, %d classes%s\n", r.schedule_source,
                                  r.model.architecture, r.model.input_size, r.model.input_size, r.model.num_classes,
                                  r.model_source == "flags" ? "" : absl::StrCat(" (", r.model_source, ")"));
  absl::StrAppendFormat(
      &s,
      "run: %d %s(s) of data + %d gradient canaries (%d in, chosen by coin flips; each %g C before clipping), %s, "
      "C = %g%s%s\n",
      r.data_units, r.unit, r.canaries, r.canaries_in, r.canary_norm, rounds, r.clip_norm,
      r.noise_used == r.noise_multiplier ? "" : " (noise switched off)",
      r.without_clipping ? " (clipping switched off)" : "");
  absl::StrAppendFormat(&s,
                        "attack: %d guesses \"in\", %d correct, threshold chosen among %d on the ROC's upper convex "
                        "hull (AUC %.3f)\n",
                        r.audit.guesses, r.audit.correct, r.audit.thresholds, r.audit.auc);
  absl::StrAppendFormat(&s, "epsilon_lower = %.4f at %.0f%% confidence; the accountant's epsilon = %.4f (delta %g)\n",
                        r.audit.epsilon_lower, 100 * (1 - r.significance), r.epsilon, r.delta);
  absl::StrAppendFormat(&s,
                        "power: these canaries can show at most epsilon_lower = %.2f; %s (simulated at %.0f%% "
                        "confidence)\n",
                        r.reach,
                        r.detectable_noise_ratio > 0
                            ? absl::StrFormat("they would refute a run whose true sigma is at most %.2f x the claimed "
                                              "one, or whose clipping lets a unit weigh %.1f C or more",
                                              r.detectable_noise_ratio, 1 / r.detectable_noise_ratio)
                            : std::string("they would not refute even a run without noise or clipping at this "
                                          "epsilon"),
                        100 * (1 - r.significance));
  if (r.verdict() == EmpiricalAuditResult::Verdict::kPass) {
    absl::StrAppend(&s,
                    "PASS: the measured leakage is within the accountant's epsilon, and the test could have "
                    "refuted it (an audit can refute a guarantee, never prove it)\n");
  } else if (r.verdict() == EmpiricalAuditResult::Verdict::kInconclusive) {
    absl::StrAppendFormat(&s,
                          "INCONCLUSIVE: not refuted, but the claim of epsilon %.2f is beyond what %d canaries can "
                          "refute; more canaries (up to the model's parameters) or more steps make a sharper test\n",
                          r.epsilon, r.canaries);
  } else {
    absl::StrAppendFormat(&s,
                          "FAIL: the guarantee does not hold: this run leaks more than epsilon = %.4f allows "
                          "(epsilon_lower = %.4f)\n",
                          r.epsilon, r.audit.epsilon_lower);
  }
  return s;
}

std::string EmpiricalAuditJson(const EmpiricalAuditResult& r) {
  nlohmann::json rounds = nlohmann::json::array();
  for (const AuditedRound& x : r.rounds) {
    rounds.push_back(
        {{"noise_multiplier", x.noise_multiplier}, {"sampling_rate", x.sampling_rate}, {"steps", x.steps}});
  }
  nlohmann::json j = {{"unit", r.unit},
                      {"settings_from", r.schedule_source},
                      {"model_from", r.model_source},
                      {"rounds", rounds},
                      {"canary_norm", r.canary_norm},
                      {"without_clipping", r.without_clipping},
                      {"data_units", r.data_units},
                      {"canaries", r.canaries},
                      {"canaries_in", r.canaries_in},
                      {"noise_multiplier_claimed", r.noise_multiplier},
                      {"noise_multiplier_used", r.noise_used},
                      {"clip_norm", r.clip_norm},
                      {"steps", r.steps},
                      {"delta", r.delta},
                      {"epsilon", r.epsilon},
                      {"significance", r.significance},
                      {"epsilon_lower", r.audit.epsilon_lower},
                      {"guesses", r.audit.guesses},
                      {"correct", r.audit.correct},
                      {"thresholds", r.audit.thresholds},
                      {"auc", r.audit.auc},
                      {"reach", r.reach},
                      {"detectable_noise_ratio", r.detectable_noise_ratio},
                      {"verdict", r.verdict() == EmpiricalAuditResult::Verdict::kPass   ? "PASS"
                                  : r.verdict() == EmpiricalAuditResult::Verdict::kFail ? "FAIL"
                                                                                        : "INCONCLUSIVE"},
                      {"guarantee_holds", r.guarantee_holds()}};
  return j.dump(2) + "\n";
}

}  // namespace fedrad::node
