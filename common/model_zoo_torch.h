#ifndef FEDRAD_COMMON_MODEL_ZOO_TORCH_H_
#define FEDRAD_COMMON_MODEL_ZOO_TORCH_H_

// Torch-facing half of the model zoo. Include only from .cc files that run a
// network (trainer, evaluator); everything else uses common/model_zoo.h.

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <memory>

#include "absl/status/statusor.h"
#include "common/plan.h"
#include "common/tensor.h"

namespace fedrad {

// A pretrained BatchNorm layer kept as the fixed per-channel affine map it
// computes in eval mode: y = (x - running_mean) / sqrt(running_var + eps) *
// weight + bias, eps 1e-5 (BatchNorm2d's). No batch statistics, so samples
// do not mix and per-sample gradients exist (DP-safe); the running
// statistics never train: they are registered as parameters without a
// gradient only so that they live in the manifest and travel with the model
// (IsStatistic; TrainedParametersOf never counts them). weight and bias
// train unless frozen.
class FrozenBatchNorm2dImpl : public torch::nn::Module {
 public:
  static constexpr double kEps = 1e-5;
  explicit FrozenBatchNorm2dImpl(int64_t channels);
  // (x - running_mean) / sqrt(running_var + eps), per channel of [N, C, ...].
  torch::Tensor Normalized(const torch::Tensor& x) const;
  torch::Tensor forward(const torch::Tensor& x) const;

  torch::Tensor weight, bias, running_mean, running_var;
};
TORCH_MODULE(FrozenBatchNorm2d);

// Sees every parametric layer's input and output during a forward pass
// (DP-SGD uses it to compute per-sample gradients). A layer type a tap does
// not support must make it fail loudly, never be skipped.
class LayerTap {
 public:
  virtual ~LayerTap() = default;
  virtual void Linear(torch::nn::LinearImpl& layer, const torch::Tensor& input, const torch::Tensor& output) = 0;
  virtual void Conv2d(torch::nn::Conv2dImpl& layer, const torch::Tensor& input, const torch::Tensor& output) = 0;
  virtual void GroupNorm(torch::nn::GroupNormImpl& layer, const torch::Tensor& input, const torch::Tensor& output) = 0;
  virtual void LayerNorm(torch::nn::LayerNormImpl& layer, const torch::Tensor& input, const torch::Tensor& output) = 0;
  virtual void FrozenBatchNorm(FrozenBatchNorm2dImpl& layer, const torch::Tensor& input,
                               const torch::Tensor& output) = 0;
};

// A classifier: images [N, C, H, W] in, logits [N, classes] out. Layers are
// applied through Apply() so an installed LayerTap sees each of them.
class NetworkImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  // Not owned; nullptr removes it.
  void set_tap(LayerTap* tap) { tap_ = tap; }

 protected:
  torch::Tensor Apply(torch::nn::Linear& layer, const torch::Tensor& x) {
    torch::Tensor y = layer->forward(x);
    if (tap_) tap_->Linear(*layer, x, y);
    return y;
  }
  torch::Tensor Apply(torch::nn::Conv2d& layer, const torch::Tensor& x) {
    torch::Tensor y = layer->forward(x);
    if (tap_) tap_->Conv2d(*layer, x, y);
    return y;
  }
  torch::Tensor Apply(torch::nn::GroupNorm& layer, const torch::Tensor& x) {
    torch::Tensor y = layer->forward(x);
    if (tap_) tap_->GroupNorm(*layer, x, y);
    return y;
  }
  torch::Tensor Apply(torch::nn::LayerNorm& layer, const torch::Tensor& x) {
    torch::Tensor y = layer->forward(x);
    if (tap_) tap_->LayerNorm(*layer, x, y);
    return y;
  }
  torch::Tensor Apply(FrozenBatchNorm2d& layer, const torch::Tensor& x) {
    torch::Tensor y = layer->forward(x);
    if (tap_) tap_->FrozenBatchNorm(*layer, x, y);
    return y;
  }

 private:
  LayerTap* tap_ = nullptr;
};

absl::StatusOr<std::shared_ptr<NetworkImpl>> CreateNetwork(const ModelSpec& spec);

// Manifest of `module`'s parameters in registration order.
Manifest ManifestOf(const torch::nn::Module& module);

// Copies flattened values into the module; fails unless the manifests match.
absl::Status LoadParameters(torch::nn::Module& module, const ModelParameters& parameters);

ModelParameters ExtractParameters(const torch::nn::Module& module);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_MODEL_ZOO_TORCH_H_
