#include "node/empirical_audit.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <unordered_set>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/model_zoo.h"
#include "node/local_access.h"
#include "common/privacy_accountant.h"
#include "crypto/secure_noise.h"
#include "node/privacy_budget.h"
#include "node/trainer.h"

namespace fedrad::node {

absl::StatusOr<EmpiricalAuditResult> RunEmpiricalAudit(const NodeConfig& config, const EmpiricalAuditOptions& o) {
  const PrivacySettings& privacy = config.privacy;
  if (!privacy.enabled) {
    return absl::FailedPreconditionError(absl::StrCat(
        config.path, " sets [privacy] enabled = false: the site's updates are not differentially private, so there "
                     "is no guarantee to audit"));
  }
  if (o.canaries < 2 || o.canaries > 1000000) return absl::InvalidArgumentError("canaries must be in [2, 1000000]");
  if (!(o.significance > 0 && o.significance < 0.5)) {
    return absl::InvalidArgumentError("significance must be in (0, 0.5)");
  }
  if (o.batch_size < 1 || !(o.local_epochs > 0) || o.rounds < 1) {
    return absl::InvalidArgumentError("batch, epochs and rounds must be positive");
  }
  ModelSpec spec = o.model;
  if (spec.num_classes == 0) spec.num_classes = config.class_names.empty() ? 2 : static_cast<int>(config.class_names.size());
  // The model first: a wrong --model or too many canaries is said before the data is read.
  absl::StatusOr<Manifest> manifest = ModelManifest(spec);
  if (!manifest.ok()) return manifest.status();
  const int64_t parameters = manifest->total_elements();
  if (o.canaries > parameters) {
    return absl::InvalidArgumentError(absl::StrCat("the model has ", parameters, " parameters: at most that many "
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

  EmpiricalAuditResult r;
  r.unit = privacy.unit();
  r.data_units = CountUnits(split.train.patients, privacy.patient_level);
  r.canaries = o.canaries;
  r.canaries_in = std::count(canaries->included.begin(), canaries->included.end(), true);
  // The site's own schedule over its data; the canaries are sampled at the same rate.
  const DpSchedule schedule = ScheduleFor(r.data_units, o.batch_size, o.local_epochs * static_cast<double>(o.rounds));
  r.sampling_rate = schedule.sampling_rate;
  r.steps = schedule.steps;
  r.clip_norm = privacy.clip_norm;
  r.delta = privacy.delta;
  r.significance = o.significance;
  if (privacy.noise_multiplier > 0) {
    r.noise_multiplier = privacy.noise_multiplier;
  } else {
    // A target ε: the σ that reaches it over this run.
    absl::StatusOr<double> sigma = NoiseMultiplierFor(privacy.target_epsilon, privacy.delta, r.sampling_rate, r.steps);
    if (!sigma.ok()) return sigma.status();
    r.noise_multiplier = *sigma;
  }
  r.noise_used = o.without_noise ? 0.0 : r.noise_multiplier;
  r.epsilon = EpsilonFor(r.noise_multiplier, r.sampling_rate, r.steps, r.delta).epsilon;
  spdlog::info("empirical audit: {} {}s + {} canaries ({} in), q {:.5f}, {} steps, sigma {:.4f}{}, C {:g}", r.data_units,
               r.unit, r.canaries, r.canaries_in, r.sampling_rate, r.steps, r.noise_used,
               o.without_noise ? " (noise switched off)" : "", r.clip_norm);

  LocalTrainingSettings settings;
  settings.learning_rate = o.learning_rate;
  settings.momentum = o.momentum;
  DpTrainingSettings dp{r.noise_used, r.clip_norm, r.sampling_rate, r.steps, privacy.patient_level, 0};
  dp.canaries = canaries;
  settings.dp = dp;
  absl::StatusOr<TrainingOutcome> outcome = TrainLocally(spec, *initial, split.train, settings);
  if (!outcome.ok()) return outcome.status();
  std::vector<double> in, out;
  for (int i = 0; i < o.canaries; ++i) {
    (canaries->included[i] ? in : out).push_back(outcome->canary_scores[i]);
  }
  r.audit = AuditOneRun(in, out, o.significance, r.delta);
  // Perfect guesses give a hull of three thresholds.
  r.reach = OneRunEpsilon(r.canaries, r.canaries_in, r.canaries_in, o.significance / 3, r.delta);
  r.detectable_noise_ratio = DetectableNoiseRatio(r);
  return r;
}

double DetectableNoiseRatio(const EmpiricalAuditResult& r) {
  // One simulated run at σ = ratio·σ_claimed, with a fixed seed so that the
  // bisection sees one monotone curve.
  auto refuted = [&](double ratio) {
    std::mt19937_64 rng(12345);
    std::binomial_distribution<int64_t> sampled(r.steps, r.sampling_rate);
    std::normal_distribution<double> noise(
        0, ratio * r.noise_multiplier * r.clip_norm * std::sqrt(static_cast<double>(r.steps)));
    std::vector<double> in, out;
    for (int64_t i = 0; i < r.canaries; ++i) {
      const double n = ratio > 0 ? noise(rng) : 0.0;
      if (i < r.canaries_in) {
        in.push_back(r.clip_norm * static_cast<double>(sampled(rng)) + n);
      } else {
        out.push_back(n);
      }
    }
    return AuditOneRun(in, out, r.significance, r.delta).epsilon_lower > r.epsilon;
  };
  if (r.noise_multiplier <= 0 || r.canaries_in == 0 || r.canaries_in == r.canaries || !refuted(0)) return 0;
  double lo = 0, hi = 1;  // refuted at lo; the question is up to where
  if (refuted(hi)) return 1;
  for (int i = 0; i < 10; ++i) {  // to 0.001: the figure is a guide, not a bound
    const double mid = (lo + hi) / 2;
    (refuted(mid) ? lo : hi) = mid;
  }
  return lo;
}

std::string FormatEmpiricalAudit(const EmpiricalAuditResult& r) {
  std::string s = absl::StrFormat(
      "run: %d %s(s) of data + %d gradient canaries (%d in, chosen by coin flips), q = %.5f, %d steps, C = %g, "
      "sigma = %.4f%s\n",
      r.data_units, r.unit, r.canaries, r.canaries_in, r.sampling_rate, r.steps, r.clip_norm, r.noise_used,
      r.noise_used == r.noise_multiplier ? "" : absl::StrFormat(" (noise switched off; the claim is for sigma = %.4f)",
                                                                r.noise_multiplier));
  absl::StrAppendFormat(&s,
                        "attack: %d guesses \"in\", %d correct, threshold chosen among %d on the ROC's upper convex "
                        "hull (AUC %.3f)\n",
                        r.audit.guesses, r.audit.correct, r.audit.thresholds, r.audit.auc);
  absl::StrAppendFormat(&s, "epsilon_lower = %.4f at %.0f%% confidence; the accountant's epsilon = %.4f (delta %g)\n",
                        r.audit.epsilon_lower, 100 * (1 - r.significance), r.epsilon, r.delta);
  absl::StrAppendFormat(&s,
                        "power: these canaries can show at most epsilon_lower = %.2f; they would refute a run whose "
                        "true sigma is at most %.2f x the claimed one (simulated at %.0f%% confidence)\n",
                        r.reach, r.detectable_noise_ratio, 100 * (1 - r.significance));
  if (r.verdict() == EmpiricalAuditResult::Verdict::kPass) {
    absl::StrAppend(&s, "PASS: the measured leakage is within the accountant's epsilon, and the test could have "
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
  nlohmann::json j = {{"unit", r.unit},
                      {"data_units", r.data_units},
                      {"canaries", r.canaries},
                      {"canaries_in", r.canaries_in},
                      {"noise_multiplier_claimed", r.noise_multiplier},
                      {"noise_multiplier_used", r.noise_used},
                      {"clip_norm", r.clip_norm},
                      {"sampling_rate", r.sampling_rate},
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
