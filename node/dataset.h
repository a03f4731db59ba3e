#ifndef FEDRAD_NODE_DATASET_H_
#define FEDRAD_NODE_DATASET_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "node/preprocess.h"

namespace fedrad::node {

// Preprocessed images held in memory, ready for the trainer.
struct ImageSet {
  int channels = 1;
  int size = 0;
  std::vector<float> pixels;           // count * channels * size * size
  std::vector<int64_t> labels;         // count
  std::vector<std::string> patients;   // count; never leaves the node

  int64_t count() const { return static_cast<int64_t>(labels.size()); }
  void Append(const ImageSet& other, int64_t index);
};

struct LabelRow {
  std::string path;  // relative to the data folder
  int64_t label = 0;
  int line = 0;
};

// Reads `labels.csv`: a header line "path,label", then one row per image.
// Labels are integers in [0, num_classes). Any malformed row is an error
// naming the file and line.
absl::StatusOr<std::vector<LabelRow>> LoadLabels(const std::string& csv_path, int num_classes);

// What loading found: every file and row is accounted for.
struct LoadReport {
  int label_rows = 0;
  int images_loaded = 0;               // frames, after the pipeline
  int rows_without_file = 0;
  int files_without_row = 0;
  int no_image = 0;                    // DICOM objects without pixel data (SR, RT plans...)
  std::map<std::string, int> skipped;  // reason -> number of unreadable files
  int patients = 0;
};

// Loads every labelled DICOM file under `data_dir`; files that cannot be read
// are skipped and counted by reason, never fatal.
absl::StatusOr<ImageSet> LoadImageSet(const std::string& data_dir, const std::string& labels_csv,
                                      int num_classes, const PreprocessSettings& settings,
                                      LoadReport* report);

struct PatientSplit {
  ImageSet train;
  ImageSet validation;
  int train_patients = 0;
  int validation_patients = 0;
};

// Splits by patient, never by image: a patient's images all land on one side.
// Membership depends only on (seed, patient id), not on file order.
PatientSplit SplitByPatient(const ImageSet& images, double validation_fraction, uint64_t seed);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_DATASET_H_
