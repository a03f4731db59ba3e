#include "common/model_zoo_torch.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <tuple>

#include "common/model_zoo.h"
#include "common/wire_dtype.h"

namespace fedrad {
namespace {

std::vector<ModelSpec> SpecsToCheck() {
  std::vector<ModelSpec> specs;
  specs.push_back(ModelSpec{"ctnet", 1, 32, 2});
  specs.push_back(ModelSpec{"ctnet", 3, 64, 7});
  specs.push_back(ModelSpec{"tbcnn28", 1, 28, 10});
  specs.push_back(ModelSpec{"tbcnn28", 2, 28, 3});
  ModelSpec flat{"flat", 1, 64, 2};
  flat.parameters = 1234;
  specs.push_back(flat);
  for (auto [arch, channels, size, classes, width] :
       {std::tuple{"resnet18", 1, 64, 2, 64}, std::tuple{"resnet34", 3, 32, 5, 8},
        std::tuple{"resnet18", 2, 96, 2, 16}}) {
    ModelSpec resnet{arch, channels, size, classes};
    resnet.base_width = width;
    specs.push_back(resnet);
    resnet.norm = kFrozenBatchNorm;
    specs.push_back(resnet);
  }
  for (auto [depth, width, classes] : {std::tuple{3, 16, 2}, std::tuple{1, 4, 3}, std::tuple{2, 12, 2}}) {
    ModelSpec unet{"unet2d", 1, 32, classes};
    unet.task = ModelTask::kSegmentation;
    unet.depth = depth;
    unet.base_width = width;
    specs.push_back(unet);
  }
  return specs;
}

std::string Describe(const ModelSpec& s) {
  return s.architecture + " in=" + std::to_string(s.in_channels) + " classes=" + std::to_string(s.num_classes);
}

// The torch-free manifest (what the coordinator serves) is the network's own.
TEST(ModelZooTorchTest, TorchFreeManifestMatchesTheNetworkForEveryArchitecture) {
  for (const ModelSpec& spec : SpecsToCheck()) {
    absl::StatusOr<std::shared_ptr<NetworkImpl>> net = CreateNetwork(spec);
    ASSERT_TRUE(net.ok()) << net.status();
    absl::StatusOr<Manifest> manifest = ModelManifest(spec);
    ASSERT_TRUE(manifest.ok()) << manifest.status();
    EXPECT_TRUE(ManifestOf(**net) == *manifest) << Describe(spec);
    absl::StatusOr<ModelParameters> init = InitialParameters(spec, 3);
    ASSERT_TRUE(init.ok()) << init.status();
    ASSERT_TRUE(LoadParameters(**net, *init).ok()) << Describe(spec);
    EXPECT_EQ(ExtractParameters(**net).values, init->values) << Describe(spec);
  }
  for (const std::string& arch : KnownArchitectures()) {
    bool covered = false;
    for (const ModelSpec& spec : SpecsToCheck()) covered |= spec.architecture == arch;
    EXPECT_TRUE(covered) << "add " << arch << " to SpecsToCheck()";
  }
}

// A ResNet gives one logit per class for any input from 32 up (an adaptive
// average of its last stage, 32 times smaller than the input).
TEST(ModelZooTorchTest, ResNetGivesClassLogitsForEveryInputSize) {
  for (int size : {32, 64, 100}) {
    ModelSpec spec{"resnet18", 1, size, 3};
    spec.base_width = 8;
    absl::StatusOr<std::shared_ptr<NetworkImpl>> net = CreateNetwork(spec);
    ASSERT_TRUE(net.ok()) << net.status();
    torch::NoGradGuard no_grad;
    const torch::Tensor logits = (*net)->forward(torch::rand({2, 1, size, size}));
    EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 3})) << size;
    EXPECT_TRUE(torch::isfinite(logits).all().item<bool>()) << size;
  }
}

// A U-Net gives per-pixel logits at the input's size, and each output pixel
// sees the whole receptive field through the skip connections and the
// bottleneck: changing one input pixel far away changes it.
TEST(ModelZooTorchTest, UNetGivesPerPixelLogitsAtTheInputSize) {
  ModelSpec spec{"unet2d", 2, 32, 4};
  spec.task = ModelTask::kSegmentation;
  spec.depth = 3;
  spec.base_width = 8;
  absl::StatusOr<std::shared_ptr<NetworkImpl>> net = CreateNetwork(spec);
  ASSERT_TRUE(net.ok()) << net.status();
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::rand({3, 2, 32, 32});
  torch::Tensor y = (*net)->forward(x);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{3, 4, 32, 32}));
  torch::Tensor x2 = x.clone();
  x2[0][0][31][31] = 5.0;
  torch::Tensor y2 = (*net)->forward(x2);
  EXPECT_GT((y2[0].select(1, 0).select(1, 0) - y[0].select(1, 0).select(1, 0)).abs().max().item<double>(), 0);
  EXPECT_TRUE(torch::equal(y2[1], y[1]));  // images do not mix (GroupNorm is per image)
}

// The torch-free initialisation draws from PyTorch's default distributions:
// per tensor, the same range (uniform within 1/sqrt(fan_in) for convolutions
// and linear layers, constants for GroupNorm).
TEST(ModelZooTorchTest, InitialisationHasTorchDefaultRanges) {
  ModelSpec unet{"unet2d", 1, 32, 2};
  unet.task = ModelTask::kSegmentation;
  for (const ModelSpec& spec : {ModelSpec{"ctnet", 1, 32, 2}, ModelSpec{"tbcnn28", 1, 28, 10}, unet}) {
    torch::manual_seed(1);
    absl::StatusOr<std::shared_ptr<NetworkImpl>> net = CreateNetwork(spec);
    ASSERT_TRUE(net.ok());
    ModelParameters torch_init = ExtractParameters(**net);
    absl::StatusOr<ModelParameters> ours = InitialParameters(spec, 1);
    ASSERT_TRUE(ours.ok());
    size_t offset = 0;
    for (const TensorSpec& t : ours->manifest.tensors) {
      const size_t n = static_cast<size_t>(t.numel());
      auto range = [&](const std::vector<float>& v) {
        float lo = v[offset], hi = v[offset];
        for (size_t i = offset; i < offset + n; ++i) lo = std::min(lo, v[i]), hi = std::max(hi, v[i]);
        return std::make_pair(lo, hi);
      };
      auto [tlo, thi] = range(torch_init.values);
      auto [olo, ohi] = range(ours->values);
      EXPECT_EQ(tlo == thi, olo == ohi) << Describe(spec) << " " << t.name;
      if (tlo == thi) {  // a constant start
        EXPECT_EQ(olo, tlo) << t.name;
        EXPECT_EQ(ohi, thi) << t.name;
      } else if (n >= 32) {  // enough draws for the largest to show the range
        const float bound = std::max(std::fabs(tlo), std::fabs(thi));
        const float own = std::max(std::fabs(olo), std::fabs(ohi));
        EXPECT_LE(own, bound * 1.25f) << Describe(spec) << " " << t.name;
        EXPECT_GE(own, bound * 0.8f) << Describe(spec) << " " << t.name;
        if (n >= 200) {  // enough draws that both come within 2% of the shared bound
          EXPECT_NEAR(own, bound, bound * 0.05f) << Describe(spec) << " " << t.name;
        }
      }
      offset += n;
    }
  }
}

// The wire conversions agree with LibTorch's own (c10::Half, c10::BFloat16),
// an independent implementation, on every rounding case class: exhaustive
// over float32 patterns near every half-precision value, and random ones.
void ExpectSameAsC10(float f) {
  if (std::isnan(f)) return;
  const uint16_t half = c10::Half(f).x;
  const uint16_t bf = c10::BFloat16(f).x;
  ASSERT_EQ(FloatToFloat16(f), half) << std::hexfloat << f;
  ASSERT_EQ(FloatToBFloat16(f), bf) << std::hexfloat << f;
  ASSERT_EQ(Float16ToFloat(half), static_cast<float>(c10::Half(f))) << std::hexfloat << f;
}

TEST(WireDtypeAgainstC10Test, ConversionsMatchLibTorch) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    // Each half value as float32, and the float32 patterns around it and
    // halfway to its neighbours (the rounding ties).
    uint32_t bits;
    const float f = Float16ToFloat(static_cast<uint16_t>(h));
    std::memcpy(&bits, &f, 4);
    for (int64_t d : {-4097, -4096, -4095, -1, 0, 1, 4095, 4096, 4097}) {
      const uint32_t b = static_cast<uint32_t>(static_cast<int64_t>(bits) + d);
      float g;
      std::memcpy(&g, &b, 4);
      ExpectSameAsC10(g);
    }
  }
  std::mt19937 rng(11);
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t b = rng();
    float g;
    std::memcpy(&g, &b, 4);
    ExpectSameAsC10(g);
  }
}

}  // namespace
}  // namespace fedrad
