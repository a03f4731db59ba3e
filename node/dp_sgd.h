#ifndef FEDRAD_NODE_DP_SGD_H_
#define FEDRAD_NODE_DP_SGD_H_

// Torch-facing: include only from .cc files.

#include <cstdint>
#include <vector>

#include <ATen/Tensor.h>

#include "absl/status/statusor.h"
#include "crypto/secure_noise.h"
#include "node/grad_sampler.h"

namespace fedrad::node {

// Poisson sampling: each of `num_units` privacy units (patients, or images)
// joins the step independently with probability q. Returns their indices.
std::vector<int64_t> PoissonSample(int64_t num_units, double q, crypto::SecureRandom& rng);

struct DpSgdSettings {
  double clip_norm = 1.0;         // C: bound on each unit's gradient (L2, over all parameters)
  double noise_multiplier = 1.0;  // σ: noise std is σ·C
  double expected_batch = 1.0;    // q × number of units: the divisor, whatever the actual batch
  // Audits only (`fedrad audit empirical --without-clipping`): no unit is
  // scaled down, while the noise stays σ·C: a broken clipping, to show that
  // the audit's canaries catch one. Never set in training.
  bool without_clipping = false;
};

struct DpStepStats {
  int64_t units = 0;
  double mean_norm = 0;         // of the units' gradients before clipping
  double clipped_fraction = 0;  // units whose norm exceeded C
  // Units whose gradient was not finite: they contributed nothing
  // (GradSampler::ClippedSum). Counted on the node, never released.
  int64_t nonfinite_units = 0;
};

// Audits only (`fedrad audit empirical`): Dirac gradient canaries, the
// white-box canaries of Steinke, Nasr and Jagielski (2023). Canary i is a
// privacy unit of its own whose gradient is sign_i · raw_norm at one
// coordinate (an index into the trainable parameters, flattened in order)
// and zero elsewhere; like every unit it is clipped (ClipFactors) before it
// joins the sum, so a canary above C tests the clipping too: clipped, it
// adds sign_i · C. The auditor sees each step's released noisy sum and knows
// the data's clipped sum (DP protects against an adversary who knows every
// other record), so each canary's score gains sign_i · (released − data sum)
// at its coordinate: C for each step it joined (if clipping works), plus
// the noise there.
struct CanarySteps {
  std::vector<int64_t> coordinates;  // distinct
  std::vector<double> signs;         // +1 or -1
  double raw_norm = 0;               // each canary's gradient norm before clipping
  std::vector<double> scores;        // accumulated over the steps
  std::vector<int64_t> sampled;      // this step's canaries (indices into the above)
};

// The DP-SGD gradient of one step, after a forward and backward pass with
// `sampler` installed: `unit_of_sample` [B] says which of the step's
// `num_units` units each sample belongs to (canaries, if any, are units
// beyond these); a unit's gradient (the sum of its
// samples') is clipped to C, the clipped gradients are added, Gaussian noise
// N(0, σ²C²) from `rng` is added to every coordinate, and the result is
// divided by expected_batch. Written into each parameter's .grad.
absl::StatusOr<DpStepStats> NoisyClippedGradient(GradSampler& sampler, torch::nn::Module& model,
                                                 const at::Tensor& unit_of_sample, int64_t num_units,
                                                 const DpSgdSettings& settings, crypto::SecureRandom& rng,
                                                 CanarySteps* canaries = nullptr);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_DP_SGD_H_
