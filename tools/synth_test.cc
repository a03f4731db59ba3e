#include "tools/synth.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/files.h"
#include "crypto/sha256.h"
#include "node/dicom_rtstruct.h"
#include "node/dicom_seg.h"
#include "node/test_dicom.h"

namespace fedrad::tools {
namespace {

namespace fs = std::filesystem;

// Hash of every file under `dir`, by relative path.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = *crypto::Sha256File(e.path());
  }
  return out;
}

TEST(SynthTest, SameSeedSameBytesAndEveryImageLabelled) {
  const std::string base = fs::temp_directory_path() / ("fedrad_synth_" + std::to_string(::getpid()));
  SynthOptions o;
  o.sites = 2;
  o.patients_per_site = 3;
  o.images_per_patient = 2;
  o.image_size = 32;
  o.seed = 9;
  o.out_dir = base + "/one";
  ASSERT_TRUE(WriteSyntheticCohort(o).ok());
  o.out_dir = base + "/two";
  ASSERT_TRUE(WriteSyntheticCohort(o).ok());
  o.seed = 10;
  o.out_dir = base + "/three";
  ASSERT_TRUE(WriteSyntheticCohort(o).ok());
  auto one = Snapshot(base + "/one");
  EXPECT_EQ(one, Snapshot(base + "/two"));
  EXPECT_NE(one, Snapshot(base + "/three"));
  // 2 sites x (3 patients x 2 images + labels.csv)
  EXPECT_EQ(one.size(), 14u);
  auto labels = ReadFile(base + "/one/hospital-b/labels.csv");
  ASSERT_TRUE(labels.ok());
  EXPECT_EQ(std::count(labels->begin(), labels->end(), '\n'), 7);
  fs::remove_all(base);
}

// --task segmentation: every patient's series gets a SEG object that
// references each of its slices and reads back with the lesion's frames,
// agreeing with the classification labels of the same seed (a slice shows
// a lesion exactly when it has a non-empty frame); reruns are byte-identical.
TEST(SynthTest, SegmentationWritesGroundTruthSegObjects) {
  const std::string base = fs::temp_directory_path() / ("fedrad_synth_seg_" + std::to_string(::getpid()));
  SynthOptions o;
  o.sites = 1;
  o.patients_per_site = 4;
  o.images_per_patient = 5;
  o.image_size = 32;
  o.out_dir = base + "/classification";
  ASSERT_TRUE(WriteSyntheticCohort(o).ok());
  o.task = "segmentation";
  o.out_dir = base + "/segmentation";
  ASSERT_TRUE(WriteSyntheticCohort(o).ok());
  o.out_dir = base + "/again";
  ASSERT_TRUE(WriteSyntheticCohort(o).ok());
  EXPECT_EQ(Snapshot(base + "/segmentation"), Snapshot(base + "/again"));
  auto labels = ReadFile(base + "/classification/hospital-a/labels.csv");
  ASSERT_TRUE(labels.ok());
  int lesion_frames = 0, referenced = 0;
  for (int p = 1; p <= 4; ++p) {
    const std::string dir = base + "/segmentation/hospital-a/hospital-a-P000" + std::to_string(p);
    absl::StatusOr<node::SegObject> seg = node::ReadSegmentation(dir + "/seg.dcm");
    ASSERT_TRUE(seg.ok()) << seg.status();
    EXPECT_EQ(seg->segments, (std::map<int, std::string>{{1, "lesion"}}));
    referenced += static_cast<int>(seg->referenced_instances.size());
    for (const node::SegFrame& f : seg->frames) {
      lesion_frames += std::count(f.mask.begin(), f.mask.end(), 1) > 0;
    }
  }
  EXPECT_EQ(referenced, 4 * 5);
  int positives = 0;
  for (size_t i = labels->find(",1\n"); i != std::string::npos; i = labels->find(",1\n", i + 1)) ++positives;
  EXPECT_GT(positives, 0);
  EXPECT_EQ(lesion_frames, positives);
  EXPECT_FALSE(fs::exists(base + "/segmentation/hospital-a/labels.csv"));
  fs::remove_all(base);
}

// --rtstruct: the same ground truth as an RT Structure Set that dciodvfy
// passes; rasterised on each slice it matches the SEG's disc (the 36-gon
// inside the disc's pixels: their Dice passes 0.8 on every lesion slice,
// the edge pixels of discs only 2 to 6 pixels in radius being the difference).
TEST(SynthTest, RtStructHoldsTheSameLesions) {
  const std::string base = fs::temp_directory_path() / ("fedrad_synth_rt_" + std::to_string(::getpid()));
  SynthOptions o;
  o.sites = 1;
  o.patients_per_site = 3;
  o.images_per_patient = 4;
  o.image_size = 64;
  o.task = "segmentation";
  o.rtstruct = true;
  o.out_dir = base;
  ASSERT_TRUE(WriteSyntheticCohort(o).ok());
  int compared = 0;
  for (int p = 1; p <= 3; ++p) {
    const std::string dir = base + "/hospital-a/hospital-a-P000" + std::to_string(p);
    const node::testing::Dciodvfy check = node::testing::RunDciodvfy(dir + "/rtstruct.dcm");
    EXPECT_EQ(check.iod, "RTStructureSet") << check.output;
    EXPECT_TRUE(check.errors.empty()) << check.output;
    absl::StatusOr<node::RtStructObject> rt = node::ReadRtStruct(dir + "/rtstruct.dcm");
    ASSERT_TRUE(rt.ok()) << rt.status();
    absl::StatusOr<node::SegObject> seg = node::ReadSegmentation(dir + "/seg.dcm");
    ASSERT_TRUE(seg.ok()) << seg.status();
    EXPECT_EQ(rt->referenced_instances, seg->referenced_instances);
    const absl::StatusOr<node::ImageGeometry> g = node::ParseGeometry("0\\0\\0", "1\\0\\0\\0\\1\\0", "0.8\\0.8");
    ASSERT_TRUE(g.ok());
    for (const node::SegFrame& f : seg->frames) {
      if (std::count(f.mask.begin(), f.mask.end(), 1) == 0) continue;
      std::vector<const node::RtContour*> on_slice;
      for (const node::RtContour& c : rt->contours) {
        if (c.image_sop_instance_uid == f.source_sop_instance_uid) on_slice.push_back(&c);
      }
      ASSERT_EQ(on_slice.size(), 1u);
      node::ImageGeometry at = *g;
      at.position[2] = on_slice[0]->points[0][2];  // the slice's own plane
      absl::StatusOr<std::vector<uint8_t>> mask = node::RasterizeContours(on_slice, {{1, 1}}, at, 64, 64);
      ASSERT_TRUE(mask.ok()) << mask.status();
      int both = 0, a = 0, b = 0;
      for (size_t i = 0; i < mask->size(); ++i) {
        both += (*mask)[i] && f.mask[i];
        a += (*mask)[i] != 0;
        b += f.mask[i] != 0;
      }
      EXPECT_GT(2.0 * both / (a + b), 0.8) << f.source_sop_instance_uid;  // discs of 2 to 6 px radius
      ++compared;
    }
  }
  EXPECT_GT(compared, 0);
  fs::remove_all(base);
}

TEST(SynthTest, SiteNames) {
  EXPECT_EQ(DefaultSiteName(0), "hospital-a");
  EXPECT_EQ(DefaultSiteName(25), "hospital-z");
  EXPECT_EQ(DefaultSiteName(26), "hospital-aa");
}

}  // namespace
}  // namespace fedrad::tools
