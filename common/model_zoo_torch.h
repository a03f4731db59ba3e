#ifndef FEDRAD_COMMON_MODEL_ZOO_TORCH_H_
#define FEDRAD_COMMON_MODEL_ZOO_TORCH_H_

// Torch-facing half of the model zoo. Include only from .cc files that run a
// network (trainer, evaluator); everything else uses common/model_zoo.h.

#include <torch/nn/module.h>

#include <memory>

#include "absl/status/statusor.h"
#include "common/plan.h"
#include "common/tensor.h"

namespace fedrad {

// A classifier: images [N, C, H, W] in, logits [N, classes] out.
class ClassifierImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};

absl::StatusOr<std::shared_ptr<ClassifierImpl>> CreateClassifier(const ModelSpec& spec);

// Manifest of `module`'s parameters in registration order.
Manifest ManifestOf(const torch::nn::Module& module);

// Copies flattened values into the module; fails unless the manifests match.
absl::Status LoadParameters(torch::nn::Module& module, const ModelParameters& parameters);

ModelParameters ExtractParameters(const torch::nn::Module& module);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_MODEL_ZOO_TORCH_H_
