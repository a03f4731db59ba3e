#include "common/privacy_audit.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace fedrad {
namespace {

// log P[Binomial(n, q) = x] with log q and log(1 - q) given.
double LogPmf(int64_t n, int64_t x, double log_q, double log_not_q) {
  const double log_choose = std::lgamma(static_cast<double>(n) + 1) - std::lgamma(static_cast<double>(x) + 1) -
                            std::lgamma(static_cast<double>(n - x) + 1);
  return log_choose + static_cast<double>(x) * log_q + static_cast<double>(n - x) * log_not_q;
}

// The pmf of Binomial(n, e^ε/(1+e^ε)) at x = lo..hi-1, summed (in log space).
double PmfSum(int64_t n, int64_t lo, int64_t hi, double epsilon) {
  lo = std::max<int64_t>(lo, 0);
  hi = std::min<int64_t>(hi, n + 1);
  if (lo >= hi) return 0;
  // q = 1/(1+e^-ε): log q = -log1p(e^-ε), log(1-q) = -ε - log1p(e^-ε).
  const double log_q = -std::log1p(std::exp(-epsilon));
  const double log_not_q = -epsilon + log_q;
  double top = -std::numeric_limits<double>::infinity();
  for (int64_t x = lo; x < hi; ++x) top = std::max(top, LogPmf(n, x, log_q, log_not_q));
  if (!std::isfinite(top)) return 0;
  double sum = 0;
  for (int64_t x = lo; x < hi; ++x) sum += std::exp(LogPmf(n, x, log_q, log_not_q) - top);
  return std::min(1.0, std::exp(top) * sum);
}

}  // namespace

double BinomialUpperTail(int64_t n, int64_t k, double epsilon) {
  if (k <= 0) return 1;
  if (k > n) return 0;
  return PmfSum(n, k, n + 1, epsilon);
}

double OneRunPValue(int64_t m, int64_t r, int64_t v, double epsilon, double delta) {
  const double beta = BinomialUpperTail(r, v, epsilon);
  if (delta <= 0) return beta;
  // alpha = max over i = 1..v of P[v - i <= X < v] / i.
  double alpha = 0, between = 0;
  for (int64_t i = 1; i <= v; ++i) {
    between += PmfSum(r, v - i, v - i + 1, epsilon);
    alpha = std::max(alpha, between / static_cast<double>(i));
  }
  return std::min(1.0, beta + alpha * delta * 2.0 * static_cast<double>(m));
}

double OneRunEpsilon(int64_t m, int64_t r, int64_t v, double significance, double delta) {
  // The p-value grows with ε; find where it crosses the significance level.
  auto rejected = [&](double eps) { return OneRunPValue(m, r, v, eps, delta) <= significance; };
  if (r <= 0 || v <= 0 || !rejected(0)) return 0;
  double lo = 0, hi = 1;
  while (rejected(hi)) {
    lo = hi;
    hi *= 2;
    if (hi > 1e4) return lo;  // no finite claim survives (not reached for r >= 1 and significance > 0)
  }
  while (hi - lo > 1e-7) {
    const double mid = 0.5 * (lo + hi);
    (rejected(mid) ? lo : hi) = mid;
  }
  return lo;
}

OneRunAudit AuditOneRun(const std::vector<double>& in_scores, const std::vector<double>& out_scores,
                        double significance, double delta) {
  OneRunAudit out;
  const int64_t n_in = static_cast<int64_t>(in_scores.size());
  const int64_t n_out = static_cast<int64_t>(out_scores.size());
  if (n_in == 0 || n_out == 0) return out;
  std::vector<double> in = in_scores, outs = out_scores;
  std::sort(in.begin(), in.end());
  std::sort(outs.begin(), outs.end());
  std::vector<double> thresholds = in;
  thresholds.insert(thresholds.end(), outs.begin(), outs.end());
  std::sort(thresholds.begin(), thresholds.end());
  thresholds.erase(std::unique(thresholds.begin(), thresholds.end()), thresholds.end());
  thresholds.push_back(std::numeric_limits<double>::infinity());
  // Each threshold t: in-canaries and out-canaries scoring below it (the
  // guesses are the rest). The ROC's upper convex hull in these counts keeps
  // the thresholds no mix of two others beats.
  struct Point {
    int64_t fn, tn;
    double threshold;
  };
  std::vector<Point> hull;
  auto cross = [](const Point& a, const Point& b, const Point& c) {
    return static_cast<double>(b.tn - a.tn) * static_cast<double>(c.fn - b.fn) -
           static_cast<double>(c.tn - b.tn) * static_cast<double>(b.fn - a.fn);
  };
  double auc = 0;
  Point previous{0, 0, 0};
  for (double t : thresholds) {
    const Point p{std::lower_bound(in.begin(), in.end(), t) - in.begin(),
                  std::lower_bound(outs.begin(), outs.end(), t) - outs.begin(), t};
    // Trapezoids of the true-negative rate over the false-negative rate.
    auc += 0.5 * static_cast<double>(p.tn + previous.tn) / static_cast<double>(n_out) *
           static_cast<double>(p.fn - previous.fn) / static_cast<double>(n_in);
    previous = p;
    while (hull.size() >= 2 && cross(hull[hull.size() - 2], hull.back(), p) <= 0) hull.pop_back();
    hull.push_back(p);
  }
  out.auc = auc;
  out.thresholds = static_cast<int>(hull.size());
  const double corrected = significance / static_cast<double>(hull.size());
  const int64_t m = n_in + n_out;
  for (const Point& p : hull) {
    const int64_t tp = n_in - p.fn, fp = n_out - p.tn;
    const int64_t r = tp + fp;
    if (r == 0 || 2 * tp <= r) continue;  // no better than chance: rejects nothing
    const double eps = OneRunEpsilon(m, r, tp, corrected, delta);
    if (eps > out.epsilon_lower || out.guesses == 0) {
      out.epsilon_lower = eps;
      out.guesses = r;
      out.correct = tp;
      out.threshold = p.threshold;
    }
  }
  return out;
}

}  // namespace fedrad
