// Segmentation data: masks from DICOM SEG objects, through the images' own
// geometry, with every mismatch counted.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/scratch_dir.h"
#include "node/dataset.h"
#include "node/dicom_seg.h"
#include "node/inspect.h"
#include "node/preprocess.h"
#include "node/synthetic_ct.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

namespace fedrad::node {
namespace {

namespace fs = std::filesystem;

CtSlice Slice(const std::string& patient, int k, int size) {
  CtSlice s;
  s.size = size;
  s.hu.assign(static_cast<size_t>(size) * size, -1000.0f);
  s.patient_id = patient;
  s.study_uid = "2.25.1" + std::to_string(patient.size());
  s.series_uid = "2.25.2" + patient.substr(1);
  s.frame_of_reference_uid = "2.25.3" + patient.substr(1);
  s.sop_uid = "2.25.4" + patient.substr(1) + "0" + std::to_string(k);
  s.instance = k + 1;
  return s;
}

class SegmentationDataTest : public ::testing::Test {
 protected:
  // Patient P1: two 32x32 slices, a SEG with a 4x4 lesion square on slice 0
  // and nothing on slice 1. Patient P2: one slice nobody segmented.
  void SetUp() override {
    fs::create_directories(dir_.path() / "P1");
    fs::create_directories(dir_.path() / "P2");
    for (int k = 0; k < 2; ++k) {
      ASSERT_TRUE(WriteCtSlice(Slice("P1", k, 32), (dir_.path() / "P1" / (std::to_string(k) + ".dcm")).string()).ok());
    }
    ASSERT_TRUE(WriteCtSlice(Slice("P2", 0, 32), (dir_.path() / "P2" / "0.dcm").string()).ok());
    WriteLesion(8, 20, 4);
  }
  // P1/seg.dcm: a side x side lesion square at (row, column) on P1's slice 0.
  void WriteLesion(int row, int column, int side) {
    SegWrite w;
    w.source_paths = {(dir_.path() / "P1" / "0.dcm").string(), (dir_.path() / "P1" / "1.dcm").string()};
    w.segment_labels = {"lesion"};
    w.sop_instance_uid = "2.25.900";
    w.series_instance_uid = "2.25.901";
    SegFrame f{Slice("P1", 0, 32).sop_uid, 0, 1, std::vector<uint8_t>(32 * 32, 0)};
    for (int y = row; y < row + side; ++y) {
      for (int x = column; x < column + side; ++x) f.mask[y * 32 + x] = 1;
    }
    w.frames = {f};
    lesion_ = f.mask;
    ASSERT_TRUE(WriteSegmentation(w, (dir_.path() / "P1" / "seg.dcm").string()).ok());
  }
  DatasetSpec Spec() const {
    DatasetSpec spec;
    spec.data_dir = dir_.path().string();
    spec.task = ModelTask::kSegmentation;
    spec.preprocess.output_size = 16;  // half size: the masks follow by nearest neighbour
    return spec;
  }
  ScratchDir dir_{"segmentation_data_test"};
  std::vector<uint8_t> lesion_;
};

TEST_F(SegmentationDataTest, MasksComeFromSegObjectsThroughTheImageGeometry) {
  LoadReport report;
  absl::StatusOr<ImageSet> set = LoadImageSet(Spec(), &report);
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_EQ(set->count(), 2);
  ASSERT_EQ(set->masks.size(), 2u * 16 * 16);
  EXPECT_EQ(report.masks.label_objects, 1);
  EXPECT_EQ(report.masks.images_without_mask, 1);  // P2's slice
  EXPECT_EQ(report.masks.images_with_foreground, 1);
  EXPECT_EQ(report.no_image, 0) << "the SEG object is a label, not an image without pixels";
  const std::vector<uint8_t> expected = PreprocessMask(lesion_, 32, 32, Spec().preprocess);
  EXPECT_EQ(std::count(expected.begin(), expected.end(), 1), 4);  // 4x4 at half size
  for (int64_t i = 0; i < set->count(); ++i) {
    const std::vector<uint8_t> mask(set->masks.begin() + i * 256, set->masks.begin() + (i + 1) * 256);
    if (set->sources[i].path == "P1/0.dcm") {
      EXPECT_EQ(mask, expected);
      EXPECT_EQ(set->labels[i], 1);
    } else {
      EXPECT_EQ(set->sources[i].path, "P1/1.dcm");
      EXPECT_EQ(std::count(mask.begin(), mask.end(), 0), 256) << "referenced without a frame: no lesion";
      EXPECT_EQ(set->labels[i], 0);
    }
  }
  // inspect says what the masks came from, and what found none.
  InspectOptions inspect;
  inspect.dataset = Spec();
  std::ostringstream text;
  ASSERT_TRUE(Inspect(inspect, text).ok());
  EXPECT_NE(text.str().find("masks        1 label object(s) read"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("1 image(s) no label object references"), std::string::npos) << text.str();
  // A patient split keeps each image's mask with it.
  PatientSplit split = SplitByPatient(*set, 0.5, 1);
  EXPECT_EQ(split.train.masks.size() + split.validation.masks.size(), set->masks.size());
}

// With the node's cache, the second load takes the SEG from its entry (no
// DCMTK parse) and gets the same masks; the entry is the file's content, so
// an edited SEG is read again, never served stale.
TEST_F(SegmentationDataTest, ASecondLoadTakesTheLabelObjectsFromTheCache) {
  DatasetSpec spec = Spec();
  spec.loader.cache_dir = (dir_.path() / "cache").string();
  std::vector<uint8_t> first;
  for (int pass = 0; pass < 2; ++pass) {
    LoadReport report;
    absl::StatusOr<ImageSet> set = LoadImageSet(spec, &report);
    ASSERT_TRUE(set.ok()) << set.status();
    EXPECT_EQ(report.masks.label_objects, 1);
    EXPECT_EQ(report.masks.label_objects_from_cache, pass);
    EXPECT_EQ(report.from_cache, 2 * pass) << "P1's slices come from their own entries";
    if (pass == 0) first = set->masks;
    EXPECT_EQ(set->masks, first);
    EXPECT_EQ(std::count(set->masks.begin(), set->masks.end(), 1), 4);
  }
  // The lesion grows to 8x8: a new file, a new entry.
  WriteLesion(8, 16, 8);
  ASSERT_FALSE(HasFatalFailure());
  LoadReport report;
  absl::StatusOr<ImageSet> set = LoadImageSet(spec, &report);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(report.masks.label_objects_from_cache, 0);
  EXPECT_EQ(std::count(set->masks.begin(), set->masks.end(), 1), 16);
}

// Unknown segment names, references to absent images, masks of the wrong
// size and unreadable SEG files are each counted; the folder still loads.
TEST_F(SegmentationDataTest, EveryMismatchIsCountedAndTheRestLoads) {
  // A second SEG on P2 at a different size (a 16x16 source), naming a
  // segment the classes do not have.
  fs::create_directories(dir_.path() / "other");
  const std::string small = (dir_.path() / "other" / "small.dcm").string();
  ASSERT_TRUE(WriteCtSlice(Slice("P3", 0, 16), small).ok());
  SegWrite w;
  w.source_paths = {small};
  w.segment_labels = {"lesion", "vessel"};
  w.sop_instance_uid = "2.25.910";
  w.series_instance_uid = "2.25.911";
  w.frames = {SegFrame{Slice("P3", 0, 16).sop_uid, 0, 2, std::vector<uint8_t>(256, 1)}};
  const absl::Status written = WriteSegmentation(w, (dir_.path() / "other" / "seg.dcm").string());
  ASSERT_TRUE(written.ok()) << written;
  fs::remove(small);  // the SEG now references an image that is not there
  // A truncated SEG.
  std::ifstream in((dir_.path() / "P1" / "seg.dcm").string(), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream((dir_.path() / "other" / "broken.dcm").string(), std::ios::binary)
      << bytes.substr(0, bytes.size() - 40);
  DatasetSpec spec = Spec();
  spec.class_names = {"background", "lesion"};
  LoadReport report;
  absl::StatusOr<ImageSet> set = LoadImageSet(spec, &report);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->count(), 2);  // P1's slices, as before
  EXPECT_EQ(report.masks.label_objects, 2);
  EXPECT_EQ(report.masks.unreadable_label_objects, 1);
  EXPECT_EQ(report.masks.unknown_segments, (std::map<std::string, int>{{"vessel", 1}}));
  EXPECT_EQ(report.masks.references_without_image, 1);
  EXPECT_EQ(report.unusable.count("other/broken.dcm"), 1u);
}

TEST(PreprocessMaskTest, PadAndCropMoveMasksAsTheyMoveImages) {
  // A 4x8 mask (rows x columns) with column 7 set, into an 8x8 input.
  std::vector<uint8_t> mask(4 * 8, 0);
  for (int y = 0; y < 4; ++y) mask[y * 8 + 7] = 2;
  PreprocessSettings s;
  s.output_size = 8;
  s.resize = "pad";  // centred: rows 2..5
  std::vector<uint8_t> padded = PreprocessMask(mask, 4, 8, s);
  for (int y = 0; y < 8; ++y) EXPECT_EQ(padded[y * 8 + 7], (y >= 2 && y < 6) ? 2 : 0) << y;
  s.resize = "crop";  // scaled to 8x16, the centre columns 4..11 kept: column 7 (now 14, 15) is cut
  std::vector<uint8_t> cropped = PreprocessMask(mask, 4, 8, s);
  EXPECT_EQ(std::count(cropped.begin(), cropped.end(), 2), 0);
  s.output_size = 16;
  s.resize = "pad";  // doubled: columns 14, 15 of rows 4..11
  std::vector<uint8_t> doubled = PreprocessMask(mask, 4, 8, s);
  EXPECT_EQ(std::count(doubled.begin(), doubled.end(), 2), 2 * 8);
  EXPECT_EQ(doubled[4 * 16 + 14], 2);
  EXPECT_EQ(doubled[11 * 16 + 15], 2);
}

}  // namespace
}  // namespace fedrad::node

namespace fedrad::node {
namespace {

// labels.csv "path,mask,patient": PNG masks (0/255) by path, the patient
// column as the privacy unit; an unlisted image, a mask of the wrong size and
// a mask with a class beyond the model's are each counted.
TEST(MaskTableTest, PngMasksByPathWithTheSitesPseudonyms) {
  ScratchDir dir("mask_table_test");
  const std::string root = dir.path().string();
  for (int k = 0; k < 4; ++k) {
    ASSERT_TRUE(WriteCtSlice(Slice("P1", k, 32), root + "/" + std::to_string(k) + ".dcm").ok());
  }
  cv::Mat square = cv::Mat::zeros(32, 32, CV_8U);
  square(cv::Rect(4, 6, 8, 8)).setTo(255);
  ASSERT_TRUE(cv::imwrite(root + "/0.png", square));
  ASSERT_TRUE(cv::imwrite(root + "/1.png", cv::Mat::zeros(16, 16, CV_8U)));  // wrong size
  cv::Mat classes = cv::Mat::zeros(32, 32, CV_8U);
  classes.at<uint8_t>(3, 3) = 7;  // class 7 of a 2-class model
  ASSERT_TRUE(cv::imwrite(root + "/2.png", classes));
  std::ofstream(root + "/labels.csv")
      << "path,mask,patient\n0.dcm,0.png,anon-1\n1.dcm,1.png,anon-1\n2.dcm,2.png,anon-2\n";
  DatasetSpec spec;
  spec.data_dir = root;
  spec.labels_csv = root + "/labels.csv";
  spec.task = ModelTask::kSegmentation;
  spec.preprocess.output_size = 32;
  LoadReport report;
  absl::StatusOr<ImageSet> set = LoadImageSet(spec, &report);
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_EQ(set->count(), 1);
  EXPECT_EQ(set->sources[0].path, "0.dcm");
  EXPECT_EQ(set->patients[0], "anon-1");
  EXPECT_EQ(std::count(set->masks.begin(), set->masks.end(), 1), 64);
  EXPECT_EQ(set->masks[7 * 32 + 5], 1);
  EXPECT_EQ(report.masks.images_without_mask, 1);  // 3.dcm
  EXPECT_EQ(report.masks.geometry_mismatch, 2);    // 1.png's size, 2.png's class
  EXPECT_NE(report.unusable.at("1.dcm").find("16 x 16"), std::string::npos) << report.unusable.at("1.dcm");
  EXPECT_NE(report.unusable.at("2.dcm").find("class 7"), std::string::npos) << report.unusable.at("2.dcm");
  EXPECT_EQ(report.skipped.size(), 0u) << "the PNGs are masks, not images that failed to load";
  // A malformed table is an error naming file and line.
  std::ofstream(root + "/labels.csv") << "path,mask\n0.dcm,../outside.png\n";
  absl::StatusOr<ImageSet> refused = LoadImageSet(spec, &report);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("labels.csv:2"), std::string::npos) << refused.status();
}

}  // namespace
}  // namespace fedrad::node
