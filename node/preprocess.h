#ifndef FEDRAD_NODE_PREPROCESS_H_
#define FEDRAD_NODE_PREPROCESS_H_

#include <string>
#include <vector>

#include "node/dicom_reader.h"

namespace fedrad::node {

// How modality values become the model's input: a window mapped to [0, 1],
// then an aspect-preserving resize to a square of `output_size` (zero-padded).
struct PreprocessSettings {
  double window_center = 40;   // soft-tissue CT window by default
  double window_width = 400;
  bool use_file_window = false;  // prefer the file's own VOI when present
  int output_size = 64;
};

// Returns output_size * output_size floats in [0, 1], row-major.
std::vector<float> PreprocessFrame(const ModalityFrame& frame, const DicomImageFile& file,
                                   const PreprocessSettings& settings);

// A stable description of the pipeline, hashed and stored with models and
// caches so inputs prepared differently are never mixed.
std::string DescribePipeline(const PreprocessSettings& settings);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_PREPROCESS_H_
