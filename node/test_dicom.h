#ifndef FEDRAD_NODE_TEST_DICOM_H_
#define FEDRAD_NODE_TEST_DICOM_H_

// Test-only: writes small DICOM images with known stored values.

#include <string>
#include <vector>

#include "node/synthetic_ct.h"

namespace fedrad::node::testing {

struct TestImage {
  int rows = 64;
  int cols = 48;
  int frames = 1;
  int bits_allocated = 16;
  int bits_stored = 16;
  bool is_signed = true;
  std::string photometric = "MONOCHROME2";
  int samples = 1;
  int planar = 0;
  std::string slope = "1";
  std::string intercept = "-1024";
  std::string patient_id = "P-test";
  bool has_patient_id = true;        // false: no PatientID element at all
  std::string issuer_of_patient_id;  // written when not empty
  std::string study_instance_uid;    // written when not empty
  std::string sop_instance_uid = "2.25.42";
  int seed = 0;  // varies the pattern
};

// Stored value of pixel i of frame f (sample 0).
int StoredValue(const TestImage& im, int i, int f);

// Writes `im` to `path`; returns false on failure.
bool WriteTestImage(const TestImage& im, const std::string& path, bool big_endian = false);

// Writes an 8x8 file in the JPEG 2000 lossless transfer syntax (a codestream
// header only: enough to be recognised, not to decode).
bool WriteJpeg2000Stub(const std::string& path, const std::string& patient_id = "P-j2k");

// The rows of a small CSV file split at commas (no quoting), for checking
// what the tools write.
std::vector<std::vector<std::string>> ReadCsvRows(const std::string& path);

// A 'size'-pixel air-filled CT slice of patient P1's one series (study
// 2.25.100, series 2.25.101, frame of reference 2.25.102), for
// node/synthetic_ct.h's WriteCtSlice: slice `instance` lies at z = 5 mm x
// instance, pixels 0.8 mm apart.
CtSlice BlankCtSlice(const std::string& sop_uid, int instance, int size);

// What dciodvfy (Debian's dicom3tools) says of a file: the IOD it checked
// the file against (its line naming it, e.g. "CTImage", "Segmentation";
// empty if it named none, as when it could not run), its error lines, and
// its whole output for the failure message.
struct Dciodvfy {
  std::string iod;
  std::vector<std::string> errors;
  std::string output;
};
Dciodvfy RunDciodvfy(const std::string& path);

}  // namespace fedrad::node::testing

#endif  // FEDRAD_NODE_TEST_DICOM_H_
