#include "common/privacy_audit.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

namespace fedrad {
namespace {

// Slow, obviously correct: the binomial pmf row by Pascal's recursion in
// long double, P[X = x] for X ~ Binomial(n, q).
std::vector<long double> PmfRow(int n, long double q) {
  std::vector<long double> row = {1.0L};
  for (int k = 0; k < n; ++k) {
    std::vector<long double> next(row.size() + 1, 0.0L);
    for (size_t x = 0; x < row.size(); ++x) {
      next[x] += row[x] * (1 - q);
      next[x + 1] += row[x] * q;
    }
    row = std::move(next);
  }
  return row;
}

long double Q(double eps) { return 1.0L / (1.0L + std::exp(-static_cast<long double>(eps))); }

// The paper's p-value written out: beta = P[X >= v]; alpha = max_i P[v-i <= X < v] / i.
double SlowPValue(int m, int r, int v, double eps, double delta) {
  const std::vector<long double> pmf = PmfRow(r, Q(eps));
  long double beta = 0;
  for (int x = v; x <= r; ++x) beta += pmf[x];
  long double alpha = 0;
  for (int i = 1; i <= v; ++i) {
    long double between = 0;
    for (int x = v - i; x < v; ++x) between += pmf[x];
    alpha = std::max(alpha, between / i);
  }
  return static_cast<double>(std::min<long double>(1, beta + alpha * delta * 2 * m));
}

TEST(PrivacyAuditTest, TheBinomialTailMatchesPascalsTriangle) {
  for (int n : {1, 7, 40, 120}) {
    for (double eps : {0.0, 0.5, 2.0, 6.0}) {
      const std::vector<long double> pmf = PmfRow(n, Q(eps));
      for (int k = 0; k <= n + 1; k += std::max(1, n / 9)) {
        long double tail = 0;
        for (int x = k; x <= n; ++x) tail += pmf[x];
        EXPECT_NEAR(BinomialUpperTail(n, k, eps), static_cast<double>(tail), 1e-12 + 1e-10 * static_cast<double>(tail))
            << "n " << n << " k " << k << " eps " << eps;
      }
    }
  }
}

TEST(PrivacyAuditTest, ThePValueWithDeltaMatchesTheFormulaWrittenOut) {
  for (auto [m, r, v] : {std::tuple{1000, 100, 80}, {200, 50, 50}, {1000, 300, 200}, {20, 10, 6}}) {
    for (double eps : {0.0, 1.0, 3.0}) {
      for (double delta : {0.0, 1e-5, 1e-3}) {
        EXPECT_NEAR(OneRunPValue(m, r, v, eps, delta), SlowPValue(m, r, v, eps, delta), 1e-10)
            << m << " " << r << " " << v << " " << eps << " " << delta;
      }
    }
  }
}

TEST(PrivacyAuditTest, AllGuessesRightGiveTheClosedFormBound) {
  // delta = 0 and v = r: the p-value is q^r, so eps_lower = logit(significance^(1/r)).
  for (int r : {10, 100, 1000}) {
    const double a = std::pow(0.05, 1.0 / r);
    EXPECT_NEAR(OneRunEpsilon(2 * r, r, r, 0.05, 0), std::log(a / (1 - a)), 1e-6) << r;
  }
  // r = 100 at 95%: 3.4930 (by hand: 0.05^0.01 = 0.970487, ln(0.970487 / 0.029513) = 3.4930).
  EXPECT_NEAR(OneRunEpsilon(1000, 100, 100, 0.05, 0), 3.4930, 1e-4);
  // Half right is chance: nothing is rejected.
  EXPECT_EQ(OneRunEpsilon(1000, 100, 50, 0.05, 1e-5), 0);
  // A delta term can only weaken the bound.
  EXPECT_LT(OneRunEpsilon(1000, 300, 280, 0.05, 1e-3), OneRunEpsilon(1000, 300, 280, 0.05, 0));
}

TEST(PrivacyAuditTest, TheBoundIsTheLargestRejectedEpsilonOnAFineGrid) {
  for (auto [m, r, v, delta] : {std::tuple{1000, 300, 240, 1e-5}, {1000, 60, 58, 0.0}, {500, 200, 150, 1e-4}}) {
    double slow = 0;
    for (double eps = 0; eps < 6; eps += 1e-3) {
      if (SlowPValue(m, r, v, eps, delta) <= 0.05) slow = eps;
    }
    EXPECT_NEAR(OneRunEpsilon(m, r, v, 0.05, delta), slow, 1.1e-3) << r << " " << v;
  }
}

// The slow reference of AuditOneRun: every distinct threshold, not only the
// hull, with the same Bonferroni factor; the hull loses nothing.
double SlowAudit(const std::vector<double>& in, const std::vector<double>& out, double significance, double delta,
                 int hull) {
  std::vector<double> t = in;
  t.insert(t.end(), out.begin(), out.end());
  double best = 0;
  for (double threshold : t) {
    int tp = 0, fp = 0;
    for (double s : in) tp += s >= threshold;
    for (double s : out) fp += s >= threshold;
    best = std::max(
        best, OneRunEpsilon(static_cast<int64_t>(in.size() + out.size()), tp + fp, tp, significance / hull, delta));
  }
  return best;
}

TEST(PrivacyAuditTest, PerfectSeparationUsesTheOneSplitAndMatchesTheReference) {
  std::vector<double> in, out;
  for (int i = 0; i < 500; ++i) {
    in.push_back(1000 + i);
    out.push_back(i);
  }
  const OneRunAudit a = AuditOneRun(in, out, 0.05, 1e-5);
  EXPECT_EQ(a.thresholds, 3);  // all guessed in, the split, none guessed in
  EXPECT_EQ(a.guesses, 500);
  EXPECT_EQ(a.correct, 500);
  EXPECT_EQ(a.threshold, 1000);
  EXPECT_DOUBLE_EQ(a.auc, 1.0);
  EXPECT_NEAR(a.epsilon_lower, OneRunEpsilon(1000, 500, 500, 0.05 / 3, 1e-5), 1e-9);
  EXPECT_GT(a.epsilon_lower, 4.5);
}

TEST(PrivacyAuditTest, NoSignalGivesNoBoundAndNoisySignalMatchesTheReference) {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> noise(0, 1);
  std::vector<double> in, out;
  for (int i = 0; i < 300; ++i) {
    in.push_back(noise(rng));
    out.push_back(noise(rng));
  }
  const OneRunAudit none = AuditOneRun(in, out, 0.05, 1e-5);
  EXPECT_LT(none.epsilon_lower, 0.3);
  EXPECT_NEAR(none.auc, 0.5, 0.06);
  for (double& s : in) s += 1.5;
  const OneRunAudit some = AuditOneRun(in, out, 0.05, 1e-5);
  EXPECT_GT(some.epsilon_lower, 0.5);
  EXPECT_NEAR(some.epsilon_lower, SlowAudit(in, out, 0.05, 1e-5, some.thresholds), 1e-9);
  EXPECT_GT(some.auc, 0.8);
}

}  // namespace
}  // namespace fedrad
