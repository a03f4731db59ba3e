#ifndef FEDRAD_NODE_DICOM_READER_H_
#define FEDRAD_NODE_DICOM_READER_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedrad::node {

// One frame's modality values (after RescaleSlope/Intercept, e.g. Hounsfield
// units for CT), row-major rows x columns.
struct ModalityFrame {
  int rows = 0;
  int columns = 0;
  std::vector<float> values;
};

// A decoded DICOM image file. Identifiers stay inside the node: they are used
// for grouping and splitting, never logged or sent.
struct DicomImageFile {
  std::string patient_id;
  std::string sop_instance_uid;
  std::string modality;
  std::string transfer_syntax_uid;
  std::optional<double> window_center;  // the file's own VOI, if any
  std::optional<double> window_width;
  std::vector<ModalityFrame> frames;
};

// Reads and decodes `path` with DCMTK. Errors are specific and name the file:
// NotFound (missing), InvalidArgument (not DICOM / malformed), Unimplemented
// (a file without pixel data, or an unsupported photometric interpretation).
absl::StatusOr<DicomImageFile> ReadDicomImage(const std::string& path);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_DICOM_READER_H_
