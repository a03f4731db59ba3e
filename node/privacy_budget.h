#ifndef FEDRAD_NODE_PRIVACY_BUDGET_H_
#define FEDRAD_NODE_PRIVACY_BUDGET_H_

// The site's privacy budget: what a round will cost before any data is
// touched, whether it still fits, and what has been spent. Torch-free.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "common/privacy_accountant.h"

namespace fedrad::node {

// [privacy] of node.toml: the site's own choice, whatever the plan says.
struct PrivacySettings {
  bool enabled = true;
  bool patient_level = true;  // privacy unit: a patient (DICOM PatientID), or an image
  double clip_norm = 1.0;     // C
  double delta = 1e-5;
  // The site's budget: no round starts whose charge would take the ledger's
  // total past it.
  double epsilon_max = 3.0;
  // Exactly one of the two: a fixed noise multiplier σ for every step, or a
  // total ε to reach at the federation's last round (σ is then the smallest
  // that gets there, recomputed each round from what the ledger holds;
  // rounds beyond that, such as retries, keep the last σ and are paid from
  // the margin up to epsilon_max).
  double noise_multiplier = -1;
  double target_epsilon = -1;

  std::string unit() const { return patient_level ? "patient" : "image"; }
};

// Noise (in units of the count's sensitivity, one unit) on the unit count a
// node releases. The count is released once per federation and charged
// then; the sampling rate, the number of steps and the weight of every
// update all derive from the released value, so nothing the node sends
// depends on the exact count but through that charged release. Later rounds
// and restarts reuse it (post-processing, free). Releasing again when the
// data changes would itself tell the coordinator that the data changed,
// e.g. that a patient arrived; a site whose data changes keeps its old
// release, at a cost in utility only. At order 10 it costs
// 10 / (2·20²) = 0.0125 in RDP.
inline constexpr double kCountNoiseMultiplier = 20.0;

// Poisson-sampled DP-SGD over `units` units for `epochs` expected passes at
// an expected batch of `expected_batch` units: q = min(1, batch / units) and
// steps = round(epochs / q), at least 1.
struct DpSchedule {
  double sampling_rate = 0;
  int64_t steps = 0;
};
DpSchedule ScheduleFor(int64_t units, int64_t expected_batch, double epochs);

// Distinct privacy units among the training set's samples (patients, or
// images when not patient-level).
int64_t CountUnits(const std::vector<std::string>& patients, bool patient_level);

// What a charge paid for. kDpSgd: a round's training; kCount: the noised
// unit count (both on the training patients); kEvaluation: a federated
// evaluation release (on the validation patients).
enum class ChargeKind { kDpSgd, kCount, kEvaluation };
// Its name in node.db (privacy_ledger.kind) and in the audit ledger's
// dp_charge entries ("charge"): "dp-sgd", "count", "evaluation".
std::string_view ChargeKindName(ChargeKind kind);
std::optional<ChargeKind> ParseChargeKind(std::string_view name);

// One charge in the node's privacy ledger: a run of the (subsampled)
// Gaussian mechanism. No identifier of a patient or image is in it.
struct PrivacyCharge {
  int64_t id = 0;
  ChargeKind kind = ChargeKind::kDpSgd;
  std::string federation;
  int round = 0;
  int attempt = 0;
  std::string unit;
  int64_t units = 0;
  double noise_multiplier = 0;
  double clip_norm = 0;
  double sampling_rate = 0;
  int64_t steps = 0;
  double delta = 0;
  double epsilon_after = 0;  // the ledger's total including this charge, at `delta`
  double order = 0;          // the RDP order that gave it
  double released = 0;       // "count": the noised count that was sent
  std::string status;        // "charged", then "sent", "accepted" or a failure
  int64_t at_ms = 0;
};

// The ledger's two parts. Training (kDpSgd, kCount) touches only the
// training patients and evaluation only the validation patients; the split
// is a fixed function of each patient's key (the seed and fraction in
// node.toml), so adding or removing one patient changes the data of one
// part only and parallel composition applies: every patient's ε is at most
// the larger part's. Within each part charges compose (RDP adds), whatever
// their status: a charge is spent once data was touched.
PrivacyAccountant SpentBy(const std::vector<PrivacyCharge>& ledger);            // training part
PrivacyAccountant EvaluationSpentBy(const std::vector<PrivacyCharge>& ledger);  // evaluation part
// The site's ε for every patient, training or validation: the larger part.
double SiteEpsilon(const std::vector<PrivacyCharge>& ledger, double delta);

// A charge the ledger cannot take: its budget is spent. `detail` says so,
// for the site's ledger and the coordinator.
struct BudgetRefusal {
  std::string detail;
};
// A charge, or why the budget will not take it. An error status is
// something else gone wrong.
using ChargePlan = std::variant<PrivacyCharge, BudgetRefusal>;

// A federated evaluation release (kind kEvaluation): the noise multiplier
// at which `evaluations_left` releases, this one included, end at
// `budget` for the evaluation part (the site's [policy] evaluation_epsilon);
// refused when that budget is reached.
absl::StatusOr<ChargePlan> PlanEvaluation(const PrivacySettings& settings, double budget,
                                          const std::vector<PrivacyCharge>& ledger, int evaluations_left);

// What a training round will charge, decided before it touches data.
struct RoundCharges {
  PrivacyCharge training;  // kind kDpSgd
  double epsilon_before = 0;
};

// The release of the noisy unit count for a data load: the charge (kind
// kCount; `released` is the caller's to draw and fill in), or refused when
// it alone would take the ledger past epsilon_max.
absl::StatusOr<ChargePlan> PlanCountRelease(const PrivacySettings& settings, const std::vector<PrivacyCharge>& ledger,
                                            int64_t units);

// The latest count release of `federation` in the ledger, if any.
std::optional<PrivacyCharge> CountReleaseOf(const std::vector<PrivacyCharge>& ledger, const std::string& federation);

// What the next round is asked to be.
struct RoundRequest {
  int64_t units = 0;             // exact: recorded in the node's own ledger only
  double released_units = 0;     // the data load's released count (already in the ledger): q and steps
                                 // derive from it alone
  int64_t expected_batch = 1;    // the plan's batch
  double local_epochs = 1;       // the plan's local epochs
  int rounds_left = 1;           // this one included, counted by the site (its own plan and ledger)
  double max_round_epsilon = 0;  // the site's [policy] limit on one round's cost; 0: none
};

// Why the next round is not charged: the budget is spent (the ledger's total
// would pass epsilon_max, or the target is reached with no margin above it;
// the node answers BUDGET_EXHAUSTED), or the round alone would cost more
// than the site's [policy] max_round_epsilon (a POLICY decline). `detail`
// says so for the site's ledger and the coordinator.
struct RoundRefusal {
  enum class Reason { kBudget, kPolicy };
  Reason reason = Reason::kBudget;
  std::string detail;
};
// The charge of the next round, or why there is none. An error status is
// something else gone wrong (no units to train on). The charge's
// federation/round/attempt/status/at_ms are left for the caller.
using RoundPlan = std::variant<RoundCharges, RoundRefusal>;
absl::StatusOr<RoundPlan> PlanRound(const PrivacySettings& settings, const std::vector<PrivacyCharge>& ledger,
                                    const RoundRequest& request);

// OK unless the ledger holds charges of another privacy unit than
// `settings` names: ε per image and ε per patient do not add up to anything
// (an image-level ε says nothing of a patient with several images), so a
// site cannot switch units under one budget. FailedPrecondition explains.
absl::Status CheckUnitUnchanged(const PrivacySettings& settings, const std::vector<PrivacyCharge>& ledger,
                                const std::string& config_path);

// true if no round can start whatever the data: the ledger alone has reached
// epsilon_max. Needs no data.
bool BudgetSpent(const PrivacySettings& settings, const std::vector<PrivacyCharge>& ledger);
// The same for an epsilon already computed from the ledger (at settings.delta).
bool BudgetSpent(const PrivacySettings& settings, double spent_epsilon);

// For `fedrad-node privacy`: spent, left, and how many more rounds like the
// last one fit (with a fixed σ; with a target ε σ adapts, so the answer is
// the plan's remaining rounds until the target).
struct BudgetReport {
  Epsilon spent;            // the training part
  Epsilon evaluation;       // the evaluation part
  int64_t evaluations = 0;  // evaluation releases in the ledger
  double site_epsilon = 0;  // the larger part: every patient's bound
  double left = 0;
  int64_t dp_rounds = 0;     // training charges in the ledger
  int64_t rounds_left = -1;  // -1: unknown (no round yet to take the schedule from)
  std::optional<PrivacyCharge> last;
};
BudgetReport ReportBudget(const PrivacySettings& settings, const std::vector<PrivacyCharge>& ledger);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_PRIVACY_BUDGET_H_
