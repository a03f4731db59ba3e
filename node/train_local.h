#ifndef FEDRAD_NODE_TRAIN_LOCAL_H_
#define FEDRAD_NODE_TRAIN_LOCAL_H_

#include <optional>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "common/plan.h"
#include "node/dataset.h"
#include "node/trainer.h"

namespace fedrad::node {

// The central baseline: one site's data, the node's own trainer (and DP-SGD),
// no coordinator. Researchers compare federated runs against it.
struct TrainLocalOptions {
  DatasetSpec spec;
  std::optional<DatasetSpec> test;   // held-out set; default: a patient split of `spec`
  double validation_fraction = 0.2;  // of that split
  uint64_t split_seed = 42;
  ModelSpec model;
  // Starting weights (a plan's [model] init, common/model_zoo.h
  // WeightsFromFile); empty: fresh ones.
  std::string init_path;
  int epochs = 5;
  int batch = 64;  // under DP: the expected batch (sampling rate = batch / units)
  double learning_rate = 0.05;
  double momentum = 0.9;
  int threads = 0;
  std::string save_path;
  struct Dp {
    double clip_norm = 1.0;
    double noise_multiplier = -1;  // < 0: derived from target_epsilon
    double target_epsilon = -1;
    double delta = 1e-5;
    bool patient_level = true;
  };
  std::optional<Dp> dp;
};

// Trains, evaluates on the held-out set, and reports accuracy (and ε, δ
// under DP) on `out`.
absl::Status TrainLocal(const TrainLocalOptions& options, std::ostream& out);

struct EvaluateOptions {
  // The images. preprocess.output_size and num_classes: 0 takes them from the
  // model file (a coordinator's models name them), else default_size /
  // default_classes; a value that contradicts the file is an error.
  DatasetSpec spec;
  int default_size = 64;
  int default_classes = 2;
  // Set: only the validation part of the patient split (as a node makes it).
  std::optional<double> validation_fraction;
  uint64_t split_seed = 42;
};

// Loads a saved model (its safetensors metadata names the architecture) and
// evaluates it on labelled DICOM images.
absl::StatusOr<Evaluation> EvaluateModelFile(const std::string& model_path, EvaluateOptions options);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_TRAIN_LOCAL_H_
