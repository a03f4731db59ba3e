#include "node/dp_sgd.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/model_zoo.h"
#include "common/model_zoo_torch.h"
#include "node/grad_sampler.h"

namespace fedrad::node {
namespace {

namespace F = torch::nn::functional;

// The slow reference for patient-level clipping: a backward pass per image,
// summed per patient, clipped, summed.
std::vector<torch::Tensor> NaiveClippedSum(ClassifierImpl& model, const torch::Tensor& x, const torch::Tensor& y,
                                           const std::vector<int64_t>& unit, int64_t units, double clip) {
  std::vector<torch::Tensor> params = model.parameters();
  std::vector<std::vector<torch::Tensor>> per_unit(units);
  for (auto& v : per_unit) for (auto& p : params) v.push_back(torch::zeros_like(p));
  for (int64_t i = 0; i < x.size(0); ++i) {
    torch::Tensor loss = F::cross_entropy(model.forward(x.slice(0, i, i + 1)), y.slice(0, i, i + 1),
                                          F::CrossEntropyFuncOptions().reduction(torch::kSum));
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

TEST(DpSgdTest, PatientLevelClippedSumEqualsNaiveLoop) {
  torch::manual_seed(5);
  auto model = CreateClassifier(ModelSpec{"ctnet", 1, 32, 2});
  ASSERT_TRUE(model.ok());
  torch::Tensor x = torch::rand({7, 1, 32, 32});
  torch::Tensor y = torch::randint(0, 2, {7}, torch::kInt64);
  // Seven images of four patients; one patient has three images.
  const std::vector<int64_t> unit = {0, 0, 1, 2, 2, 2, 3};
  for (double clip : {0.05, 1e6}) {  // clipping active, and inactive
    std::vector<torch::Tensor> want = NaiveClippedSum(**model, x, y, unit, 4, clip);
    GradSampler sampler;
    (*model)->set_tap(&sampler);
    (*model)->zero_grad();
    F::cross_entropy((*model)->forward(x), y, F::CrossEntropyFuncOptions().reduction(torch::kSum)).backward();
    (*model)->set_tap(nullptr);
    auto per_sample = sampler.PerSampleGradients(**model);
    ASSERT_TRUE(per_sample.ok());
    auto rng = crypto::SecureRandom::ForTesting(1);
    DpSgdSettings s{clip, /*noise_multiplier=*/0.0, /*expected_batch=*/2.5};
    auto stats = NoisyClippedGradient((*model)->parameters(), *per_sample, torch::tensor(unit), 4, s, *rng);
    ASSERT_TRUE(stats.ok()) << stats.status();
    EXPECT_EQ(stats->units, 4);
    EXPECT_EQ(stats->clipped_fraction, clip < 1 ? 1.0 : 0.0);
    std::vector<torch::Tensor> params = (*model)->parameters();
    for (size_t p = 0; p < params.size(); ++p) {
      // The result is divided by the expected batch (2.5), not the actual 4.
      torch::Tensor got = params[p].grad() * 2.5;
      const double scale = want[p].abs().max().item<double>() + 1e-12;
      EXPECT_LE((got - want[p]).abs().max().item<double>(), 1e-5 * scale + 1e-9) << "param " << p << " clip " << clip;
    }
  }
}

TEST(DpSgdTest, NoiseHasStandardDeviationSigmaTimesClipOverExpectedBatch) {
  torch::Tensor w = torch::zeros({200, 300}, torch::requires_grad());
  std::vector<torch::Tensor> per_sample = {torch::zeros({3, 200, 300})};
  auto rng = crypto::SecureRandom::ForTesting(2);
  DpSgdSettings s{/*clip_norm=*/0.5, /*noise_multiplier=*/1.2, /*expected_batch=*/4};
  ASSERT_TRUE(NoisyClippedGradient({w}, per_sample, torch::tensor({0, 1, 2}), 3, s, *rng).ok());
  const double std = w.grad().std().item<double>();
  EXPECT_NEAR(std, 1.2 * 0.5 / 4, 0.01 * 0.15);  // 60,000 coordinates: about 0.3% standard error
  EXPECT_NEAR(w.grad().mean().item<double>(), 0.0, 0.002);
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
