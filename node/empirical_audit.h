#ifndef FEDRAD_NODE_EMPIRICAL_AUDIT_H_
#define FEDRAD_NODE_EMPIRICAL_AUDIT_H_

// `fedrad audit empirical`: an experimental check of the site's DP-SGD
// against its accountant. One training run on the site's data with the
// settings it ran (each DP-SGD round of its privacy ledger: σ, q, steps),
// plus m gradient canaries each included with probability ½ (Steinke, Nasr,
// Jagielski 2023, white-box) and clipped like every unit; the canaries'
// scores give ε_lower, a lower bound on the ε the run can have, at a chosen
// confidence. ε_lower above the accountant's ε means the implementation
// does not deliver the guarantee it claims.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/plan.h"
#include "common/privacy_audit.h"
#include "node/node_config.h"

namespace fedrad::node {

// One round of DP-SGD as the audit runs it.
struct AuditedRound {
  double noise_multiplier = 0;  // σ claimed for the round
  double sampling_rate = 0;
  int64_t steps = 0;
};

struct EmpiricalAuditOptions {
  // The network. With model_from_flags false the node's newest global model
  // names it (state_dir/models), when there is one; else this.
  ModelSpec model;  // num_classes 0: from node.toml's class_names, else 2
  bool model_from_flags = false;
  // The schedule. With schedule_from_flags false: the DP-SGD rounds the
  // site ran, each with its σ, q and steps, from its privacy ledger (its
  // latest federation's); when the ledger holds none, the flags below.
  bool schedule_from_flags = false;
  int64_t batch_size = 64;  // the plan's expected batch
  double local_epochs = 3;  // the plan's local epochs per round
  int rounds = 1;           // rounds of training the run stands for
  double learning_rate = 0.25;
  double momentum = 0.9;
  int canaries = 5000;  // at most the model's parameter count (one coordinate each)
  // Each canary's gradient norm before clipping, in multiples of C: above 1,
  // the canaries pass through the units' clipping and catch a clipping bug
  // (unclipped, a canary of 10 C weighs as if the noise were a tenth).
  double canary_norm = 10;
  double significance = 0.05;  // ε_lower holds with probability 1 − significance
  // Trains without noise (σ = 0) while the claim stays the configured σ's
  // ε: the check that the audit can tell a broken guarantee.
  bool without_noise = false;
  // Trains without clipping (no unit scaled down; noise still σ·C): the
  // check that the canaries catch a broken clipping.
  bool without_clipping = false;
};

struct EmpiricalAuditResult {
  std::string unit;  // "patient" or "image"
  // Where the run's settings came from, for people: the ledger (which
  // federation, how many rounds) or the flags; and the model file, if any.
  std::string schedule_source;
  std::string model_source;
  ModelSpec model;
  int64_t data_units = 0;
  int64_t canaries = 0;
  int64_t canaries_in = 0;
  double canary_norm = 0;  // in multiples of C
  std::vector<AuditedRound> rounds;
  double noise_multiplier = 0;  // the smallest σ of the rounds
  double noise_used = 0;        // σ the run used (0 without noise)
  bool without_clipping = false;
  double clip_norm = 0;
  int64_t steps = 0;  // over all rounds
  double delta = 0;
  double epsilon = 0;  // the accountant's, for every round's σ, q and steps, at δ
  double significance = 0;
  OneRunAudit audit;
  // The largest ε_lower these canaries could show (every canary that was in
  // guessed, and nothing else): a claim above it cannot be refuted by them.
  double reach = 0;
  // What these canaries could detect: the largest σ_true / σ_claimed at
  // which a run like this one (same m, rounds of q and steps, C) would give
  // ε_lower above the claim, found by simulating the canaries' scores (in: C
  // per step sampled plus N(0, σ²C²) per step; out: the noise alone) and
  // bisecting. Equally, a clipping that lets a unit weigh 1 / ratio × C is
  // refuted (with canaries above that norm). 0: not even a run without
  // noise would be refuted.
  double detectable_noise_ratio = 0;
  bool guarantee_holds() const { return audit.epsilon_lower <= epsilon; }
  // FAIL: ε_lower above the claim. INCONCLUSIVE: not refuted, but the claim
  // is beyond what these canaries can refute (reach below ε, or no
  // under-noising detectable). PASS otherwise: not refuted by a test that
  // could have refuted it.
  enum class Verdict { kPass, kFail, kInconclusive };
  Verdict verdict() const {
    if (!guarantee_holds()) return Verdict::kFail;
    if (reach < epsilon || detectable_noise_ratio <= 0) return Verdict::kInconclusive;
    return Verdict::kPass;
  }
};

// detectable_noise_ratio for a run of `r`'s shape (its audit fields unused).
double DetectableNoiseRatio(const EmpiricalAuditResult& r);

absl::StatusOr<EmpiricalAuditResult> RunEmpiricalAudit(const NodeConfig& config, const EmpiricalAuditOptions& options);

// The verdict for people: ε_lower next to ε, what was run, pass or fail.
std::string FormatEmpiricalAudit(const EmpiricalAuditResult& r);
// The same facts as a JSON object.
std::string EmpiricalAuditJson(const EmpiricalAuditResult& r);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_EMPIRICAL_AUDIT_H_
