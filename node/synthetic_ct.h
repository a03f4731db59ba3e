#ifndef FEDRAD_NODE_SYNTHETIC_CT_H_
#define FEDRAD_NODE_SYNTHETIC_CT_H_

// Writes CT images that pass dciodvfy (the CT Image IOD, PS3.3 A.3): the
// synthetic cohort (`fedrad synth`) and test fixtures use it.

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace fedrad::node {

struct CtSlice {
  int size = 128;         // rows = columns
  std::vector<float> hu;  // size * size Hounsfield units, row-major
  std::string patient_id;
  std::string study_uid;
  std::string series_uid;
  std::string frame_of_reference_uid;
  std::string sop_uid;
  int instance = 1;  // InstanceNumber; the slice sits at z = 5 mm * instance
  double pixel_spacing_mm = 0.8;
  std::string accession_number;
};

// Stored as int16 with RescaleIntercept -1024, explicit little endian,
// written whole or not at all.
absl::Status WriteCtSlice(const CtSlice& slice, const std::string& path);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_SYNTHETIC_CT_H_
