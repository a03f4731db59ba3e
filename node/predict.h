#ifndef FEDRAD_NODE_PREDICT_H_
#define FEDRAD_NODE_PREDICT_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "node/image_loader.h"
#include "node/preprocess.h"

namespace fedrad::node {

// Runs a model on a site's studies for its clinicians. Reads the model file
// and the images and writes the outputs; opens no network connection.
struct PredictOptions {
  std::string model_path;
  std::string input;    // a DICOM file, or a folder searched recursively
  std::string out_csv;  // one row per image/frame
  // The site's pipeline; output_size is the model's. The model must have
  // been trained on inputs prepared the same way.
  PreprocessSettings preprocess;
  std::vector<std::string> class_names;  // empty: classes are numbered
  int loader_threads = 0;
  int batch = 32;
  // Non-empty: a Grad-CAM PNG per image/frame here (<name>.heatmap.png, the
  // source's .dcm extension dropped), and with
  // dicom_overlays a DICOM Secondary Capture next to it. For a segmentation
  // model: a PNG per image/frame with the predicted mask's outline over the
  // windowed image, and with dicom_overlays one DICOM SEG object per series
  // (fedrad-seg-<series>.dcm beside its first image's PNG), in the source's
  // study, referencing every image of the series predicted.
  std::string heatmap_dir;
  bool dicom_overlays = false;
  // Classification: heatmaps of images predicted as class 0 (the negative:
  // "normal"), or multilabel with no label found, too. Off by default: Grad-CAM of "nothing there", scaled per
  // image, puts its hottest point anywhere, even in the air outside the body.
  bool heatmap_negatives = false;
};

struct PredictReport {
  std::string model_sha256;
  int files = 0;                       // files looked at
  int images = 0;                      // rows predicted (frames)
  int heatmaps = 0;                    // heatmap or mask PNGs
  int segmentations = 0;               // SEG objects written
  std::map<std::string, int> skipped;  // reason -> files (also in the CSV)
  std::map<int, int> predicted;        // class -> rows (multilabel: rows showing the label)
  // For the site's audit ledger: the distinct patient keys and the SHA-256
  // of the sorted SOPInstanceUIDs of the images predicted (never the UIDs).
  int patients = 0;
  std::string sop_instance_uids_sha256;
};

// The CSV: path (relative to `input`), sop_instance_uid, frame (from 1),
// predicted_class, probability of each class (p_<name>), and error (the
// reason a file could not be read; its other fields are empty). A multilabel
// model writes predicted_labels (the labels found, '|'-separated, empty for
// none) and each label's own sigmoid (p_<label>) instead. Rows are
// sorted by path and frame. Written atomically: a crash leaves no half file.
absl::StatusOr<PredictReport> Predict(const PredictOptions& options);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_PREDICT_H_
