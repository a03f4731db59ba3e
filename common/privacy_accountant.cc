#include "common/privacy_accountant.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fedrad {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// log(exp(a) + exp(b)).
double LogAdd(double a, double b) {
  const double lo = std::min(a, b), hi = std::max(a, b);
  if (lo == -kInf) return hi;
  return std::log1p(std::exp(lo - hi)) + hi;
}

// log(exp(a) - exp(b)) for a >= b; -inf when equal.
double LogSub(double a, double b) {
  if (b == -kInf) return a;
  if (a <= b) return -kInf;
  return std::log(std::expm1(a - b)) + b;
}

// log(erfc(x)), accurate where erfc underflows (large positive x).
double LogErfc(double x) {
  if (x < 25) return std::log(std::erfc(x));
  // Asymptotic expansion: erfc(x) = e^{-x²}/(x√π) · (1 - 1/(2x²) + 3/(4x⁴) - 15/(8x⁶) + ...)
  const double x2 = x * x;
  const double series = 1 - 1 / (2 * x2) + 3 / (4 * x2 * x2) - 15 / (8 * x2 * x2 * x2);
  return -x2 - std::log(x) - 0.5 * std::log(M_PI) + std::log(series);
}

double LogAIntegerOrder(double q, double sigma, int64_t alpha) {
  double log_a = -kInf;
  const double lq = std::log(q), l1q = std::log1p(-q);
  for (int64_t i = 0; i <= alpha; ++i) {
    const double log_binom = std::lgamma(alpha + 1.0) - std::lgamma(i + 1.0) - std::lgamma(alpha - i + 1.0);
    const double di = static_cast<double>(i);
    log_a = LogAdd(log_a, log_binom + di * lq + (alpha - di) * l1q + (di * di - di) / (2 * sigma * sigma));
  }
  return log_a;
}

// Mironov, Talwar & Zhang 2019, Section 3.3: A_α split at z0 into two
// integrals, each a series over the generalised binomial coefficients
// C(α, i), whose signs alternate once i > α.
double LogAFractionalOrder(double q, double sigma, double alpha) {
  double log_a0 = -kInf, log_a1 = -kInf;
  const double z0 = sigma * sigma * std::log(1 / q - 1) + 0.5;
  const double lq = std::log(q), l1q = std::log1p(-q);
  double log_abs_coef = 0;  // log|C(α, 0)| = 0
  bool positive = true;
  for (int64_t i = 0;; ++i) {
    if (i > 0) {
      const double factor = (alpha - static_cast<double>(i) + 1) / static_cast<double>(i);
      log_abs_coef += std::log(std::fabs(factor));
      if (factor < 0) positive = !positive;
    }
    const double di = static_cast<double>(i);
    const double j = alpha - di;
    const double log_t0 = log_abs_coef + di * lq + j * l1q;
    const double log_t1 = log_abs_coef + j * lq + di * l1q;
    const double log_e0 = std::log(0.5) + LogErfc((di - z0) / (std::sqrt(2.0) * sigma));
    const double log_e1 = std::log(0.5) + LogErfc((z0 - j) / (std::sqrt(2.0) * sigma));
    const double log_s0 = log_t0 + (di * di - di) / (2 * sigma * sigma) + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / (2 * sigma * sigma) + log_e1;
    if (positive) {
      log_a0 = LogAdd(log_a0, log_s0);
      log_a1 = LogAdd(log_a1, log_s1);
    } else {
      log_a0 = LogSub(log_a0, log_s0);
      log_a1 = LogSub(log_a1, log_s1);
    }
    if (std::max(log_s0, log_s1) < -30 || i > 100000) break;
  }
  return LogAdd(log_a0, log_a1);
}

}  // namespace

double SampledGaussianLogA(double q, double sigma, double alpha) {
  if (alpha == std::floor(alpha) && alpha < 1e6) {
    return LogAIntegerOrder(q, sigma, static_cast<int64_t>(alpha));
  }
  return LogAFractionalOrder(q, sigma, alpha);
}

double SampledGaussianRdp(double q, double sigma, double alpha) {
  if (q == 0) return 0;
  if (sigma == 0) return kInf;
  if (q == 1) return alpha / (2 * sigma * sigma);
  if (std::isinf(alpha)) return kInf;
  return SampledGaussianLogA(q, sigma, alpha) / (alpha - 1);
}

std::vector<double> DefaultRdpOrders() {
  std::vector<double> orders;
  for (int x = 1; x < 100; ++x) orders.push_back(1 + x / 10.0);
  for (int a = 11; a <= 63; ++a) orders.push_back(a);
  for (double a : {128.0, 256.0, 512.0}) orders.push_back(a);
  return orders;
}

Epsilon EpsilonFromRdp(const std::vector<double>& orders, const std::vector<double>& rdp, double delta) {
  Epsilon best{kInf, 0};
  bool all_zero = true;
  for (size_t i = 0; i < orders.size() && i < rdp.size(); ++i) {
    all_zero &= rdp[i] == 0;
    const double a = orders[i];
    if (!(a > 1) || std::isnan(rdp[i])) continue;
    const double eps = rdp[i] + std::log((a - 1) / a) - (std::log(delta) + std::log(a)) / (a - 1);
    if (eps < best.epsilon) best = {eps, a};
  }
  if (all_zero && !orders.empty()) return {0, orders.back()};
  best.epsilon = std::max(0.0, best.epsilon);
  return best;
}

PrivacyAccountant::PrivacyAccountant(std::vector<double> orders)
    : orders_(std::move(orders)), rdp_(orders_.size(), 0.0) {}

void PrivacyAccountant::Compose(double noise_multiplier, double sampling_rate, int64_t steps) {
  if (steps <= 0) return;
  for (size_t i = 0; i < orders_.size(); ++i) {
    rdp_[i] += static_cast<double>(steps) * SampledGaussianRdp(sampling_rate, noise_multiplier, orders_[i]);
  }
}

Epsilon PrivacyAccountant::GetEpsilon(double delta) const { return EpsilonFromRdp(orders_, rdp_, delta); }

Epsilon EpsilonFor(double noise_multiplier, double sampling_rate, int64_t steps, double delta,
                   const std::vector<double>& orders) {
  PrivacyAccountant a(orders);
  a.Compose(noise_multiplier, sampling_rate, steps);
  return a.GetEpsilon(delta);
}

std::string FormatRoundedUp(double value, int significant) {
  if (!(value > 0) || !std::isfinite(value)) return absl::StrFormat("%.*g", significant, value);
  const int exponent = static_cast<int>(std::floor(std::log10(value)));
  const int decimals = std::max(0, significant - 1 - exponent);
  // Printing to `decimals` places rounds to nearest; step up by one unit in
  // the last place until the text is not below the value (at most twice:
  // the first candidate is within one unit of it).
  const double unit = std::pow(10.0, -decimals);
  double candidate = std::ceil(value / unit) * unit;
  std::string text = absl::StrFormat("%.*f", decimals, candidate);
  while (std::strtod(text.c_str(), nullptr) < value) {
    candidate += unit;
    text = absl::StrFormat("%.*f", decimals, candidate);
  }
  return text;
}

absl::StatusOr<double> NoiseMultiplierFor(double epsilon, double delta, double sampling_rate, int64_t steps,
                                          const std::vector<double>& orders) {
  return NoiseMultiplierFor(epsilon, delta, sampling_rate, steps, PrivacyAccountant(orders));
}

absl::StatusOr<double> NoiseMultiplierFor(double epsilon, double delta, double sampling_rate, int64_t steps,
                                          const PrivacyAccountant& spent) {
  if (!(epsilon > 0) || !(delta > 0 && delta < 1) || !(sampling_rate > 0 && sampling_rate <= 1) || steps < 1) {
    return absl::InvalidArgumentError("need epsilon > 0, 0 < delta < 1, 0 < rate <= 1 and steps >= 1");
  }
  const double already = spent.GetEpsilon(delta).epsilon;
  if (already >= epsilon) {
    return absl::OutOfRangeError(
        absl::StrFormat("epsilon %.4g is already spent; no noise reaches a total of %.4g", already, epsilon));
  }
  auto eps = [&](double sigma) {
    PrivacyAccountant a = spent;
    a.Compose(sigma, sampling_rate, steps);
    return a.GetEpsilon(delta).epsilon;
  };
  double hi = 1.0;
  while (eps(hi) > epsilon) {
    hi *= 2;
    if (hi > 1e6) {
      return absl::OutOfRangeError(absl::StrCat("no noise multiplier up to 1e6 reaches epsilon ", epsilon));
    }
  }
  double lo = 0;
  while (hi - lo > 1e-9 * hi) {
    const double mid = (lo + hi) / 2;
    if (eps(mid) > epsilon) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return hi;
}

}  // namespace fedrad
