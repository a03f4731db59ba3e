#include "node/inference.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/model_zoo_torch.h"

namespace fedrad::node {
namespace {

// Keeps the output of the last layer with a spatial output (a convolution
// or the normalisation after it) of at least kMinCamSide x kMinCamSide
// positions, else of the last with any, so its gradient can be read. A
// ResNet's last stage is 32 times smaller than its input (7x7 at 224, where
// Grad-CAM is usually drawn, but 2x2 at 64): its heatmap would be a few
// blocks; an earlier stage's shows where.
constexpr int64_t kMinCamSide = 5;
class LastSpatialLayer : public LayerTap {
 public:
  void Linear(torch::nn::LinearImpl&, const torch::Tensor&, const torch::Tensor&) override {}
  void LayerNorm(torch::nn::LayerNormImpl&, const torch::Tensor&, const torch::Tensor& output) override {
    Keep(output);
  }
  void Conv2d(torch::nn::Conv2dImpl&, const torch::Tensor&, const torch::Tensor& output) override { Keep(output); }
  void GroupNorm(torch::nn::GroupNormImpl&, const torch::Tensor&, const torch::Tensor& output) override {
    Keep(output);
  }
  void FrozenBatchNorm(FrozenBatchNorm2dImpl&, const torch::Tensor&, const torch::Tensor& output) override {
    Keep(output);
  }
  const torch::Tensor& activations() const { return fine_.defined() ? fine_ : last_; }

 private:
  void Keep(const torch::Tensor& output) {
    if (output.dim() != 4) return;
    output.retain_grad();
    last_ = output;
    if (output.size(2) >= kMinCamSide && output.size(3) >= kMinCamSide) fine_ = output;
  }
  torch::Tensor fine_, last_;
};

class TorchPredictor : public Predictor {
 public:
  TorchPredictor(ModelSpec spec, std::shared_ptr<NetworkImpl> model) : spec_(spec), model_(std::move(model)) {}

  absl::StatusOr<BatchOutput> Run(const float* pixels, int64_t n, bool heatmaps) override {
    BatchOutput out;
    if (n == 0) return out;
    try {
      const int64_t size = spec_.input_size;
      torch::Tensor x =
          torch::from_blob(const_cast<float*>(pixels), {n, spec_.in_channels, size, size}, torch::kFloat32);
      if (spec_.task == ModelTask::kSegmentation) {
        torch::NoGradGuard no_grad;
        const torch::Tensor logits = model_->forward(x);
        if (!torch::isfinite(logits).all().item<bool>()) {
          return absl::FailedPreconditionError("the model gives non-finite scores: it is broken");
        }
        const torch::Tensor predicted = logits.argmax(1).to(torch::kUInt8).contiguous();
        out.masks.assign(predicted.data_ptr<uint8_t>(), predicted.data_ptr<uint8_t>() + predicted.numel());
        const torch::Tensor shares = torch::nn::functional::one_hot(predicted.to(torch::kInt64), spec_.num_classes)
                                         .to(torch::kFloat32)
                                         .mean({1, 2});
        Append(shares, &out.probabilities);
        return out;
      }
      if (!heatmaps) {
        torch::NoGradGuard no_grad;
        Append(Probabilities(model_->forward(x)), &out.probabilities);
        return out;
      }
      // The weights do not track gradients; the input does, so the
      // activations do.
      x.requires_grad_(true);
      LastSpatialLayer tap;
      model_->set_tap(&tap);
      torch::Tensor logits = model_->forward(x);
      model_->set_tap(nullptr);
      Append(Probabilities(logits.detach()), &out.probabilities);
      if (!tap.activations().defined()) {
        return absl::FailedPreconditionError(
            absl::StrCat("model '", spec_.architecture, "' has no convolutional layer to draw a heatmap from"));
      }
      // Images are independent in eval mode (GroupNorm is per image), so the
      // gradient of the summed predicted logits is each image's own (a
      // multilabel model's: its most probable label's).
      const torch::Tensor predicted = logits.detach().argmax(1, /*keepdim=*/true);
      logits.gather(1, predicted).sum().backward();
      const torch::Tensor a = tap.activations().detach();
      const torch::Tensor weights = tap.activations().grad().mean({2, 3}, /*keepdim=*/true);
      torch::Tensor cam = torch::relu((weights * a).sum(1, /*keepdim=*/true));
      cam = torch::nn::functional::interpolate(cam, torch::nn::functional::InterpolateFuncOptions()
                                                        .size(std::vector<int64_t>{size, size})
                                                        .mode(torch::kBilinear)
                                                        .align_corners(false));
      const torch::Tensor peak = cam.amax({1, 2, 3}, /*keepdim=*/true);
      cam = torch::where(peak > 0, cam / peak.clamp_min(1e-30), torch::zeros_like(cam));
      Append(cam, &out.heatmaps);
      return out;
    } catch (const c10::Error& e) {
      model_->set_tap(nullptr);
      return absl::InternalError(absl::StrCat("inference failed in LibTorch: ", e.what_without_backtrace()));
    }
  }

 private:
  // Each class's softmax, or each label's own sigmoid (multilabel).
  torch::Tensor Probabilities(const torch::Tensor& logits) const {
    return spec_.task == ModelTask::kMultilabel ? torch::sigmoid(logits) : torch::softmax(logits, 1);
  }
  static void Append(const torch::Tensor& t, std::vector<float>* out) {
    const torch::Tensor c = t.to(torch::kFloat32).contiguous();
    out->insert(out->end(), c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  }

  const ModelSpec spec_;
  std::shared_ptr<NetworkImpl> model_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Predictor>> Predictor::Create(const SavedModel& saved) {
  try {
    absl::StatusOr<std::shared_ptr<NetworkImpl>> model = CreateNetwork(saved.spec);
    if (!model.ok()) return model.status();
    absl::Status s = LoadParameters(**model, saved.parameters);
    if (!s.ok()) return s;
    (*model)->eval();
    // The weights never need gradients; the heatmaps take them of activations.
    for (torch::Tensor& p : (*model)->parameters()) p.set_requires_grad(false);
    return std::unique_ptr<Predictor>(new TorchPredictor(saved.spec, std::move(*model)));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("cannot build the model: ", e.what_without_backtrace()));
  }
}

}  // namespace fedrad::node
