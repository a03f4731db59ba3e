#ifndef FEDRAD_NODE_DATASET_H_
#define FEDRAD_NODE_DATASET_H_

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/plan.h"
#include "node/image_loader.h"
#include "node/preprocess.h"

namespace fedrad::node {

// Where a sample came from: a file (relative to the data folder) and frame.
struct SampleSource {
  std::string path;
  int frame = 0;
  std::string sop_instance_uid;  // "file:<path>" when the file has none
  // Segmentation: the model input's pixel spacing in mm (the file's
  // PixelSpacing over the pipeline's scale), between rows and between
  // columns; 0 when the file gives none.
  double row_spacing_mm = 0;
  double column_spacing_mm = 0;
};

// Preprocessed images held in memory, ready for the trainer.
struct ImageSet {
  int channels = 1;
  int size = 0;
  std::vector<float> pixels;  // count * channels * size * size
  // Segmentation: count * size * size class indices (0 the background);
  // labels then say whether an image shows any foreground (1) or not (0).
  // Empty for classification.
  std::vector<uint8_t> masks;
  // Multilabel: count * labels, 1 where the image shows the label, else 0;
  // labels then say whether it shows any (1) or none (0). Empty otherwise.
  std::vector<uint8_t> targets;
  std::vector<int64_t> labels;        // count
  std::vector<std::string> patients;  // count; never leaves the node
  std::vector<SampleSource> sources;  // count; never leaves the node

  int64_t count() const { return static_cast<int64_t>(labels.size()); }
  void Append(const ImageSet& other, int64_t index);
};

struct LabelTable {
  enum class Key { kPath, kSopInstanceUid };
  struct Row {
    std::string key;               // relative path or SOPInstanceUID
    int64_t label = 0;             // multilabel: 1 if any target is 1
    std::vector<uint8_t> targets;  // multilabel: one 0/1 per label, in class_names order
    std::string patient;           // the site's pseudonym for the image's patient, with a patient column
    int line = 0;
  };
  Key key = Key::kPath;
  bool has_patient = false;  // a third column "patient"
  std::vector<Row> rows;
};

// Reads labels.csv: a header "path,label" (paths relative to the data
// folder) or "sop_instance_uid,label", optionally followed by ",patient",
// then one row per image. A label is an integer class in [0, num_classes)
// or, if `class_names` is given, one of the names (its position is the
// class). A patient column is the site's pseudonym map: it names each
// image's patient, overriding the DICOM PatientID, and no cell may be empty.
// Multilabel (`task`; class_names then names every label): the key column,
// then either "labels", each row a list of label names (or indices)
// separated by '|' and empty for an image with none, as ChestX-ray14's
// "Finding Labels", or one column per label, named as the label (any order,
// any case), each cell 0 or 1, as CheXpert's. Any malformed row is an error
// naming the file and line.
absl::StatusOr<LabelTable> LoadLabels(const std::string& csv_path, int num_classes,
                                      const std::vector<std::string>& class_names = {},
                                      ModelTask task = ModelTask::kClassification);

// The label columns of a multilabel labels.csv headed by one column per
// label ("path,lesion,effusion[,patient]"): their names as written, for
// tools that are given no label names (inspect). An error names the file when
// the header is a list ("labels") or a single "label", whose names it cannot
// tell.
absl::StatusOr<std::vector<std::string>> LabelColumnNames(const std::string& csv_path);

struct DatasetSpec {
  std::string data_dir;
  std::string labels_csv;
  int num_classes = 2;
  std::vector<std::string> class_names;
  PreprocessSettings preprocess;
  LoaderOptions loader;
  // Under patient-level DP every image needs its patient: a file without a
  // patient key (PatientKey) is skipped and counted. Otherwise such a file
  // is its own unit.
  bool require_patient_key = false;
  // Called with what was read, before LoadImageSet returns (the site's
  // local commands record their data access with it).
  std::function<void(const ImageSet&)> on_loaded;
  // Segmentation: the labels are masks, from the DICOM SEG objects in the
  // data folder that reference its images (labels_csv is not read).
  // Multilabel: labels_csv has several labels per image (LoadLabels).
  ModelTask task = ModelTask::kClassification;
};

// What loading found: every file and row is accounted for. Counts only; no
// identifier of a patient or image.
struct LoadReport {
  int label_rows = 0;
  int files_seen = 0;  // regular files under the data folder (not .csv)
  int files_loaded = 0;
  int images_loaded = 0;  // frames, after the pipeline
  int from_cache = 0;     // files served by the cache
  int rows_without_file = 0;
  int files_without_row = 0;
  int no_image = 0;                    // DICOM objects without pixel data (SR, RT plans...)
  std::map<std::string, int> skipped;  // reason -> number of unreadable files
  int patients = 0;
  std::map<std::string, int> modalities;         // files per modality
  std::map<std::string, int> transfer_syntaxes;  // files per transfer syntax
  std::map<std::string, int> photometrics;       // files per photometric interpretation
  std::map<std::string, int> sizes;              // files per "rows x columns"
  std::map<int64_t, int> labels;                 // images per class (multilabel: showing the label)
  std::map<int, int> images_per_patient;         // how many patients have n images
  // The privacy unit's health (PatientKeyWarnings turns these into words).
  int files_without_patient_key = 0;  // skipped if the key is required, else each its own unit
  int studies = 0;                    // distinct StudyInstanceUIDs of the loaded files
  int studies_with_several_patients = 0;
  int largest_patient_images = 0;  // images of the patient key that has the most
  // Segmentation: what the label objects said, each case counted (never
  // silently dropped).
  struct Masks {
    int label_objects = 0;                        // SEG and RTSTRUCT files read
    int label_objects_from_cache = 0;             // of those, served by the cache (node/label_cache.h)
    int unreadable_label_objects = 0;             // SEG files refused (their reasons are in `skipped`)
    int images_without_mask = 0;                  // no label object references them: not used
    int references_without_image = 0;             // referenced images that are not in the folder
    int geometry_mismatch = 0;                    // frames whose mask is not the size of its image: not used
    std::map<std::string, int> unknown_segments;  // segment label -> objects naming it, not a class
    int images_with_foreground = 0;
  } masks;
  // Relative path -> reason, for each skipped or no-image file. Paths stay on
  // the node (they may contain identifiers); only `inspect --list-skipped`
  // prints them.
  std::map<std::string, std::string> unusable;
};

// The reason files without a patient key are skipped under patient-level DP.
inline constexpr char kNoPatientKey[] =
    "no patient key (PatientID is empty or missing and labels.csv has no patient column)";

// The privacy unit of an image: the labels' patient column when given, else
// (IssuerOfPatientID, PatientID), else PatientID alone; "" when there is none
// (PatientID empty, missing or only spaces).
std::string PatientKey(const DicomFacts& facts, const LabelTable::Row* row);

// What the report says about the patient keys that should worry a privacy
// officer: files without a key, studies shared by several keys (PatientID
// replaced per file by de-identification: one patient counts as several
// units), one key covering a large share of the images (a constant dummy ID
// such as ANONYMOUS: many patients in one unit). Empty when all is well.
std::vector<std::string> PatientKeyWarnings(const LoadReport& report, bool key_required);

// Every regular file under `dir` but label files (.csv) and hidden ones,
// relative to `dir`, sorted; nothing under `skip_dir` (an output folder).
std::vector<std::string> ListDataFiles(const std::string& dir, const std::string& skip_dir = "");

// Loads every labelled DICOM file under spec.data_dir with the threaded,
// cached loader. Files that cannot be read are skipped and counted by
// reason, never fatal; only a missing folder or a bad labels file fails.
// A segmentation folder's labels.csv, when its header is "path,mask" (or
// "path,mask,patient"): each image's mask, a PNG (8-bit: 0/255 for one
// class, else class indices; the image's size) or a DICOM SEG/RTSTRUCT in
// the folder, and the site's pseudonym of its patient. `present` is false
// when the file is absent or has another header (then the folder's label
// objects are discovered). Malformed rows are errors naming file and line.
struct MaskTable {
  struct Row {
    std::string mask;  // relative to the data folder
    std::string patient;
  };
  bool present = false;
  std::map<std::string, Row> rows;  // image path (relative) -> its row
};
absl::StatusOr<MaskTable> LoadMaskTable(const std::string& csv_path);

// A PNG mask of a rows x columns image, as class indices; errors name the
// file (not a single-channel 8-bit PNG, another size, a class beyond
// num_classes - 1).
absl::StatusOr<std::vector<uint8_t>> ReadPngMask(const std::string& path, int rows, int columns, int num_classes);

// With spec.task segmentation: LoadSegmentationSet.
absl::StatusOr<ImageSet> LoadImageSet(const DatasetSpec& spec, LoadReport* report);

// Segmentation: every DICOM SEG object (node/dicom_seg.h) and RT Structure
// Set (node/dicom_rtstruct.h) under spec.data_dir is read, its segments or
// ROIs mapped to classes (by the class names past the background, else the
// n-th by number is class n), and every image it references is loaded with
// its mask (an RTSTRUCT's contours rasterised on the image's own grid from
// its position, orientation and spacing) brought through the image's own
// geometry (PreprocessMask); an image referenced without a frame or
// contour of a segment shows none of it. With a mask table in labels_csv
// (LoadMaskTable) only its images are used, with their PNG masks (and any
// label objects that reference them). Images no SEG references, references to images not in the
// folder, masks whose size is not their image's and segments that are not a
// class are counted in report->masks, never silently dropped.
absl::StatusOr<ImageSet> LoadSegmentationSet(const DatasetSpec& spec, LoadReport* report);

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
// The same digest of a set of UIDs.
std::string UidsSha256(const std::set<std::string>& uids);

// Distinct patients in the set.
int64_t DistinctPatients(const ImageSet& set);

// Splits by patient, never by image: a patient's images all land on one side.
// Membership depends only on (seed, patient id), not on file order.
PatientSplit SplitByPatient(const ImageSet& images, double validation_fraction, uint64_t seed);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_DATASET_H_
