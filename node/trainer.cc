#include "node/trainer.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <thread>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/model_zoo.h"
#include "common/model_zoo_torch.h"
#include "common/multilabel_metrics.h"
#include "node/dp_sgd.h"
#include "node/grad_sampler.h"
#include "node/losses.h"

namespace fedrad::node {
namespace {

torch::Tensor ImagesTensor(const ImageSet& set) {
  return torch::from_blob(const_cast<float*>(set.pixels.data()), {set.count(), set.channels, set.size, set.size},
                          torch::kFloat32);
}

// What the loss compares the model's output with: the labels [N], for
// segmentation the masks [N, S, S] (as int64 class indices), for multilabel
// the 0/1 targets [N, L] (as float).
torch::Tensor TargetsTensor(const ModelSpec& spec, const ImageSet& set) {
  if (spec.task == ModelTask::kMultilabel) {
    return torch::from_blob(const_cast<uint8_t*>(set.targets.data()), {set.count(), spec.num_classes}, torch::kUInt8)
        .to(torch::kFloat32);
  }
  if (spec.task == ModelTask::kSegmentation) {
    return torch::from_blob(const_cast<uint8_t*>(set.masks.data()), {set.count(), set.size, set.size}, torch::kUInt8)
        .to(torch::kInt64);
  }
  return torch::from_blob(const_cast<int64_t*>(set.labels.data()), {set.count()}, torch::kInt64);
}

absl::Status CheckInputs(const ModelSpec& spec, const ImageSet& set) {
  if (spec.task == ModelTask::kSegmentation &&
      set.masks.size() != static_cast<size_t>(set.count()) * set.size * set.size) {
    return absl::InvalidArgumentError("a segmentation model needs a mask for every image");
  }
  if (spec.task == ModelTask::kMultilabel &&
      set.targets.size() != static_cast<size_t>(set.count()) * spec.num_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("a multilabel model of ", spec.num_classes, " labels needs that many targets for every image"));
  }
  if (set.size != spec.input_size || set.channels != spec.in_channels) {
    return absl::InvalidArgumentError(absl::StrCat("images are ", set.channels, "x", set.size, "x", set.size,
                                                   " but model '", spec.architecture, "' takes ", spec.in_channels, "x",
                                                   spec.input_size, "x", spec.input_size));
  }
  return absl::OkStatus();
}

// Trained minus starting weights of the trained parameters, flattened in
// manifest order (what an update holds).
std::vector<float> DeltaFrom(const torch::nn::Module& model, const ModelParameters& global,
                             const TrainedParameters& trained) {
  const std::vector<float> now = trained.Gather(ExtractParameters(model).values);
  const std::vector<float> before = trained.Gather(global.values);
  std::vector<float> delta(now.size());
  for (size_t i = 0; i < delta.size(); ++i) delta[i] = now[i] - before[i];
  return delta;
}

// [model] freeze and frozen BatchNorm statistics: the frozen parameters take no gradient, so plain SGD never
// moves them and DP-SGD neither samples, clips nor noises them (GradSampler
// skips their layers; NoisyClippedGradient and the optimizer see only the
// parameters that train, which it returns in named_parameters order).
std::vector<torch::Tensor> FreezeLayers(torch::nn::Module& model, const ModelSpec& spec) {
  std::vector<torch::Tensor> trained;
  for (auto& item : model.named_parameters(true)) {
    const bool frozen = IsFrozen(spec, item.key());
    item.value().set_requires_grad(!frozen);
    if (!frozen) trained.push_back(item.value());
  }
  return trained;
}

// FedProx (Li et al. 2020): the local loss gains (mu/2)·||w - w_global||²,
// so each step adds mu·(w - w_global) to the gradient. Data-independent, so
// under DP it is added after clipping and noise and costs no privacy.
class ProximalTerm {
 public:
  ProximalTerm(torch::nn::Module& model, double mu) : mu_(mu) {
    if (mu_ <= 0) return;
    for (const torch::Tensor& p : model.parameters()) anchor_.push_back(p.detach().clone());
    params_ = model.parameters();
  }
  void AddToGradients() {
    if (mu_ <= 0) return;
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
      if (params_[i].grad().defined()) params_[i].mutable_grad().add_(params_[i] - anchor_[i], mu_);
    }
  }

 private:
  const double mu_;
  std::vector<torch::Tensor> params_, anchor_;
};

// DP-SGD over privacy units; see DpTrainingSettings.
absl::StatusOr<TrainingOutcome> TrainPrivately(const ModelSpec& spec, NetworkImpl& model, const ModelParameters& global,
                                               const TrainedParameters& trained, const ImageSet& train,
                                               const LocalTrainingSettings& settings) {
  const DpTrainingSettings& dp = *settings.dp;
  if (!(dp.sampling_rate > 0 && dp.sampling_rate <= 1) || dp.steps < 1 || !(dp.clip_norm > 0) ||
      !(dp.noise_multiplier >= 0)) {
    return absl::InvalidArgumentError("DP training needs 0 < sampling_rate <= 1, steps >= 1, clip_norm > 0");
  }
  // Units and their images.
  std::vector<std::vector<int64_t>> unit_images;
  if (dp.patient_level) {
    std::map<std::string, size_t> index;
    for (int64_t i = 0; i < train.count(); ++i) {
      auto [it, fresh] = index.emplace(train.patients[i], unit_images.size());
      if (fresh) unit_images.emplace_back();
      unit_images[it->second].push_back(i);
    }
  } else {
    for (int64_t i = 0; i < train.count(); ++i) unit_images.push_back({i});
  }
  const int64_t num_units = static_cast<int64_t>(unit_images.size());
  // Canaries in the training set are units too: the divisor counts them.
  std::optional<CanarySteps> canaries;
  int64_t canaries_in = 0;
  if (dp.canaries) {
    const GradientCanaries& c = *dp.canaries;
    const int64_t parameters = trained.elements();
    std::vector<int64_t> sorted = c.coordinates;
    std::sort(sorted.begin(), sorted.end());
    if (c.signs.size() != c.coordinates.size() || c.included.size() != c.coordinates.size() ||
        (!sorted.empty() && (sorted.front() < 0 || sorted.back() >= parameters)) ||
        std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
      return absl::InvalidArgumentError(
          "canaries need one sign and inclusion each, and distinct coordinates within the model's parameters");
    }
    if (!(c.norm_in_clips > 0) || !std::isfinite(c.norm_in_clips)) {
      return absl::InvalidArgumentError("a canary's gradient norm must be a positive multiple of C");
    }
    canaries = CanarySteps{
        c.coordinates, c.signs, c.norm_in_clips * dp.clip_norm, std::vector<double>(c.coordinates.size(), 0.0), {}};
    canaries_in = std::count(c.included.begin(), c.included.end(), true);
  }
  std::unique_ptr<crypto::SecureRandom> rng;
  if (dp.test_seed != 0) {
    rng = crypto::SecureRandom::ForTesting(dp.test_seed);
  } else {
    absl::StatusOr<std::unique_ptr<crypto::SecureRandom>> created = crypto::SecureRandom::Create();
    if (!created.ok()) return created.status();
    rng = std::move(*created);
  }
  torch::optim::SGD optimizer(FreezeLayers(model, spec),
                              torch::optim::SGDOptions(settings.learning_rate).momentum(settings.momentum));
  ProximalTerm proximal(model, settings.proximal_mu);
  GradSampler sampler;
  model.set_tap(&sampler);
  const torch::Tensor images = ImagesTensor(train);
  const torch::Tensor labels = TargetsTensor(spec, train);
  const double divisor_units = dp.released_units > 0 ? dp.released_units : static_cast<double>(num_units);
  const DpSgdSettings step{dp.clip_norm, dp.noise_multiplier,
                           dp.sampling_rate * (divisor_units + static_cast<double>(canaries_in)), dp.without_clipping};
  TrainingOutcome out;
  double loss_sum = 0, norm_sum = 0;
  int64_t seen = 0, norm_steps = 0;
  for (int64_t t = 0; t < dp.steps; ++t) {
    if (settings.stop && settings.stop->load()) {
      model.set_tap(nullptr);
      return absl::AbortedError(absl::StrCat("training stopped after ", t, " of ", dp.steps, " DP-SGD steps"));
    }
    if (dp.steps >= 100 && (t + 1) % (dp.steps / 10) == 0) {
      spdlog::info("DP-SGD step {}/{} ({:.0f}%)", t + 1, dp.steps, 100.0 * (t + 1) / dp.steps);
    }
    const std::vector<int64_t> sampled = PoissonSample(num_units, dp.sampling_rate, *rng);
    if (canaries) {
      canaries->sampled.clear();
      for (size_t i = 0; i < canaries->coordinates.size(); ++i) {
        if (dp.canaries->included[i] && rng->Bernoulli(dp.sampling_rate)) {
          canaries->sampled.push_back(static_cast<int64_t>(i));
        }
      }
    }
    std::vector<int64_t> rows, unit_of_row;
    for (size_t k = 0; k < sampled.size(); ++k) {
      for (int64_t i : unit_images[sampled[k]]) {
        rows.push_back(i);
        unit_of_row.push_back(static_cast<int64_t>(k));
      }
    }
    sampler.Clear();
    optimizer.zero_grad();
    if (!rows.empty()) {
      const torch::Tensor idx = torch::tensor(rows, torch::kInt64);
      torch::Tensor loss = TaskLoss(spec.task, model.forward(images.index_select(0, idx)), labels.index_select(0, idx));
      // To the layers' outputs only: the batch gradients are replaced below.
      if (absl::Status s = sampler.Backward(loss); !s.ok()) {
        model.set_tap(nullptr);
        return s;
      }
      loss_sum += loss.item<double>();
      seen += static_cast<int64_t>(rows.size());
    }
    absl::StatusOr<DpStepStats> stats =
        NoisyClippedGradient(sampler, model, torch::tensor(unit_of_row, torch::kInt64),
                             static_cast<int64_t>(sampled.size()), step, *rng, canaries ? &*canaries : nullptr);
    if (!stats.ok()) {
      model.set_tap(nullptr);
      return stats.status();
    }
    out.dp_nonfinite_units += stats->nonfinite_units;
    if (stats->units > stats->nonfinite_units) {
      norm_sum += stats->mean_norm;
      ++norm_steps;
    }
    proximal.AddToGradients();
    optimizer.step();
  }
  model.set_tap(nullptr);
  out.delta = DeltaFrom(model, global, trained);
  out.examples = train.count();
  out.mean_loss = seen > 0 ? loss_sum / static_cast<double>(seen) : 0;
  out.dp_steps = dp.steps;
  out.dp_units = num_units;
  out.dp_mean_norm = norm_steps > 0 ? norm_sum / static_cast<double>(norm_steps) : 0;
  if (canaries) out.canary_scores = std::move(canaries->scores);
  return out;
}

// Segmentation: the loss, pixel accuracy, each image's predicted mask and
// its figures (ComputeMaskMetrics).
absl::StatusOr<Evaluation> EvaluateSegmentation(const ModelSpec& spec, NetworkImpl& model, const torch::Tensor& x,
                                                const torch::Tensor& y, const ImageSet& images) {
  Evaluation out;
  out.count = images.count();
  double loss_sum = 0;
  int64_t correct = 0;
  const int64_t pixels = int64_t{images.size} * images.size;
  out.predicted_masks.reserve(static_cast<size_t>(out.count * pixels));
  out.scores.num_classes = spec.num_classes;
  out.scores.labels.assign(images.masks.begin(), images.masks.end());
  out.scores.probabilities.reserve(static_cast<size_t>(out.count * pixels * spec.num_classes));
  for (int64_t start = 0; start < images.count(); start += 64) {
    const int64_t end = std::min<int64_t>(start + 64, images.count());
    const torch::Tensor logits = model.forward(x.slice(0, start, end));
    const torch::Tensor yy = y.slice(0, start, end);
    // Every pixel's class probabilities, pixel by pixel (N, S, S, K).
    const torch::Tensor p = torch::softmax(logits, 1).permute({0, 2, 3, 1}).to(torch::kFloat32).contiguous();
    out.scores.probabilities.insert(out.scores.probabilities.end(), p.data_ptr<float>(),
                                    p.data_ptr<float>() + p.numel());
    loss_sum += TaskLoss(spec.task, logits, yy).item<double>();
    const torch::Tensor predicted = logits.argmax(1).to(torch::kUInt8).contiguous();
    correct += predicted.to(torch::kInt64).eq(yy).sum().item<int64_t>();
    out.predicted_masks.insert(out.predicted_masks.end(), predicted.data_ptr<uint8_t>(),
                               predicted.data_ptr<uint8_t>() + predicted.numel());
  }
  out.loss = loss_sum / static_cast<double>(images.count());
  out.accuracy = static_cast<double>(correct) / static_cast<double>(images.count() * pixels);
  out.patients = images.patients;
  for (int64_t i = 0; i < images.count(); ++i) {
    const uint8_t* predicted = out.predicted_masks.data() + i * pixels;
    const uint8_t* truth = images.masks.data() + i * pixels;
    const SampleSource* source = static_cast<size_t>(i) < images.sources.size() ? &images.sources[i] : nullptr;
    const bool mm = source && source->row_spacing_mm > 0 && source->column_spacing_mm > 0;
    out.mask_metrics.push_back(ComputeMaskMetrics(predicted, truth, images.size, images.size, spec.num_classes,
                                                  mm ? source->row_spacing_mm : 1.0,
                                                  mm ? source->column_spacing_mm : 1.0));
    out.dice.push_back(out.mask_metrics.back().dice);
  }
  return out;
}

// Multilabel: each label's sigmoid, the loss (TaskLoss's, per image) and
// accuracy over every image-label decision.
absl::StatusOr<Evaluation> EvaluateMultilabel(const ModelSpec& spec, NetworkImpl& model, const torch::Tensor& x,
                                              const torch::Tensor& y, const ImageSet& images) {
  Evaluation out;
  out.count = images.count();
  out.scores.num_classes = spec.num_classes;
  out.scores.targets = images.targets;
  out.scores.probabilities.reserve(images.targets.size());
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t start = 0; start < images.count(); start += 256) {
    const int64_t end = std::min<int64_t>(start + 256, images.count());
    const torch::Tensor logits = model.forward(x.slice(0, start, end));
    const torch::Tensor yy = y.slice(0, start, end);
    const torch::Tensor p = torch::sigmoid(logits).to(torch::kFloat32).contiguous();
    out.scores.probabilities.insert(out.scores.probabilities.end(), p.data_ptr<float>(),
                                    p.data_ptr<float>() + p.numel());
    loss_sum += TaskLoss(spec.task, logits, yy).item<double>();
    correct += p.ge(kMultilabelThreshold).to(torch::kFloat32).eq(yy).sum().item<int64_t>();
  }
  out.loss = loss_sum / static_cast<double>(images.count());
  out.accuracy = static_cast<double>(correct) / static_cast<double>(images.count() * spec.num_classes);
  out.patients = images.patients;
  return out;
}

}  // namespace

// EvaluateModel without the names.
absl::StatusOr<Evaluation> EvaluateWith(const ModelSpec& spec, const ModelParameters& parameters,
                                        const ImageSet& images);

void SetTorchThreads(int threads) {
  // 0 is every core, set explicitly: LibTorch's own default is the physical
  // cores as its CPU probe finds them, which on this project's 2-core machines
  // comes out as 1 (at::get_num_threads() = 1, in Python too), so "all cores"
  // trained on one (ResNet-18's plain step: 151 samples/s on one thread, 219
  // on two; bench/RESULTS.md).
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  at::set_num_threads(threads > 0 ? threads : static_cast<int>(cores));
  // OpenBLAS (Debian's libopenblas0-pthread behind libblas.so.3) keeps a
  // pool of its own, one thread per core, which at::set_num_threads does not
  // reach: each GEMM from LibTorch's threads woke it, and on 2 cores the
  // threads spun in sched_yield against each other (perf: 43% of a DP-SGD
  // step's samples in the scheduler). LibTorch's threads are the
  // parallelism; OpenBLAS gets one (tbcnn28 DP-SGD at batch 256: 5,835
  // samples/s before, 7,939 after; bench/RESULTS.md). Another BLAS has
  // no such symbol and is left as it is.
  using SetBlasThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetBlasThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(1);
}

absl::StatusOr<TrainingOutcome> TrainLocally(const ModelSpec& spec, const ModelParameters& global,
                                             const ImageSet& train, const LocalTrainingSettings& settings) {
  if (train.count() == 0) return absl::FailedPreconditionError("no training images");
  absl::Status s = CheckInputs(spec, train);
  if (!s.ok()) return s;
  try {
    absl::StatusOr<std::shared_ptr<NetworkImpl>> model = CreateNetwork(spec);
    if (!model.ok()) return model.status();
    s = LoadParameters(**model, global);
    if (!s.ok()) return s;
    (*model)->train();
    absl::StatusOr<TrainedParameters> trained = TrainedParametersOf(spec);
    if (!trained.ok()) return trained.status();
    if (settings.dp) return TrainPrivately(spec, **model, global, *trained, train, settings);
    torch::optim::SGD optimizer(FreezeLayers(**model, spec),
                                torch::optim::SGDOptions(settings.learning_rate).momentum(settings.momentum));
    torch::Tensor images = ImagesTensor(train);
    torch::Tensor labels = TargetsTensor(spec, train);
    torch::Generator gen = at::detail::createCPUGenerator(settings.seed);
    ProximalTerm proximal(**model, settings.proximal_mu);
    TrainingOutcome out;
    for (int epoch = 0; epoch < settings.local_epochs; ++epoch) {
      torch::Tensor order = torch::randperm(train.count(), gen, torch::kInt64);
      double loss_sum = 0;
      int64_t seen = 0;
      for (int64_t start = 0; start < train.count(); start += settings.batch_size) {
        if (settings.stop && settings.stop->load()) {
          return absl::AbortedError(
              absl::StrCat("training stopped in epoch ", epoch + 1, " of ", settings.local_epochs));
        }
        const int64_t end = std::min<int64_t>(start + settings.batch_size, train.count());
        torch::Tensor idx = order.slice(0, start, end);
        torch::Tensor x = images.index_select(0, idx);
        torch::Tensor y = labels.index_select(0, idx);
        optimizer.zero_grad();
        torch::Tensor loss = TaskLoss(spec.task, (*model)->forward(x), y) / static_cast<double>(end - start);
        loss.backward();
        proximal.AddToGradients();
        optimizer.step();
        loss_sum += loss.item<double>() * static_cast<double>(end - start);
        seen += end - start;
      }
      out.mean_loss = loss_sum / static_cast<double>(seen);
    }
    out.delta = DeltaFrom(**model, global, *trained);
    out.examples = train.count();
    return out;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("training failed in LibTorch: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<Evaluation> EvaluateModel(const ModelSpec& spec, const ModelParameters& parameters,
                                         const ImageSet& images) {
  absl::StatusOr<Evaluation> out = EvaluateWith(spec, parameters, images);
  if (out.ok()) out->class_names = spec.class_names;
  return out;
}

absl::StatusOr<Evaluation> EvaluateWith(const ModelSpec& spec, const ModelParameters& parameters,
                                        const ImageSet& images) {
  Evaluation out;
  out.count = images.count();
  if (images.count() == 0) return out;
  absl::Status s = CheckInputs(spec, images);
  if (!s.ok()) return s;
  try {
    absl::StatusOr<std::shared_ptr<NetworkImpl>> model = CreateNetwork(spec);
    if (!model.ok()) return model.status();
    s = LoadParameters(**model, parameters);
    if (!s.ok()) return s;
    (*model)->eval();
    torch::NoGradGuard no_grad;
    torch::Tensor x = ImagesTensor(images);
    torch::Tensor y = TargetsTensor(spec, images);
    if (spec.task == ModelTask::kSegmentation) return EvaluateSegmentation(spec, **model, x, y, images);
    if (spec.task == ModelTask::kMultilabel) return EvaluateMultilabel(spec, **model, x, y, images);
    double loss_sum = 0;
    int64_t correct = 0;
    out.scores.num_classes = spec.num_classes;
    out.scores.labels.assign(images.labels.begin(), images.labels.end());
    out.scores.probabilities.reserve(static_cast<size_t>(images.count() * spec.num_classes));
    for (int64_t start = 0; start < images.count(); start += 256) {
      const int64_t end = std::min<int64_t>(start + 256, images.count());
      torch::Tensor logits = (*model)->forward(x.slice(0, start, end));
      torch::Tensor yy = y.slice(0, start, end);
      const torch::Tensor probabilities = torch::softmax(logits, 1).to(torch::kFloat32).contiguous();
      out.scores.probabilities.insert(out.scores.probabilities.end(), probabilities.data_ptr<float>(),
                                      probabilities.data_ptr<float>() + probabilities.numel());
      loss_sum += torch::nn::functional::cross_entropy(
                      logits, yy, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                      .item<double>();
      correct += logits.argmax(1).eq(yy).sum().item<int64_t>();
    }
    out.loss = loss_sum / static_cast<double>(images.count());
    out.accuracy = static_cast<double>(correct) / static_cast<double>(images.count());
    return out;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("evaluation failed in LibTorch: ", e.what_without_backtrace()));
  }
}

}  // namespace fedrad::node
