#include "node/grad_sampler.h"

#include <gtest/gtest.h>
#include <torch/autograd.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/utils.h>

#include "common/model_zoo.h"
#include "node/losses.h"

namespace fedrad::node {
namespace {

namespace F = torch::nn::functional;

// A network with every layer type the sampler knows: Conv2d (with stride and
// padding), GroupNorm, LayerNorm and Linear (on a 3-D input too).
class AllLayersImpl : public NetworkImpl {
 public:
  AllLayersImpl()
      : conv_(register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 4, 3).stride(2).padding(1)))),
        gn_(register_module("gn", torch::nn::GroupNorm(torch::nn::GroupNormOptions(2, 4)))),
        ln_(register_module("ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({4})))),
        token_(register_module("token", torch::nn::Linear(4, 3))),
        fc_(register_module("fc", torch::nn::Linear(3 * 16, 5))) {
    torch::NoGradGuard g;
    gn_->weight.uniform_(0.5, 1.5);  // non-trivial affine parameters
    gn_->bias.uniform_(-0.5, 0.5);
    ln_->weight.uniform_(0.5, 1.5);
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = torch::tanh(Apply(gn_, Apply(conv_, x)));   // [B, 4, 4, 4]
    x = x.flatten(2).transpose(1, 2);               // [B, 16, 4] tokens
    x = torch::tanh(Apply(token_, Apply(ln_, x)));  // [B, 16, 3]
    return Apply(fc_, x.flatten(1));                // [B, 5]
  }

 private:
  torch::nn::Conv2d conv_;
  torch::nn::GroupNorm gn_;
  torch::nn::LayerNorm ln_;
  torch::nn::Linear token_, fc_;
};

// The obviously correct reference: one backward pass per sample.
std::vector<torch::Tensor> NaivePerSample(NetworkImpl& model, const torch::Tensor& x, const torch::Tensor& y,
                                          ModelTask task) {
  std::vector<torch::Tensor> params = model.parameters();
  std::vector<std::vector<torch::Tensor>> per(params.size());
  for (int64_t i = 0; i < x.size(0); ++i) {
    torch::Tensor loss = TaskLoss(task, model.forward(x.slice(0, i, i + 1)), y.slice(0, i, i + 1));
    std::vector<torch::Tensor> g = torch::autograd::grad({loss}, params);
    for (size_t p = 0; p < params.size(); ++p) per[p].push_back(g[p]);
  }
  std::vector<torch::Tensor> out;
  for (auto& v : per) out.push_back(torch::stack(v));
  return out;
}

// Per-sample gradients after the loss's own backward() (hooks) and after
// GradSampler::Backward (to the layers' outputs only, leaving the
// parameters' gradients as they were) must both match batch-size-1 passes.
void ExpectMatchesNaive(NetworkImpl& model, const torch::Tensor& x, const torch::Tensor& y,
                        ModelTask task = ModelTask::kClassification) {
  std::vector<torch::Tensor> naive = NaivePerSample(model, x, y, task);
  GradSampler to_outputs;
  model.set_tap(&to_outputs);
  for (auto& p : model.parameters()) p.mutable_grad() = torch::Tensor();
  ASSERT_TRUE(to_outputs.Backward(TaskLoss(task, model.forward(x), y)).ok());
  for (const auto& p : model.named_parameters(true)) EXPECT_FALSE(p.value().grad().defined()) << p.key();
  GradSampler sampler;
  model.set_tap(&sampler);
  model.zero_grad();
  TaskLoss(task, model.forward(x), y).backward();
  model.set_tap(nullptr);
  auto by_outputs = to_outputs.PerSampleGradients(model);
  ASSERT_TRUE(by_outputs.ok()) << by_outputs.status();
  auto fast = sampler.PerSampleGradients(model);
  ASSERT_TRUE(fast.ok()) << fast.status();
  ASSERT_EQ(fast->size(), naive.size());
  auto names = model.named_parameters(true).keys();
  // In float64, each parameter to 1e-5 of its own gradient's scale. In
  // float32, to 1e-5 of the model's largest gradient: a parameter whose true
  // gradient is zero (a convolution's bias ahead of a GroupNorm over single
  // channels, which removes any constant) keeps only rounding noise of the
  // pixel sums, which no per-parameter scale bounds.
  double largest = 0;
  for (const torch::Tensor& g : naive) largest = std::max(largest, g.abs().max().item<double>());
  const double floor = x.scalar_type() == torch::kFloat32 ? largest : 0;
  for (size_t p = 0; p < naive.size(); ++p) {
    ASSERT_EQ((*fast)[p].sizes(), naive[p].sizes()) << names[p];
    // To 1e-5 relative (of the gradient's scale), as the issue asks.
    const double scale = std::max(naive[p].abs().max().item<double>(), floor) + 1e-12;
    const double err = ((*fast)[p] - naive[p]).abs().max().item<double>();
    EXPECT_LE(err, 1e-5 * scale) << names[p];
    EXPECT_LE(((*by_outputs)[p] - naive[p]).abs().max().item<double>(), 1e-5 * scale) << names[p];
    // And the per-sample gradients sum to the batch gradient autograd computed.
    const std::vector<torch::Tensor> params = model.parameters();
    EXPECT_LE(((*fast)[p].sum(0) - params[p].grad()).abs().max().item<double>(), 1e-5 * (scale * x.size(0)))
        << names[p];
  }
}

TEST(GradSamplerTest, EveryLayerTypeMatchesBatchSizeOneBackwardPasses) {
  torch::manual_seed(3);
  auto model = std::make_shared<AllLayersImpl>();
  model->to(torch::kFloat64);  // the comparison is about the method, not float32 rounding
  torch::Tensor x = torch::randn({6, 2, 8, 8}, torch::kFloat64);
  torch::Tensor y = torch::randint(0, 5, {6}, torch::kInt64);
  ExpectMatchesNaive(*model, x, y);
}

TEST(GradSamplerTest, ModelZooNetworksMatchInFloat32) {
  torch::manual_seed(4);
  for (ModelSpec spec : {ModelSpec{"ctnet", 1, 32, 2}, ModelSpec{"tbcnn28", 1, 28, 10}}) {
    auto model = CreateNetwork(spec);
    ASSERT_TRUE(model.ok());
    torch::Tensor x = torch::rand({5, 1, spec.input_size, spec.input_size});
    torch::Tensor y = torch::randint(0, spec.num_classes, {5}, torch::kInt64);
    SCOPED_TRACE(spec.architecture);
    ExpectMatchesNaive(**model, x, y);
  }
}

// The U-Net under its segmentation loss (cross-entropy + soft Dice, both
// per image): every layer, the upsampling path's convolutions and the
// decoder's GroupNorms included, matches one backward pass per image, in
// float64 (the method) and float32 (what training runs).
TEST(GradSamplerTest, UNetLayersMatchBatchSizeOneBackwardPasses) {
  torch::manual_seed(5);
  ModelSpec spec{"unet2d", 1, 16, 3};
  spec.task = ModelTask::kSegmentation;
  spec.depth = 2;
  spec.base_width = 4;
  for (torch::Dtype dtype : {torch::kFloat64, torch::kFloat32}) {
    auto model = CreateNetwork(spec);
    ASSERT_TRUE(model.ok()) << model.status();
    (*model)->to(dtype);
    torch::Tensor x = torch::randn({4, 1, 16, 16}, dtype);
    torch::Tensor y = torch::randint(0, 3, {4, 16, 16}, torch::kInt64);
    y[1].zero_();  // an image without foreground
    SCOPED_TRACE(dtype == torch::kFloat64 ? "float64" : "float32");
    ExpectMatchesNaive(**model, x, y, ModelTask::kSegmentation);
    ASSERT_EQ((*model)->named_parameters(true).size(), ModelManifest(spec)->tensors.size());
  }
}

// A ResNet: bias-free convolutions, stride 2 in the stem and the stages'
// first blocks, 1x1 downsampling shortcuts, GroupNorm, a linear classifier
// on an adaptive average. In float64: its ReLUs and max pool decide ties
// near zero that float32 rounding could flip between a batch and a
// batch-size-1 pass.
TEST(GradSamplerTest, ResNetLayersMatchBatchSizeOneBackwardPasses) {
  torch::manual_seed(8);
  for (const char* arch : {"resnet18", "resnet34"}) {
    ModelSpec spec{arch, 2, 32, 3};
    spec.base_width = 8;
    auto model = CreateNetwork(spec);
    ASSERT_TRUE(model.ok()) << model.status();
    (*model)->to(torch::kFloat64);
    torch::Tensor x = torch::randn({3, 2, 32, 32}, torch::kFloat64);
    torch::Tensor y = torch::randint(0, 3, {3}, torch::kInt64);
    SCOPED_TRACE(arch);
    ExpectMatchesNaive(**model, x, y);
  }
}

// The loss stays finite, and its gradient too, on images whose mask is empty
// (a perfect prediction there scores Dice 1, not 0/0).
TEST(SegmentationLossTest, EmptyMasksGiveFiniteLossAndGradients) {
  torch::Tensor logits = torch::full({2, 2, 8, 8}, -20.0, torch::kFloat32);
  logits.select(1, 0).fill_(20.0);  // everything background, confidently
  logits.requires_grad_(true);
  const torch::Tensor masks = torch::zeros({2, 8, 8}, torch::kInt64);
  torch::Tensor loss = TaskLoss(ModelTask::kSegmentation, logits, masks);
  loss.backward();
  EXPECT_TRUE(torch::isfinite(loss).item<bool>());
  EXPECT_TRUE(torch::isfinite(logits.grad()).all().item<bool>());
  EXPECT_LT(loss.item<double>(), 1e-6);  // both images predicted perfectly
  EXPECT_NEAR(SoftDice(logits.detach(), masks).min().item<double>(), 1.0, 1e-6);
  // All foreground predicted on an empty mask: Dice 1 / (64 + 1).
  EXPECT_NEAR(SoftDice(-logits.detach(), masks)[0][0].item<double>(), 1.0 / 65, 1e-4);
}

TEST(GradSamplerTest, UnsupportedLayersFailLoudly) {
  class WithBatchNormImpl : public NetworkImpl {
   public:
    WithBatchNormImpl()
        : bn_(register_module("bn", torch::nn::BatchNorm1d(3))), fc_(register_module("fc", torch::nn::Linear(3, 2))) {}
    torch::Tensor forward(torch::Tensor x) override { return Apply(fc_, bn_->forward(x)); }
    torch::nn::BatchNorm1d bn_;
    torch::nn::Linear fc_;
  };
  auto model = std::make_shared<WithBatchNormImpl>();
  GradSampler sampler;
  model->set_tap(&sampler);
  F::cross_entropy(model->forward(torch::randn({4, 3})), torch::zeros({4}, torch::kInt64)).backward();
  auto grads = sampler.PerSampleGradients(*model);
  ASSERT_FALSE(grads.ok());
  EXPECT_NE(grads.status().message().find("'bn.weight'"), std::string::npos) << grads.status();
  EXPECT_NE(grads.status().message().find("BatchNorm"), std::string::npos);
}

}  // namespace
}  // namespace fedrad::node
