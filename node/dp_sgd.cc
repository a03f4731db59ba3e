#include "node/dp_sgd.h"

#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"

namespace fedrad::node {

std::vector<int64_t> PoissonSample(int64_t num_units, double q, crypto::SecureRandom& rng) {
  std::vector<int64_t> out;
  for (int64_t u = 0; u < num_units; ++u) {
    if (rng.Bernoulli(q)) out.push_back(u);
  }
  return out;
}

absl::StatusOr<DpStepStats> NoisyClippedGradient(GradSampler& sampler, torch::nn::Module& model,
                                                 const at::Tensor& unit_of_sample, int64_t num_units,
                                                 const DpSgdSettings& s, crypto::SecureRandom& rng,
                                                 CanarySteps* canaries) {
  if (!(s.clip_norm > 0) || !(s.noise_multiplier >= 0) || !(s.expected_batch > 0)) {
    return absl::InvalidArgumentError("DP-SGD needs clip_norm > 0, noise_multiplier >= 0, expected_batch > 0");
  }
  const double clip = s.without_clipping ? INFINITY : s.clip_norm;
  absl::StatusOr<GradSampler::Clipped> clipped = sampler.ClippedSum(model, unit_of_sample, num_units, clip);
  if (!clipped.ok()) return clipped.status();
  torch::NoGradGuard no_grad;
  DpStepStats stats;
  stats.units = num_units;
  stats.nonfinite_units = clipped->nonfinite_units;
  if (num_units > clipped->nonfinite_units) {
    const torch::Tensor finite = clipped->unit_norms.masked_select(torch::isfinite(clipped->unit_norms));
    stats.mean_norm = finite.mean().item<double>();
    stats.clipped_fraction = (finite > s.clip_norm).to(torch::kFloat64).mean().item<double>();
  }
  // Each sampled canary's clipped value, from the same clipping as the data's units.
  std::vector<double> canary_value;
  if (canaries && !canaries->sampled.empty()) {
    const int64_t n = static_cast<int64_t>(canaries->sampled.size());
    const torch::Tensor norms = torch::full({n}, canaries->raw_norm, torch::kFloat64);
    const torch::Tensor factor = ClipFactors(norms, torch::isfinite(norms), clip).contiguous();
    const double* f = factor.data_ptr<double>();
    for (int64_t k = 0; k < n; ++k) {
      canary_value.push_back(canaries->signs[canaries->sampled[k]] * canaries->raw_norm * f[k]);
    }
  }
  const double noise_std = s.noise_multiplier * s.clip_norm;
  std::vector<double> noise;
  size_t p = 0;
  int64_t offset = 0;  // of this parameter in the flattened trainable parameters
  for (const auto& item : model.named_parameters(true)) {
    torch::Tensor param = item.value();
    if (!param.requires_grad()) continue;
    const torch::Tensor& sum = clipped->sums[p++];
    const int64_t size = sum.numel();
    torch::Tensor data_sum = sum.to(torch::kFloat64).contiguous();
    // Without canaries the data's sum is not needed again: noise goes on it in place.
    torch::Tensor released = canaries ? data_sum.clone() : data_sum;
    if (canaries) {
      double* r = released.data_ptr<double>();
      for (size_t k = 0; k < canaries->sampled.size(); ++k) {
        const int64_t c = canaries->coordinates[canaries->sampled[k]] - offset;
        if (c >= 0 && c < size) r[c] += canary_value[k];
      }
    }
    noise.resize(static_cast<size_t>(size));
    rng.Gaussian(noise.data(), noise.size(), noise_std);
    released += torch::from_blob(noise.data(), sum.sizes(), torch::kFloat64);
    torch::Tensor grad = (released / s.expected_batch).to(param.dtype());
    if (canaries) {
      // What the auditor reads: the gradient as written, times the divisor,
      // less the data's part.
      const torch::Tensor seen = grad.to(torch::kFloat64).contiguous().view(-1) * s.expected_batch;
      const double* g = seen.data_ptr<double>();
      const double* d = data_sum.view(-1).data_ptr<double>();
      for (size_t i = 0; i < canaries->coordinates.size(); ++i) {
        const int64_t c = canaries->coordinates[i] - offset;
        if (c >= 0 && c < size) canaries->scores[i] += canaries->signs[i] * (g[c] - d[c]);
      }
    }
    if (param.grad().defined()) {
      param.mutable_grad().copy_(grad);
    } else {
      param.mutable_grad() = grad;
    }
    offset += size;
  }
  return stats;
}

}  // namespace fedrad::node
