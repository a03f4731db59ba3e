// fedrad-node predict as a clinician runs it: on a site's DICOM folder, inside
// a network namespace with no interface up (unshare -n), so any attempt to
// reach the coordinator or anything else would fail.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <opencv2/imgcodecs.hpp>

#include "absl/strings/str_join.h"
#include "common/safetensors.h"
#include "node/dicom_seg.h"
#include "node/test_dicom.h"
#include "tests/harness.h"

namespace fedrad::testing {
namespace {

namespace fs = std::filesystem;

class PredictCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeWorkspace();
    f_ = SetUpFederation(dir_, {.sites = 1, .rounds = 1, .min_nodes = 1, .patients = 10, .images = 2, .dp = false});
    ASSERT_FALSE(HasFailure());
    config_ = f_.NodeConfig(f_.sites[0]);
    data_ = dir_ + "/data/" + f_.sites[0];
    model_ = dir_ + "/model.safetensors";
    const std::string log = dir_ + "/train-local.log";
    ASSERT_EQ(
        RunCommand({NodeBin(), "train-local", "--config", config_, "--size", "32", "--epochs", "1", "--save", model_},
                   log),
        0)
        << ReadText(log);
  }
  void TearDown() override { RemoveWorkspaceIfPassed(dir_); }

  std::string dir_, config_, data_, model_;
  MiniFederation f_;
};

TEST_F(PredictCommandTest, RunsWithoutANetworkAndAgreesWithEvaluate) {
  // predict does not even read where the coordinator is, or the TLS keys.
  const std::string local_config = dir_ + "/kits/" + f_.sites[0] + "/local.toml";
  WriteText(local_config, ReadText(config_));
  ReplaceInFile(local_config, "address = \"127.0.0.1:", "address = \"not an address");
  ReplaceInFile(local_config, "key = \"site.key\"", "key = \"/nonexistent/site.key\"");
  const std::string csv = dir_ + "/predictions.csv", heatmaps = dir_ + "/heatmaps", log = dir_ + "/predict.log";
  ASSERT_EQ(
      RunCommand({"/usr/bin/unshare", "-n", NodeBin(), "predict", "--config", local_config, "--model", model_,
                  "--input", data_, "--out", csv, "--heatmaps", heatmaps, "--dicom-overlays", "--heatmap-negatives"},
                 log),
      0)
      << ReadText(log);
  EXPECT_NE(ReadText(log).find("20 image(s) from 20 file(s)"), std::string::npos) << ReadText(log);

  // One row per image, each with a heatmap; the accuracy the rows give
  // against labels.csv is what `evaluate` reports for the same folder.
  std::map<std::string, std::string> labels;
  for (const auto& row : node::testing::ReadCsvRows(data_ + "/labels.csv")) {
    if (row.size() == 2 && row[0] != "path") labels[row[0]] = row[1];
  }
  ASSERT_EQ(labels.size(), 20u);
  const auto rows = node::testing::ReadCsvRows(csv);
  ASSERT_EQ(rows.size(), 21u);
  EXPECT_EQ(rows[0][0], "path");
  int correct = 0, positives = 0;  // images with a heatmap
  for (size_t i = 1; i < rows.size(); ++i) {
    ASSERT_EQ(rows[i].size(), 8u);
    ASSERT_TRUE(labels.count(rows[i][0])) << rows[i][0];
    correct += rows[i][3] == labels[rows[i][0]];
    EXPECT_NEAR(std::stod(rows[i][4]) + std::stod(rows[i][5]), 1.0, 1e-5);
    // A heatmap, PNG and compressed DICOM that dciodvfy passes, for every
    // image (--heatmap-negatives: predicted negatives too).
    {
      ++positives;
      ASSERT_EQ(rows[i][6], rows[i][0].substr(0, rows[i][0].size() - 4) + ".heatmap.png");
      EXPECT_TRUE(fs::exists(heatmaps + "/" + rows[i][6])) << rows[i][6];
      const std::string sc = heatmaps + "/" + rows[i][6].substr(0, rows[i][6].size() - 4) + ".dcm";
      const node::testing::Dciodvfy check = node::testing::RunDciodvfy(sc);
      EXPECT_EQ(check.iod, "SCImage") << check.output;
      EXPECT_TRUE(check.errors.empty()) << sc << "\n" << check.output;
    }
    EXPECT_TRUE(rows[i][7].empty());
  }
  const std::string eval_log = dir_ + "/evaluate.log";
  ASSERT_EQ(
      RunCommand({NodeBin(), "evaluate", "--config", config_, "--data", data_, "--model", model_, "--bootstrap", "20"},
                 eval_log),
      0)
      << ReadText(eval_log);
  const std::string table = ReadText(eval_log);
  const size_t at = table.find("\naccuracy ");
  ASSERT_NE(at, std::string::npos) << table;
  EXPECT_NEAR(std::stod(table.substr(at + 10)), correct / 20.0, 1e-9) << table;

  // In Python: the file loads into python/fedrad_torch.py's PyTorch twin of
  // the network, which, fed the pipeline its metadata names (prepared with
  // pydicom and NumPy), gives the same probabilities.
  const std::string py_log = dir_ + "/python.log";
  EXPECT_EQ(RunCommand({"/usr/bin/python3", SourceDir() + "/tests/python_export_check.py", model_, csv, data_}, py_log),
            0)
      << ReadText(py_log);
  EXPECT_NE(ReadText(py_log).find("20 images, ctnet"), std::string::npos) << ReadText(py_log);

  // The heatmaps' DICOM files are images a DICOM reader (fedrad's own here,
  // the site's viewer there) opens; the PNGs next to them are not DICOM.
  const std::string again = dir_ + "/again.csv";
  ASSERT_EQ(
      RunCommand({NodeBin(), "predict", "--config", config_, "--model", model_, "--input", heatmaps, "--out", again},
                 dir_ + "/again.log"),
      0)
      << ReadText(dir_ + "/again.log");
  EXPECT_NE(ReadText(dir_ + "/again.log").find("20 image(s) from 40 file(s)"), std::string::npos)
      << ReadText(dir_ + "/again.log");
}

// A ResNet trains, predicts with heatmaps (Grad-CAM on its last stage), and
// loads in Python's twin (torchvision's names, GroupNorm) to the same
// probabilities.
TEST_F(PredictCommandTest, AResNetPredictsWithHeatmapsAndTheSameInPython) {
  const std::string model = dir_ + "/resnet.safetensors", log = dir_ + "/resnet.log";
  ASSERT_EQ(RunCommand({NodeBin(), "train-local", "--config", config_, "--model", "resnet18", "--width", "8", "--size",
                        "32", "--epochs", "1", "--save", model},
                       log),
            0)
      << ReadText(log);
  const std::string csv = dir_ + "/resnet.csv", heatmaps = dir_ + "/resnet-heatmaps";
  ASSERT_EQ(RunCommand({NodeBin(), "predict", "--config", config_, "--model", model, "--input", data_, "--out", csv,
                        "--heatmaps", heatmaps, "--heatmap-negatives"},
                       log),
            0)
      << ReadText(log);
  int pngs = 0;
  for (const auto& e : fs::recursive_directory_iterator(heatmaps)) pngs += e.path().extension() == ".png";
  EXPECT_EQ(pngs, 20);
  const std::string py_log = dir_ + "/resnet-python.log";
  EXPECT_EQ(RunCommand({"/usr/bin/python3", SourceDir() + "/tests/python_export_check.py", model, csv, data_}, py_log),
            0)
      << ReadText(py_log);
  EXPECT_NE(ReadText(py_log).find("20 images, resnet18"), std::string::npos) << ReadText(py_log);
}

// train-local --plan trains the federation's model with its training
// settings for rounds x local_epochs epochs (the plan here: ctnet at 32, one
// round of one local epoch), prints balanced accuracy beside accuracy, and
// refuses a flag that contradicts the plan.
TEST_F(PredictCommandTest, TrainLocalTakesThePlan) {
  const std::string plan = dir_ + "/plan.toml", log = dir_ + "/plan-train.log";
  ASSERT_EQ(RunCommand({NodeBin(), "train-local", "--config", config_, "--plan", plan}, log), 0) << ReadText(log);
  EXPECT_NE(ReadText(log).find("balanced accuracy"), std::string::npos) << ReadText(log);
  EXPECT_NE(ReadText(log).find("(ctnet, 1 epochs)"), std::string::npos) << ReadText(log);
  ASSERT_EQ(RunCommand({NodeBin(), "train-local", "--config", config_, "--plan", plan, "--epochs", "2"}, log), 0);
  EXPECT_NE(ReadText(log).find("(ctnet, 2 epochs)"), std::string::npos) << ReadText(log);
  EXPECT_EQ(RunCommand({NodeBin(), "train-local", "--config", config_, "--plan", plan, "--size", "64"}, log), 2);
  EXPECT_NE(ReadText(log).find("--size 64 disagrees with the plan's [model] input_size 32"), std::string::npos)
      << ReadText(log);
}

// train-local on a bare folder (public data, no node.toml) takes the
// normalisation a federation's sites use, and the model says so; with a
// node.toml its [preprocess] decides, and the flag is refused.
TEST_F(PredictCommandTest, TrainLocalOnAFolderTakesANormalisation) {
  const std::string model = dir_ + "/zscore.safetensors", log = dir_ + "/zscore.log";
  ASSERT_EQ(RunCommand({NodeBin(), "train-local", "--data", data_, "--size", "32", "--epochs", "1", "--normalize",
                        "zscore", "--save", model},
                       log),
            0)
      << ReadText(log);
  absl::StatusOr<SafetensorsFile> file = ReadSafetensorsFile(model);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_NE(file->metadata.at("preprocessing").find("normalize=zscore"), std::string::npos)
      << file->metadata.at("preprocessing");
  EXPECT_EQ(RunCommand({NodeBin(), "train-local", "--config", config_, "--normalize", "zscore"}, log), 2);
  EXPECT_NE(ReadText(log).find("--normalize applies only without --config"), std::string::npos) << ReadText(log);
}

TEST_F(PredictCommandTest, RefusesAModelOfAnotherPipeline) {
  ReplaceInFile(config_, "window_width = 400", "window_width = 1500");
  const std::string log = dir_ + "/predict.log";
  EXPECT_EQ(RunCommand({NodeBin(), "predict", "--config", config_, "--model", model_, "--input", data_, "--out",
                        dir_ + "/p.csv"},
                       log),
            1);
  EXPECT_NE(ReadText(log).find("window=explicit(40,400) in the model, window=explicit(40,1500) here"),
            std::string::npos)
      << ReadText(log);
  EXPECT_FALSE(fs::exists(dir_ + "/p.csv"));
}

// A model's metadata is outside text: an escape sequence in it reaches the
// clinician's terminal as text, not as a command (issue 18, defect 8).
TEST_F(PredictCommandTest, EscapeSequencesInAModelReachTheTerminalAsText) {
  absl::StatusOr<SafetensorsFile> file = ReadSafetensorsFile(model_);
  ASSERT_TRUE(file.ok()) << file.status();
  file->metadata["preprocessing"] =
      "window=\x1b[2J\x1b]0;owned\x07\xc2\x9b"
      "31m(1,2)|resize=area";
  ASSERT_TRUE(WriteSafetensorsFile(model_, file->parameters, file->metadata).ok());
  const std::string log = dir_ + "/predict.log";
  EXPECT_EQ(RunCommand({NodeBin(), "predict", "--config", config_, "--model", model_, "--input", data_, "--out",
                        dir_ + "/p.csv"},
                       log),
            1);
  const std::string out = ReadText(log);
  EXPECT_NE(out.find("window=\\x1b[2J\\x1b]0;owned\\x07\\u009b31m(1,2) in the model"), std::string::npos) << out;
  EXPECT_EQ(out.find('\x1b'), std::string::npos) << out;
  EXPECT_EQ(out.find('\x07'), std::string::npos) << out;
  EXPECT_EQ(out.find("\xc2\x9b"), std::string::npos) << out;
}

TEST_F(PredictCommandTest, LatestNeedsAModelFromTheFederation) {
  const std::string log = dir_ + "/predict.log";
  EXPECT_EQ(RunCommand({NodeBin(), "predict", "--config", config_, "--input", data_, "--out", dir_ + "/p.csv"}, log),
            1);
  EXPECT_NE(ReadText(log).find("no global model in"), std::string::npos) << ReadText(log);
}

}  // namespace
}  // namespace fedrad::testing

namespace fedrad::testing {
namespace {

// What stays on site is on record too: each local command that read the
// site's data wrote a signed data_access entry (purpose, counts, the hash of
// the UIDs, never a UID), and the ledger still verifies.
TEST_F(PredictCommandTest, LocalCommandsRecordTheirDataAccess) {
  const std::string csv = dir_ + "/p.csv";
  for (const std::vector<std::string>& argv :
       {std::vector<std::string>{NodeBin(), "predict", "--config", config_, "--model", model_, "--input", data_,
                                 "--out", csv},
        std::vector<std::string>{NodeBin(), "evaluate", "--config", config_, "--model", model_, "--bootstrap", "10"},
        std::vector<std::string>{NodeBin(), "inspect", "--config", config_, "--size", "32"}}) {
    const std::string log = dir_ + "/" + argv[1] + ".log";
    ASSERT_EQ(RunCommand(argv, log), 0) << ReadText(log);
    EXPECT_EQ(ReadText(log).find("not in the site's audit ledger"), std::string::npos) << ReadText(log);
  }
  const std::string db = dir_ + "/kits/" + f_.sites[0] + "/state/node.db";
  std::map<std::string, std::string> by_purpose;
  for (const SqlRow& r : QueryDb(db, "SELECT body FROM ledger WHERE kind = 'data_access'")) {
    const std::string body = AsText(r[0]);
    const size_t at = body.find("\"purpose\":\"");
    ASSERT_NE(at, std::string::npos) << body;
    by_purpose[body.substr(at + 11, body.find('"', at + 11) - at - 11)] = body;
  }
  for (const char* purpose : {"train-local", "predict", "evaluate (local)", "inspect"}) {
    ASSERT_TRUE(by_purpose.count(purpose)) << purpose;
    EXPECT_NE(by_purpose[purpose].find("\"images\":20"), std::string::npos) << by_purpose[purpose];
    EXPECT_NE(by_purpose[purpose].find("\"patients\":10"), std::string::npos) << by_purpose[purpose];
  }
  // The same images, so the same digest; and no UID in the ledger.
  const std::string digest = by_purpose["predict"].substr(by_purpose["predict"].find("sop_instance_uids_sha256"));
  EXPECT_NE(by_purpose["inspect"].find(digest), std::string::npos);
  std::string ledger;
  for (const SqlRow& r : QueryDb(db, "SELECT body FROM ledger")) ledger += AsText(r[0]);
  for (const std::vector<std::string>& row : node::testing::ReadCsvRows(csv)) {
    if (row.size() > 1 && row[1].rfind("2.", 0) == 0) EXPECT_EQ(ledger.find(row[1]), std::string::npos) << row[1];
  }
  const std::string audit = dir_ + "/audit.log";
  EXPECT_EQ(
      RunCommand({FedradBin(), "audit", "verify", "--ca", dir_ + "/kits/coordinator/ca.pem", "--node", db}, audit), 0)
      << ReadText(audit);
}

}  // namespace
}  // namespace fedrad::testing

namespace fedrad::testing {
namespace {

// A segmentation model on a site's folder: one PNG per image with the
// predicted outline, and one DICOM SEG object per series that dciodvfy
// passes and that reads back (through DCMTK's dcmseg) to the masks predict
// computed: each frame's lesion pixels are the CSV's share of the input,
// brought back to the 64x64 images (4 frame pixels per 32x32 input pixel).
TEST(PredictSegmentationTest, WritesOverlaysAndValidSegObjectsOfItsOwnMasks) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(
      dir, {.sites = 1, .rounds = 1, .min_nodes = 1, .patients = 40, .images = 2, .dp = false, .task = "segmentation"});
  ASSERT_FALSE(::testing::Test::HasFailure());
  const std::string config = f.NodeConfig(f.sites[0]), data = dir + "/data/" + f.sites[0];
  const std::string model = dir + "/unet.safetensors";
  std::string log = dir + "/train-local.log";
  ASSERT_EQ(RunCommand(
                {NodeBin(), "train-local", "--config", config, "--model", "unet2d", "--size", "32",   "--depth", "2",
                 "--width", "8",           "--epochs", "40",   "--batch", "4",      "--lr",   "0.03", "--save",  model},
                log),
            0)
      << ReadText(log);
  const std::string csv = dir + "/predictions.csv", out = dir + "/overlays";
  log = dir + "/predict.log";
  ASSERT_EQ(RunCommand({NodeBin(), "predict", "--config", config, "--model", model, "--input", data, "--out", csv,
                        "--heatmaps", out, "--dicom-overlays"},
                       log),
            0)
      << ReadText(log);
  const std::vector<std::vector<std::string>> rows = node::testing::ReadCsvRows(csv);
  ASSERT_GT(rows.size(), 1u);
  const std::vector<std::string>& header = rows[0];
  auto column = [&](const std::string& name) {
    return static_cast<size_t>(std::find(header.begin(), header.end(), name) - header.begin());
  };
  // train-local's model numbers its classes (the site's node.toml names none).
  const size_t uid = column("sop_instance_uid"), share = column("share_1"), overlay = column("overlay"),
               seg = column("segmentation");
  for (size_t c : {uid, share, overlay, seg}) ASSERT_LT(c, header.size()) << absl::StrJoin(header, ",");
  std::map<std::string, double> expected;  // SOP instance -> lesion pixels on the frame
  std::set<std::string> objects;
  const size_t error = column("error");
  int label_objects = 0;
  for (size_t r = 1; r < rows.size(); ++r) {
    ASSERT_EQ(rows[r].size(), header.size()) << absl::StrJoin(rows[r], ",");
    if (!rows[r][error].empty()) {  // the ground truth's own SEG objects: not images
      EXPECT_NE(rows[r][error].find("segmentation object"), std::string::npos) << rows[r][error];
      ++label_objects;
      continue;
    }
    expected[rows[r][uid]] = std::stod(rows[r][share]) * 32 * 32 * 4;
    EXPECT_TRUE(fs::exists(out + "/" + rows[r][overlay])) << rows[r][overlay];
    objects.insert(rows[r][seg]);
  }
  EXPECT_EQ(label_objects, 40);
  EXPECT_EQ(objects.size(), 40u) << "one SEG per patient's series";
  double found = 0;
  for (const std::string& name : objects) {
    const std::string path = out + "/" + name;
    const node::testing::Dciodvfy check = node::testing::RunDciodvfy(path);
    EXPECT_EQ(check.iod, "Segmentation") << check.output;
    EXPECT_TRUE(check.errors.empty()) << path << "\n" << check.output;
    absl::StatusOr<node::SegObject> object = node::ReadSegmentation(path);
    ASSERT_TRUE(object.ok()) << object.status();
    EXPECT_EQ(object->segments, (std::map<int, std::string>{{1, "1"}}));
    EXPECT_EQ(object->referenced_instances.size(), 2u);
    for (const node::SegFrame& frame : object->frames) {
      const double pixels = static_cast<double>(std::count(frame.mask.begin(), frame.mask.end(), 1));
      EXPECT_NEAR(pixels, expected.at(frame.source_sop_instance_uid), 0.5) << frame.source_sop_instance_uid;
      found += pixels;
    }
  }
  EXPECT_GT(found, 0) << "the model found no lesion anywhere: the comparison would be empty";
  // A rerun replaces the same objects (UIDs and names derive from model and series).
  ASSERT_EQ(RunCommand({NodeBin(), "predict", "--config", config, "--model", model, "--input", data, "--out", csv,
                        "--heatmaps", out, "--dicom-overlays"},
                       log),
            0);
  int seg_files = 0;
  for (const auto& e : fs::recursive_directory_iterator(out)) {
    seg_files += e.path().filename().string().rfind("fedrad-seg-", 0) == 0;
  }
  EXPECT_EQ(seg_files, 40);
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing

namespace fedrad::testing {
namespace {

// Every kind of DICOM object fedrad writes passes dciodvfy (Debian's
// dicom3tools) with no error: synth's CT slices, SEG and RT Structure Set
// objects; import's Secondary Captures, of a class-folder set and of a
// segmentation set; predict's heatmap Secondary Captures and its SEG objects.
// dciodvfy's warnings (what a DICOMDIR would want) are allowed; its errors
// are what a PACS may refuse an object for.
TEST(DicomObjectsTest, EveryKindFedradWritesPassesDciodvfy) {
  const std::string dir = MakeWorkspace();
  std::map<std::string, std::vector<std::string>> files;  // kind -> a few files of it
  auto first_named = [](const std::string& folder, const std::string& name_part, size_t n) {
    std::vector<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(folder)) {
      const std::string name = e.path().filename().string();
      if (e.is_regular_file() && name.find(name_part) != std::string::npos) out.push_back(e.path().string());
    }
    std::sort(out.begin(), out.end());
    if (out.size() > n) out.resize(n);
    return out;
  };
  // synth.
  const std::string synth = dir + "/synth";
  ASSERT_EQ(RunCommand({FedradBin(), "synth", "--sites", "1", "--patients", "2", "--images", "2", "--size", "32",
                        "--task", "segmentation", "--rtstruct", "--out", synth},
                       dir + "/synth.log"),
            0)
      << ReadText(dir + "/synth.log");
  for (const std::string& f : first_named(synth, ".dcm", 100)) {
    const std::string name = fs::path(f).filename().string();
    files[name == "seg.dcm" ? "synth SEG" : name == "rtstruct.dcm" ? "synth RTSTRUCT" : "synth CT"].push_back(f);
  }
  // import: class folders, and images with masks.
  for (const char* cls : {"a", "b"}) {
    fs::create_directories(dir + "/png/" + cls);
    cv::imwrite(dir + "/png/" + cls + "/1.png", cv::Mat(8, 8, CV_8U, cv::Scalar(cls[0] == 'a' ? 10 : 200)));
  }
  fs::create_directories(dir + "/seg/images");
  fs::create_directories(dir + "/seg/masks");
  cv::imwrite(dir + "/seg/images/1.png", cv::Mat(8, 8, CV_8U, cv::Scalar(90)));
  cv::imwrite(dir + "/seg/masks/1.png", cv::Mat(8, 8, CV_8U, cv::Scalar(255)));
  for (const std::vector<std::string>& argv :
       {std::vector<std::string>{FedradBin(), "import", "--png-dir", dir + "/png", "--out", dir + "/imported"},
        std::vector<std::string>{FedradBin(), "import", "--images", dir + "/seg/images", "--masks", dir + "/seg/masks",
                                 "--out", dir + "/imported-seg"}}) {
    ASSERT_EQ(RunCommand(argv, dir + "/import.log"), 0) << ReadText(dir + "/import.log");
  }
  files["import SC"] = first_named(dir + "/imported", ".dcm", 2);
  files["import SC, segmentation"] = first_named(dir + "/imported-seg", ".dcm", 1);
  // predict: a classifier's heatmaps and a U-Net's SEG objects.
  for (const std::string task : {"classification", "segmentation"}) {
    const std::string fdir = dir + "/" + task;
    fs::create_directories(fdir);
    MiniFederation f = SetUpFederation(
        fdir, {.sites = 1, .rounds = 1, .min_nodes = 1, .patients = 2, .images = 2, .dp = false, .task = task});
    ASSERT_FALSE(::testing::Test::HasFailure());
    const std::string config = f.NodeConfig(f.sites[0]), model = fdir + "/model.safetensors";
    std::vector<std::string> train = {NodeBin(), "train-local", "--config", config,   "--size",
                                      "32",      "--epochs",    "1",        "--save", model};
    if (task == "segmentation") train.insert(train.end(), {"--model", "unet2d", "--depth", "1", "--width", "4"});
    ASSERT_EQ(RunCommand(train, fdir + "/train.log"), 0) << ReadText(fdir + "/train.log");
    ASSERT_EQ(RunCommand({NodeBin(), "predict", "--config", config, "--model", model, "--input",
                          fdir + "/data/" + f.sites[0], "--out", fdir + "/p.csv", "--heatmaps", fdir + "/overlays",
                          "--dicom-overlays", "--heatmap-negatives"},
                         fdir + "/predict.log"),
              0)
        << ReadText(fdir + "/predict.log");
    files[task == "segmentation" ? "predict SEG" : "predict heatmap SC"] = first_named(fdir + "/overlays", ".dcm", 2);
  }
  const std::map<std::string, std::string> iod = {
      {"synth CT", "CTImage"},        {"synth SEG", "Segmentation"},          {"synth RTSTRUCT", "RTStructureSet"},
      {"import SC", "SCImage"},       {"import SC, segmentation", "SCImage"}, {"predict heatmap SC", "SCImage"},
      {"predict SEG", "Segmentation"}};
  for (const auto& [kind, want] : iod) {
    ASSERT_FALSE(files[kind].empty()) << "no " << kind << " was written";
    for (const std::string& path : files[kind]) {
      const node::testing::Dciodvfy check = node::testing::RunDciodvfy(path);
      EXPECT_EQ(check.iod, want) << kind << ": " << path << "\n" << check.output;
      EXPECT_TRUE(check.errors.empty()) << kind << ": " << path << "\n" << check.output;
    }
  }
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing
