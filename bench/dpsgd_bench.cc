// Training-step throughput (samples/s), plain SGD vs DP-SGD, for the
// Tramèr & Boneh end-to-end CNN on 28x28 inputs (model zoo "tbcnn28") and
// for the segmentation U-Net ("unet2d", depth 3, base width 16) on 64x64
// inputs with its loss (cross-entropy + soft Dice per image); the U-Net's
// runs are named BM_PlainStep/unet2d/32 and BM_DpSgdStep/unet2d/32; and for
// ResNet-18 with GroupNorm ("resnet18", width 64) on 64x64 inputs, batch 64.
// BM_DpSgdStep is a full image-level DP-SGD step: forward, backward to the
// layers' outputs only (GradSampler::Backward), per-sample gradient norms
// (Gram matrices for the linear layers, materialised per-sample gradients
// for the convolutions), per-sample
// clipping, secure Gaussian noise, and the optimizer step. On every core
// (SetTorchThreads(0)) unless FEDRAD_BENCH_THREADS=N; OMP_NUM_THREADS does not change it. Uses OpenBLAS when installed
// (scripts/setup.sh installs libopenblas0-pthread).
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdlib>

#include "common/model_zoo.h"
#include "common/model_zoo_torch.h"
#include "node/dp_sgd.h"
#include "node/grad_sampler.h"
#include "node/losses.h"
#include "node/trainer.h"

namespace {

namespace F = torch::nn::functional;
using fedrad::ModelSpec;

ModelSpec Classifier() { return ModelSpec{"tbcnn28", 1, 28, 10}; }

ModelSpec UNet() {
  ModelSpec spec{"unet2d", 1, 64, 2};
  spec.task = fedrad::ModelTask::kSegmentation;
  spec.depth = 3;
  spec.base_width = 16;
  return spec;
}

// ResNet-18 with GroupNorm at 64x64, one channel, two classes: the network
// of ../shared/anchors/opacus --model resnet18gn.
ModelSpec ResNet18() {
  ModelSpec spec{"resnet18", 1, 64, 2};
  spec.base_width = 64;
  return spec;
}

std::shared_ptr<fedrad::NetworkImpl> Model(const ModelSpec& spec) {
  // Every core, as a node with threads = 0, unless FEDRAD_BENCH_THREADS says
  // how many (to compare with a peer on the same threads).
  const char* threads = std::getenv("FEDRAD_BENCH_THREADS");
  fedrad::node::SetTorchThreads(threads ? std::atoi(threads) : 0);
  torch::manual_seed(1);
  return *fedrad::CreateNetwork(spec);
}

// A batch and its targets: labels, or masks (a lesion disc in half the images).
std::pair<torch::Tensor, torch::Tensor> Batch(const ModelSpec& spec, int64_t batch) {
  torch::Tensor x = torch::rand({batch, 1, spec.input_size, spec.input_size});
  if (spec.task != fedrad::ModelTask::kSegmentation) {
    return {x, torch::randint(0, spec.num_classes, {batch}, torch::kInt64)};
  }
  const torch::Tensor grid = torch::arange(spec.input_size, torch::kFloat32);
  const torch::Tensor d2 = (grid.unsqueeze(0) - 20).pow(2) + (grid.unsqueeze(1) - 30).pow(2);
  torch::Tensor y = (d2 < 36).to(torch::kInt64).unsqueeze(0).repeat({batch, 1, 1});
  y.slice(0, 0, batch / 2).zero_();
  return {x, y};
}

void BM_PlainStep(benchmark::State& state, ModelSpec spec) {
  const int64_t batch = state.range(0);
  auto model = Model(spec);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  auto [x, y] = Batch(spec, batch);
  for (auto _ : state) {
    opt.zero_grad();
    (fedrad::node::TaskLoss(spec.task, model->forward(x), y) / static_cast<double>(batch)).backward();
    opt.step();
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

void BM_DpSgdStep(benchmark::State& state, ModelSpec spec) {
  const int64_t batch = state.range(0);
  auto model = Model(spec);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  auto [x, y] = Batch(spec, batch);
  torch::Tensor units = torch::arange(batch, torch::kInt64);  // image-level: one unit per image
  auto rng = *fedrad::crypto::SecureRandom::Create();
  fedrad::node::GradSampler sampler;
  model->set_tap(&sampler);
  const fedrad::node::DpSgdSettings dp{0.1, 2.15, static_cast<double>(batch)};
  for (auto _ : state) {
    sampler.Clear();
    opt.zero_grad();
    if (!sampler.Backward(fedrad::node::TaskLoss(spec.task, model->forward(x), y)).ok() ||
        !fedrad::node::NoisyClippedGradient(sampler, *model, units, batch, dp, *rng).ok()) {
      state.SkipWithError("DP step failed");
    }
    opt.step();
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

BENCHMARK_CAPTURE(BM_PlainStep, tbcnn28, Classifier())->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_DpSgdStep, tbcnn28, Classifier())->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_PlainStep, unet2d, UNet())->Arg(32)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_PlainStep, resnet18, ResNet18())->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_DpSgdStep, resnet18, ResNet18())->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_DpSgdStep, unet2d, UNet())->Arg(32)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
