#include "node/inspect.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/files.h"
#include "node/test_dicom.h"

namespace fedrad::node {
namespace {

namespace fs = std::filesystem;

TEST(InspectTest, ReportsCountsPreviewsAndRawExports) {
  const fs::path dir = fs::temp_directory_path() / ("fedrad_inspect_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "data" / "patient-7");
  testing::TestImage single;
  single.bits_stored = 12;
  single.is_signed = false;
  single.patient_id = "SECRET-PATIENT-1";
  ASSERT_TRUE(testing::WriteTestImage(single, (dir / "data/a.dcm").string()));
  testing::TestImage multi = single;
  multi.frames = 3;
  multi.patient_id = "SECRET-PATIENT-2";
  multi.sop_instance_uid = "2.25.77";
  ASSERT_TRUE(testing::WriteTestImage(multi, (dir / "data/patient-7/b.dcm").string()));
  std::ofstream((dir / "data/broken.dcm").string()) << "not dicom";
  std::ofstream((dir / "data/labels.csv").string())
      << "path,label\na.dcm,0\npatient-7/b.dcm,1\nbroken.dcm,1\ngone.dcm,0\n";

  InspectOptions options;
  options.dataset.data_dir = (dir / "data").string();
  options.dataset.labels_csv = (dir / "data/labels.csv").string();
  options.dataset.preprocess.output_size = 16;
  options.preview_dir = (dir / "preview").string();
  options.export_raw_dir = (dir / "raw").string();
  std::ostringstream out;
  ASSERT_TRUE(Inspect(options, out).ok());
  const std::string report = out.str();
  EXPECT_NE(report.find("3 under the folder (not .csv): 2 loaded"), std::string::npos) << report;
  EXPECT_NE(report.find("1 unreadable"), std::string::npos) << report;
  EXPECT_NE(report.find("skipped    1  not a readable DICOM file"), std::string::npos) << report;
  EXPECT_NE(report.find("4 rows in"), std::string::npos) << report;
  EXPECT_NE(report.find("1 name no file"), std::string::npos) << report;
  EXPECT_NE(report.find("patients     2"), std::string::npos) << report;
  EXPECT_NE(report.find("1: 1 patients  3: 1 patients"), std::string::npos) << report;
  EXPECT_NE(report.find("images       4"), std::string::npos) << report;
  EXPECT_NE(report.find("0: 1 (25.0%)  1: 3 (75.0%)"), std::string::npos) << report;
  EXPECT_NE(report.find("CT: 2"), std::string::npos) << report;
  EXPECT_NE(report.find("64x48: 2"), std::string::npos) << report;
  // Counts only: no identifier, and no path of the broken file.
  EXPECT_EQ(report.find("SECRET-PATIENT"), std::string::npos);
  EXPECT_EQ(report.find("2.25.77"), std::string::npos);
  EXPECT_EQ(report.find("broken.dcm"), std::string::npos);

  EXPECT_TRUE(fs::exists(dir / "preview/patient-7__b.dcm.f2.png"));
  int pngs = 0;
  for (const auto& e : fs::directory_iterator(dir / "preview")) pngs += e.path().extension() == ".png";
  EXPECT_EQ(pngs, 4);

  // The .npy holds the decoder's modality values, shape (rows, columns).
  auto npy = ReadFile((dir / "raw/patient-7__b.dcm.f1.npy").string());
  ASSERT_TRUE(npy.ok());
  EXPECT_EQ(npy->substr(0, 6), "\x93NUMPY");
  uint16_t header_len;
  std::memcpy(&header_len, npy->data() + 8, 2);
  const std::string header = npy->substr(10, header_len);
  EXPECT_NE(header.find("'descr': '<f4'"), std::string::npos);
  EXPECT_NE(header.find("'shape': (64, 48)"), std::string::npos);
  EXPECT_EQ((10 + header_len) % 64, 0);
  ASSERT_EQ(npy->size(), 10u + header_len + 64 * 48 * 4);
  float v;
  std::memcpy(&v, npy->data() + 10 + header_len + 5 * 4, 4);
  EXPECT_FLOAT_EQ(v, testing::StoredValue(multi, 5, 1) - 1024.0f);

  std::ostringstream listed;
  options.list_skipped = true;
  options.preview_dir.clear();
  options.export_raw_dir.clear();
  ASSERT_TRUE(Inspect(options, listed).ok());
  EXPECT_NE(listed.str().find("broken.dcm: not a readable DICOM file"), std::string::npos) << listed.str();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fedrad::node
