#include "node/privacy_budget.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_format.h"

namespace fedrad::node {
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
  d.sampling_rate = std::min(1.0, static_cast<double>(std::max<int64_t>(expected_batch, 1)) /
                                      static_cast<double>(units));
  d.steps = std::max<int64_t>(1, std::llround(epochs / d.sampling_rate));
  return d;
}

int64_t CountUnits(const std::vector<std::string>& patients, bool patient_level) {
  if (!patient_level) return static_cast<int64_t>(patients.size());
  return static_cast<int64_t>(std::set<std::string>(patients.begin(), patients.end()).size());
}

PrivacyAccountant SpentBy(const std::vector<PrivacyCharge>& ledger) {
  PrivacyAccountant a;
  for (const PrivacyCharge& c : ledger) a.Compose(c.noise_multiplier, c.sampling_rate, c.steps);
  return a;
}

bool BudgetSpent(const PrivacySettings& settings, const std::vector<PrivacyCharge>& ledger) {
  return BudgetSpent(settings, SpentBy(ledger).GetEpsilon(settings.delta).epsilon);
}

bool BudgetSpent(const PrivacySettings& settings, double spent_epsilon) {
  return Reached(spent_epsilon, settings.epsilon_max);
}

std::optional<PrivacyCharge> LastCountRelease(const std::vector<PrivacyCharge>& ledger, int64_t units) {
  for (auto it = ledger.rbegin(); it != ledger.rend(); ++it) {
    if (it->kind == "count") {
      if (it->units == units) return *it;
      return std::nullopt;  // the count changed since: a new release is due
    }
  }
  return std::nullopt;
}

absl::StatusOr<RoundCharges> PlanRound(const PrivacySettings& settings, const std::vector<PrivacyCharge>& ledger,
                                       int64_t units, int64_t expected_batch, double local_epochs,
                                       int rounds_left) {
  if (units < 1) return absl::FailedPreconditionError("no privacy units to train on");
  const PrivacyAccountant spent = SpentBy(ledger);
  RoundCharges out;
  out.epsilon_before = spent.GetEpsilon(settings.delta).epsilon;

  std::vector<const PrivacyCharge*> extra;
  if (!LastCountRelease(ledger, units)) {
    PrivacyCharge count;
    count.kind = "count";
    count.unit = settings.unit();
    count.units = units;
    count.noise_multiplier = kCountNoiseMultiplier;
    count.clip_norm = 1;  // one unit changes the count by one
    count.sampling_rate = 1;
    count.steps = 1;
    count.delta = settings.delta;
    out.count = count;
    extra.push_back(&*out.count);
  }

  const DpSchedule schedule = ScheduleFor(units, expected_batch, local_epochs);
  PrivacyCharge& t = out.training;
  t.kind = "dp-sgd";
  t.unit = settings.unit();
  t.units = units;
  t.clip_norm = settings.clip_norm;
  t.sampling_rate = schedule.sampling_rate;
  t.steps = schedule.steps;
  t.delta = settings.delta;
  if (settings.noise_multiplier >= 0) {
    t.noise_multiplier = settings.noise_multiplier;
  } else {
    // The σ at which this and every remaining round of the plan, at this
    // schedule, end exactly at the target.
    const PrivacyAccountant base = With(spent, extra);
    absl::StatusOr<double> sigma =
        NoiseMultiplierFor(settings.target_epsilon, settings.delta, t.sampling_rate,
                           t.steps * std::max(1, rounds_left), base);
    const PrivacyCharge* last = nullptr;
    for (const PrivacyCharge& c : ledger) {
      if (c.kind == "dp-sgd") last = &c;
    }
    if (sigma.ok() && !Reached(base.GetEpsilon(settings.delta).epsilon, settings.target_epsilon)) {
      t.noise_multiplier = *sigma;
    } else if (last != nullptr && settings.epsilon_max > settings.target_epsilon) {
      // Past the plan (retried rounds): the last σ, paid from the margin
      // between the target and epsilon_max.
      t.noise_multiplier = last->noise_multiplier;
    } else {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "privacy budget exhausted: epsilon %.4f of the target %.4g is spent (delta %g)",
          base.GetEpsilon(settings.delta).epsilon, settings.target_epsilon, settings.delta));
    }
  }
  PrivacyAccountant after = With(spent, extra);
  if (out.count) {
    const Epsilon e = after.GetEpsilon(settings.delta);
    out.count->epsilon_after = e.epsilon;
    out.count->order = e.order;
  }
  after.Compose(t.noise_multiplier, t.sampling_rate, t.steps);
  const Epsilon e = after.GetEpsilon(settings.delta);
  t.epsilon_after = e.epsilon;
  t.order = e.order;
  if (e.epsilon > settings.epsilon_max) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "privacy budget exhausted: this round would take epsilon from %.4f to %.4f, past epsilon_max %.4g "
        "(delta %g; sigma %.4f, q %.5f, %d steps)",
        out.epsilon_before, e.epsilon, settings.epsilon_max, settings.delta, t.noise_multiplier,
        t.sampling_rate, t.steps));
  }
  return out;
}

BudgetReport ReportBudget(const PrivacySettings& settings, const std::vector<PrivacyCharge>& ledger) {
  BudgetReport r;
  const PrivacyAccountant spent = SpentBy(ledger);
  r.spent = spent.GetEpsilon(settings.delta);
  r.left = std::max(0.0, settings.epsilon_max - r.spent.epsilon);
  for (const PrivacyCharge& c : ledger) {
    if (c.kind != "dp-sgd") continue;
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
