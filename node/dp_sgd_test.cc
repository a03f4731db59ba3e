#include "node/dp_sgd.h"

#include <gtest/gtest.h>

#include <torch/torch.h>
#include <algorithm>
#include <cmath>

#include "absl/strings/match.h"
#include "common/model_zoo.h"
#include "common/model_zoo_torch.h"
#include "node/grad_sampler.h"
#include "node/losses.h"

namespace fedrad::node {
namespace {

namespace F = torch::nn::functional;

// A model, its task and a batch of seven images with their targets.
struct Case {
  std::shared_ptr<NetworkImpl> model;
  ModelTask task;
  torch::Tensor x, y;
};

// ctnet (convolutions, GroupNorm, then linear layers on the Gram path), in
// float32 as training runs, a U-Net (convolutions and GroupNorm only,
// per-sample gradients at 32x32 and 16x16) and a ResNet-18 (its later
// stages' convolutions, 4 and 1 output positions, on the Gram path: ghost
// norms and one weighted weight-gradient call) in float64: in float32 a ReLU
// input or a max-pool tie within rounding of zero can fall on the other side
// in a batch-size-1 pass, which changes that image's gradient by far more
// than rounding. Both at 32x32. The same ResNet with frozen BatchNorm
// layers (per-channel affine maps of fixed statistics) in float64 too, and
// ctnet as a multilabel model in float32.
//
// Tolerance: 1e-5 of each parameter's own gradient in float64; in float32 of
// the largest (a parameter whose true gradient is zero keeps only rounding
// noise).
double Tolerance(const Case& c, const std::vector<torch::Tensor>& want, size_t p) {
  double largest = 0;
  for (const torch::Tensor& w : want) largest = std::max(largest, w.abs().max().item<double>());
  const double own = want[p].abs().max().item<double>();
  return 1e-5 * (c.x.scalar_type() == torch::kFloat32 ? std::max(own, largest) : own) + 1e-12;
}
std::vector<Case> Cases() {
  torch::manual_seed(5);
  std::vector<Case> out;
  out.push_back({*CreateNetwork(ModelSpec{"ctnet", 1, 32, 2}), ModelTask::kClassification, torch::rand({7, 1, 32, 32}),
                 torch::randint(0, 2, {7}, torch::kInt64)});
  ModelSpec unet{"unet2d", 1, 32, 2};
  unet.task = ModelTask::kSegmentation;
  unet.depth = 2;
  unet.base_width = 4;
  std::shared_ptr<NetworkImpl> model = *CreateNetwork(unet);
  model->to(torch::kFloat64);
  out.push_back({model, ModelTask::kSegmentation, torch::rand({7, 1, 32, 32}, torch::kFloat64),
                 (torch::rand({7, 32, 32}) < 0.2).to(torch::kInt64)});
  ModelSpec resnet{"resnet18", 1, 32, 3};
  resnet.base_width = 8;
  std::shared_ptr<NetworkImpl> res = *CreateNetwork(resnet);
  res->to(torch::kFloat64);
  out.push_back({res, ModelTask::kClassification, torch::rand({7, 1, 32, 32}, torch::kFloat64),
                 torch::randint(0, 3, {7}, torch::kInt64)});
  // Frozen BatchNorm layers (norm = "frozen_batch") with statistics and
  // affine parameters away from the identity, as pretrained ones are.
  resnet.norm = kFrozenBatchNorm;
  std::shared_ptr<NetworkImpl> frozen_bn = *CreateNetwork(resnet);
  frozen_bn->to(torch::kFloat64);
  {
    torch::NoGradGuard no_grad;
    for (auto& item : frozen_bn->named_parameters(true)) {
      const std::string& name = item.key();
      if (absl::EndsWith(name, "running_mean")) item.value().uniform_(-0.3, 0.3);
      if (absl::EndsWith(name, "running_var")) item.value().uniform_(0.5, 2.0);
      if (name.find("bn") != std::string::npos || name.find("downsample.1") != std::string::npos) {
        if (absl::EndsWith(name, ".weight")) item.value().uniform_(0.5, 1.5);
        if (absl::EndsWith(name, ".bias")) item.value().uniform_(-0.2, 0.2);
      }
    }
  }
  out.push_back({frozen_bn, ModelTask::kClassification, torch::rand({7, 1, 32, 32}, torch::kFloat64),
                 torch::randint(0, 3, {7}, torch::kInt64)});
  // Multilabel: ctnet's head as three sigmoid outputs, the loss each
  // image's binary cross-entropy averaged over its labels.
  ModelSpec labels{"ctnet", 1, 32, 3};
  labels.task = ModelTask::kMultilabel;
  out.push_back({*CreateNetwork(labels), ModelTask::kMultilabel, torch::rand({7, 1, 32, 32}),
                 (torch::rand({7, 3}) < 0.4).to(torch::kFloat32)});
  return out;
}

// The parameters that train, in order (not a frozen BatchNorm's statistics).
std::vector<torch::Tensor> Trained(NetworkImpl& model) {
  std::vector<torch::Tensor> out;
  for (const torch::Tensor& p : model.parameters()) {
    if (p.requires_grad()) out.push_back(p);
  }
  return out;
}

// The slow reference for patient-level clipping: a backward pass per image,
// summed per patient, clipped, summed.
std::vector<torch::Tensor> NaiveClippedSum(const Case& c, const torch::Tensor& x, const torch::Tensor& y,
                                           const std::vector<int64_t>& unit, int64_t units, double clip) {
  NetworkImpl& model = *c.model;
  std::vector<torch::Tensor> params = Trained(model);
  std::vector<std::vector<torch::Tensor>> per_unit(units);
  for (auto& v : per_unit)
    for (auto& p : params) v.push_back(torch::zeros_like(p));
  for (int64_t i = 0; i < x.size(0); ++i) {
    torch::Tensor loss = TaskLoss(c.task, model.forward(x.slice(0, i, i + 1)), y.slice(0, i, i + 1));
    std::vector<torch::Tensor> g = torch::autograd::grad({loss}, params);
    for (size_t p = 0; p < params.size(); ++p) per_unit[unit[i]][p] += g[p];
  }
  std::vector<torch::Tensor> out;
  for (auto& p : params) out.push_back(torch::zeros_like(p));
  for (int64_t u = 0; u < units; ++u) {
    double sq = 0;
    for (auto& g : per_unit[u]) sq += g.pow(2).sum().item<double>();
    const double factor = std::min(1.0, clip / (std::sqrt(sq) + 1e-6));
    for (size_t p = 0; p < params.size(); ++p) out[p] += per_unit[u][p] * factor;
  }
  return out;
}

// One summed-loss forward and backward pass with `sampler` installed, to
// the layers' outputs only, as training does.
void Backward(const Case& c, GradSampler& sampler, const torch::Tensor& x) {
  NetworkImpl& model = *c.model;
  model.set_tap(&sampler);
  model.zero_grad();
  ASSERT_TRUE(sampler.Backward(TaskLoss(c.task, model.forward(x), c.y)).ok());
  model.set_tap(nullptr);
}

TEST(DpSgdTest, PatientLevelClippedSumEqualsNaiveLoop) {
  for (const Case& c : Cases()) {
    // Seven images of four patients; one patient has three images.
    const std::vector<int64_t> unit = {0, 0, 1, 2, 2, 2, 3};
    // Patient-level (one patient has three images) and image-level units;
    // clipping active and inactive.
    const std::vector<int64_t> by_image = {0, 1, 2, 3, 4, 5, 6};
    for (const std::vector<int64_t>* units : {&unit, &by_image}) {
      const int64_t n = *std::max_element(units->begin(), units->end()) + 1;
      for (double clip : {0.05, 1e6}) {
        std::vector<torch::Tensor> want = NaiveClippedSum(c, c.x, c.y, *units, n, clip);
        GradSampler sampler;
        Backward(c, sampler, c.x);
        auto rng = crypto::SecureRandom::ForTesting(1);
        DpSgdSettings s{clip, /*noise_multiplier=*/0.0, /*expected_batch=*/2.5};
        auto stats = NoisyClippedGradient(sampler, *c.model, torch::tensor(*units), n, s, *rng);
        ASSERT_TRUE(stats.ok()) << stats.status();
        EXPECT_EQ(stats->units, n);
        EXPECT_EQ(stats->clipped_fraction, clip < 1 ? 1.0 : 0.0);
        std::vector<torch::Tensor> params = Trained(*c.model);
        for (size_t p = 0; p < params.size(); ++p) {
          // The result is divided by the expected batch (2.5), not the actual one.
          torch::Tensor got = params[p].grad() * 2.5;
          EXPECT_LE((got - want[p]).abs().max().item<double>(), Tolerance(c, want, p))
              << "param " << p << " clip " << clip << " units " << n << " task " << static_cast<int>(c.task);
        }
      }
    }
  }
}

// One unit's image holds a NaN or an infinity (a corrupt file, an overflow):
// that unit contributes nothing, and the clipped sum is exactly the one of
// the other units, finite, each still moving it by at most C.
TEST(DpSgdTest, AUnitWithANonFiniteGradientContributesNothing) {
  for (const Case& c : Cases()) {
    const torch::Tensor& clean = c.x;
    const torch::Tensor& y = c.y;
    const std::vector<int64_t> by_patient = {0, 0, 1, 2, 2, 2, 3};
    const std::vector<int64_t> by_image = {0, 1, 2, 3, 4, 5, 6};
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      for (const std::vector<int64_t>* units : {&by_patient, &by_image}) {
        const int64_t n = *std::max_element(units->begin(), units->end()) + 1;
        // Image 4 (patient 2) is poisoned at one pixel.
        torch::Tensor x = clean.clone();
        x.index_put_({4, 0, 10, 10}, bad);
        // The reference: the same batch without the poisoned unit's images.
        std::vector<int64_t> keep_rows, keep_units;
        const int64_t dropped = (*units)[4];
        for (int64_t i = 0; i < 7; ++i) {
          if ((*units)[i] == dropped) continue;
          keep_rows.push_back(i);
          keep_units.push_back((*units)[i] < dropped ? (*units)[i] : (*units)[i] - 1);
        }
        const torch::Tensor rows = torch::tensor(keep_rows);
        std::vector<torch::Tensor> want =
            NaiveClippedSum(c, clean.index_select(0, rows), y.index_select(0, rows), keep_units, n - 1, 0.05);
        GradSampler sampler;
        Backward(c, sampler, x);
        auto rng = crypto::SecureRandom::ForTesting(1);
        auto stats = NoisyClippedGradient(sampler, *c.model, torch::tensor(*units), n,
                                          DpSgdSettings{0.05, /*noise_multiplier=*/0.0, /*expected_batch=*/1.0}, *rng);
        ASSERT_TRUE(stats.ok()) << stats.status();
        EXPECT_EQ(stats->nonfinite_units, 1) << bad;
        EXPECT_TRUE(std::isfinite(stats->mean_norm));
        double sq = 0;
        std::vector<torch::Tensor> params = Trained(*c.model);
        for (size_t p = 0; p < params.size(); ++p) {
          const torch::Tensor got = params[p].grad();
          ASSERT_TRUE(torch::isfinite(got).all().item<bool>()) << "param " << p << " value " << bad;
          EXPECT_LE((got - want[p]).abs().max().item<double>(), Tolerance(c, want, p))
              << "param " << p << " value " << bad << " units " << n << " task " << static_cast<int>(c.task);
          sq += got.to(torch::kFloat64).pow(2).sum().item<double>();
        }
        EXPECT_LE(std::sqrt(sq), 0.05 * static_cast<double>(n - 1) * (1 + 1e-5));
      }
    }
  }
}

TEST(DpSgdTest, NoiseHasStandardDeviationSigmaTimesClipOverExpectedBatch) {
  // A linear layer whose inputs are zero has zero gradients: what is left is noise.
  class ZeroImpl : public NetworkImpl {
   public:
    ZeroImpl() : fc_(register_module("fc", torch::nn::Linear(300, 200))) {}
    torch::Tensor forward(torch::Tensor x) override { return Apply(fc_, x * 0); }
    torch::nn::Linear fc_;
  };
  auto model = std::make_shared<ZeroImpl>();
  {
    torch::NoGradGuard g;
    model->fc_->bias.zero_();
    model->fc_->bias.requires_grad_(false);
  }
  GradSampler sampler;
  model->set_tap(&sampler);
  model->forward(torch::rand({3, 300})).sum().backward();
  auto rng = crypto::SecureRandom::ForTesting(2);
  DpSgdSettings s{/*clip_norm=*/0.5, /*noise_multiplier=*/1.2, /*expected_batch=*/4};
  ASSERT_TRUE(NoisyClippedGradient(sampler, *model, torch::tensor({0, 1, 2}), 3, s, *rng).ok());
  const torch::Tensor grad = model->fc_->weight.grad();
  EXPECT_NEAR(grad.std().item<double>(), 1.2 * 0.5 / 4, 0.01 * 0.15);  // 60,000 coordinates
  EXPECT_NEAR(grad.mean().item<double>(), 0.0, 0.002);
}

TEST(DpSgdTest, PoissonBatchSizesHaveBinomialMeanAndVariance) {
  auto rng = crypto::SecureRandom::ForTesting(7);
  const int trials = 2000;
  const int64_t n = 1000;
  const double q = 0.05;
  double sum = 0, sum_sq = 0;
  for (int t = 0; t < trials; ++t) {
    const double k = static_cast<double>(PoissonSample(n, q, *rng).size());
    sum += k;
    sum_sq += k * k;
  }
  const double mean = sum / trials, var = sum_sq / trials - mean * mean;
  // Binomial(1000, 0.05): mean 50 (standard error 0.15), variance 47.5
  // (standard error about 1.5); bounds at about 5 standard errors.
  EXPECT_NEAR(mean, 50.0, 0.8);
  EXPECT_NEAR(var, 47.5, 7.5);
}

}  // namespace
}  // namespace fedrad::node
