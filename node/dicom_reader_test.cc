#include "node/dicom_reader.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/scratch_dir.h"
#include "node/image_loader.h"

namespace fedrad::node {
namespace {

namespace fs = std::filesystem;

class DicomReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {}

  // A 3x4 CT slice with stored values 0..11 and the given rescale.
  std::string WriteCt(const std::string& name, const char* slope, const char* intercept, bool with_pixels = true) {
    DcmFileFormat file;
    DcmDataset* ds = file.getDataset();
    ds->putAndInsertString(DCM_SOPClassUID, UID_CTImageStorage);
    ds->putAndInsertString(DCM_SOPInstanceUID, "2.25.1234");
    ds->putAndInsertString(DCM_PatientID, "P1");
    ds->putAndInsertString(DCM_Modality, "CT");
    ds->putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
    ds->putAndInsertString(DCM_RescaleSlope, slope);
    ds->putAndInsertString(DCM_RescaleIntercept, intercept);
    ds->putAndInsertString(DCM_WindowCenter, "40");
    ds->putAndInsertString(DCM_WindowWidth, "400");
    ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
    ds->putAndInsertUint16(DCM_Rows, 3);
    ds->putAndInsertUint16(DCM_Columns, 4);
    ds->putAndInsertUint16(DCM_BitsAllocated, 16);
    ds->putAndInsertUint16(DCM_BitsStored, 16);
    ds->putAndInsertUint16(DCM_HighBit, 15);
    ds->putAndInsertUint16(DCM_PixelRepresentation, 1);
    if (with_pixels) {
      Uint16 px[12];
      for (int i = 0; i < 12; ++i) px[i] = static_cast<Uint16>(i * 100);
      ds->putAndInsertUint16Array(DCM_PixelData, px, 12);
    }
    std::string path = (dir_ / name).string();
    EXPECT_TRUE(file.saveFile(path.c_str(), EXS_LittleEndianExplicit).good());
    return path;
  }
  ScratchDir scratch_{"dicom"};
  const std::filesystem::path dir_ = scratch_.path();
};

TEST_F(DicomReaderTest, AppliesRescaleExactlyIncludingNonIntegerSlopes) {
  auto f = ReadDicomImage(WriteCt("a.dcm", "1", "-1024"));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->patient_id, "P1");
  EXPECT_EQ(f->modality, "CT");
  ASSERT_EQ(f->frames.size(), 1u);
  ASSERT_EQ(f->frames[0].rows, 3);
  ASSERT_EQ(f->frames[0].columns, 4);
  for (int i = 0; i < 12; ++i) EXPECT_FLOAT_EQ(f->frames[0].values[i], i * 100 - 1024.0f);
  EXPECT_DOUBLE_EQ(*f->window_center, 40);

  auto g = ReadDicomImage(WriteCt("b.dcm", "0.25", "-10.5"));
  ASSERT_TRUE(g.ok()) << g.status();
  for (int i = 0; i < 12; ++i) EXPECT_FLOAT_EQ(g->frames[0].values[i], i * 100 * 0.25f - 10.5f);
}

TEST_F(DicomReaderTest, NamesWhatIsWrong) {
  auto none = ReadDicomImage(WriteCt("c.dcm", "1", "0", /*with_pixels=*/false));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(none.status().message().find("no image"), std::string::npos);

  std::string junk = (dir_ / "junk.dcm").string();
  std::ofstream(junk) << "this is not DICOM at all, just text";
  auto bad = ReadDicomImage(junk);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(junk), std::string::npos);

  std::string empty = (dir_ / "empty.dcm").string();
  std::ofstream(empty).close();
  EXPECT_FALSE(ReadDicomImage(empty).ok());
  EXPECT_FALSE(ReadDicomImage((dir_ / "missing.dcm").string()).ok());
}

// A file larger than any image the reader accepts could be (a 2 GB file in
// the image folder once cost 85 s and 2.3 GB of memory before being called
// "no image") is refused from its size: sparse here, so the test writes no
// data. Through the loader with a cache, whose key hashes the file, too.
TEST_F(DicomReaderTest, RefusesAFileLargerThanAnyImageFromItsSize) {
  const DicomReadOptions options;
  EXPECT_EQ(MaxDicomFileBytes(options), (uint64_t{64} << 20) * 8 + (uint64_t{64} << 20));
  const std::string big = (dir_ / "big.dcm").string();
  std::ofstream(big).close();
  fs::resize_file(big, MaxDicomFileBytes(options) + 1);
  auto refused = ReadDicomImage(big);
  ASSERT_FALSE(refused.ok());
  ASSERT_TRUE(DicomErrorOf(refused.status()));
  EXPECT_EQ(DicomErrorOf(refused.status())->problem, DicomProblem::kMalformed);
  EXPECT_NE(refused.status().message().find(absl::StrCat("'", big, "': file of ", MaxDicomFileBytes(options) + 1,
                                                         " bytes is larger than any image the node reads")),
            std::string::npos)
      << refused.status();

  PreprocessSettings settings;
  settings.output_size = 8;
  LoaderOptions cached;
  cached.cache_dir = (dir_ / "cache").string();
  ImageLoader loader({big}, settings, cached);
  std::optional<LoadedImage> image = loader.Next();
  ASSERT_TRUE(image);
  EXPECT_NE(image->status.message().find("is larger than any image the node reads"), std::string::npos)
      << image->status;
  EXPECT_TRUE(fs::is_empty(cached.cache_dir));
}

}  // namespace
}  // namespace fedrad::node
