#include "node/privacy_report.h"

#include <filesystem>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "node/node_store.h"
#include "node/privacy_budget.h"

namespace fedrad::node {

absl::Status PrintPrivacyReport(const NodeConfig& config, bool charges, std::ostream& out) {
  const PrivacySettings& p = config.privacy;
  const std::string db = config.state_dir + "/node.db";
  out << absl::StrFormat("site %s: privacy ledger %s\n", config.tls.common_name, db);
  if (!p.enabled) {
    out << "WARNING: [privacy] enabled = false in " << config.path
        << ": updates this node sends are NOT differentially private\n";
  }
  out << absl::StrFormat(
      "settings: %s-level DP, delta %g, epsilon_max %g, C %g, %s\n", p.unit(), p.delta, p.epsilon_max, p.clip_norm,
      p.noise_multiplier >= 0 ? absl::StrFormat("fixed sigma %g", p.noise_multiplier)
                              : absl::StrFormat("target epsilon %g at the federation's last round", p.target_epsilon));
  std::vector<PrivacyCharge> ledger;
  // A node.db that vanished beside its ledger's marker spent what it
  // recorded: never reported as a budget untouched.
  if (std::filesystem::exists(db) || std::filesystem::exists(LedgerMarkerPath(db))) {
    absl::StatusOr<std::unique_ptr<NodeStore>> store = NodeStore::Open(db);
    if (!store.ok()) return store.status();
    absl::Status continuity = (*store)->CheckContinuity(db);
    if (!continuity.ok()) return continuity;
    absl::StatusOr<std::vector<PrivacyCharge>> rows = (*store)->PrivacyLedger();
    if (!rows.ok()) return rows.status();
    ledger = std::move(*rows);
  }
  const BudgetReport r = ReportBudget(p, ledger);
  // Training and evaluation touch disjoint patients (the split is a fixed
  // function of the patient key): each patient's ε is the larger part.
  out << absl::StrFormat("epsilon spent: %.4f at delta %g (every patient: the larger of the two parts)\n",
                         r.site_epsilon, p.delta);
  out << absl::StrFormat("  training:    %.4f", r.spent.epsilon);
  if (r.spent.epsilon > 0) out << absl::StrFormat(" (best RDP order %g)", r.spent.order);
  out << absl::StrFormat(", training patients, %d DP-SGD round(s)\n", r.dp_rounds);
  out << absl::StrFormat(
      "  evaluation:  %.4f, validation patients, %d release(s), budget %g ([policy] "
      "evaluation_epsilon)\n",
      r.evaluation.epsilon, r.evaluations, config.policy.evaluation_epsilon);
  out << absl::StrFormat("epsilon left:  %.4f of %g for training\n", r.left, p.epsilon_max);
  out << absl::StrFormat("charges: %d, of which %d DP-SGD round(s)\n", ledger.size(), r.dp_rounds);
  if (r.last) {
    out << absl::StrFormat("last round: federation '%s' round %d: %d units, sigma %.4f, C %g, q %.5f, %d steps\n",
                           r.last->federation, r.last->round, r.last->units, r.last->noise_multiplier,
                           r.last->clip_norm, r.last->sampling_rate, r.last->steps);
    out << absl::StrFormat(
        "rounds left like the last one%s: %d\n",
        p.noise_multiplier >= 0 ? absl::StrFormat(" at sigma %g", p.noise_multiplier) : std::string(" at its sigma"),
        r.rounds_left);
    if (p.target_epsilon > 0) {
      out << "(with target_epsilon the node raises sigma each round so the federation's last round ends at the "
             "target; it declines once the target is reached)\n";
    }
  } else {
    out << "rounds left: no round trained yet; the first round's schedule depends on the plan and the data\n";
  }
  for (const PrivacyCharge& c : ledger) {
    if (c.unit != p.unit() || c.delta != p.delta) {
      out << "note: the ledger holds charges made at another unit or delta; epsilon above is recomputed from "
             "every charge at the configured delta, and is per "
          << p.unit() << " only if all charges were\n";
      break;
    }
  }
  if (charges && !ledger.empty()) {
    out << absl::StrFormat("\n%4s  %-19s  %-12s %5s %3s  %-6s %7s %9s %7s %8s %6s %9s  %s\n", "id", "time (UTC)",
                           "federation", "round", "try", "kind", "units", "sigma", "C", "q", "steps", "eps after",
                           "status");
    for (const PrivacyCharge& c : ledger) {
      out << absl::StrFormat("%4d  %-19s  %-12s %5d %3d  %-6s %7d %9.4f %7g %8.5f %6d %9.4f  %s\n", c.id,
                             absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(c.at_ms), absl::UTCTimeZone()),
                             c.federation, c.round, c.attempt, ChargeKindName(c.kind), c.units, c.noise_multiplier,
                             c.clip_norm, c.sampling_rate, c.steps, c.epsilon_after, c.status);
    }
  }
  return absl::OkStatus();
}

}  // namespace fedrad::node
