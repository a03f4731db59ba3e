#ifndef FEDRAD_NODE_SAVED_MODEL_H_
#define FEDRAD_NODE_SAVED_MODEL_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/plan.h"
#include "common/safetensors.h"
#include "common/tensor.h"
#include "node/preprocess.h"

namespace fedrad::node {

// A model file as a site runs it: what network, of what shape, trained on
// inputs prepared how.
struct SavedModel {
  std::string path;
  std::string sha256;  // of the file's bytes as read
  ModelSpec spec;
  ModelParameters parameters;
  SafetensorsMetadata metadata;
};

struct SavedModelShape {
  // 0: take it from the file (a coordinator's and train-local's models name
  // it), else `default_*`. A value that contradicts the file is an error
  // naming both and `*_flag`.
  int size = 0;
  int classes = 0;
  int default_size = 64;
  int default_classes = 2;
  std::string size_flag = "--size";
  std::string classes_flag = "--classes";
};

// Reads and checks a .safetensors model: its metadata must name the
// architecture; its parameters must match that network's manifest.
absl::StatusOr<SavedModel> LoadSavedModel(const std::string& path, const SavedModelShape& shape = {});

// Writes the metadata entries that name `settings` ("preprocessing",
// "preprocessing_sha256").
void SetPipelineMetadata(const PreprocessSettings& settings, SafetensorsMetadata* metadata);

// OK when the model was trained on inputs prepared as `settings` prepares
// them (one of its pipelines, for a model of sites that differed). Otherwise
// FailedPrecondition naming each setting that differs, or saying that the
// model names no pipeline.
absl::Status CheckPipeline(const SavedModel& model, const PreprocessSettings& settings);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_SAVED_MODEL_H_
