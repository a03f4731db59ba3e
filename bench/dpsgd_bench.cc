// Training-step throughput (samples/s), plain SGD vs DP-SGD, for the
// Tramèr & Boneh end-to-end CNN on 28x28 inputs (model zoo "tbcnn28").
// BM_DpSgdStep is a full image-level DP-SGD step: forward, backward with
// per-layer capture, per-sample gradient norms (Gram matrices for the linear
// layers, materialised per-sample gradients for the convolutions), per-sample
// clipping, secure Gaussian noise, and the optimizer step. Uses OpenBLAS when installed
// (scripts/setup.sh installs libopenblas0-pthread).
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "common/model_zoo.h"
#include "common/model_zoo_torch.h"
#include "node/dp_sgd.h"
#include "node/grad_sampler.h"

namespace {

namespace F = torch::nn::functional;
using fedrad::ModelSpec;

std::shared_ptr<fedrad::NetworkImpl> Model() {
  torch::manual_seed(1);
  return *fedrad::CreateNetwork(ModelSpec{"tbcnn28", 1, 28, 10});
}

void BM_PlainStep(benchmark::State& state) {
  const int64_t batch = state.range(0);
  auto model = Model();
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  torch::Tensor x = torch::rand({batch, 1, 28, 28});
  torch::Tensor y = torch::randint(0, 10, {batch}, torch::kInt64);
  for (auto _ : state) {
    opt.zero_grad();
    F::cross_entropy(model->forward(x), y).backward();
    opt.step();
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

void BM_DpSgdStep(benchmark::State& state) {
  const int64_t batch = state.range(0);
  auto model = Model();
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  torch::Tensor x = torch::rand({batch, 1, 28, 28});
  torch::Tensor y = torch::randint(0, 10, {batch}, torch::kInt64);
  torch::Tensor units = torch::arange(batch, torch::kInt64);  // image-level: one unit per image
  auto rng = *fedrad::crypto::SecureRandom::Create();
  fedrad::node::GradSampler sampler;
  model->set_tap(&sampler);
  const fedrad::node::DpSgdSettings dp{0.1, 2.15, static_cast<double>(batch)};
  for (auto _ : state) {
    sampler.Clear();
    opt.zero_grad();
    F::cross_entropy(model->forward(x), y, F::CrossEntropyFuncOptions().reduction(torch::kSum)).backward();
    if (!fedrad::node::NoisyClippedGradient(sampler, *model, units, batch, dp, *rng).ok()) {
      state.SkipWithError("DP step failed");
    }
    opt.step();
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

BENCHMARK(BM_PlainStep)->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DpSgdStep)->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
