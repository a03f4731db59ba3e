#ifndef FEDRAD_NODE_INSPECT_H_
#define FEDRAD_NODE_INSPECT_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "node/dataset.h"

namespace fedrad::node {

struct InspectOptions {
  DatasetSpec dataset;
  std::string preview_dir;     // PNG of each image/frame after the pipeline
  std::string export_raw_dir;  // float32 .npy of each frame's modality values
  bool list_skipped = false;   // also print the relative path of each skipped file
};

// Loads the site's data as training would and writes a report of counts to
// `out`: files by modality, transfer syntax, size and photometric
// interpretation; patients, images per patient and label balance; every
// unusable file counted under its reason. No patient or image identifier is
// printed (file paths only with list_skipped, for the site's own use).
absl::Status Inspect(const InspectOptions& options, std::ostream& out);

// A float32 .npy file (NumPy format 1.0, little-endian, C order).
absl::Status WriteNpy(const std::string& path, const float* values, int rows, int columns);

// The name previews and exports use for `relative_path` frame `frame`:
// folders joined with "__", then ".f<frame>".
std::string ExportName(const std::string& relative_path, int frame);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_INSPECT_H_
