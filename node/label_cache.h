#ifndef FEDRAD_NODE_LABEL_CACHE_H_
#define FEDRAD_NODE_LABEL_CACHE_H_

// The preprocessing cache for segmentation labels: what ReadSegmentation
// and ReadRtStruct made of a label object, stored under the SHA-256 of the
// file's bytes, so that later loads of the folder (every round) skip DCMTK's
// parse of each SEG (frames, segments, references) and RT Structure Set
// (every contour point). The images' entries are the loader's
// (node/image_loader.h); masks are then brought through each image's
// geometry from these, which costs little.
//
// An entry that does not decode exactly (torn, truncated, of another
// version) is ignored and rewritten: it can cost a parse, never a wrong
// mask. Objects that fail to read are not cached (their error is reported
// on every load).

#include <string>

#include "absl/status/statusor.h"
#include "node/dicom_rtstruct.h"
#include "node/dicom_seg.h"

namespace fedrad::node {

// ReadSegmentation(path) through the cache in `cache_dir` (empty: no cache).
// `from_cache` (optional) says whether the entry served it.
absl::StatusOr<SegObject> ReadSegmentationCached(const std::string& path, const std::string& cache_dir,
                                                 bool* from_cache = nullptr);

// ReadRtStruct(path) through the cache, likewise.
absl::StatusOr<RtStructObject> ReadRtStructCached(const std::string& path, const std::string& cache_dir,
                                                  bool* from_cache = nullptr);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_LABEL_CACHE_H_
