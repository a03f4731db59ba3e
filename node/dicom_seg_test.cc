#include "node/dicom_seg.h"

#include <gtest/gtest.h>

#include <fstream>

#include "common/scratch_dir.h"
#include "node/synthetic_ct.h"
#include "node/test_dicom.h"

namespace fedrad::node {
namespace {

class DicomSegTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int k = 0; k < 3; ++k) {
      const CtSlice s = testing::BlankCtSlice("2.25.200" + std::to_string(k), k + 1, 32);
      const std::string path = dir_.path().string() + "/" + std::to_string(k) + ".dcm";
      ASSERT_TRUE(WriteCtSlice(s, path).ok());
      sources_.push_back(path);
    }
  }
  // A lesion square on slice 1 (segment 1) and another on slice 2 (segment 2).
  SegWrite Request() const {
    SegWrite w;
    w.source_paths = sources_;
    w.segment_labels = {"lesion", "cyst"};
    w.sop_instance_uid = "2.25.300";
    w.series_instance_uid = "2.25.301";
    SegFrame a{"2.25.2001", 0, 1, std::vector<uint8_t>(32 * 32, 0)};
    for (int y = 4; y < 12; ++y) {
      for (int x = 10; x < 20; ++x) a.mask[y * 32 + x] = 1;
    }
    SegFrame b{"2.25.2002", 0, 2, std::vector<uint8_t>(32 * 32, 0)};
    b.mask[31 * 32 + 31] = 1;  // one corner pixel
    w.frames = {a, b};
    return w;
  }
  ScratchDir dir_{"dicom_seg_test"};
  std::vector<std::string> sources_;
};

TEST_F(DicomSegTest, SyntheticCtPassesDciodvfy) {
  const testing::Dciodvfy check = testing::RunDciodvfy(sources_[0]);
  EXPECT_EQ(check.iod, "CTImage") << check.output;
  EXPECT_TRUE(check.errors.empty()) << check.output;
}

// What fedrad writes is a valid SEG (dciodvfy: no error), and reads back
// through dcmseg to the same masks, segments and references.
TEST_F(DicomSegTest, WrittenSegIsValidAndReadsBackToTheSameMasks) {
  const SegWrite w = Request();
  const std::string path = dir_.path().string() + "/seg.dcm";
  const absl::Status written = WriteSegmentation(w, path);
  ASSERT_TRUE(written.ok()) << written;
  const testing::Dciodvfy check = testing::RunDciodvfy(path);
  EXPECT_EQ(check.iod, "Segmentation") << check.output;
  EXPECT_TRUE(check.errors.empty()) << check.output;
  absl::StatusOr<SegObject> seg = ReadSegmentation(path);
  ASSERT_TRUE(seg.ok()) << seg.status();
  EXPECT_EQ(seg->rows, 32);
  EXPECT_EQ(seg->columns, 32);
  EXPECT_FALSE(seg->fractional);
  EXPECT_EQ(seg->segments, (std::map<int, std::string>{{1, "lesion"}, {2, "cyst"}}));
  EXPECT_EQ(seg->referenced_instances, (std::set<std::string>{"2.25.2000", "2.25.2001", "2.25.2002"}));
  ASSERT_EQ(seg->frames.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(seg->frames[i].source_sop_instance_uid, w.frames[i].source_sop_instance_uid);
    EXPECT_EQ(seg->frames[i].segment, w.frames[i].segment);
    EXPECT_EQ(seg->frames[i].mask, w.frames[i].mask) << "frame " << i;
  }
}

TEST_F(DicomSegTest, NotASegIsRefusedWithTheFileNamed) {
  absl::StatusOr<SegObject> seg = ReadSegmentation(sources_[0]);
  ASSERT_FALSE(seg.ok());
  EXPECT_NE(seg.status().message().find(sources_[0]), std::string::npos) << seg.status();
  EXPECT_NE(seg.status().message().find("not a DICOM Segmentation"), std::string::npos) << seg.status();
  std::ofstream(dir_.path().string() + "/junk.dcm") << "not dicom at all";
  EXPECT_FALSE(ReadSegmentation(dir_.path().string() + "/junk.dcm").ok());
}

}  // namespace
}  // namespace fedrad::node
