#include "common/protocol.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/model_zoo.h"
#include "crypto/sha256.h"

namespace fedrad::protocol {
namespace {

bool InRange(double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; }

}  // namespace

absl::Status CheckLedgerHead(uint64_t seq, const std::string& sha256) {
  if (seq > (uint64_t{1} << 53) || (seq > 0) != crypto::IsSha256Hex(sha256) || (seq == 0 && !sha256.empty())) {
    return absl::InvalidArgumentError("the node's ledger head (ledger_seq, ledger_sha256) is malformed");
  }
  return absl::OkStatus();
}

absl::Status CheckPrivacyReport(const PrivacyReport& r) {
  if (r.unit != "patient" && r.unit != "image") {
    return absl::InvalidArgumentError("privacy.unit must be \"patient\" or \"image\"");
  }
  if (!InRange(r.noise_multiplier, 0, 1e6) || !InRange(r.clip_norm, 0, 1e6) || r.clip_norm == 0 ||
      !InRange(r.sampling_rate, 0, 1) || r.sampling_rate == 0 || r.steps < 1 || r.steps > (int64_t{1} << 32) ||
      !InRange(r.delta, 0, 1) || r.delta == 0 || r.delta == 1 || !InRange(r.epsilon_spent, 0, 1e6) ||
      !InRange(r.epsilon_max, 0, 1e6) || r.epsilon_max == 0) {
    return absl::InvalidArgumentError("the update's privacy report has a value out of range");
  }
  if (r.epsilon_spent > r.epsilon_max * (1 + 1e-9)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the update's privacy report says epsilon %.4f, past the site's own epsilon_max %.4g",
                        r.epsilon_spent, r.epsilon_max));
  }
  return absl::OkStatus();
}

absl::Status CheckUpdateClaim(const UpdateClaim& c) {
  if (!crypto::IsSha256Hex(c.update_sha256)) return absl::InvalidArgumentError("update_sha256 is not a SHA-256");
  if (absl::Status head = CheckLedgerHead(c.ledger_seq, c.ledger_sha256); !head.ok()) return head;
  if (c.num_examples < 1 || c.num_examples > kMaxExamplesPerUpdate) {
    return absl::InvalidArgumentError(absl::StrCat("num_examples ", c.num_examples, " is out of range"));
  }
  if (c.train_loss && !std::isfinite(*c.train_loss)) return absl::InvalidArgumentError("train_loss is not finite");
  if (c.pipeline.size() > 1024 ||
      !std::all_of(c.pipeline.begin(), c.pipeline.end(), [](char ch) { return ch >= 0x20 && ch < 0x7f; })) {
    return absl::InvalidArgumentError("the preprocessing pipeline is not a short printable description");
  }
  if (c.privacy) return CheckPrivacyReport(*c.privacy);
  return absl::OkStatus();
}

absl::Status CheckEvaluationReport(const EvaluationReport& e, const EvaluationRules& rules,
                                   std::optional<ReleasedFigures>* figures) {
  figures->reset();
  if (absl::Status head = CheckLedgerHead(e.ledger_seq, e.ledger_sha256); !head.ok()) return head;
  if (e.suppressed) {
    // Nothing but the flag (a site may suppress more than the plan asks).
    if (e.release) return absl::InvalidArgumentError("a suppressed evaluation must carry no release");
    return absl::OkStatus();
  }
  if (!e.release) return absl::InvalidArgumentError("the evaluation carries no release");
  const ReleasedEvaluation& r = *e.release;
  if (r.num_classes != rules.num_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the release is of ", r.num_classes, " classes; the model has ", rules.num_classes));
  }
  if (!InRange(r.noise_multiplier, 0, 1e6) || !InRange(r.epsilon_spent, 0, 1e6) ||
      (r.noise_multiplier > 0 && (!InRange(r.delta, 0, 1) || r.delta == 0))) {
    return absl::InvalidArgumentError("the release's noise, epsilon or delta is out of range");
  }
  if (rules.require_dp && r.noise_multiplier == 0) {
    return absl::FailedPreconditionError(
        "the plan requires differential privacy and this evaluation is not a DP release");
  }
  const EvaluationStatistics& st = r.statistics;
  if (absl::Status shape = st.CheckShape(); !shape.ok()) return shape;
  if (st.segmentation() != rules.segmentation) {
    return absl::InvalidArgumentError(rules.segmentation ? "a segmentation model's release must carry its Dice"
                                                         : "a classification model's release carries Dice");
  }
  if (st.multilabel != rules.multilabel) {
    return absl::InvalidArgumentError(rules.multilabel ? "a multilabel model's release must be per label"
                                                       : "the release is per label, but the model is not multilabel");
  }
  // Plausible bounds: a statistic a billion units from zero is no site's.
  constexpr double kLargest = 1e9;
  auto plausible = [&](const std::vector<double>& v) {
    return std::all_of(v.begin(), v.end(), [&](double x) { return std::fabs(x) <= kLargest; });
  };
  if (!plausible(st.confusion) || !plausible(st.confidence) || !plausible(st.scores) || !plausible(st.dice) ||
      !(std::fabs(st.loss_sum) <= kLargest * kLossClip) || !(std::fabs(st.dice_sum) <= kLargest)) {
    return absl::InvalidArgumentError("the release holds a value beyond any site's size");
  }
  // Every figure is post-processing of the release.
  ReleasedFigures f = FiguresFromRelease(st);
  if (f.metrics.count < rules.min_report) {
    return absl::InvalidArgumentError(absl::StrCat("the release counts ", f.metrics.count,
                                                   " case(s), below the plan's min_report of ", rules.min_report,
                                                   "; not recorded"));
  }
  *figures = std::move(f);
  return absl::OkStatus();
}

absl::Status CheckDeclineNotice(const DeclineNotice& d) {
  if (d.reason == DeclineReason::kUnspecified) return absl::InvalidArgumentError("a decline must give its reason");
  if (!std::isfinite(d.epsilon_spent) || d.epsilon_spent < 0 || !std::isfinite(d.epsilon_max) || d.epsilon_max <= 0 ||
      d.detail.size() > 1024) {
    return absl::InvalidArgumentError("the decline's figures are out of range");
  }
  if (!std::all_of(d.detail.begin(), d.detail.end(), [](char c) { return c >= 0x20 && c != 0x7f; })) {
    return absl::InvalidArgumentError("the decline's detail holds a control character");
  }
  return absl::OkStatus();
}

absl::StatusOr<Manifest> CheckJoinedPlan(const JoinedPlan& p) {
  if (absl::Status spec = CheckModelSpec(p.model); !spec.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("the plan's model is not usable here: ", spec.message()));
  }
  if (p.chunk_bytes < 4096 || p.chunk_bytes > kMaxChunkBytes) {
    return absl::FailedPreconditionError(absl::StrCat("the plan's chunk size ", p.chunk_bytes, " is out of range"));
  }
  absl::StatusOr<Manifest> manifest = ModelManifest(p.model);
  if (!manifest.ok()) return manifest.status();
  if (manifest->Sha256() != p.manifest_sha256) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this node's '", p.model.architecture, "' has manifest ", manifest->Sha256().substr(0, 12),
        " but the coordinator's has ", absl::CEscape(p.manifest_sha256.substr(0, 12)), "; update fedrad on one side"));
  }
  absl::StatusOr<TrainedParameters> trained = TrainedParametersOf(p.model);
  if (!trained.ok()) return trained.status();
  // A coordinator from before [model] freeze sends no hash: with nothing
  // frozen the trained parameters are the manifest's, checked above.
  const bool unsent = p.trained_sha256.empty() && p.model.freeze.empty();
  if (!unsent && trained->trained.Sha256() != p.trained_sha256) {
    return absl::FailedPreconditionError(
        absl::StrCat("this node trains the parameters of manifest ", trained->trained.Sha256().substr(0, 12),
                     " under the plan's freeze, but the coordinator expects updates of ",
                     absl::CEscape(p.trained_sha256.substr(0, 12)), "; update fedrad on one side"));
  }
  return manifest;
}

absl::Status CheckTrainingSettings(const TrainingSettings& t) {
  if (!(t.learning_rate > 0 && t.learning_rate <= 100) || !(t.momentum >= 0 && t.momentum < 1) ||
      !(t.proximal_mu >= 0 && t.proximal_mu <= 100)) {
    return absl::InvalidArgumentError("the task's hyperparameters are out of range");
  }
  return absl::OkStatus();
}

}  // namespace fedrad::protocol
