#ifndef FEDRAD_COMMON_MODEL_ZOO_H_
#define FEDRAD_COMMON_MODEL_ZOO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/plan.h"
#include "common/safetensors.h"
#include "common/tensor.h"

namespace fedrad {

// The networks a plan can name. Torch-free: the coordinator and tools use
// manifests and initial parameters without seeing a torch type; code that
// trains includes common/model_zoo_torch.h instead.

std::vector<std::string> KnownArchitectures();

// The largest image side a model takes: a plan, a model file's metadata and
// the node all refuse more (a 99,999,999-pixel side once reached OpenCV).
inline constexpr int kMaxInputSize = 1024;

// OK if `spec` names a known architecture with sizes it supports; every
// dimension is bounded (in_channels 1..4, input_size 1..kMaxInputSize,
// num_classes 2..1000, a flat model's parameters 1..2^31).
absl::Status CheckModelSpec(const ModelSpec& spec);

// The safetensors metadata that describes a model's shape (architecture,
// in_channels, input_size, num_classes): published models carry it, so a
// site can evaluate or run one without the plan.
SafetensorsMetadata ModelShapeMetadata(const ModelSpec& model);

absl::StatusOr<Manifest> ModelManifest(const ModelSpec& spec);

// Freshly initialised parameters; the same seed gives the same values.
absl::StatusOr<ModelParameters> InitialParameters(const ModelSpec& spec, uint64_t seed);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_MODEL_ZOO_H_
