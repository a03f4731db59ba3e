// Decoding every transfer syntax a hospital archive exports, from fixtures
// made at test time with DCMTK's own tools (Debian's `dcmtk` package), checked
// against the uncompressed original: exactly for lossless syntaxes, within the
// codec's error bound for lossy ones. Broken files are each skipped with a
// specific reason while the rest of the folder loads.
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "node/dataset.h"
#include "node/dicom_reader.h"
#include "node/test_dicom.h"

namespace fedrad::node {
namespace {

namespace fs = std::filesystem;

using testing::StoredValue;
using Image = testing::TestImage;

void WriteImage(const Image& im, const std::string& path) { ASSERT_TRUE(testing::WriteTestImage(im, path)) << path; }

class DicomCodecsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("fedrad_codecs_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static std::string P(const std::string& name) { return (dir_ / name).string(); }
  static void Tool(const std::string& cmd) { ASSERT_EQ(std::system((cmd + " > /dev/null 2>&1").c_str()), 0) << cmd; }
  // Decodes `file` and compares with the decoded uncompressed `reference`.
  static void ExpectSameAs(const std::string& file, const std::string& reference, double tolerance,
                           const char* expected_uid) {
    auto got = ReadDicomImage(file);
    ASSERT_TRUE(got.ok()) << got.status();
    auto want = ReadDicomImage(reference);
    ASSERT_TRUE(want.ok()) << want.status();
    EXPECT_EQ(got->transfer_syntax_uid, expected_uid) << file;
    ASSERT_EQ(got->frames.size(), want->frames.size());
    for (size_t f = 0; f < want->frames.size(); ++f) {
      ASSERT_EQ(got->frames[f].values.size(), want->frames[f].values.size());
      double worst = 0;
      for (size_t i = 0; i < want->frames[f].values.size(); ++i) {
        worst = std::max(worst, std::abs(double{got->frames[f].values[i]} - want->frames[f].values[i]));
      }
      EXPECT_LE(worst, tolerance) << file << " frame " << f;
    }
  }
  static fs::path dir_;
};
fs::path DicomCodecsTest::dir_;

Image Make(int bits_allocated, int bits_stored, bool is_signed, const char* photometric, const char* intercept) {
  Image im;
  im.bits_allocated = bits_allocated;
  im.bits_stored = bits_stored;
  im.is_signed = is_signed;
  im.photometric = photometric;
  im.intercept = intercept;
  return im;
}
const Image kCt = Make(16, 16, true, "MONOCHROME2", "-1024");
const Image kMr12 = Make(16, 12, false, "MONOCHROME2", "0");
const Image kCr8 = Make(8, 8, false, "MONOCHROME1", "0");

TEST_F(DicomCodecsTest, NativeSyntaxesAreExact) {
  WriteImage(kCt, P("ct.dcm"));
  auto ct = ReadDicomImage(P("ct.dcm"));
  ASSERT_TRUE(ct.ok()) << ct.status();
  // Decoded values are the stored values through the modality LUT.
  for (int i = 0; i < 64 * 48; ++i) ASSERT_FLOAT_EQ(ct->frames[0].values[i], StoredValue(kCt, i, 0) - 1024.0f);
  EXPECT_TRUE(ct->is_signed);
  Tool("dcmconv +ti " + P("ct.dcm") + " " + P("ct-implicit.dcm"));
  Tool("dcmconv +tb " + P("ct.dcm") + " " + P("ct-big.dcm"));
  Tool("dcmconv +td " + P("ct.dcm") + " " + P("ct-deflated.dcm"));
  ExpectSameAs(P("ct-implicit.dcm"), P("ct.dcm"), 0, UID_LittleEndianImplicitTransferSyntax);
  ExpectSameAs(P("ct-big.dcm"), P("ct.dcm"), 0, UID_BigEndianExplicitTransferSyntax);
  ExpectSameAs(P("ct-deflated.dcm"), P("ct.dcm"), 0, UID_DeflatedExplicitVRLittleEndianTransferSyntax);
}

TEST_F(DicomCodecsTest, LosslessCompressionIsExact) {
  WriteImage(kCt, P("ct2.dcm"));
  Tool("dcmcrle " + P("ct2.dcm") + " " + P("ct-rle.dcm"));
  Tool("dcmcjpeg +e1 " + P("ct2.dcm") + " " + P("ct-jpeg-ll.dcm"));
  Tool("dcmcjpls +el " + P("ct2.dcm") + " " + P("ct-jls.dcm"));
  ExpectSameAs(P("ct-rle.dcm"), P("ct2.dcm"), 0, UID_RLELosslessTransferSyntax);
  ExpectSameAs(P("ct-jpeg-ll.dcm"), P("ct2.dcm"), 0, UID_JPEGProcess14SV1TransferSyntax);
  ExpectSameAs(P("ct-jls.dcm"), P("ct2.dcm"), 0, UID_JPEGLSLosslessTransferSyntax);
}

TEST_F(DicomCodecsTest, LossyCompressionStaysWithinItsBound) {
  // DCMTK's near-lossless JPEG-LS encoder takes unsigned pixels only.
  WriteImage(kMr12, P("mr12.dcm"));
  Tool("dcmcjpls +en +md 3 " + P("mr12.dcm") + " " + P("mr12-jls-near.dcm"));
  ExpectSameAs(P("mr12-jls-near.dcm"), P("mr12.dcm"), 3, UID_JPEGLSLossyTransferSyntax);  // NEAR bound
  Tool("dcmcjpeg +ee " + P("mr12.dcm") + " " + P("mr12-jpeg-ext.dcm"));
  ExpectSameAs(P("mr12-jpeg-ext.dcm"), P("mr12.dcm"), 4095 * 0.25, UID_JPEGProcess2_4TransferSyntax);
  WriteImage(kCr8, P("cr8.dcm"));
  Tool("dcmcjpeg +eb " + P("cr8.dcm") + " " + P("cr8-jpeg-base.dcm"));
  ExpectSameAs(P("cr8-jpeg-base.dcm"), P("cr8.dcm"), 255 * 0.25, UID_JPEGProcess1TransferSyntax);
  // The bounds above are loose per pixel; on average JPEG must be close.
  auto got = ReadDicomImage(P("mr12-jpeg-ext.dcm"));
  auto want = ReadDicomImage(P("mr12.dcm"));
  double sum = 0;
  for (size_t i = 0; i < want->frames[0].values.size(); ++i) {
    sum += std::abs(got->frames[0].values[i] - want->frames[0].values[i]);
  }
  EXPECT_LT(sum / want->frames[0].values.size(), 4095 * 0.02);
}

TEST_F(DicomCodecsTest, Monochrome1IsInvertedAfterWindowing) {
  WriteImage(kCr8, P("mono1.dcm"));
  auto f = ReadDicomImage(P("mono1.dcm"));
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->invert);
  PreprocessSettings s;
  s.window_center = 127.5;
  s.window_width = 255;
  s.output_size = 48;
  ModalityFrame one{0, 1, 1, {255.0f}};
  EXPECT_FLOAT_EQ(PreprocessFrame(one, *f, s).front(), 0.0f);  // stored max = least dense = dark
  DicomImageFile mono2;
  EXPECT_FLOAT_EQ(PreprocessFrame(one, mono2, s).front(), 1.0f);
}

TEST_F(DicomCodecsTest, MultiFrameGivesOneSamplePerFrame) {
  Image im = kMr12;
  im.frames = 3;
  WriteImage(im, P("multi.dcm"));
  Tool("dcmcrle " + P("multi.dcm") + " " + P("multi-rle.dcm"));
  for (const char* name : {"multi.dcm", "multi-rle.dcm"}) {
    auto f = ReadDicomImage(P(name));
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_EQ(f->frames.size(), 3u) << name;
    for (int k = 0; k < 3; ++k) {
      EXPECT_EQ(f->frames[k].index, k);
      EXPECT_FLOAT_EQ(f->frames[k].values[5], StoredValue(im, 5, k)) << name;
    }
  }
}

TEST_F(DicomCodecsTest, ColourBecomesLuminanceWhateverTheLayout) {
  Image rgb = Make(8, 8, false, "RGB", "0");
  rgb.rows = 32;
  rgb.cols = 16;
  rgb.samples = 3;
  Image planar = rgb;
  planar.planar = 1;
  WriteImage(rgb, P("rgb.dcm"));
  WriteImage(planar, P("rgb-planar.dcm"));
  for (const char* name : {"rgb.dcm", "rgb-planar.dcm"}) {
    auto f = ReadDicomImage(P(name));
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_EQ(f->frames.size(), 1u);
    for (int i : {0, 7, 100, 511}) {
      const double r = StoredValue(rgb, i, 0) & 0xff, g = (StoredValue(rgb, i, 0) + 70) & 0xff,
                   b = (StoredValue(rgb, i, 0) + 140) & 0xff;
      EXPECT_NEAR(f->frames[0].values[i], 0.299 * r + 0.587 * g + 0.114 * b, 1.0) << name << " pixel " << i;
    }
  }
  DicomReadOptions strict;
  strict.color_to_gray = false;
  auto refused = ReadDicomImage(P("rgb.dcm"), strict);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(ReasonOf(refused.status()).find("colour image (RGB)"), std::string::npos);
  // JPEG baseline YBR from img2dcm (via a JPEG written by dcmj2pnm).
  Tool("dcmj2pnm +oj " + P("rgb.dcm") + " " + P("rgb.jpg"));
  Tool("img2dcm -i JPEG " + P("rgb.jpg") + " " + P("sc-ybr.dcm"));
  auto sc = ReadDicomImage(P("sc-ybr.dcm"));
  ASSERT_TRUE(sc.ok()) << sc.status();
  EXPECT_EQ(sc->transfer_syntax_uid, UID_JPEGProcess1TransferSyntax);
  EXPECT_EQ(sc->photometric.rfind("YBR", 0), 0u) << sc->photometric;
  auto plain = ReadDicomImage(P("rgb.dcm"));
  double sum = 0;
  for (size_t i = 0; i < plain->frames[0].values.size(); ++i) {
    sum += std::abs(sc->frames[0].values[i] - plain->frames[0].values[i]);
  }
  EXPECT_LT(sum / plain->frames[0].values.size(), 12.0);  // lossy, but the same picture
}

TEST_F(DicomCodecsTest, HeadersPromisingHugeImagesAreRefusedBeforeDecoding) {
  // Found by the fuzzer: a JPEG file claiming 21587 x 21321 pixels made DCMTK
  // allocate gigabytes. A small image with a lower limit shows the check.
  WriteImage(kCt, P("big.dcm"));
  Tool("dcmcjpeg +e1 " + P("big.dcm") + " " + P("big-jpeg.dcm"));
  DicomReadOptions tight;
  tight.max_pixels = 64 * 48 - 1;
  for (const char* name : {"big.dcm", "big-jpeg.dcm"}) {
    auto f = ReadDicomImage(P(name), tight);
    ASSERT_FALSE(f.ok()) << name;
    EXPECT_NE(ReasonOf(f.status()).find("image too large: Rows x Columns x Frames x Samples = 3072 pixels"),
              std::string::npos)
        << ReasonOf(f.status());
  }
  EXPECT_TRUE(ReadDicomImage(P("big-jpeg.dcm")).ok());
}

// Every input the fuzzer ever flagged (tests/fuzz/regressions) is refused
// with a reason, quickly and without a crash.
TEST_F(DicomCodecsTest, FuzzerRegressionsAreSkippedWithAReason) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(FEDRAD_FUZZ_REGRESSIONS)) {
    auto f = ReadDicomImage(e.path().string());
    EXPECT_FALSE(f.ok()) << e.path();
    EXPECT_FALSE(ReasonOf(f.status()).empty());
    ++n;
  }
  EXPECT_GE(n, 4);
}

TEST_F(DicomCodecsTest, CompressedFrameMustMatchRowsAndColumns) {
  // Also found by the fuzzer: DCMTK sizes its buffers from the JPEG stream's
  // own header, so a stream that disagrees with the DICOM header is refused.
  WriteImage(kCt, P("sof.dcm"));
  Tool("dcmcjpeg +e1 " + P("sof.dcm") + " " + P("sof-jpeg.dcm"));
  Tool("dcmodify -nb -m \"(0028,0010)=80\" " + P("sof-jpeg.dcm"));
  auto f = ReadDicomImage(P("sof-jpeg.dcm"));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(ReasonOf(f.status()), "compressed frame is 64x48 but Rows x Columns is 80x48");
}

TEST_F(DicomCodecsTest, Jpeg2000IsSkippedWithThatReason) {
  ASSERT_TRUE(testing::WriteJpeg2000Stub(P("j2k.dcm")));
  auto f = ReadDicomImage(P("j2k.dcm"));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(ReasonOf(f.status()), "JPEG 2000 is not supported (DCMTK's open edition has no JPEG 2000 decoder)");
}

// A folder with good files of every syntax and broken ones: each broken file
// is skipped with its own reason; every good one loads.
TEST_F(DicomCodecsTest, BrokenFilesAreSkippedWithSpecificReasonsAndTheRestLoads) {
  const fs::path data = dir_ / "mixed";
  fs::create_directories(data);
  auto at = [&](const std::string& n) { return (data / n).string(); };
  WriteImage(kCt, at("good-explicit.dcm"));
  Tool("dcmconv +ti " + at("good-explicit.dcm") + " " + at("good-implicit.dcm"));
  Tool("dcmcrle " + at("good-explicit.dcm") + " " + at("good-rle.dcm"));
  Tool("dcmcjpls " + at("good-explicit.dcm") + " " + at("good-jls.dcm"));
  // Truncated: the first half of a valid file.
  {
    std::ifstream in(at("good-explicit.dcm"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(at("truncated.dcm"), std::ios::binary) << bytes.substr(0, bytes.size() / 2);
    // Wrong VR: Rows (0028,0010) re-labelled from US to SH.
    const std::string rows_tag("\x28\x00\x10\x00US", 6);
    std::string wrong = bytes;
    const size_t pos = wrong.find(rows_tag);
    ASSERT_NE(pos, std::string::npos);
    wrong[pos + 4] = 'S';
    wrong[pos + 5] = 'H';
    std::ofstream(at("wrong-vr.dcm"), std::ios::binary) << wrong;
  }
  std::ofstream(at("empty.dcm")).close();
  {
    std::mt19937 rng(1);
    std::string noise(4096, '\0');
    for (char& c : noise) c = static_cast<char>(rng());
    std::ofstream(at("random.dcm"), std::ios::binary) << noise;
  }
  Image liar = kCt;
  WriteImage(liar, at("rows-mismatch.dcm"));
  {
    DcmFileFormat file;
    ASSERT_TRUE(file.loadFile(at("rows-mismatch.dcm").c_str()).good());
    ASSERT_TRUE(file.loadAllDataIntoMemory().good());     // before overwriting the file it reads from
    file.getDataset()->putAndInsertUint16(DCM_Rows, 80);  // pixel data holds 48 rows
    ASSERT_TRUE(file.saveFile(at("rows-mismatch.dcm").c_str(), EXS_LittleEndianExplicit).good());
  }
  {
    DcmFileFormat sr;  // a structured report: a DICOM object without pixels
    sr.getDataset()->putAndInsertString(DCM_SOPClassUID, UID_BasicTextSRStorage);
    sr.getDataset()->putAndInsertString(DCM_SOPInstanceUID, "2.25.44");
    sr.getDataset()->putAndInsertString(DCM_Modality, "SR");
    ASSERT_TRUE(sr.saveFile(at("report.dcm").c_str(), EXS_LittleEndianExplicit).good());
  }
  std::string labels = "path,label\n";
  for (const auto& e : fs::directory_iterator(data)) labels += e.path().filename().string() + ",1\n";
  std::ofstream((data / "labels.csv").string()) << labels;

  LoadReport report;
  PreprocessSettings settings;
  settings.output_size = 32;
  DatasetSpec spec{data.string(), (data / "labels.csv").string(), 2, {}, settings, {}};
  auto set = LoadImageSet(spec, &report);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->count(), 4);  // the four good files
  EXPECT_EQ(report.no_image, 1);
  int skipped = 0;
  for (const auto& [reason, n] : report.skipped) skipped += n;
  EXPECT_EQ(skipped, 5) << ::testing::PrintToString(report.skipped);

  auto reason = [&](const std::string& name) { return ReasonOf(ReadDicomImage(at(name)).status()); };
  EXPECT_NE(reason("truncated.dcm").find("not a readable DICOM file"), std::string::npos) << reason("truncated.dcm");
  EXPECT_NE(reason("empty.dcm").find("not a readable DICOM file"), std::string::npos) << reason("empty.dcm");
  EXPECT_NE(reason("random.dcm").find("not a readable DICOM file"), std::string::npos) << reason("random.dcm");
  EXPECT_NE(reason("wrong-vr.dcm").find("Rows, Columns or BitsAllocated"), std::string::npos) << reason("wrong-vr.dcm");
  EXPECT_NE(reason("rows-mismatch.dcm").find("pixel data has 6144 bytes but Rows x Columns"), std::string::npos)
      << reason("rows-mismatch.dcm");
  EXPECT_TRUE(IsNoImage(ReadDicomImage(at("report.dcm")).status()));

  // The problem travels as data beside the message, which names the file.
  auto problem = [&](const std::string& path) -> std::optional<DicomProblem> {
    std::optional<DicomError> e = DicomErrorOf(ReadDicomImage(path).status());
    if (!e) return std::nullopt;
    return e->problem;
  };
  EXPECT_EQ(problem(at("truncated.dcm")), DicomProblem::kMalformed);
  EXPECT_EQ(problem(at("report.dcm")), DicomProblem::kNoImage);
  EXPECT_EQ(problem(at("no-such-file.dcm")), DicomProblem::kMissing);
  EXPECT_EQ(problem(at("good-jls.dcm")), std::nullopt);  // read: no error at all
  const absl::Status truncated = ReadDicomImage(at("truncated.dcm")).status();
  EXPECT_NE(truncated.message().find("truncated.dcm"), absl::string_view::npos) << truncated;
  EXPECT_EQ(DicomErrorOf(absl::InvalidArgumentError("'x.dcm': not a readable DICOM file")), std::nullopt);
}

}  // namespace
}  // namespace fedrad::node
