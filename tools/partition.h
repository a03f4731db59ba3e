#ifndef FEDRAD_TOOLS_PARTITION_H_
#define FEDRAD_TOOLS_PARTITION_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedrad::tools {

struct PartitionOptions {
  std::string data_dir;    // a labelled set: DICOM files and labels.csv ("path,label")
  std::string labels_csv;  // default: <data_dir>/labels.csv
  int sites = 4;
  // "iid": patients dealt at random; "dirichlet": each class's patients
  // spread over the sites in proportions drawn from Dirichlet(alpha)
  // (small alpha: strong label skew).
  std::string mode = "iid";
  double alpha = 1.0;
  uint64_t seed = 1;
  std::string out_dir;
  std::vector<std::string> site_names;  // default hospital-a, hospital-b, ...
};

struct PartitionResult {
  std::vector<std::string> sites;
  std::vector<std::map<int64_t, int>> histogram;  // per site: class -> images
  std::vector<int> patients;                      // per site
};

// Splits a labelled set across sites, keeping all images of a patient (by
// DICOM PatientID) at one site. Writes <out>/<site>/ with the site's files
// (hard links where possible, else copies, under their original relative
// paths) and its labels.csv. The same options always give the same split.
absl::StatusOr<PartitionResult> Partition(const PartitionOptions& options);

// A table of images per class per site.
std::string FormatHistogram(const PartitionResult& result);

}  // namespace fedrad::tools

#endif  // FEDRAD_TOOLS_PARTITION_H_
