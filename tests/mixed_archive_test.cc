// A site whose export mixes every transfer syntax the node reads (and JPEG
// 2000, which it cannot) with broken and non-image files: `inspect` reports it truthfully, and the node trains
// from it in a real federation round, skipping what it cannot read.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "node/test_dicom.h"
#include "tests/harness.h"

namespace fedrad::testing {
namespace {

namespace fs = std::filesystem;

TEST(MixedArchiveTest, NodeTrainsFromEverySyntaxPlusBrokenFilesAndInspectTellsTheTruth) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 2, .rounds = 1, .min_nodes = 2, .patients = 8, .images = 3});
  ASSERT_FALSE(::testing::Test::HasFailure());
  const fs::path data = fs::path(dir) / "data" / "site-a";

  // Re-encode site-a's 24 files in turn with each lossless syntax DCMTK's tools write.
  const std::vector<std::vector<std::string>> encoders = {
      {},                            // explicit VR little endian, as written
      {"/usr/bin/dcmconv", "+ti"},   // implicit VR little endian
      {"/usr/bin/dcmconv", "+tb"},   // explicit VR big endian
      {"/usr/bin/dcmconv", "+td"},   // deflated
      {"/usr/bin/dcmcrle"},          // RLE lossless
      {"/usr/bin/dcmcjpeg", "+e1"},  // JPEG lossless SV1
      {"/usr/bin/dcmcjpls"},         // JPEG-LS lossless
  };                                 // (near-lossless JPEG-LS needs unsigned pixels; the unit tests cover it)
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(data)) {
    if (e.path().extension() == ".dcm") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  ASSERT_EQ(files.size(), 24u);
  for (size_t i = 0; i < files.size(); ++i) {
    const auto& enc = encoders[i % encoders.size()];
    if (enc.empty()) continue;
    std::vector<std::string> argv = enc;
    argv.push_back(files[i]);
    argv.push_back(files[i] + ".tmp");
    ASSERT_EQ(RunCommand(argv, dir + "/encode.log"), 0) << ReadText(dir + "/encode.log");
    fs::rename(files[i] + ".tmp", files[i]);
  }
  // Files from other devices: 12-bit JPEG extended, JPEG-LS near-lossless,
  // an 8-bit MONOCHROME1 JPEG baseline, a 3-frame object, an RGB capture,
  // and a JPEG 2000 file (skipped, DCMTK cannot decode it).
  std::string labels = ReadText((data / "labels.csv").string());
  {
    auto write = [&](node::testing::TestImage im, const std::string& name) {
      im.patient_id = "DEVICE-" + name;
      ASSERT_TRUE(node::testing::WriteTestImage(im, (data / (name + ".raw")).string())) << name;
    };
    node::testing::TestImage mr;
    mr.bits_stored = 12;
    mr.is_signed = false;
    mr.intercept = "0";
    write(mr, "ext12");
    write(mr, "near");
    node::testing::TestImage cr = mr;
    cr.bits_allocated = cr.bits_stored = 8;
    cr.photometric = "MONOCHROME1";
    write(cr, "base8");
    node::testing::TestImage multi = mr;
    multi.frames = 3;
    write(multi, "multi");
    node::testing::TestImage rgb = cr;
    rgb.photometric = "RGB";
    rgb.samples = 3;
    write(rgb, "rgb");
    auto encode = [&](std::vector<std::string> argv, const std::string& name) {
      argv.push_back((data / (name + ".raw")).string());
      argv.push_back((data / (name + ".dcm")).string());
      ASSERT_EQ(RunCommand(argv, dir + "/encode.log"), 0) << ReadText(dir + "/encode.log");
      fs::remove(data / (name + ".raw"));
    };
    encode({"/usr/bin/dcmcjpeg", "+ee"}, "ext12");
    encode({"/usr/bin/dcmcjpls", "+en"}, "near");
    encode({"/usr/bin/dcmcjpeg", "+eb"}, "base8");
    fs::rename(data / "multi.raw", data / "multi.dcm");
    fs::rename(data / "rgb.raw", data / "rgb.dcm");
    ASSERT_TRUE(node::testing::WriteJpeg2000Stub((data / "j2k.dcm").string(), "DEVICE-j2k"));
    labels += "ext12.dcm,1\nnear.dcm,0\nbase8.dcm,1\nmulti.dcm,0\nrgb.dcm,1\nj2k.dcm,0\n";
  }

  // Broken and non-image files, listed in labels.csv like the rest.
  {
    std::string bytes = ReadText(files[0]);
    std::ofstream((data / "truncated.dcm").string(), std::ios::binary) << bytes.substr(0, bytes.size() / 3);
    std::ofstream((data / "empty.dcm").string()).close();
    std::mt19937 rng(3);
    std::string noise(2048, '\0');
    for (char& c : noise) c = static_cast<char>(rng());
    std::ofstream((data / "random.dcm").string(), std::ios::binary) << noise;
    labels += "truncated.dcm,1\nempty.dcm,0\nrandom.dcm,1\nnot-there.dcm,0\n";
  }
  WriteText((data / "labels.csv").string(), labels);
  WriteText((data / "README.txt").string(), "exported by the PACS\n");  // a file without a row

  // inspect: every file accounted for, every syntax named.
  ASSERT_EQ(
      RunCommand({NodeBin(), "inspect", "--config", f.NodeConfig("site-a"), "--size", "32"}, dir + "/inspect.log"), 0)
      << ReadText(dir + "/inspect.log");
  const std::string report = ReadText(dir + "/inspect.log");
  EXPECT_NE(report.find("34 under the folder (not .csv): 29 loaded"), std::string::npos) << report;
  EXPECT_NE(report.find("4 unreadable"), std::string::npos) << report;
  EXPECT_NE(report.find("skipped    1  JPEG 2000 is not supported"), std::string::npos) << report;
  EXPECT_NE(report.find("images       31"), std::string::npos) << report;
  EXPECT_NE(report.find("MONOCHROME1: 1"), std::string::npos) << report;
  EXPECT_NE(report.find("RGB: 1"), std::string::npos) << report;
  EXPECT_NE(report.find("1 name no file; 1 files have no row"), std::string::npos) << report;
  for (const char* syntax :
       {"Little Endian Explicit", "Little Endian Implicit", "Big Endian Explicit", "Deflated Explicit VR Little Endian",
        "RLE Lossless", "JPEG Lossless, Non-hierarchical, 1st Order Prediction", "JPEG-LS Lossless",
        "JPEG-LS Lossy (Near-lossless)", "JPEG Baseline", "JPEG Extended, Process 2+4"}) {
    EXPECT_NE(report.find(syntax), std::string::npos) << syntax << "\n" << report;
  }
  EXPECT_NE(report.find("patients     13"), std::string::npos) << report;

  // A real round: both nodes train, site-a from its mixed folder.
  std::vector<std::string> logs = RunFederationToCompletion(f);
  ASSERT_FALSE(::testing::Test::HasFailure());
  const std::string& node_log = logs[1];
  EXPECT_NE(node_log.find("data: 31 images of 13 patients (4 skipped)"), std::string::npos) << node_log;
  EXPECT_NE(node_log.find("1 row(s) of"), std::string::npos) << node_log;
  std::vector<SqlRow> sent = QueryDb(f.NodeDb("site-a"), "SELECT outcome, num_examples FROM updates_sent");
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(AsText(sent[0][0]), "accepted");
  EXPECT_GT(AsInt(sent[0][1]), 0);
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing
