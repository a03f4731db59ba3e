#ifndef FEDRAD_NODE_DICOM_RTSTRUCT_H_
#define FEDRAD_NODE_DICOM_RTSTRUCT_H_

// RT Structure Sets (PS3.3 A.19), read with DCMTK's dcmrt: ROI contours
// drawn in a planning system, in patient coordinates (mm), rasterised onto
// each referenced image's pixel grid.

#include <array>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedrad::node {

inline constexpr char kRtStructureSetStorage[] = "1.2.840.10008.5.1.4.1.1.481.3";

// One closed planar contour on one image.
struct RtContour {
  int roi = 0;                                // ROI Number
  std::string image_sop_instance_uid;         // Contour Image Sequence's reference
  std::vector<std::array<double, 3>> points;  // patient coordinates, mm
};

struct RtStructObject {
  std::map<int, std::string> rois;  // ROI Number -> ROI Name
  std::vector<RtContour> contours;  // closed planar ones; points and open contours are not areas
  int skipped_contours = 0;         // not CLOSED_PLANAR, or without an image reference
  // Every image the set covers (its referenced series' images and its
  // contours'): one listed without a contour of an ROI has none of it.
  std::set<std::string> referenced_instances;
};

// Reads an RT Structure Set; errors name the file and what is wrong (not an
// RTSTRUCT, a contour whose point count disagrees with its data, a contour
// of an ROI the set does not define). At most `max_points` points are read.
absl::StatusOr<RtStructObject> ReadRtStruct(const std::string& path, uint64_t max_points = uint64_t{16} << 20);

// Where an image's pixels lie in patient space: ImagePositionPatient (the
// centre of the first pixel), ImageOrientationPatient (the row and column
// direction cosines) and PixelSpacing (between rows, between columns), as
// their DICOM strings. Parsed by ParseGeometry; nullopt-like error if any is
// missing or malformed.
struct ImageGeometry {
  std::array<double, 3> position{};
  std::array<double, 3> row_direction{};     // along a row: column index grows
  std::array<double, 3> column_direction{};  // down a column: row index grows
  double row_spacing = 0;                    // mm between rows
  double column_spacing = 0;                 // mm between columns
};
absl::StatusOr<ImageGeometry> ParseGeometry(const std::string& position, const std::string& orientation,
                                            const std::string& spacing);

// The contours' areas on a rows x columns grid as class indices: each
// contour's points mapped to (column, row) by the geometry, with sub-pixel
// precision, filled (pixel centres inside), and the contours of one ROI
// combined by even-odd parity, so a contour inside another is a hole (PS3.3
// C.8.8.6: the inner contour of a ring); where ROIs overlap the higher class
// wins. `class_of_roi` maps ROI numbers to classes (ROIs not in it are
// skipped). Fails if a point lies off the image's plane by more than half a
// pixel spacing (the contour belongs to another slice).
absl::StatusOr<std::vector<uint8_t>> RasterizeContours(const std::vector<const RtContour*>& contours,
                                                       const std::map<int, int>& class_of_roi,
                                                       const ImageGeometry& geometry, int rows, int columns);

// An RT Structure Set to write: ROIs, and closed contours given in each
// source image's pixel coordinates (column, row; pixel centres at integers),
// placed in patient space by the image's own geometry.
struct RtStructWrite {
  std::vector<std::string> source_paths;  // one series
  std::vector<std::string> roi_names;     // ROI n + 1 is roi_names[n]
  struct Contour {
    int roi = 1;
    std::string image_sop_instance_uid;
    std::vector<std::pair<double, double>> points;  // (column, row), at least 3
  };
  std::vector<Contour> contours;
  std::string sop_instance_uid;
  std::string series_instance_uid;
  std::string label = "GROUND TRUTH";
  std::string date_time = "20260101120000";  // StructureSetDate/Time
};

// Writes it (explicit little endian, temporary file renamed); it passes
// dciodvfy. Errors name the path.
absl::Status WriteRtStruct(const RtStructWrite& rt, const std::string& path);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_DICOM_RTSTRUCT_H_
