#ifndef FEDRAD_TOOLS_SYNTH_H_
#define FEDRAD_TOOLS_SYNTH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace fedrad::tools {

inline const std::vector<std::string> kSynthFindings = {"lesion", "effusion", "clip"};

struct SynthOptions {
  int sites = 3;
  uint64_t seed = 1;
  std::string out_dir;
  int patients_per_site = 64;
  int images_per_patient = 6;
  int image_size = 128;
  // Site names; empty means hospital-a, hospital-b, ...
  std::vector<std::string> site_names;
  // "segmentation": each patient's series also gets its ground truth as a
  // DICOM SEG object, <patient>/seg.dcm: segment 1 "lesion", one frame per
  // slice the lesion shows on (the disc up to its radius), referencing every
  // slice of the series (a slice without a frame has no lesion).
  // "multilabel": labels.csv has a column per finding (kSynthFindings):
  // "lesion" as for classification, "effusion" (fluid in the base of the
  // left lung, on every slice of a patient who has it) and "clip" (a small
  // metal clip in the soft tissue, likewise), each patient's findings
  // drawn independently.
  std::string task = "classification";
  // Segmentation: the ground truth also as an RT Structure Set,
  // <patient>/rtstruct.dcm (ROI "lesion", a 36-point contour of the disc on
  // each slice it shows on), as a planning system would draw it.
  bool rtstruct = false;
};

// Writes a synthetic CT cohort: per site, <out>/<site>/<patient>/<n>.dcm
// (int16, RescaleIntercept -1024, real DICOM via DCMTK, valid CT Image
// IODs) and
// <out>/<site>/labels.csv. Label 1 means a lesion is visible in the slice.
// Sites differ in noise, intensity offset and lesion prevalence (non-IID).
// The same options always give byte-identical files.
absl::Status WriteSyntheticCohort(const SynthOptions& options);

// Site name used for index i when none is given: hospital-a, hospital-b, ...
std::string DefaultSiteName(int index);

}  // namespace fedrad::tools

#endif  // FEDRAD_TOOLS_SYNTH_H_
