#include "node/trainer.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>

#include "absl/strings/str_cat.h"
#include "common/model_zoo_torch.h"

namespace fedrad::node {
namespace {

torch::Tensor ImagesTensor(const ImageSet& set) {
  return torch::from_blob(const_cast<float*>(set.pixels.data()),
                          {set.count(), set.channels, set.size, set.size}, torch::kFloat32);
}

torch::Tensor LabelsTensor(const ImageSet& set) {
  return torch::from_blob(const_cast<int64_t*>(set.labels.data()), {set.count()}, torch::kInt64);
}

absl::Status CheckInputs(const ModelSpec& spec, const ImageSet& set) {
  if (set.size != spec.input_size || set.channels != spec.in_channels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "images are ", set.channels, "x", set.size, "x", set.size, " but model '",
        spec.architecture, "' takes ", spec.in_channels, "x", spec.input_size, "x", spec.input_size));
  }
  return absl::OkStatus();
}

}  // namespace

void SetTorchThreads(int threads) {
  if (threads > 0) at::set_num_threads(threads);
}

absl::StatusOr<TrainingOutcome> TrainLocally(const ModelSpec& spec, const ModelParameters& global,
                                             const ImageSet& train,
                                             const LocalTrainingSettings& settings) {
  if (train.count() == 0) return absl::FailedPreconditionError("no training images");
  absl::Status s = CheckInputs(spec, train);
  if (!s.ok()) return s;
  try {
    absl::StatusOr<std::shared_ptr<ClassifierImpl>> model = CreateClassifier(spec);
    if (!model.ok()) return model.status();
    s = LoadParameters(**model, global);
    if (!s.ok()) return s;
    (*model)->train();
    torch::optim::SGD optimizer((*model)->parameters(),
                                torch::optim::SGDOptions(settings.learning_rate)
                                    .momentum(settings.momentum));
    torch::Tensor images = ImagesTensor(train);
    torch::Tensor labels = LabelsTensor(train);
    torch::Generator gen = at::detail::createCPUGenerator(settings.seed);
    TrainingOutcome out;
    for (int epoch = 0; epoch < settings.local_epochs; ++epoch) {
      torch::Tensor order = torch::randperm(train.count(), gen, torch::kInt64);
      double loss_sum = 0;
      int64_t seen = 0;
      for (int64_t start = 0; start < train.count(); start += settings.batch_size) {
        const int64_t end = std::min<int64_t>(start + settings.batch_size, train.count());
        torch::Tensor idx = order.slice(0, start, end);
        torch::Tensor x = images.index_select(0, idx);
        torch::Tensor y = labels.index_select(0, idx);
        optimizer.zero_grad();
        torch::Tensor loss = torch::nn::functional::cross_entropy((*model)->forward(x), y);
        loss.backward();
        optimizer.step();
        loss_sum += loss.item<double>() * static_cast<double>(end - start);
        seen += end - start;
      }
      out.mean_loss = loss_sum / static_cast<double>(seen);
    }
    ModelParameters trained = ExtractParameters(**model);
    out.delta.resize(trained.values.size());
    for (size_t i = 0; i < out.delta.size(); ++i) out.delta[i] = trained.values[i] - global.values[i];
    out.examples = train.count();
    return out;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("training failed in LibTorch: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<Evaluation> EvaluateModel(const ModelSpec& spec, const ModelParameters& parameters,
                                         const ImageSet& images) {
  Evaluation out;
  out.count = images.count();
  if (images.count() == 0) return out;
  absl::Status s = CheckInputs(spec, images);
  if (!s.ok()) return s;
  try {
    absl::StatusOr<std::shared_ptr<ClassifierImpl>> model = CreateClassifier(spec);
    if (!model.ok()) return model.status();
    s = LoadParameters(**model, parameters);
    if (!s.ok()) return s;
    (*model)->eval();
    torch::NoGradGuard no_grad;
    torch::Tensor x = ImagesTensor(images);
    torch::Tensor y = LabelsTensor(images);
    double loss_sum = 0;
    int64_t correct = 0;
    for (int64_t start = 0; start < images.count(); start += 256) {
      const int64_t end = std::min<int64_t>(start + 256, images.count());
      torch::Tensor logits = (*model)->forward(x.slice(0, start, end));
      torch::Tensor yy = y.slice(0, start, end);
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
