#include "node/image_loader.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/scratch_dir.h"
#include "node/dataset.h"
#include "node/test_dicom.h"

namespace fedrad::node {
namespace {

namespace fs = std::filesystem;

class ImageLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir_ / "data" / "sub");
    for (int i = 0; i < 12; ++i) {
      testing::TestImage im;
      im.seed = i;
      im.bits_stored = 12;  // -1024..3071 HU: windows tell images apart
      im.is_signed = false;
      im.patient_id = "P" + std::to_string(i / 3);
      im.sop_instance_uid = "2.25.100" + std::to_string(i);
      const std::string name = (i % 2 ? "sub/" : "") + std::string("img") + std::to_string(i) + ".dcm";
      ASSERT_TRUE(testing::WriteTestImage(im, (dir_ / "data" / name).string()));
      paths_.push_back((dir_ / "data" / name).string());
      names_.push_back(name);
    }
    settings_.output_size = 16;
  }

  std::vector<LoadedImage> LoadAll(const LoaderOptions& options) {
    std::vector<LoadedImage> out(paths_.size());
    ImageLoader loader(paths_, settings_, options);
    size_t n = 0;
    while (std::optional<LoadedImage> im = loader.Next()) {
      out[im->item] = std::move(*im);
      ++n;
    }
    EXPECT_EQ(n, paths_.size());
    return out;
  }

  ScratchDir scratch_{"loader"};
  const fs::path dir_ = scratch_.path();
  std::vector<std::string> paths_, names_;
  PreprocessSettings settings_;
};

TEST_F(ImageLoaderTest, ThreadsAndATinyQueueGiveTheSameResultAsOneThread) {
  std::vector<LoadedImage> one = LoadAll({1, 64, ""});
  std::vector<LoadedImage> many = LoadAll({4, 1, ""});
  for (size_t i = 0; i < paths_.size(); ++i) {
    ASSERT_TRUE(one[i].status.ok()) << one[i].status;
    EXPECT_EQ(one[i].frames[0].pixels, many[i].frames[0].pixels);
    EXPECT_EQ(one[i].facts.sop_instance_uid, many[i].facts.sop_instance_uid);
    EXPECT_EQ(one[i].frames[0].pixels, ImageLoader::Load(paths_[i], settings_).frames[0].pixels);
  }
}

TEST_F(ImageLoaderTest, SecondPassComesFromTheCacheUnchanged) {
  const std::string cache = (dir_ / "cache").string();
  std::vector<LoadedImage> first = LoadAll({2, 8, cache});
  std::vector<LoadedImage> second = LoadAll({2, 8, cache});
  for (size_t i = 0; i < paths_.size(); ++i) {
    EXPECT_FALSE(first[i].from_cache);
    EXPECT_TRUE(second[i].from_cache);
    EXPECT_EQ(first[i].frames[0].pixels, second[i].frames[0].pixels);
    EXPECT_EQ(first[i].facts.patient_id, second[i].facts.patient_id);
    EXPECT_EQ(first[i].facts.transfer_syntax, second[i].facts.transfer_syntax);
  }
  // Another pipeline does not reuse the entries.
  settings_.window = "lung";
  std::vector<LoadedImage> other = LoadAll({2, 8, cache});
  EXPECT_FALSE(other[0].from_cache);
  EXPECT_NE(other[0].frames[0].pixels, first[0].frames[0].pixels);
  // A corrupted entry is ignored and rewritten, never served.
  settings_.window = "explicit";
  for (const auto& e : fs::directory_iterator(cache)) std::ofstream(e.path(), std::ios::trunc) << "garbage";
  std::vector<LoadedImage> healed = LoadAll({2, 8, cache});
  EXPECT_FALSE(healed[0].from_cache);
  EXPECT_EQ(healed[0].frames[0].pixels, first[0].frames[0].pixels);
}

// Segmentation needs where an image lies (RT Structure Sets are rasterised
// with it) and its series (predicted SEG objects are written per series):
// both come from the file, decoded or cached.
TEST_F(ImageLoaderTest, GeometryAndSeriesComeThroughTheCache) {
  const std::string path = (dir_ / "ct.dcm").string();
  ASSERT_TRUE(WriteCtSlice(testing::BlankCtSlice("2.25.555", 2, 32), path).ok());
  const std::string cache = (dir_ / "cache").string();
  for (bool cached : {false, true}) {
    std::optional<LoadedImage> im = ImageLoader({path}, settings_, {1, 8, cache}).Next();
    ASSERT_TRUE(im && im->status.ok());
    EXPECT_EQ(im->from_cache, cached);
    EXPECT_EQ(im->facts.series_instance_uid, "2.25.101");
    EXPECT_EQ(im->facts.pixel_spacing, "0.8\\0.8");
    EXPECT_EQ(im->facts.image_orientation, "1\\0\\0\\0\\1\\0");
    EXPECT_EQ(im->facts.image_position, "0\\0\\10.0");
  }
}

// DICOM strings are bytes in the file's character set (ISO 8859-1 is
// common), not UTF-8: an identifier such as "M\xfcller" goes through the cache
// byte for byte, so the patient key of a later pass is that of the first.
TEST_F(ImageLoaderTest, IdentifiersThatAreNotUtf8GoThroughTheCacheUnchanged) {
  testing::TestImage im;
  im.patient_id = "M\xfcller^J\xf6rg\x01";
  im.sop_instance_uid = "2.25.999";
  const std::string path = (dir_ / "latin1.dcm").string();
  ASSERT_TRUE(testing::WriteTestImage(im, path));
  paths_ = {path};
  const std::string cache = (dir_ / "cache").string();
  std::vector<LoadedImage> first = LoadAll({1, 8, cache});
  std::vector<LoadedImage> second = LoadAll({1, 8, cache});
  ASSERT_TRUE(first[0].status.ok()) << first[0].status;
  EXPECT_EQ(first[0].facts.patient_id, "M\xfcller^J\xf6rg\x01");
  EXPECT_TRUE(second[0].from_cache);
  EXPECT_EQ(second[0].facts.patient_id, first[0].facts.patient_id);
}

TEST_F(ImageLoaderTest, DatasetBySopInstanceUidCountsEveryRowAndFile) {
  // Label 10 of the 12 files by UID, plus one UID that matches nothing.
  std::string csv = "sop_instance_uid,label\n";
  for (int i = 0; i < 10; ++i) csv += "2.25.100" + std::to_string(i) + "," + std::to_string(i % 2) + "\n";
  csv += "2.25.999,1\n";
  std::ofstream((dir_ / "data" / "labels.csv").string()) << csv;
  DatasetSpec spec{(dir_ / "data").string(), (dir_ / "data" / "labels.csv").string(), 2, {}, settings_, {2, 4, ""}};
  LoadReport report;
  auto set = LoadImageSet(spec, &report);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->count(), 10);
  EXPECT_EQ(report.files_seen, 12);
  EXPECT_EQ(report.files_without_row, 2);
  EXPECT_EQ(report.rows_without_file, 1);
  EXPECT_EQ(report.patients, 4);  // P0..P3, three files each, two unlabelled
  EXPECT_EQ(report.labels.at(0), 5);
  EXPECT_EQ(report.modalities.at("CT"), 10);
  EXPECT_EQ(report.sizes.at("64x48"), 10);
  // Samples keep their source file.
  for (int64_t i = 0; i < set->count(); ++i) {
    EXPECT_NE(std::find(names_.begin(), names_.end(), set->sources[i].path), names_.end());
  }
}

}  // namespace
}  // namespace fedrad::node
