#ifndef FEDRAD_NODE_TRAINER_H_
#define FEDRAD_NODE_TRAINER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/plan.h"
#include "common/tensor.h"
#include "node/dataset.h"

namespace fedrad::node {

struct LocalTrainingSettings {
  int local_epochs = 1;
  int batch_size = 32;
  double learning_rate = 0.05;
  double momentum = 0.9;
  uint64_t seed = 0;  // shuffling order
};

struct TrainingOutcome {
  std::vector<float> delta;  // trained minus global, flattened in manifest order
  double mean_loss = 0;      // over the last epoch
  int64_t examples = 0;
};

// Starts from `global`, trains on `train` with SGD + momentum, and returns the
// weight delta. Torch errors become a Status.
absl::StatusOr<TrainingOutcome> TrainLocally(const ModelSpec& spec, const ModelParameters& global,
                                             const ImageSet& train,
                                             const LocalTrainingSettings& settings);

struct Evaluation {
  double loss = 0;
  double accuracy = 0;
  int64_t count = 0;
};

absl::StatusOr<Evaluation> EvaluateModel(const ModelSpec& spec, const ModelParameters& parameters,
                                         const ImageSet& images);

// Limits LibTorch's intra-op threads (several nodes may share one machine).
void SetTorchThreads(int threads);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_TRAINER_H_
