#include "node/dicom_rtstruct.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/scratch_dir.h"
#include "node/dataset.h"
#include "node/label_cache.h"
#include "node/synthetic_ct.h"
#include "node/test_dicom.h"

namespace fedrad::node {
namespace {

namespace fs = std::filesystem;

constexpr double kSpacing = 0.8;  // mm, as WriteCtSlice writes

// A contour in pixel coordinates (column, row) on slice `z` mm.
struct PixelContour {
  int roi;
  std::string image_uid;
  std::vector<std::pair<double, double>> points;
  double z = 5;
  std::string type = "CLOSED_PLANAR";
};

// A hand-built RT Structure Set: ROIs by number and name, and the contours.
void WriteRtStruct(const std::string& path, const std::map<int, std::string>& rois,
                   const std::vector<PixelContour>& contours, const std::vector<std::string>& series_images) {
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  ds->putAndInsertString(DCM_SOPClassUID, kRtStructureSetStorage);
  ds->putAndInsertString(DCM_SOPInstanceUID, "2.25.7001");
  ds->putAndInsertString(DCM_Modality, "RTSTRUCT");
  ds->putAndInsertString(DCM_StructureSetLabel, "GTV");
  DcmItem* frame = nullptr;
  ds->findOrCreateSequenceItem(DCM_ReferencedFrameOfReferenceSequence, frame, -2);
  frame->putAndInsertString(DCM_FrameOfReferenceUID, "2.25.102");
  DcmItem* study = nullptr;
  frame->findOrCreateSequenceItem(DCM_RTReferencedStudySequence, study, -2);
  DcmItem* series = nullptr;
  study->findOrCreateSequenceItem(DCM_RTReferencedSeriesSequence, series, -2);
  for (const std::string& uid : series_images) {
    DcmItem* image = nullptr;
    series->findOrCreateSequenceItem(DCM_ContourImageSequence, image, -2);
    image->putAndInsertString(DCM_ReferencedSOPInstanceUID, uid.c_str());
  }
  for (const auto& [number, name] : rois) {
    DcmItem* roi = nullptr;
    ds->findOrCreateSequenceItem(DCM_StructureSetROISequence, roi, -2);
    roi->putAndInsertString(DCM_ROINumber, std::to_string(number).c_str());
    roi->putAndInsertString(DCM_ROIName, name.c_str());
    DcmItem* roi_contour = nullptr;
    ds->findOrCreateSequenceItem(DCM_ROIContourSequence, roi_contour, -2);
    roi_contour->putAndInsertString(DCM_ReferencedROINumber, std::to_string(number).c_str());
    for (const PixelContour& c : contours) {
      if (c.roi != number) continue;
      DcmItem* item = nullptr;
      roi_contour->findOrCreateSequenceItem(DCM_ContourSequence, item, -2);
      DcmItem* image = nullptr;
      item->findOrCreateSequenceItem(DCM_ContourImageSequence, image, -2);
      image->putAndInsertString(DCM_ReferencedSOPInstanceUID, c.image_uid.c_str());
      item->putAndInsertString(DCM_ContourGeometricType, c.type.c_str());
      item->putAndInsertString(DCM_NumberOfContourPoints, std::to_string(c.points.size()).c_str());
      std::vector<std::string> xyz;
      for (const auto& [col, row] : c.points) {
        xyz.push_back(absl::StrCat(col * kSpacing));
        xyz.push_back(absl::StrCat(row * kSpacing));
        xyz.push_back(absl::StrCat(c.z));
      }
      item->putAndInsertString(DCM_ContourData, absl::StrJoin(xyz, "\\").c_str());
    }
  }
  ASSERT_TRUE(file.saveFile(path.c_str(), EXS_LittleEndianExplicit).good());
}

// The slow reference: is the pixel centre (col, row) inside the polygon
// (even-odd, by ray casting), and how far is it from the polygon's edges?
bool Inside(const std::vector<std::pair<double, double>>& poly, double x, double y) {
  bool in = false;
  for (size_t i = 0, j = poly.size() - 1; i < poly.size(); j = i++) {
    const auto [xi, yi] = poly[i];
    const auto [xj, yj] = poly[j];
    if ((yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) in = !in;
  }
  return in;
}
double EdgeDistance(const std::vector<std::pair<double, double>>& poly, double x, double y) {
  double best = 1e9;
  for (size_t i = 0, j = poly.size() - 1; i < poly.size(); j = i++) {
    const auto [ax, ay] = poly[j];
    const auto [bx, by] = poly[i];
    const double dx = bx - ax, dy = by - ay;
    const double t = std::clamp(((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0);
    best = std::min(best, std::hypot(x - (ax + t * dx), y - (ay + t * dy)));
  }
  return best;
}

ImageGeometry Geometry(double z) {
  absl::StatusOr<ImageGeometry> g = ParseGeometry(absl::StrCat("0\\0\\", z), "1\\0\\0\\0\\1\\0", "0.8\\0.8");
  EXPECT_TRUE(g.ok()) << g.status();
  return *g;
}

// A ring (a contour inside another is a hole) fills exactly the pixels
// between the two squares' boundaries.
TEST(RtStructTest, AContourInsideAnotherIsAHole) {
  RtContour outer{1, "2.25.1", {}}, inner{1, "2.25.1", {}};
  for (auto [c, r] : std::vector<std::pair<int, int>>{{8, 8}, {24, 8}, {24, 24}, {8, 24}}) {
    outer.points.push_back({c * kSpacing, r * kSpacing, 5});
  }
  for (auto [c, r] : std::vector<std::pair<int, int>>{{12, 12}, {20, 12}, {20, 20}, {12, 20}}) {
    inner.points.push_back({c * kSpacing, r * kSpacing, 5});
  }
  absl::StatusOr<std::vector<uint8_t>> mask = RasterizeContours({&outer, &inner}, {{1, 1}}, Geometry(5), 32, 32);
  ASSERT_TRUE(mask.ok()) << mask.status();
  for (int r = 0; r < 32; ++r) {
    for (int c = 0; c < 32; ++c) {
      const bool in_outer = c >= 8 && c <= 24 && r >= 8 && r <= 24;
      const bool in_inner = c >= 12 && c <= 20 && r >= 12 && r <= 20;
      EXPECT_EQ((*mask)[r * 32 + c], in_outer && !in_inner ? 1 : 0) << "row " << r << " column " << c;
    }
  }
}

// A contour whose vertices fall between pixel centres: every pixel whose
// centre is inside by more than 0.75 px is filled, every one outside by
// more than that is not (the edges' own pixels may go either way).
TEST(RtStructTest, AnOffGridContourFillsThePixelCentresInsideIt) {
  const std::vector<std::pair<double, double>> triangle{{3.3, 4.7}, {27.6, 9.2}, {11.4, 28.9}};
  RtContour c{1, "2.25.1", {}};
  for (auto [x, y] : triangle) c.points.push_back({x * kSpacing, y * kSpacing, 5.2});  // 0.2 mm off: same slice
  absl::StatusOr<std::vector<uint8_t>> mask = RasterizeContours({&c}, {{1, 2}}, Geometry(5), 32, 32);
  ASSERT_TRUE(mask.ok()) << mask.status();
  int checked = 0;
  for (int r = 0; r < 32; ++r) {
    for (int col = 0; col < 32; ++col) {
      if (EdgeDistance(triangle, col, r) <= 0.75) continue;
      ++checked;
      EXPECT_EQ((*mask)[r * 32 + col], Inside(triangle, col, r) ? 2 : 0) << "row " << r << " column " << col;
    }
  }
  EXPECT_GT(checked, 800);
  // On another slice's plane, the contour is refused.
  c.points[1][2] = 10;
  EXPECT_FALSE(RasterizeContours({&c}, {{1, 2}}, Geometry(5), 32, 32).ok());
  EXPECT_FALSE(ParseGeometry("0\\0", "1\\0\\0\\0\\1\\0", "0.8\\0.8").ok());
  EXPECT_FALSE(ParseGeometry("0\\0\\0", "1\\0\\0\\1\\0\\0", "0.8\\0.8").ok()) << "parallel directions";
}

// Through the data folder: an RTSTRUCT's ROIs become classes by name, its
// contours masks of the images they reference; images its series lists
// without a contour are empty; POINT contours are not areas.
TEST(RtStructTest, TheNodeLoadsMasksFromAStructureSet) {
  ScratchDir dir("rtstruct_test");
  fs::create_directories(dir.path() / "P1");
  std::vector<std::string> uids;
  for (int k = 0; k < 2; ++k) {
    const CtSlice s = testing::BlankCtSlice("2.25.50" + std::to_string(k), k + 1, 32);  // z = 5, 10
    uids.push_back(s.sop_uid);
    ASSERT_TRUE(WriteCtSlice(s, (dir.path() / "P1" / (std::to_string(k) + ".dcm")).string()).ok());
  }
  WriteRtStruct((dir.path() / "P1" / "rtstruct.dcm").string(), {{7, "GTV"}, {9, "Spinal cord"}},
                {{7, uids[0], {{8, 8}, {16, 8}, {16, 16}, {8, 16}}, 5},
                 {7, uids[0], {{10, 10}}, 5, "POINT"},
                 {9, uids[0], {{20, 20}, {24, 20}, {24, 24}}, 5}},
                uids);
  absl::StatusOr<RtStructObject> rt = ReadRtStruct((dir.path() / "P1" / "rtstruct.dcm").string());
  ASSERT_TRUE(rt.ok()) << rt.status();
  EXPECT_EQ(rt->rois, (std::map<int, std::string>{{7, "GTV"}, {9, "Spinal cord"}}));
  EXPECT_EQ(rt->contours.size(), 2u);
  EXPECT_EQ(rt->skipped_contours, 1);
  EXPECT_EQ(rt->referenced_instances, (std::set<std::string>(uids.begin(), uids.end())));

  DatasetSpec spec;
  spec.data_dir = dir.path().string();
  spec.task = ModelTask::kSegmentation;
  spec.class_names = {"background", "GTV"};
  spec.preprocess.output_size = 32;
  LoadReport report;
  absl::StatusOr<ImageSet> set = LoadImageSet(spec, &report);
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_EQ(set->count(), 2);
  EXPECT_EQ(report.masks.label_objects, 1);
  EXPECT_EQ(report.masks.unknown_segments, (std::map<std::string, int>{{"Spinal cord", 1}}));
  for (int64_t i = 0; i < 2; ++i) {
    const auto begin = set->masks.begin() + i * 1024;
    const int64_t lesion = std::count(begin, begin + 1024, 1);
    EXPECT_EQ(lesion, set->sources[i].path == "P1/0.dcm" ? 81 : 0) << set->sources[i].path;  // 9 x 9 pixels
  }
  // A malformed set (three coordinates short) is refused with its reason and costs the rest nothing.
  std::filesystem::copy_file(dir.path() / "P1" / "0.dcm", dir.path() / "P1" / "copy.dcm");
  WriteRtStruct((dir.path() / "bad.dcm").string(), {{1, "GTV"}}, {{1, uids[1], {{1, 1}, {5, 1}, {5, 5}}, 10}}, {});
  DcmFileFormat bad;
  ASSERT_TRUE(bad.loadFile((dir.path() / "bad.dcm").string().c_str()).good());
  DcmItem* roi_contour = nullptr;
  bad.getDataset()->findAndGetSequenceItem(DCM_ROIContourSequence, roi_contour, 0);
  DcmItem* contour = nullptr;
  roi_contour->findAndGetSequenceItem(DCM_ContourSequence, contour, 0);
  contour->putAndInsertString(DCM_NumberOfContourPoints, "4");
  ASSERT_TRUE(bad.saveFile((dir.path() / "bad.dcm").string().c_str(), EXS_LittleEndianExplicit).good());
  absl::StatusOr<RtStructObject> refused = ReadRtStruct((dir.path() / "bad.dcm").string());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("9 coordinates for 4 points"), std::string::npos) << refused.status();
  set = LoadImageSet(spec, &report);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(report.masks.unreadable_label_objects, 1);
  EXPECT_EQ(report.unusable.count("bad.dcm"), 1u);
}

}  // namespace
}  // namespace fedrad::node

namespace fedrad::node {
namespace {

// A structure set read through the label cache (node/label_cache.h) comes
// back from its entry field for field, point for point, its ROI names'
// bytes unchanged (Latin-1 here, which JSON could not carry as text); an
// entry cut short is ignored and rewritten.
TEST(RtStructTest, TheCacheGivesBackTheSameStructureSet) {
  ScratchDir dir("rtstruct_cache_test");
  const std::string path = (dir.path() / "rtstruct.dcm").string(), cache = (dir.path() / "cache").string();
  WriteRtStruct(path, {{3, "L\xe4sion"}, {4, "Cord"}},
                {{3, "2.25.61", {{8.25, 8}, {16, 8.5}, {16, 16}, {8, 16.125}}, 5},
                 {4, "2.25.62", {{1, 1}, {3, 1}, {3, 3}}, 10},
                 {4, "2.25.62", {{2, 2}}, 10, "POINT"}},
                {"2.25.61", "2.25.62", "2.25.63"});
  absl::StatusOr<RtStructObject> direct = ReadRtStruct(path);
  ASSERT_TRUE(direct.ok()) << direct.status();
  auto expect_same = [&](const RtStructObject& got) {
    EXPECT_EQ(got.rois, direct->rois);
    EXPECT_EQ(got.skipped_contours, direct->skipped_contours);
    EXPECT_EQ(got.referenced_instances, direct->referenced_instances);
    ASSERT_EQ(got.contours.size(), direct->contours.size());
    for (size_t i = 0; i < got.contours.size(); ++i) {
      EXPECT_EQ(got.contours[i].roi, direct->contours[i].roi);
      EXPECT_EQ(got.contours[i].image_sop_instance_uid, direct->contours[i].image_sop_instance_uid);
      EXPECT_EQ(got.contours[i].points, direct->contours[i].points);
    }
  };
  for (bool served : {false, true}) {
    bool from_cache = !served;
    absl::StatusOr<RtStructObject> rt = ReadRtStructCached(path, cache, &from_cache);
    ASSERT_TRUE(rt.ok()) << rt.status();
    EXPECT_EQ(from_cache, served);
    expect_same(*rt);
  }
  for (const auto& e : fs::directory_iterator(cache)) fs::resize_file(e.path(), fs::file_size(e.path()) - 8);
  bool from_cache = true;
  absl::StatusOr<RtStructObject> healed = ReadRtStructCached(path, cache, &from_cache);
  ASSERT_TRUE(healed.ok()) << healed.status();
  EXPECT_FALSE(from_cache);
  expect_same(*healed);
  ASSERT_TRUE(ReadRtStructCached(path, cache, &from_cache).ok());
  EXPECT_TRUE(from_cache) << "the cut entry was rewritten";
}

}  // namespace
}  // namespace fedrad::node
