#include "tools/import.h"

#include <gtest/gtest.h>
#include <zlib.h>
#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fstream>
#include <functional>

#include <opencv2/imgproc.hpp>

#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/scratch_dir.h"
#include "node/dataset.h"
#include "node/dicom_reader.h"
#include "node/test_dicom.h"

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

// A public segmentation set as it is shipped: images of several sizes (PNG
// and JPEG), masks as 0/255 PNGs named after them, one of them with equal
// colour channels. Imported, the node loads every image with its own mask,
// class indices in place; the Secondary Captures pass dciodvfy.
TEST_F(ImportTest, SegmentationImagesAndMasksBecomeAMaskTableTheNodeLoads) {
  fs::create_directories(dir_ / "images");
  fs::create_directories(dir_ / "masks");
  std::vector<cv::Mat> truth;  // class indices per image, in import order
  for (int i = 0; i < 3; ++i) {
    const int rows = 16 + 8 * i, cols = 32;
    cv::Mat image(rows, cols, CV_8U, cv::Scalar(40)), mask(rows, cols, CV_8U, cv::Scalar(0));
    cv::circle(mask, {8 + i, 8}, 3 + i, cv::Scalar(255), cv::FILLED);
    image.setTo(200, mask);
    const std::string stem = "case" + std::to_string(i);
    ASSERT_TRUE(cv::imwrite((dir_ / "images" / (stem + (i == 1 ? ".jpg" : ".png"))).string(), image));
    if (i == 2) {
      cv::Mat colour;
      cv::cvtColor(mask, colour, cv::COLOR_GRAY2BGR);
      ASSERT_TRUE(cv::imwrite((dir_ / "masks" / (stem + ".png")).string(), colour));
    } else {
      ASSERT_TRUE(cv::imwrite((dir_ / "masks" / (stem + ".png")).string(), mask));
    }
    truth.push_back(mask / 255);
  }
  const std::string out = (dir_ / "out").string();
  absl::StatusOr<SegmentationImport> imported =
      ImportSegmentation((dir_ / "images").string(), (dir_ / "masks").string(), out, "seg");
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->images, 3);
  EXPECT_EQ(imported->with_foreground, 3);
  EXPECT_EQ(imported->classes, 2);
  EXPECT_EQ(*ReadFile(out + "/labels.csv"),
            "path,mask\n00000/000000.dcm,00000/000000.mask.png\n00000/000001.dcm,00000/000001.mask.png\n"
            "00000/000002.dcm,00000/000002.mask.png\n");
  for (int i = 0; i < 3; ++i) {
    const std::string sc = absl::StrFormat("%s/00000/%06d.dcm", out, i);
    const node::testing::Dciodvfy check = node::testing::RunDciodvfy(sc);
    EXPECT_EQ(check.iod, "SCImage") << check.output;
    EXPECT_TRUE(check.errors.empty()) << check.output;
    // The mask beside it holds class indices (255 became 1).
    const cv::Mat written = cv::imread(absl::StrFormat("%s/00000/%06d.mask.png", out, i), cv::IMREAD_UNCHANGED);
    ASSERT_EQ(written.size(), truth[i].size());
    EXPECT_EQ(cv::countNonZero(written != truth[i]), 0) << i;
  }
  // The node reads the table; at the images' width (padded, not scaled)
  // each mask lands where its image does.
  node::DatasetSpec spec;
  spec.data_dir = out;
  spec.labels_csv = out + "/labels.csv";
  spec.task = ModelTask::kSegmentation;
  spec.preprocess.output_size = 32;
  spec.preprocess.window = "explicit";
  spec.preprocess.window_center = 128;
  spec.preprocess.window_width = 256;
  node::LoadReport report;
  absl::StatusOr<node::ImageSet> set = node::LoadImageSet(spec, &report);
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_EQ(set->count(), 3u);
  EXPECT_EQ(report.masks.images_without_mask, 0);
  for (size_t k = 0; k < set->count(); ++k) {
    const int i = std::stoi(set->sources[k].path.substr(6, 6));
    const size_t foreground = std::count(set->masks.begin() + k * 32 * 32, set->masks.begin() + (k + 1) * 32 * 32, 1);
    EXPECT_EQ(foreground, static_cast<size_t>(cv::countNonZero(truth[i]))) << set->sources[k].path;
  }
}

TEST_F(ImportTest, SegmentationRefusesMasksItCannotTrustAndWritesNothing) {
  struct Case {
    const char* what;
    std::function<void(const fs::path& images, const fs::path& masks)> make;
    const char* error;  // part of the message, with the file named
  };
  const cv::Mat image(8, 8, CV_8U, cv::Scalar(50));
  const std::vector<Case> cases = {
      {"no mask", [&](const fs::path& i, const fs::path&) { cv::imwrite((i / "a.png").string(), image); },
       "has no mask"},
      {"another size",
       [&](const fs::path& i, const fs::path& m) {
         cv::imwrite((i / "a.png").string(), image);
         cv::imwrite((m / "a.png").string(), cv::Mat(8, 9, CV_8U, cv::Scalar(0)));
       },
       "is 8x9; its image"},
      {"grey levels",
       [&](const fs::path& i, const fs::path& m) {
         cv::imwrite((i / "a.png").string(), image);
         cv::Mat mask(8, 8, CV_8U, cv::Scalar(0));
         mask.at<uint8_t>(0, 0) = 255;
         mask.at<uint8_t>(0, 1) = 128;  // an anti-aliased edge
         cv::imwrite((m / "a.png").string(), mask);
       },
       "neither 0/255 nor class indices"},
      {"colours",
       [&](const fs::path& i, const fs::path& m) {
         cv::imwrite((i / "a.png").string(), image);
         cv::imwrite((m / "a.png").string(), cv::Mat(8, 8, CV_8UC3, cv::Scalar(0, 0, 255)));
       },
       "colour channels differ"},
      {"16-bit",
       [&](const fs::path& i, const fs::path& m) {
         cv::imwrite((i / "a.png").string(), image);
         cv::imwrite((m / "a.png").string(), cv::Mat(8, 8, CV_16U, cv::Scalar(1)));
       },
       "not 8-bit"},
      {"not an image",
       [&](const fs::path& i, const fs::path& m) {
         cv::imwrite((i / "a.png").string(), image);
         std::ofstream((m / "a.png").string()) << "not a png";
       },
       "not a readable PNG"},
  };
  for (size_t k = 0; k < cases.size(); ++k) {
    const fs::path base = dir_ / ("case" + std::to_string(k));
    fs::create_directories(base / "images");
    fs::create_directories(base / "masks");
    // A good pair first: the bad one must stop the import before it is written.
    cv::Mat good(8, 8, CV_8U, cv::Scalar(0));
    cv::imwrite((base / "images/0.png").string(), image);
    cv::imwrite((base / "masks/0.png").string(), good);
    cases[k].make(base / "images", base / "masks");
    absl::StatusOr<SegmentationImport> r =
        ImportSegmentation((base / "images").string(), (base / "masks").string(), (base / "out").string(), "x");
    ASSERT_FALSE(r.ok()) << cases[k].what;
    EXPECT_NE(r.status().message().find(cases[k].error), std::string::npos) << cases[k].what << ": " << r.status();
    EXPECT_NE(r.status().message().find("a.png"), std::string::npos) << cases[k].what << ": " << r.status();
    EXPECT_FALSE(fs::exists(base / "out")) << cases[k].what;
  }
}

}  // namespace
}  // namespace fedrad::tools
