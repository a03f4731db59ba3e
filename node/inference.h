#ifndef FEDRAD_NODE_INFERENCE_H_
#define FEDRAD_NODE_INFERENCE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "node/saved_model.h"

namespace fedrad::node {

// What the model says of a batch of images.
struct BatchOutput {
  // n * classes, softmax; for a segmentation model, the share of each
  // image's input pixels predicted as each class.
  std::vector<float> probabilities;
  // Segmentation: n * size * size predicted classes (the most probable).
  std::vector<uint8_t> masks;
  // With heatmaps: n * size * size Grad-CAM maps (Selvaraju et al., ICCV
  // 2017) of the predicted class at the last spatial layer, upsampled to the
  // input and scaled to [0, 1] per image (all 0 where nothing supports it).
  std::vector<float> heatmaps;
};

// Runs a saved model on preprocessed images; Torch stays inside.
class Predictor {
 public:
  static absl::StatusOr<std::unique_ptr<Predictor>> Create(const SavedModel& model);
  virtual ~Predictor() = default;
  // `pixels`: n * in_channels * size * size floats, as the pipeline makes them.
  virtual absl::StatusOr<BatchOutput> Run(const float* pixels, int64_t n, bool heatmaps) = 0;
};

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_INFERENCE_H_
