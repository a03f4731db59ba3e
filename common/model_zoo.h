#ifndef FEDRAD_COMMON_MODEL_ZOO_H_
#define FEDRAD_COMMON_MODEL_ZOO_H_

#include <cstdint>
#include <string>
#include <utility>
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

// ResNet-18 and -34 (He et al. 2016) with GroupNorm: blocks per stage, and
// the groups of a norm over `channels` (32, Wu & He 2018's choice, where the
// channels allow; half the channels below 64, so 2 per group).
bool IsResNet(const std::string& architecture);
const std::vector<int>& ResNetBlocks(const std::string& architecture);
int64_t ResNetGroups(int64_t channels);
inline constexpr int kMaxResNetWidth = 128;

// The largest image side a model takes: a plan, a model file's metadata and
// the node all refuse more (a 99,999,999-pixel side once reached OpenCV).
inline constexpr int kMaxInputSize = 1024;
inline constexpr int kMaxClasses = 1000;
inline constexpr size_t kMaxClassNameBytes = 64;

// OK if `spec` names a known architecture with sizes it supports and the
// task it does; every dimension is bounded (in_channels 1..4, input_size
// 1..kMaxInputSize, num_classes 2..kMaxClasses, a flat model's parameters
// 1..2^31, a U-Net's depth 1..kMaxUnetDepth with input_size a multiple of
// 2^depth, base_width 4..kMaxUnetBaseWidth in multiples of 4; a ResNet's
// in_channels 1..3, base_width 8..kMaxResNetWidth in multiples of 8,
// input_size at least 32); class names,
// if any, one per class, distinct, 1..64 printable bytes.
// A ResNet's norm = "frozen_batch" (ModelSpec::norm).
inline constexpr const char* kFrozenBatchNorm = "frozen_batch";

// True for the running statistics of a frozen BatchNorm layer
// (".running_mean", ".running_var"): in the manifest, never trained.
bool IsStatistic(const std::string& tensor);

// [model] freeze is checked too: each prefix names at least one parameter,
// whole layers only, not every parameter, at most kMaxFreezePrefixes.
absl::Status CheckModelSpec(const ModelSpec& spec);

inline constexpr size_t kMaxFreezePrefixes = 1024;

// True if the tensor does not train under `spec`: a statistic, or named by
// a [model] freeze prefix. The one rule the checks, the trained manifest and
// the trainer share.
bool IsFrozen(const ModelSpec& spec, const std::string& tensor);

// True if the freeze prefix names the tensor: the whole name, or a prefix
// ending at a component boundary ("conv1" names conv1.weight, not
// conv10.weight; "layer1" every tensor of a ResNet's first stage).
bool FreezePrefixMatches(const std::string& prefix, const std::string& tensor);

// Which of a model's tensors train: all but those [model] freeze names and
// the statistics (IsStatistic).
// Updates hold the trained ones only, flattened in manifest order; `trained`
// is their manifest (its hash is in the plan nodes join), `spans` where they
// lie in the full parameter vector (offset, count), `frozen` the rest by name.
struct TrainedParameters {
  Manifest trained;
  std::vector<std::pair<int64_t, int64_t>> spans;
  std::vector<std::string> frozen;

  int64_t elements() const;
  // The trained values of a full parameter vector, and back.
  std::vector<float> Gather(const std::vector<float>& full) const;
  void Scatter(const std::vector<float>& part, std::vector<float>* full) const;
  // full += delta on the trained values (delta as Gather orders them).
  void AddTo(const std::vector<float>& delta, std::vector<float>* full) const;
};
absl::StatusOr<TrainedParameters> TrainedParametersOf(const ModelSpec& spec);

// The safetensors metadata that describes a model's shape (architecture,
// task, in_channels, input_size, num_classes, a U-Net's depth and
// base_width, class_names as a JSON array): published models carry it, so a
// site can evaluate or run one without the plan.
SafetensorsMetadata ModelShapeMetadata(const ModelSpec& model);

absl::StatusOr<Manifest> ModelManifest(const ModelSpec& spec);

// Freshly initialised parameters; the same seed gives the same values.
absl::StatusOr<ModelParameters> InitialParameters(const ModelSpec& spec, uint64_t seed);

// A federation's starting weights from a safetensors file (transfer
// learning): every tensor of the manifest must be in the file with its
// shape, and the file may hold no other; each missing, unexpected or
// mismatched tensor is named. The classifier head alone (ctnet and tbcnn28's
// fc2, a ResNet's fc, a U-Net's head) may have another class count: it is
// then freshly initialised (from `seed`, as InitialParameters) and `notes`
// says so.
struct InitialWeights {
  ModelParameters parameters;
  std::vector<std::string> notes;
};
absl::StatusOr<InitialWeights> WeightsFromFile(const ModelSpec& spec, const std::string& path, uint64_t seed);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_MODEL_ZOO_H_
