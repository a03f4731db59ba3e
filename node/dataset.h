#ifndef FEDRAD_NODE_DATASET_H_
#define FEDRAD_NODE_DATASET_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "node/image_loader.h"
#include "node/preprocess.h"

namespace fedrad::node {

// Where a sample came from: a file (relative to the data folder) and frame.
struct SampleSource {
  std::string path;
  int frame = 0;
  std::string sop_instance_uid;  // "file:<path>" when the file has none
};

// Preprocessed images held in memory, ready for the trainer.
struct ImageSet {
  int channels = 1;
  int size = 0;
  std::vector<float> pixels;           // count * channels * size * size
  std::vector<int64_t> labels;         // count
  std::vector<std::string> patients;   // count; never leaves the node
  std::vector<SampleSource> sources;   // count; never leaves the node

  int64_t count() const { return static_cast<int64_t>(labels.size()); }
  void Append(const ImageSet& other, int64_t index);
};

struct LabelTable {
  enum class Key { kPath, kSopInstanceUid };
  struct Row {
    std::string key;  // relative path or SOPInstanceUID
    int64_t label = 0;
    int line = 0;
  };
  Key key = Key::kPath;
  std::vector<Row> rows;
};

// Reads labels.csv: a header "path,label" (paths relative to the data
// folder) or "sop_instance_uid,label", then one row per image. A label is an
// integer class in [0, num_classes) or, if `class_names` is given, one of the
// names (its position is the class). Any malformed row is an error naming the
// file and line.
absl::StatusOr<LabelTable> LoadLabels(const std::string& csv_path, int num_classes,
                                      const std::vector<std::string>& class_names = {});

struct DatasetSpec {
  std::string data_dir;
  std::string labels_csv;
  int num_classes = 2;
  std::vector<std::string> class_names;
  PreprocessSettings preprocess;
  LoaderOptions loader;
};

// What loading found: every file and row is accounted for. Counts only; no
// identifier of a patient or image.
struct LoadReport {
  int label_rows = 0;
  int files_seen = 0;                  // regular files under the data folder (not .csv)
  int files_loaded = 0;
  int images_loaded = 0;               // frames, after the pipeline
  int from_cache = 0;                  // files served by the cache
  int rows_without_file = 0;
  int files_without_row = 0;
  int no_image = 0;                    // DICOM objects without pixel data (SR, RT plans...)
  std::map<std::string, int> skipped;  // reason -> number of unreadable files
  int patients = 0;
  std::map<std::string, int> modalities;        // files per modality
  std::map<std::string, int> transfer_syntaxes;  // files per transfer syntax
  std::map<std::string, int> photometrics;       // files per photometric interpretation
  std::map<std::string, int> sizes;              // files per "rows x columns"
  std::map<int64_t, int> labels;                 // images per class
  std::map<int, int> images_per_patient;         // how many patients have n images
  // Relative path -> reason, for each skipped or no-image file. Paths stay on
  // the node (they may contain identifiers); only `inspect --list-skipped`
  // prints them.
  std::map<std::string, std::string> unusable;
};

// Every regular file under `dir` but label files (.csv) and hidden ones,
// relative to `dir`, sorted; nothing under `skip_dir` (an output folder).
std::vector<std::string> ListDataFiles(const std::string& dir, const std::string& skip_dir = "");

// Loads every labelled DICOM file under spec.data_dir with the threaded,
// cached loader. Files that cannot be read are skipped and counted by
// reason, never fatal; only a missing folder or a bad labels file fails.
absl::StatusOr<ImageSet> LoadImageSet(const DatasetSpec& spec, LoadReport* report);

struct PatientSplit {
  ImageSet train;
  ImageSet validation;
  int train_patients = 0;
  int validation_patients = 0;
};

// SHA-256 (hex) of the set's distinct SOPInstanceUIDs, sorted, each
// followed by a newline: what the audit ledger records of the data used.
// A privacy officer can recompute it from the archive's list; the UIDs
// themselves are never recorded.
std::string SopInstanceUidsSha256(const ImageSet& set);

// Distinct patients in the set.
int64_t DistinctPatients(const ImageSet& set);

// Splits by patient, never by image: a patient's images all land on one side.
// Membership depends only on (seed, patient id), not on file order.
PatientSplit SplitByPatient(const ImageSet& images, double validation_fraction, uint64_t seed);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_DATASET_H_
