#include "node/dp_sgd.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace fedrad::node {

std::vector<int64_t> PoissonSample(int64_t num_units, double q, crypto::SecureRandom& rng) {
  std::vector<int64_t> out;
  for (int64_t u = 0; u < num_units; ++u) {
    if (rng.Bernoulli(q)) out.push_back(u);
  }
  return out;
}

absl::StatusOr<DpStepStats> NoisyClippedGradient(const std::vector<at::Tensor>& params,
                                                 const std::vector<at::Tensor>& per_sample,
                                                 const at::Tensor& unit_of_sample, int64_t num_units,
                                                 const DpSgdSettings& s, crypto::SecureRandom& rng) {
  if (params.size() != per_sample.size()) {
    return absl::InvalidArgumentError("one per-sample gradient per parameter is needed");
  }
  if (!(s.clip_norm > 0) || !(s.noise_multiplier >= 0) || !(s.expected_batch > 0)) {
    return absl::InvalidArgumentError("DP-SGD needs clip_norm > 0, noise_multiplier >= 0, expected_batch > 0");
  }
  torch::NoGradGuard no_grad;
  DpStepStats stats;
  stats.units = num_units;
  const int64_t batch = unit_of_sample.size(0);
  // Each unit's gradient as [units, D] per parameter. With one unit per
  // sample in order (image-level DP) that is the per-sample gradient itself;
  // otherwise a one-hot [units, batch] matrix sums a unit's samples in one
  // GEMM (index_add_ is several times slower on CPU).
  const bool identity = num_units == batch && torch::equal(unit_of_sample, torch::arange(batch, torch::kInt64));
  torch::Tensor one_hot;
  if (!identity && num_units > 0) {
    one_hot = torch::zeros({num_units, batch}, per_sample.empty() ? torch::kFloat32 : per_sample[0].scalar_type());
    one_hot.index_put_({unit_of_sample, torch::arange(batch, torch::kInt64)}, 1.0);
  }
  std::vector<torch::Tensor> per_unit;
  torch::Tensor sq_norm = torch::zeros({num_units}, torch::kFloat64);
  for (const torch::Tensor& g : per_sample) {
    torch::Tensor flat = g.reshape({batch, -1});
    torch::Tensor u = identity || num_units == 0 ? flat : one_hot.to(flat.dtype()).mm(flat);
    if (num_units > 0) sq_norm += u.norm(2, {1}).to(torch::kFloat64).pow(2);
    per_unit.push_back(std::move(u));
  }
  torch::Tensor norm = sq_norm.sqrt();
  torch::Tensor factor = (s.clip_norm / (norm + 1e-6)).clamp_max(1.0);
  if (num_units > 0) {
    stats.mean_norm = norm.mean().item<double>();
    stats.clipped_fraction = (norm > s.clip_norm).to(torch::kFloat64).mean().item<double>();
  }
  const double noise_std = s.noise_multiplier * s.clip_norm;
  std::vector<double> noise;
  for (size_t p = 0; p < params.size(); ++p) {
    // Σ_u factor_u · g_u as a single vector-matrix product.
    torch::Tensor clipped_sum =
        num_units > 0 ? factor.to(per_unit[p].dtype()).unsqueeze(0).mm(per_unit[p]).reshape(params[p].sizes())
                      : torch::zeros(params[p].sizes(), params[p].options());
    noise.resize(static_cast<size_t>(clipped_sum.numel()));
    rng.Gaussian(noise.data(), noise.size(), noise_std);
    torch::Tensor n = torch::from_blob(noise.data(), clipped_sum.sizes(), torch::kFloat64);
    torch::Tensor grad = ((clipped_sum.to(torch::kFloat64) + n) / s.expected_batch).to(params[p].dtype());
    torch::Tensor param = params[p];
    if (param.grad().defined()) {
      param.mutable_grad().copy_(grad);
    } else {
      param.mutable_grad() = grad;
    }
  }
  return stats;
}

}  // namespace fedrad::node
