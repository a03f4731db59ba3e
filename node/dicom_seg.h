#ifndef FEDRAD_NODE_DICOM_SEG_H_
#define FEDRAD_NODE_DICOM_SEG_H_

// DICOM Segmentation objects (SEG, PS3.3 A.51), read and written with
// DCMTK's dcmseg: the site's ground truth for segmentation, and what
// `fedrad-node predict` writes back for the viewer.

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "node/dicom_reader.h"

namespace fedrad::node {

inline constexpr char kSegmentationStorage[] = "1.2.840.10008.5.1.4.1.1.66.4";

// One frame of a SEG object: a segment's mask on one frame of one source image.
struct SegFrame {
  std::string source_sop_instance_uid;
  int source_frame = 0;       // from 0 (ReferencedFrameNumber - 1; 0 for a single-frame source)
  int segment = 1;            // SegmentNumber, from 1
  std::vector<uint8_t> mask;  // rows * columns; 1 inside, 0 outside
};

struct SegObject {
  std::string sop_instance_uid;
  std::string study_instance_uid;
  int rows = 0;
  int columns = 0;
  bool fractional = false;              // thresholded at half the MaximumFractionalValue
  std::map<int, std::string> segments;  // SegmentNumber -> SegmentLabel
  std::vector<SegFrame> frames;
  // Every source image the object references (ReferencedSeriesSequence and
  // the frames' source images): an image listed here without a frame for a
  // segment has an empty mask of it.
  std::set<std::string> referenced_instances;
};

// Reads a SEG file; errors name the file and what is wrong (not a SEG, a
// frame without its segment or source image, a segment number out of range,
// more frames than the pixel data holds). At most `max_pixels` mask pixels
// (rows x columns x frames) are read.
absl::StatusOr<SegObject> ReadSegmentation(const std::string& path, uint64_t max_pixels = uint64_t{256} << 20);

// What a SEG object to write says.
struct SegWrite {
  // The source images, one series, as files (their patient, study, frame of
  // reference, geometry and references are taken from them).
  std::vector<std::string> source_paths;
  // Segment n's label is segment_labels[n - 1] (e.g. the plan's class names
  // past the background).
  std::vector<std::string> segment_labels;
  // The frames to store: only those with anything in them, by convention;
  // a source image without a frame for a segment has none of it. A segment
  // without any frame gets an empty one on the first source (a SEG gives
  // every segment a frame).
  std::vector<SegFrame> frames;
  std::string sop_instance_uid;
  std::string series_instance_uid;
  int series_number = 900;
  std::string series_description = "fedrad segmentation";
  // Manual ground truth, or a model's output (then the algorithm's name and
  // version are recorded).
  bool automatic = true;
  std::string algorithm_name = "fedrad";
  std::string algorithm_version = "1";
  // ContentDate and ContentTime as YYYYMMDDHHMMSS; empty: now.
  std::string content_date_time;
};

// Writes a binary SEG object (explicit little endian, written to a temporary
// file and renamed); errors name the path.
absl::Status WriteSegmentation(const SegWrite& seg, const std::string& path);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_DICOM_SEG_H_
