#include "node/privacy_budget.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_format.h"

namespace fedrad::node {

std::string_view ChargeKindName(ChargeKind kind) {
  switch (kind) {
    case ChargeKind::kDpSgd:
      return "dp-sgd";
    case ChargeKind::kCount:
      return "count";
    case ChargeKind::kEvaluation:
      return "evaluation";
  }
  return "unknown";
}

std::optional<ChargeKind> ParseChargeKind(std::string_view name) {
  for (ChargeKind k : {ChargeKind::kDpSgd, ChargeKind::kCount, ChargeKind::kEvaluation}) {
    if (ChargeKindName(k) == name) return k;
  }
  return std::nullopt;
}
namespace {

// The ledger with `extra` charges added.
PrivacyAccountant With(PrivacyAccountant a, const std::vector<const PrivacyCharge*>& extra) {
  for (const PrivacyCharge* c : extra) a.Compose(c->noise_multiplier, c->sampling_rate, c->steps);
  return a;
}

// Within the σ search's precision of the ceiling counts as reached: what is
// left would only buy a round drowned in noise.
bool Reached(double epsilon, double ceiling) { return epsilon >= ceiling * (1 - 1e-6); }

}  // namespace

DpSchedule ScheduleFor(int64_t units, int64_t expected_batch, double epochs) {
  DpSchedule d;
  if (units <= 0) return d;
  d.sampling_rate =
      std::min(1.0, static_cast<double>(std::max<int64_t>(expected_batch, 1)) / static_cast<double>(units));
  d.steps = std::max<int64_t>(1, std::llround(epochs / d.sampling_rate));
  return d;
}

int64_t CountUnits(const std::vector<std::string>& patients, bool patient_level) {
  if (!patient_level) return static_cast<int64_t>(patients.size());
  return static_cast<int64_t>(std::set<std::string>(patients.begin(), patients.end()).size());
}

PrivacyAccountant SpentBy(const std::vector<PrivacyCharge>& ledger) {
  PrivacyAccountant a;
  for (const PrivacyCharge& c : ledger) {
    if (c.kind != ChargeKind::kEvaluation) a.Compose(c.noise_multiplier, c.sampling_rate, c.steps);
  }
  return a;
}

PrivacyAccountant EvaluationSpentBy(const std::vector<PrivacyCharge>& ledger) {
  PrivacyAccountant a;
  for (const PrivacyCharge& c : ledger) {
    if (c.kind == ChargeKind::kEvaluation) a.Compose(c.noise_multiplier, c.sampling_rate, c.steps);
  }
  return a;
}

double SiteEpsilon(const std::vector<PrivacyCharge>& ledger, double delta) {
  return std::max(SpentBy(ledger).GetEpsilon(delta).epsilon, EvaluationSpentBy(ledger).GetEpsilon(delta).epsilon);
}

absl::StatusOr<ChargePlan> PlanEvaluation(const PrivacySettings& settings, double budget,
                                          const std::vector<PrivacyCharge>& ledger, int evaluations_left) {
  const PrivacyAccountant spent = EvaluationSpentBy(ledger);
  const double before = spent.GetEpsilon(settings.delta).epsilon;
  if (!(budget > 0) || Reached(before, budget)) {
    return ChargePlan(BudgetRefusal{
        absl::StrFormat("evaluation budget spent: epsilon %.4f of [policy] evaluation_epsilon %.4g (delta %g)", before,
                        budget, settings.delta)});
  }
  absl::StatusOr<double> sigma = NoiseMultiplierFor(budget, settings.delta, 1.0, std::max(1, evaluations_left), spent);
  if (!sigma.ok()) return ChargePlan(BudgetRefusal{std::string(sigma.status().message())});
  PrivacyCharge c;
  c.kind = ChargeKind::kEvaluation;
  c.unit = settings.unit();
  c.noise_multiplier = *sigma;
  c.clip_norm = 1;  // the release's joint sensitivity, in its own scaled units
  c.sampling_rate = 1;
  c.steps = 1;
  c.delta = settings.delta;
  PrivacyAccountant after = spent;
  after.Compose(c.noise_multiplier, 1, 1);
  const Epsilon e = after.GetEpsilon(settings.delta);
  c.epsilon_after = e.epsilon;
  c.order = e.order;
  return ChargePlan(std::move(c));
}

bool BudgetSpent(const PrivacySettings& settings, const std::vector<PrivacyCharge>& ledger) {
  return BudgetSpent(settings, SpentBy(ledger).GetEpsilon(settings.delta).epsilon);
}

bool BudgetSpent(const PrivacySettings& settings, double spent_epsilon) {
  return Reached(spent_epsilon, settings.epsilon_max);
}

std::optional<PrivacyCharge> CountReleaseOf(const std::vector<PrivacyCharge>& ledger, const std::string& federation) {
  for (auto it = ledger.rbegin(); it != ledger.rend(); ++it) {
    if (it->kind == ChargeKind::kCount && it->federation == federation) return *it;
  }
  return std::nullopt;
}

absl::StatusOr<ChargePlan> PlanCountRelease(const PrivacySettings& settings, const std::vector<PrivacyCharge>& ledger,
                                            int64_t units) {
  PrivacyCharge count;
  count.kind = ChargeKind::kCount;
  count.unit = settings.unit();
  count.units = units;
  count.noise_multiplier = kCountNoiseMultiplier;
  count.clip_norm = 1;  // one unit changes the count by one
  count.sampling_rate = 1;
  count.steps = 1;
  count.delta = settings.delta;
  const PrivacyAccountant spent = SpentBy(ledger);
  const Epsilon e = With(spent, {&count}).GetEpsilon(settings.delta);
  if (e.epsilon > settings.epsilon_max) {
    return ChargePlan(BudgetRefusal{
        absl::StrFormat("privacy budget exhausted: releasing the unit count would take epsilon from %.4f to %.4f, past "
                        "epsilon_max %.4g (delta %g)",
                        spent.GetEpsilon(settings.delta).epsilon, e.epsilon, settings.epsilon_max, settings.delta)});
  }
  count.epsilon_after = e.epsilon;
  count.order = e.order;
  return ChargePlan(std::move(count));
}

absl::StatusOr<RoundPlan> PlanRound(const PrivacySettings& settings, const std::vector<PrivacyCharge>& ledger,
                                    const RoundRequest& request) {
  auto refuse = [](RoundRefusal::Reason reason, std::string detail) -> RoundPlan {
    return RoundRefusal{reason, std::move(detail)};
  };
  if (request.units < 1) return absl::FailedPreconditionError("no privacy units to train on");
  if (!(request.released_units >= 1)) {
    return absl::FailedPreconditionError("no released unit count to derive the sampling rate from");
  }
  const PrivacyAccountant spent = SpentBy(ledger);
  RoundCharges out;
  out.epsilon_before = spent.GetEpsilon(settings.delta).epsilon;

  // From the released count, never the exact one: q and steps leave the node.
  const DpSchedule schedule = ScheduleFor(static_cast<int64_t>(std::llround(request.released_units)),
                                          request.expected_batch, request.local_epochs);
  PrivacyCharge& t = out.training;
  t.kind = ChargeKind::kDpSgd;
  t.unit = settings.unit();
  t.units = request.units;
  t.clip_norm = settings.clip_norm;
  t.sampling_rate = schedule.sampling_rate;
  t.steps = schedule.steps;
  t.delta = settings.delta;
  if (settings.noise_multiplier >= 0) {
    t.noise_multiplier = settings.noise_multiplier;
  } else {
    // The σ at which this and every remaining round of the site's plan, at
    // this schedule, end exactly at the target.
    absl::StatusOr<double> sigma = NoiseMultiplierFor(settings.target_epsilon, settings.delta, t.sampling_rate,
                                                      t.steps * std::max(1, request.rounds_left), spent);
    const PrivacyCharge* last = nullptr;
    for (const PrivacyCharge& c : ledger) {
      if (c.kind == ChargeKind::kDpSgd) last = &c;
    }
    if (sigma.ok() && !Reached(out.epsilon_before, settings.target_epsilon)) {
      t.noise_multiplier = *sigma;
    } else if (last != nullptr && settings.epsilon_max > settings.target_epsilon) {
      // Past the plan (retried rounds): the last σ, paid from the margin
      // between the target and epsilon_max.
      t.noise_multiplier = last->noise_multiplier;
    } else {
      return refuse(RoundRefusal::Reason::kBudget,
                    absl::StrFormat("privacy budget exhausted: epsilon %.4f of the target %.4g is spent (delta %g)",
                                    out.epsilon_before, settings.target_epsilon, settings.delta));
    }
  }
  PrivacyAccountant after = spent;
  after.Compose(t.noise_multiplier, t.sampling_rate, t.steps);
  const Epsilon e = after.GetEpsilon(settings.delta);
  t.epsilon_after = e.epsilon;
  t.order = e.order;
  if (e.epsilon > settings.epsilon_max) {
    return refuse(
        RoundRefusal::Reason::kBudget,
        absl::StrFormat(
            "privacy budget exhausted: this round would take epsilon from %.4f to %.4f, past epsilon_max %.4g "
            "(delta %g; sigma %.4f, q %.5f, %d steps)",
            out.epsilon_before, e.epsilon, settings.epsilon_max, settings.delta, t.noise_multiplier, t.sampling_rate,
            t.steps));
  }
  if (request.max_round_epsilon > 0 && e.epsilon - out.epsilon_before > request.max_round_epsilon) {
    return refuse(
        RoundRefusal::Reason::kPolicy,
        absl::StrFormat(
            "[policy] max_round_epsilon: this round would cost epsilon %.4f (from %.4f to %.4f; sigma %.4f, q %.5f, "
            "%d steps), more than the site's limit of %.4g per round",
            e.epsilon - out.epsilon_before, out.epsilon_before, e.epsilon, t.noise_multiplier, t.sampling_rate, t.steps,
            request.max_round_epsilon));
  }
  return RoundPlan(std::move(out));
}

absl::Status CheckUnitUnchanged(const PrivacySettings& settings, const std::vector<PrivacyCharge>& ledger,
                                const std::string& config_path) {
  int64_t other = 0;
  std::string unit;
  for (const PrivacyCharge& c : ledger) {
    if (c.unit == settings.unit()) continue;
    ++other;
    unit = c.unit;
  }
  if (other == 0) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrFormat(
      "%s says [privacy] unit = \"%s\", but this node's privacy ledger holds %d charge(s) at %s level: the two "
      "do not compose into one epsilon (an image-level guarantee says nothing of a patient with several images). "
      "Set unit back to \"%s\", or start a new state_dir, and with it a new budget, with your privacy officer's "
      "agreement",
      config_path, settings.unit(), other, unit, unit));
}

BudgetReport ReportBudget(const PrivacySettings& settings, const std::vector<PrivacyCharge>& ledger) {
  BudgetReport r;
  const PrivacyAccountant spent = SpentBy(ledger);
  r.spent = spent.GetEpsilon(settings.delta);
  r.evaluation = EvaluationSpentBy(ledger).GetEpsilon(settings.delta);
  r.site_epsilon = std::max(r.spent.epsilon, r.evaluation.epsilon);
  r.left = std::max(0.0, settings.epsilon_max - r.spent.epsilon);
  for (const PrivacyCharge& c : ledger) {
    r.evaluations += c.kind == ChargeKind::kEvaluation;
    if (c.kind != ChargeKind::kDpSgd) continue;
    ++r.dp_rounds;
    r.last = c;
  }
  if (!r.last) return r;
  // Rounds like the last one (at the configured σ if fixed) that still fit.
  const double sigma = settings.noise_multiplier >= 0 ? settings.noise_multiplier : r.last->noise_multiplier;
  auto fits = [&](int64_t n) {
    PrivacyAccountant a = spent;
    a.Compose(sigma, r.last->sampling_rate, r.last->steps * n);
    return a.GetEpsilon(settings.delta).epsilon <= settings.epsilon_max;
  };
  if (!fits(1)) {
    r.rounds_left = 0;
    return r;
  }
  int64_t lo = 1, hi = 2;
  while (fits(hi) && hi < (int64_t{1} << 20)) {
    lo = hi;
    hi *= 2;
  }
  if (fits(hi)) {
    r.rounds_left = hi;
    return r;
  }
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  r.rounds_left = lo;
  return r;
}

}  // namespace fedrad::node
