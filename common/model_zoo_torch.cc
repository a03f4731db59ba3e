#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/utils.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/model_zoo.h"
#include "common/model_zoo_torch.h"

namespace fedrad {
namespace {

namespace F = torch::nn::functional;

// "ctnet": a small CNN for single-channel medical images. tanh rather than
// ReLU because it trains better under DP-SGD (Papernot et al. 2021);
// GroupNorm rather than BatchNorm because per-example gradients are undefined
// with batch statistics. An adaptive pool makes it work for any input size
// from 16 up.
class CtNetImpl : public ClassifierImpl {
 public:
  CtNetImpl(int in_channels, int num_classes)
      : conv1_(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, 16, 5).padding(2)))),
        norm1_(register_module("norm1", torch::nn::GroupNorm(torch::nn::GroupNormOptions(4, 16)))),
        conv2_(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 3).padding(1)))),
        norm2_(register_module("norm2", torch::nn::GroupNorm(torch::nn::GroupNormOptions(8, 32)))),
        conv3_(register_module("conv3", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 32, 3).padding(1)))),
        norm3_(register_module("norm3", torch::nn::GroupNorm(torch::nn::GroupNormOptions(8, 32)))),
        fc1_(register_module("fc1", torch::nn::Linear(32, 32))),
        fc2_(register_module("fc2", torch::nn::Linear(32, num_classes))) {}

  torch::Tensor forward(torch::Tensor x) override {
    x = F::max_pool2d(torch::tanh(Apply(norm1_, Apply(conv1_, x))), F::MaxPool2dFuncOptions(2));
    x = F::max_pool2d(torch::tanh(Apply(norm2_, Apply(conv2_, x))), F::MaxPool2dFuncOptions(2));
    x = torch::tanh(Apply(norm3_, Apply(conv3_, x)));
    x = F::adaptive_max_pool2d(x, F::AdaptiveMaxPool2dFuncOptions(1));
    x = torch::tanh(Apply(fc1_, x.flatten(1)));
    return Apply(fc2_, x);
  }

 private:
  torch::nn::Conv2d conv1_;
  torch::nn::GroupNorm norm1_;
  torch::nn::Conv2d conv2_;
  torch::nn::GroupNorm norm2_;
  torch::nn::Conv2d conv3_;
  torch::nn::GroupNorm norm3_;
  torch::nn::Linear fc1_, fc2_;
};

// "tbcnn28": the end-to-end CNN of Tramèr & Boneh (ICLR 2021) for 28x28
// images (Fashion-MNIST), as listed in shared/REFERENCES.md.
class TbCnn28Impl : public ClassifierImpl {
 public:
  TbCnn28Impl(int in_channels, int num_classes)
      : conv1_(register_module("conv1",
                               torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, 16, 8).stride(2).padding(2)))),
        conv2_(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 4).stride(2)))),
        fc1_(register_module("fc1", torch::nn::Linear(32 * 4 * 4, 32))),
        fc2_(register_module("fc2", torch::nn::Linear(32, num_classes))) {}

  torch::Tensor forward(torch::Tensor x) override {
    x = F::max_pool2d(torch::tanh(Apply(conv1_, x)), F::MaxPool2dFuncOptions(2).stride(1));
    x = F::max_pool2d(torch::tanh(Apply(conv2_, x)), F::MaxPool2dFuncOptions(2).stride(1));
    x = torch::tanh(Apply(fc1_, x.flatten(1)));
    return Apply(fc2_, x);
  }

 private:
  torch::nn::Conv2d conv1_, conv2_;
  torch::nn::Linear fc1_, fc2_;
};

// "flat": one parameter vector of the plan's `parameters` length and no
// network: a model of any size for measuring round overhead with
// trainer = "noop" nodes. It cannot be trained or evaluated.
class FlatImpl : public ClassifierImpl {
 public:
  explicit FlatImpl(int64_t parameters) : weights_(register_parameter("weights", torch::zeros({parameters}))) {}

  torch::Tensor forward(torch::Tensor) override {
    TORCH_CHECK(false, "model 'flat' is for round-overhead benchmarks with trainer = \"noop\"; it has no network");
  }

 private:
  torch::Tensor weights_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<ClassifierImpl>> CreateClassifier(const ModelSpec& spec) {
  absl::Status s = CheckModelSpec(spec);
  if (!s.ok()) return s;
  if (spec.architecture == "tbcnn28") {
    return std::shared_ptr<ClassifierImpl>(std::make_shared<TbCnn28Impl>(spec.in_channels, spec.num_classes));
  }
  if (spec.architecture == "flat") return std::shared_ptr<ClassifierImpl>(std::make_shared<FlatImpl>(spec.parameters));
  return std::shared_ptr<ClassifierImpl>(std::make_shared<CtNetImpl>(spec.in_channels, spec.num_classes));
}

Manifest ManifestOf(const torch::nn::Module& module) {
  Manifest m;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    TensorSpec t;
    t.name = item.key();
    for (int64_t d : item.value().sizes()) t.shape.push_back(d);
    m.tensors.push_back(std::move(t));
  }
  return m;
}

absl::Status LoadParameters(torch::nn::Module& module, const ModelParameters& parameters) {
  Manifest own = ManifestOf(module);
  if (!(own == parameters.manifest)) {
    return absl::InvalidArgumentError(absl::StrCat("model parameters do not match the network: manifest ",
                                                   parameters.manifest.Sha256(), " vs ", own.Sha256()));
  }
  torch::NoGradGuard no_grad;
  size_t offset = 0;
  for (auto& item : module.named_parameters(true)) {
    torch::Tensor p = item.value();
    const size_t n = static_cast<size_t>(p.numel());
    torch::Tensor src =
        torch::from_blob(const_cast<float*>(parameters.values.data() + offset), p.sizes(), torch::kFloat32);
    p.copy_(src);
    offset += n;
  }
  return absl::OkStatus();
}

ModelParameters ExtractParameters(const torch::nn::Module& module) {
  ModelParameters out;
  out.manifest = ManifestOf(module);
  out.values.resize(static_cast<size_t>(out.manifest.total_elements()));
  size_t offset = 0;
  for (const auto& item : module.named_parameters(true)) {
    torch::Tensor p = item.value().detach().contiguous().to(torch::kFloat32);
    std::memcpy(out.values.data() + offset, p.data_ptr<float>(), p.numel() * sizeof(float));
    offset += static_cast<size_t>(p.numel());
  }
  return out;
}

}  // namespace fedrad
