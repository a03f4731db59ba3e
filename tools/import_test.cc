#include "tools/import.h"

#include <gtest/gtest.h>
#include <zlib.h>
#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fstream>

#include "common/files.h"
#include "common/scratch_dir.h"
#include "node/dicom_reader.h"

namespace fedrad::tools {
namespace {

namespace fs = std::filesystem;

class ImportTest : public ::testing::Test {
 protected:
  ScratchDir scratch_{"import"};
  const fs::path dir_ = scratch_.path();
};

std::string Be32(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                     static_cast<char>(v)};
}

// Three 4x5 images in IDX format, the image file gzip-compressed.
void WriteIdx(const fs::path& dir) {
  std::string images = Be32(0x803) + Be32(3) + Be32(4) + Be32(5);
  for (int i = 0; i < 3 * 20; ++i) images.push_back(static_cast<char>(i * 4));
  gzFile gz = gzopen((dir / "img.idx.gz").c_str(), "wb");
  gzwrite(gz, images.data(), static_cast<unsigned>(images.size()));
  gzclose(gz);
  std::ofstream((dir / "lab.idx").string(), std::ios::binary) << Be32(0x801) + Be32(3) + std::string("\x02\x00\x09", 3);
}

TEST_F(ImportTest, IdxToDicomKeepsPixelsAndLabels) {
  WriteIdx(dir_);
  auto images = ReadIdx((dir_ / "img.idx.gz").string(), (dir_ / "lab.idx").string());
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_EQ(images->count(), 3u);
  EXPECT_EQ(images->rows, 4);
  EXPECT_EQ(images->columns, 5);
  EXPECT_EQ(images->labels, (std::vector<int>{2, 0, 9}));
  ASSERT_TRUE(WriteAsDicom(*images, (dir_ / "out").string(), "seed").ok());
  EXPECT_EQ(*ReadFile((dir_ / "out/labels.csv").string()),
            "path,label\n00000/000000.dcm,2\n00000/000001.dcm,0\n00000/000002.dcm,9\n");
  auto file = node::ReadDicomImage((dir_ / "out/00000/000002.dcm").string());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->patient_id, "IMG000002");
  EXPECT_EQ(file->rows, 4);
  EXPECT_EQ(file->columns, 5);
  for (int i = 0; i < 20; ++i) EXPECT_FLOAT_EQ(file->frames[0].values[i], static_cast<float>((40 + i) * 4 % 256));
  // The same source and seed give byte-identical files.
  ASSERT_TRUE(WriteAsDicom(*images, (dir_ / "again").string(), "seed").ok());
  EXPECT_EQ(*ReadFile((dir_ / "out/00000/000001.dcm").string()), *ReadFile((dir_ / "again/00000/000001.dcm").string()));
  auto limited = ReadIdx((dir_ / "img.idx.gz").string(), (dir_ / "lab.idx").string(), 2);
  EXPECT_EQ(limited->count(), 2u);
}

TEST_F(ImportTest, RejectsInconsistentIdx) {
  WriteIdx(dir_);
  std::ofstream((dir_ / "short.idx").string(), std::ios::binary) << Be32(0x801) + Be32(2) + std::string("\x01\x01", 2);
  auto mismatch = ReadIdx((dir_ / "img.idx.gz").string(), (dir_ / "short.idx").string());
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find("2 labels for 3 images"), std::string::npos);
  auto swapped = ReadIdx((dir_ / "lab.idx").string(), (dir_ / "img.idx.gz").string());
  ASSERT_FALSE(swapped.ok());
  EXPECT_NE(swapped.status().message().find("not an IDX image file"), std::string::npos);
  EXPECT_FALSE(ReadIdx((dir_ / "missing").string(), (dir_ / "lab.idx").string()).ok());
}

TEST_F(ImportTest, PngFoldersBecomeClassesInSortedOrder) {
  for (const char* cls : {"normal", "abnormal"}) {
    fs::create_directories(dir_ / "png" / cls);
    for (int i = 0; i < 2; ++i) {
      cv::Mat img(6, 7, CV_8U, cv::Scalar(std::string(cls) == "normal" ? 10 + i : 200 + i));
      ASSERT_TRUE(cv::imwrite((dir_ / "png" / cls / ("x" + std::to_string(i) + ".png")).string(), img));
    }
  }
  auto images = ReadPngFolders((dir_ / "png").string());
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_EQ(images->class_names, (std::vector<std::string>{"abnormal", "normal"}));
  EXPECT_EQ(images->labels, (std::vector<int>{0, 0, 1, 1}));
  EXPECT_EQ(images->pixels[0], 200);
  ASSERT_TRUE(WriteAsDicom(*images, (dir_ / "out").string(), "png").ok());
  EXPECT_EQ(*ReadFile((dir_ / "out/classes.txt").string()), "abnormal\nnormal\n");
  auto file = node::ReadDicomImage((dir_ / "out/00000/000003.dcm").string());
  ASSERT_TRUE(file.ok());
  EXPECT_FLOAT_EQ(file->frames[0].values[0], 11.0f);
  // A PNG of another size is refused, naming it.
  cv::Mat odd(3, 3, CV_8U, cv::Scalar(0));
  cv::imwrite((dir_ / "png/normal/odd.png").string(), odd);
  auto bad = ReadPngFolders((dir_ / "png").string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("odd.png"), std::string::npos);
}

}  // namespace
}  // namespace fedrad::tools
