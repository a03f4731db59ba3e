// libFuzzer target for segmentation labels from a site's folder: arbitrary
// bytes as a file go through the DICOM SEG reader and the RT Structure Set
// reader (DCMTK's dcmseg and dcmrt, then fedrad's checks), and every contour
// read is rasterised on a 32 x 32 grid, as loading a segmentation folder does.
// A crash, sanitizer report or hang is a bug; a named status is the answer.
#include <cstdint>

#include "node/dicom_rtstruct.h"
#include "node/dicom_seg.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fedrad::fuzz::WriteInput(data, size, ".label.dcm");
  // A small limit, so that a header promising huge frames is refused cheaply.
  absl::StatusOr<fedrad::node::SegObject> seg = fedrad::node::ReadSegmentation(path, uint64_t{1} << 20);
  fedrad::fuzz::ExpectOkOrNamed(seg);
  if (seg.ok()) {
    for (const fedrad::node::SegFrame& f : seg->frames) {
      if (f.mask.size() != static_cast<size_t>(seg->rows) * seg->columns) __builtin_trap();
      if (!seg->segments.count(f.segment)) __builtin_trap();
    }
  }
  absl::StatusOr<fedrad::node::RtStructObject> rt = fedrad::node::ReadRtStruct(path, 1 << 16);
  fedrad::fuzz::ExpectOkOrNamed(rt);
  if (rt.ok()) {
    absl::StatusOr<fedrad::node::ImageGeometry> g =
        fedrad::node::ParseGeometry("-10\\-10\\0", "1\\0\\0\\0\\1\\0", "0.7\\0.7");
    if (!g.ok()) __builtin_trap();
    std::map<int, int> classes;
    for (const auto& [number, name] : rt->rois) classes[number] = 1;
    std::vector<const fedrad::node::RtContour*> contours;
    for (const fedrad::node::RtContour& c : rt->contours) contours.push_back(&c);
    absl::StatusOr<std::vector<uint8_t>> mask = fedrad::node::RasterizeContours(contours, classes, *g, 32, 32);
    fedrad::fuzz::ExpectOkOrNamed(mask);
    if (mask.ok() && mask->size() != 32u * 32u) __builtin_trap();
  }
  return 0;
}
