#include "node/heatmap.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "node/dicom_reader.h"
#include "node/test_dicom.h"

namespace fedrad::node {
namespace {

namespace fs = std::filesystem;

// A 40-row x 20-column frame, 0 but for a bright block at rows 20-27,
// columns 8-11.
ModalityFrame BlockFrame() {
  ModalityFrame f;
  f.rows = 40;
  f.columns = 20;
  f.values.assign(800, -1000.0f);
  for (int y = 20; y < 28; ++y) {
    for (int x = 8; x < 12; ++x) f.values[y * 20 + x] = 1000.0f;
  }
  return f;
}

TEST(HeatmapTest, PlaceInputSaysWherePreprocessingPutTheFrame) {
  PreprocessSettings s;
  s.output_size = 20;
  for (const char* resize : {"pad", "crop"}) {
    s.resize = resize;
    const InputPlacement p = PlaceInput(40, 20, s);
    const std::vector<float> in = PreprocessFrame(BlockFrame(), DicomImageFile{}, s);
    // The block's centre (x 10, y 24) lands where PlaceInput says, and a
    // point above it stays dark.
    const int x = static_cast<int>(10 * p.scale + p.offset_x), y = static_cast<int>(24 * p.scale + p.offset_y);
    EXPECT_GT(in[y * 20 + x], 0.9f) << resize;
    const int above = static_cast<int>(12 * p.scale + p.offset_y);
    EXPECT_LT(in[above * 20 + x], 0.1f) << resize;
  }
  s.resize = "pad";
  InputPlacement p = PlaceInput(40, 20, s);
  EXPECT_EQ(p.scale, 0.5);
  EXPECT_EQ(p.offset_x, 5);
  EXPECT_EQ(p.offset_y, 0);
  s.resize = "crop";
  p = PlaceInput(40, 20, s);
  EXPECT_EQ(p.scale, 1.0);
  EXPECT_EQ(p.offset_x, 0);
  EXPECT_EQ(p.offset_y, -10);
}

TEST(HeatmapTest, TheMapIsDrawnWhereTheModelSawIt) {
  PreprocessSettings s;
  s.output_size = 20;
  const std::vector<float> windowed = WindowFrame(BlockFrame(), DicomImageFile{}, s);
  for (const char* resize : {"pad", "crop"}) {
    s.resize = resize;
    const InputPlacement p = PlaceInput(40, 20, s);
    // Hot where the block is in the input, cold elsewhere.
    std::vector<float> map(400, 0.0f);
    for (int y = 0; y < 20; ++y) {
      for (int x = 0; x < 20; ++x) {
        const double sx = (x + 0.5 - p.offset_x) / p.scale, sy = (y + 0.5 - p.offset_y) / p.scale;
        if (sx >= 8 && sx < 12 && sy >= 20 && sy < 28) map[y * 20 + x] = 1.0f;
      }
    }
    const RgbImage out = DrawHeatmap(windowed, 40, 20, map, s, "", /*min_side=*/1);
    ASSERT_EQ(out.rows, 40);
    ASSERT_EQ(out.columns, 20);
    auto px = [&](int x, int y) { return &out.pixels[(y * 20 + x) * 3]; };
    const uint8_t* hot = px(10, 24);
    EXPECT_GT(hot[0], hot[2] + 50) << resize;  // red over blue: the top of the colour scale
    const uint8_t* cold = px(10, 5);           // no map: plain grey
    EXPECT_EQ(cold[0], cold[1]) << resize;
    EXPECT_EQ(cold[1], cold[2]) << resize;
  }
  // Large frames are drawn at most max_side, small ones at least min_side.
  const RgbImage small = DrawHeatmap(windowed, 40, 20, std::vector<float>(400, 0.5f), s, "label", 1, 10);
  EXPECT_EQ(small.rows, 10);
  EXPECT_EQ(small.columns, 5);
  const RgbImage large = DrawHeatmap(windowed, 40, 20, std::vector<float>(400, 0.5f), s, "label");
  EXPECT_EQ(large.rows, 512);
  EXPECT_EQ(large.columns, 256);
}

TEST(HeatmapTest, SecondaryCaptureBelongsToTheSourceStudyAndRefersToTheImage) {
  const fs::path dir = fs::temp_directory_path() / ("fedrad_heatmap_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  testing::TestImage im;
  im.frames = 3;
  im.patient_id = "P-77";
  im.sop_instance_uid = "2.25.777";
  const std::string source = (dir / "src.dcm").string();
  ASSERT_TRUE(testing::WriteTestImage(im, source));
  RgbImage image;
  image.rows = 6;
  image.columns = 4;
  for (int i = 0; i < 24; ++i) {
    for (uint8_t c : {uint8_t(i * 10), uint8_t(100), uint8_t(255 - i)}) image.pixels.push_back(c);
  }
  SecondaryCapture sc{source, /*frame=*/2, std::string(64, 'a'), "Grad-CAM of class 1", 7};
  const std::string out = (dir / "sc.dcm").string();
  ASSERT_TRUE(WriteSecondaryCapture(image, sc, out).ok());

  DcmFileFormat file;
  ASSERT_TRUE(file.loadFile(out.c_str()).good());
  DcmDataset* ds = file.getDataset();
  auto get = [ds](const DcmTagKey& tag) {
    OFString v;
    ds->findAndGetOFStringArray(tag, v);
    return std::string(v.c_str());
  };
  EXPECT_EQ(get(DCM_SOPClassUID), UID_SecondaryCaptureImageStorage);
  EXPECT_EQ(get(DCM_PatientID), "P-77");
  EXPECT_FALSE(get(DCM_StudyInstanceUID).empty());
  EXPECT_EQ(get(DCM_PhotometricInterpretation), "RGB");
  EXPECT_EQ(get(DCM_DerivationDescription), "Grad-CAM of class 1");
  EXPECT_EQ(get(DCM_InstanceNumber), "7");
  for (const DcmTagKey& seq : {DCM_SourceImageSequence, DCM_ReferencedImageSequence}) {
    DcmItem* item = nullptr;
    ASSERT_TRUE(ds->findAndGetSequenceItem(seq, item, 0).good());
    OFString uid, frame;
    item->findAndGetOFString(DCM_ReferencedSOPInstanceUID, uid);
    item->findAndGetOFString(DCM_ReferencedFrameNumber, frame);
    EXPECT_EQ(std::string(uid.c_str()), "2.25.777");
    EXPECT_EQ(std::string(frame.c_str()), "3");  // DICOM counts frames from 1
  }
  // Written RLE Lossless (dciodvfy checks real ones: tests/predict_test.cc).
  EXPECT_EQ(ds->getOriginalXfer(), EXS_RLELossless);
  ASSERT_TRUE(ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr).good());
  const Uint8* pixels = nullptr;
  unsigned long count = 0;
  ASSERT_TRUE(ds->findAndGetUint8Array(DCM_PixelData, pixels, &count).good());
  ASSERT_EQ(count, image.pixels.size());
  EXPECT_TRUE(std::equal(image.pixels.begin(), image.pixels.end(), pixels));
  // fedrad reads it back like any colour image.
  absl::StatusOr<DicomImageFile> read = ReadDicomImage(out);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->rows, 6);
  EXPECT_EQ(read->columns, 4);

  // Written again: the same instance, not a new one.
  const std::string again = (dir / "sc2.dcm").string();
  ASSERT_TRUE(WriteSecondaryCapture(image, sc, again).ok());
  DcmFileFormat file2;
  ASSERT_TRUE(file2.loadFile(again.c_str()).good());
  OFString uid1, uid2;
  ds->findAndGetOFString(DCM_SOPInstanceUID, uid1);
  file2.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, uid2);
  EXPECT_EQ(uid1, uid2);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fedrad::node
