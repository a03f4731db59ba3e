#ifndef FEDRAD_COMMON_PRIVACY_AUDIT_H_
#define FEDRAD_COMMON_PRIVACY_AUDIT_H_

// Empirical lower bounds on ε from one training run (Steinke, Nasr,
// Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023):
// m canaries are each included with probability ½; an auditor scores every
// canary and guesses "in" for the r highest scores. Under (ε, δ)-DP the
// number v of correct guesses is at most a Binomial(r, e^ε/(1+e^ε)) plus a δ
// term; a v too large for that is evidence against ε. Torch-free.

#include <cstdint>
#include <vector>

namespace fedrad {

// P[Binomial(n, q) >= k] for q = e^ε/(1+e^ε), in log space (exact sums of
// the pmf; no normal approximation).
double BinomialUpperTail(int64_t n, int64_t k, double epsilon);

// The p-value of v correct guesses out of r, among m canaries, under
// (ε, δ)-DP (Steinke et al. 2023, Theorem 3.1 with its δ correction).
double OneRunPValue(int64_t m, int64_t r, int64_t v, double epsilon, double delta);

// The largest ε whose (ε, δ) claim these guesses reject at `significance`
// (0 if none), to within 1e-6.
double OneRunEpsilon(int64_t m, int64_t r, int64_t v, double significance, double delta);

struct OneRunAudit {
  double epsilon_lower = 0;  // ε_lower at the significance asked
  int64_t guesses = 0;       // r at the best threshold
  int64_t correct = 0;       // v at the best threshold
  double threshold = 0;      // guess "in" for scores >= this
  int thresholds = 0;        // tried: the ROC's upper convex hull (the Bonferroni factor)
  double auc = 0;            // area under the attack's ROC
};

// Scores of the canaries that were in and out (higher: more likely in).
// Thresholds are taken on the upper convex hull of the ROC (the others are
// dominated) and the significance is divided among them (Bonferroni).
OneRunAudit AuditOneRun(const std::vector<double>& in_scores, const std::vector<double>& out_scores,
                        double significance, double delta);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_PRIVACY_AUDIT_H_
