#ifndef FEDRAD_NODE_TRAINER_H_
#define FEDRAD_NODE_TRAINER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics.h"
#include "common/plan.h"
#include "common/segmentation_metrics.h"
#include "common/tensor.h"
#include "node/dataset.h"

namespace fedrad::node {

// Differentially private training: Poisson-sampled steps over privacy units
// (patients by default, images if configured), each unit's gradient clipped
// to clip_norm, Gaussian noise N(0, σ²C²) added, divided by the expected
// batch (sampling_rate × units).
// Audits only (`fedrad audit empirical`): Dirac gradient canaries, each a
// privacy unit of its own whose gradient is signs[i] · norm_in_clips · C at
// coordinates[i] of the flattened trained parameters (manifest order), clipped like
// every unit; see node/dp_sgd.h.
struct GradientCanaries {
  std::vector<int64_t> coordinates;  // distinct, below the model's parameter count
  std::vector<double> signs;         // +1 or -1
  std::vector<bool> included;        // in the training set, sampled like every other unit
  double norm_in_clips = 1;          // the gradient's norm before clipping, in multiples of C
};

struct DpTrainingSettings {
  double noise_multiplier = 1.0;
  double clip_norm = 1.0;
  double sampling_rate = 0.01;
  int64_t steps = 1;
  bool patient_level = true;
  // Tests only: a fixed noise seed. 0 (always outside tests) seeds from the OS.
  uint64_t test_seed = 0;
  // Audits only; null in training.
  std::shared_ptr<const GradientCanaries> canaries;
  // Audits only (DpSgdSettings::without_clipping); false in training.
  bool without_clipping = false;
  // The noisy sum is divided by sampling_rate x units, with `units` this
  // count when set (> 0): a federation's released unit count, so that the
  // update's scale (its noise is σC / divisor) tells nothing of the exact
  // count. 0: the exact count (local training and audits, where nothing leaves).
  double released_units = 0;
};

struct LocalTrainingSettings {
  int local_epochs = 1;
  int batch_size = 32;
  double learning_rate = 0.05;
  double momentum = 0.9;
  uint64_t seed = 0;       // shuffling order
  double proximal_mu = 0;  // FedProx: adds (mu/2)·||w - w_global||² to the local loss
  // Set: DP-SGD (local_epochs and batch_size are then unused).
  std::optional<DpTrainingSettings> dp;
  // Checked before every step; once it is true, training ends with Aborted
  // (the node is stopping). Null: never.
  const std::atomic<bool>* stop = nullptr;
};

struct TrainingOutcome {
  // Trained minus global, of the parameters that train (all but [model]
  // freeze's), flattened in manifest order: TrainedParametersOf(spec).
  std::vector<float> delta;
  double mean_loss = 0;  // over the last epoch
  int64_t examples = 0;
  int64_t dp_steps = 0;     // steps taken under DP (each touched the data)
  int64_t dp_units = 0;     // privacy units the sampling rate applies to
  double dp_mean_norm = 0;  // mean unit gradient norm before clipping
  // Sampled units whose gradient was not finite and so contributed nothing
  // (summed over steps). Stays on the node: it depends on the data.
  int64_t dp_nonfinite_units = 0;
  // With canaries: each one's score, as the auditor reads it from the
  // released gradients (higher: more likely in the training set).
  std::vector<double> canary_scores;
};

// Starts from `global`, trains on `train` with SGD + momentum, and returns the
// weight delta. Torch errors become a Status.
absl::StatusOr<TrainingOutcome> TrainLocally(const ModelSpec& spec, const ModelParameters& global,
                                             const ImageSet& train, const LocalTrainingSettings& settings);

struct Evaluation {
  double loss = 0;
  double accuracy = 0;
  int64_t count = 0;
  // Every image's label and softmax probabilities, for ComputeMetrics;
  // for segmentation, every pixel's (image by image, row-major).
  Scores scores;
  // Segmentation: accuracy is per pixel; each image's predicted classes
  // (count * size * size) and its Dice (MaskMetrics::dice).
  std::vector<uint8_t> predicted_masks;
  std::vector<double> dice;
  // Each image's full figures (HD95 in mm where its spacing is known, else
  // in input pixels) and its patient, for SummarizeSegmentation.
  std::vector<MaskMetrics> mask_metrics;
  std::vector<std::string> patients;
  // The model's class names (multilabel: its labels), for the reports.
  std::vector<std::string> class_names;
};

absl::StatusOr<Evaluation> EvaluateModel(const ModelSpec& spec, const ModelParameters& parameters,
                                         const ImageSet& images);

// Sets LibTorch's intra-op threads: `threads`, or with 0 one per core
// (several nodes sharing one machine give each a share).
void SetTorchThreads(int threads);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_TRAINER_H_
