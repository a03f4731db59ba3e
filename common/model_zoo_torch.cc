#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/functional/upsampling.h>
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
class CtNetImpl : public NetworkImpl {
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
class TbCnn28Impl : public NetworkImpl {
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

// "unet2d": the U-Net of Ronneberger et al. (MICCAI 2015) for segmentation,
// sized for DP-SGD: GroupNorm instead of BatchNorm (per-sample gradients
// need samples that do not mix), and upsampling by nearest-neighbour
// interpolation followed by a 3x3 convolution instead of a transposed
// convolution (Odena et al. 2016: no checkerboard artefacts), so every
// parametric layer is a Conv2d or GroupNorm the per-sample gradient
// sampler knows. Images [N, C, S, S] in, per-pixel class logits
// [N, classes, S, S] out; S a multiple of 2^depth.
class UNet2dImpl : public NetworkImpl {
 public:
  // A container only: UNet2dImpl applies its layers (so the tap sees them).
  struct DoubleConvImpl : torch::nn::Module {
    DoubleConvImpl(int64_t in, int64_t out)
        : conv1(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1)))),
          norm1(register_module("norm1", torch::nn::GroupNorm(torch::nn::GroupNormOptions(Groups(out), out)))),
          conv2(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(out, out, 3).padding(1)))),
          norm2(register_module("norm2", torch::nn::GroupNorm(torch::nn::GroupNormOptions(Groups(out), out)))) {}
    torch::nn::Conv2d conv1;
    torch::nn::GroupNorm norm1;
    torch::nn::Conv2d conv2;
    torch::nn::GroupNorm norm2;
  };
  struct UpImpl : DoubleConvImpl {
    explicit UpImpl(int64_t out)
        : DoubleConvImpl(2 * out, out),
          upconv(register_module("upconv", torch::nn::Conv2d(torch::nn::Conv2dOptions(2 * out, out, 3).padding(1)))),
          upnorm(register_module("upnorm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(Groups(out), out)))) {}
    torch::nn::Conv2d upconv;
    torch::nn::GroupNorm upnorm;
  };

  UNet2dImpl(int in_channels, int num_classes, int depth, int base_width) {
    const int64_t w = base_width;
    down_.push_back(register_module("down0", std::make_shared<DoubleConvImpl>(in_channels, w)));
    for (int d = 1; d <= depth; ++d) {
      down_.push_back(register_module(absl::StrCat("down", d), std::make_shared<DoubleConvImpl>(w << (d - 1), w << d)));
    }
    // Registered from the deepest level up, the order they run in (and the
    // manifest's, common/model_zoo.cc).
    up_.resize(static_cast<size_t>(depth));
    for (int d = depth - 1; d >= 0; --d) {
      up_[static_cast<size_t>(d)] = register_module(absl::StrCat("up", d), std::make_shared<UpImpl>(w << d));
    }
    head_ = register_module("head", torch::nn::Conv2d(torch::nn::Conv2dOptions(w, num_classes, 1)));
  }

  torch::Tensor forward(torch::Tensor x) override {
    std::vector<torch::Tensor> skips;
    for (size_t d = 0; d < down_.size(); ++d) {
      if (d > 0) x = F::max_pool2d(x, F::MaxPool2dFuncOptions(2));
      x = Block(*down_[d], x);
      skips.push_back(x);
    }
    for (size_t d = up_.size(); d-- > 0;) {
      UpImpl& up = *up_[d];
      x = F::interpolate(x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2, 2}).mode(torch::kNearest));
      x = torch::relu(Apply(up.upnorm, Apply(up.upconv, x)));
      x = Block(up, torch::cat({skips[d], x}, 1));
    }
    return Apply(head_, x);
  }

 private:
  // GroupNorm's groups: 8 where the channels allow (Wu & He 2018 found
  // 8 to 32 best), else 4 (base_width is a multiple of 4).
  static int64_t Groups(int64_t channels) { return channels % 8 == 0 ? 8 : 4; }

  torch::Tensor Block(DoubleConvImpl& b, torch::Tensor x) {
    x = torch::relu(Apply(b.norm1, Apply(b.conv1, x)));
    return torch::relu(Apply(b.norm2, Apply(b.conv2, x)));
  }

  std::vector<std::shared_ptr<DoubleConvImpl>> down_;
  std::vector<std::shared_ptr<UpImpl>> up_;
  torch::nn::Conv2d head_{nullptr};
};

// "resnet18" and "resnet34": He et al. (CVPR 2016)'s networks of basic
// blocks, with GroupNorm in place of BatchNorm (per-sample gradients need
// samples that do not mix) and torchvision's parameter names, so its
// state_dicts convert one to one. The stem (7x7 stride 2, max pool) and the
// three stride-2 stages halve the image five times; the classifier sees an
// adaptive average of the last stage, so any input from 32 up works.
// A ResNet's normalisation: GroupNorm, or a pretrained BatchNorm kept as a
// frozen affine map ([model] norm = "frozen_batch").
struct ResNetNorm {
  torch::nn::GroupNorm group{nullptr};
  FrozenBatchNorm2d frozen{nullptr};
};

ResNetNorm RegisterNorm(torch::nn::Module& m, const std::string& name, int64_t channels, bool frozen_batch) {
  ResNetNorm n;
  if (frozen_batch) {
    n.frozen = m.register_module(name, FrozenBatchNorm2d(channels));
  } else {
    n.group =
        m.register_module(name, torch::nn::GroupNorm(torch::nn::GroupNormOptions(ResNetGroups(channels), channels)));
  }
  return n;
}

class ResNetImpl : public NetworkImpl {
 public:
  // Containers only: ResNetImpl applies their layers (so the tap sees them).
  struct DownsampleImpl : torch::nn::Module {
    DownsampleImpl(int64_t in, int64_t out, int64_t stride, bool frozen_batch)
        : conv(
              register_module("0", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).stride(stride).bias(false)))),
          norm(RegisterNorm(*this, "1", out, frozen_batch)) {}
    torch::nn::Conv2d conv;
    ResNetNorm norm;
  };
  struct BlockImpl : torch::nn::Module {
    BlockImpl(int64_t in, int64_t out, int64_t stride, bool frozen_batch)
        : conv1(register_module(
              "conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false)))),
          bn1(RegisterNorm(*this, "bn1", out, frozen_batch)),
          conv2(register_module("conv2",
                                torch::nn::Conv2d(torch::nn::Conv2dOptions(out, out, 3).padding(1).bias(false)))),
          bn2(RegisterNorm(*this, "bn2", out, frozen_batch)) {
      if (in != out) {
        downsample = register_module("downsample", std::make_shared<DownsampleImpl>(in, out, stride, frozen_batch));
      }
    }
    torch::nn::Conv2d conv1;
    ResNetNorm bn1;
    torch::nn::Conv2d conv2;
    ResNetNorm bn2;
    std::shared_ptr<DownsampleImpl> downsample;
  };
  struct StageImpl : torch::nn::Module {
    std::vector<std::shared_ptr<BlockImpl>> blocks;
  };

  ResNetImpl(const std::string& architecture, int in_channels, int num_classes, int width, bool frozen_batch)
      : conv1_(register_module(
            "conv1",
            torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, width, 7).stride(2).padding(3).bias(false)))),
        bn1_(RegisterNorm(*this, "bn1", width, frozen_batch)) {
    int64_t in = width;
    const std::vector<int>& blocks = ResNetBlocks(architecture);
    for (int stage = 0; stage < 4; ++stage) {
      auto s = std::make_shared<StageImpl>();
      const int64_t out = int64_t{width} << stage;
      for (int b = 0; b < blocks[static_cast<size_t>(stage)]; ++b) {
        s->blocks.push_back(s->register_module(std::to_string(b),
                                               std::make_shared<BlockImpl>(in, out, in == out ? 1 : 2, frozen_batch)));
        in = out;
      }
      stages_.push_back(register_module(absl::StrCat("layer", stage + 1), s));
    }
    fc_ = register_module("fc", torch::nn::Linear(in, num_classes));
  }

  torch::Tensor forward(torch::Tensor x) override {
    x = torch::relu(Norm(bn1_, Apply(conv1_, x)));
    x = F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(2).padding(1));
    for (const auto& stage : stages_) {
      for (const auto& b : stage->blocks) {
        torch::Tensor y = torch::relu(Norm(b->bn1, Apply(b->conv1, x)));
        y = Norm(b->bn2, Apply(b->conv2, y));
        x = torch::relu(y + (b->downsample ? Norm(b->downsample->norm, Apply(b->downsample->conv, x)) : x));
      }
    }
    x = F::adaptive_avg_pool2d(x, F::AdaptiveAvgPool2dFuncOptions(1)).flatten(1);
    return Apply(fc_, x);
  }

 private:
  torch::Tensor Norm(ResNetNorm& n, const torch::Tensor& x) {
    return n.frozen.is_empty() ? Apply(n.group, x) : Apply(n.frozen, x);
  }

  torch::nn::Conv2d conv1_;
  ResNetNorm bn1_;
  std::vector<std::shared_ptr<StageImpl>> stages_;
  torch::nn::Linear fc_{nullptr};
};

// "flat": one parameter vector of the plan's `parameters` length and no
// network: a model of any size for measuring round overhead with
// trainer = "noop" nodes. It cannot be trained or evaluated.
class FlatImpl : public NetworkImpl {
 public:
  explicit FlatImpl(int64_t parameters) : weights_(register_parameter("weights", torch::zeros({parameters}))) {}

  torch::Tensor forward(torch::Tensor) override {
    TORCH_CHECK(false, "model 'flat' is for round-overhead benchmarks with trainer = \"noop\"; it has no network");
  }

 private:
  torch::Tensor weights_;
};

}  // namespace

FrozenBatchNorm2dImpl::FrozenBatchNorm2dImpl(int64_t channels)
    : weight(register_parameter("weight", torch::ones({channels}))),
      bias(register_parameter("bias", torch::zeros({channels}))),
      running_mean(register_parameter("running_mean", torch::zeros({channels}), /*requires_grad=*/false)),
      running_var(register_parameter("running_var", torch::ones({channels}), /*requires_grad=*/false)) {}

torch::Tensor FrozenBatchNorm2dImpl::Normalized(const torch::Tensor& x) const {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[1] = -1;
  return (x - running_mean.detach().view(shape)) * torch::rsqrt(running_var.detach() + kEps).view(shape);
}

torch::Tensor FrozenBatchNorm2dImpl::forward(const torch::Tensor& x) const {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[1] = -1;
  return Normalized(x) * weight.view(shape) + bias.view(shape);
}

absl::StatusOr<std::shared_ptr<NetworkImpl>> CreateNetwork(const ModelSpec& spec) {
  absl::Status s = CheckModelSpec(spec);
  if (!s.ok()) return s;
  if (spec.architecture == "tbcnn28") {
    return std::shared_ptr<NetworkImpl>(std::make_shared<TbCnn28Impl>(spec.in_channels, spec.num_classes));
  }
  if (spec.architecture == "unet2d") {
    return std::shared_ptr<NetworkImpl>(
        std::make_shared<UNet2dImpl>(spec.in_channels, spec.num_classes, spec.depth, spec.base_width));
  }
  if (IsResNet(spec.architecture)) {
    return std::shared_ptr<NetworkImpl>(std::make_shared<ResNetImpl>(
        spec.architecture, spec.in_channels, spec.num_classes, spec.base_width, spec.norm == kFrozenBatchNorm));
  }
  if (spec.architecture == "flat") return std::shared_ptr<NetworkImpl>(std::make_shared<FlatImpl>(spec.parameters));
  return std::shared_ptr<NetworkImpl>(std::make_shared<CtNetImpl>(spec.in_channels, spec.num_classes));
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
