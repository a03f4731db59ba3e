#ifndef FEDRAD_COMMON_PRIVACY_ACCOUNTANT_H_
#define FEDRAD_COMMON_PRIVACY_ACCOUNTANT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedrad {

// Rényi differential privacy of the Poisson-subsampled Gaussian mechanism
// (the privacy cost of one DP-SGD step), and its conversion to (ε, δ).
//
// Per step with sampling rate q and noise multiplier σ, at order α > 1:
//   RDP(α) = log(A_α) / (α - 1), where A_α = E_{z~N(0,σ²)}[((1-q) + q e^{(2z-1)/(2σ²)})^α]
// computed exactly for integer α (a binomial sum) and for fractional α with
// the two erfc series of Mironov, Talwar & Zhang 2019 ("Rényi Differential
// Privacy of the Sampled Gaussian Mechanism", Section 3.3), keeping the signs
// of the generalised binomial coefficients and summing until terms fall
// below e^-30. Everything is computed in log space.
// Special cases: q = 0 gives 0; σ = 0 gives +inf; q = 1 gives α / (2σ²).
double SampledGaussianRdp(double q, double sigma, double alpha);

// log(A_α) as above (exposed for tests against numerical integration).
double SampledGaussianLogA(double q, double sigma, double alpha);

// 1.1, 1.2, ..., 10.9, then 11, 12, ..., 63, then 128, 256, 512.
std::vector<double> DefaultRdpOrders();

struct Epsilon {
  double epsilon = 0;
  double order = 0;  // the order that gave the minimum
};

// ε for a target δ from RDP values at the given orders, with the conversion
// of Balle et al. 2020 (Theorem 21):
//   ε = min_α [ RDP(α) + log((α-1)/α) - (log δ + log α) / (α - 1) ]
// clamped at 0 (and exactly 0 when every RDP value is 0).
Epsilon EpsilonFromRdp(const std::vector<double>& orders, const std::vector<double>& rdp, double delta);

// Composes the cost of every step that touched data and reports (ε, δ).
// Thread-compatible.
class PrivacyAccountant {
 public:
  explicit PrivacyAccountant(std::vector<double> orders = DefaultRdpOrders());

  // Adds `steps` steps of the sampled Gaussian mechanism.
  void Compose(double noise_multiplier, double sampling_rate, int64_t steps);
  Epsilon GetEpsilon(double delta) const;

  const std::vector<double>& orders() const { return orders_; }
  const std::vector<double>& rdp() const { return rdp_; }

 private:
  std::vector<double> orders_;
  std::vector<double> rdp_;
};

// `value` (finite, >= 0) rounded up to `significant` significant digits, as
// text: a printed ε is never below the accountant's, a printed σ never below
// the one that meets the target. The decimal text reads back as a double at
// or above `value`.
std::string FormatRoundedUp(double value, int significant = 6);

// ε after `steps` steps at (σ, q).
Epsilon EpsilonFor(double noise_multiplier, double sampling_rate, int64_t steps, double delta,
                   const std::vector<double>& orders = DefaultRdpOrders());

// The smallest noise multiplier σ for which `steps` steps at rate q stay
// within (ε, δ); found by bisection to a relative precision of 1e-9 (the
// returned σ always meets the target).
absl::StatusOr<double> NoiseMultiplierFor(double epsilon, double delta, double sampling_rate, int64_t steps,
                                          const std::vector<double>& orders = DefaultRdpOrders());

// The same on top of what `spent` already holds (at its orders): the smallest
// σ for which `spent` plus `steps` steps at rate q stays within (ε, δ).
// OutOfRange if `spent` alone already reaches ε.
absl::StatusOr<double> NoiseMultiplierFor(double epsilon, double delta, double sampling_rate, int64_t steps,
                                          const PrivacyAccountant& spent);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_PRIVACY_ACCOUNTANT_H_
