#include "node/train_local.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/privacy_accountant.h"
#include "common/safetensors.h"
#include "node/test_dicom.h"

namespace fedrad::node {
namespace {

namespace fs = std::filesystem;

TEST(TrainLocalTest, ReportsTheAccountantsEpsilonAndSavesTheModel) {
  const fs::path dir = fs::temp_directory_path() / ("fedrad_train_local_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "data");
  std::string labels = "path,label\n";
  for (int i = 0; i < 40; ++i) {
    testing::TestImage im;
    im.rows = im.cols = 16;
    im.bits_stored = 12;
    im.is_signed = false;
    im.seed = i;
    im.patient_id = "P" + std::to_string(i / 2);  // 20 patients, 2 images each
    const std::string name = "i" + std::to_string(i) + ".dcm";
    ASSERT_TRUE(testing::WriteTestImage(im, (dir / "data" / name).string()));
    labels += name + "," + std::to_string(i % 2) + "\n";
  }
  std::ofstream((dir / "data/labels.csv").string()) << labels;

  TrainLocalOptions o;
  o.spec.data_dir = (dir / "data").string();
  o.spec.labels_csv = (dir / "data/labels.csv").string();
  o.spec.preprocess.output_size = 16;
  o.model = {"ctnet", 1, 16, 2};
  o.epochs = 2;
  o.batch = 4;
  o.threads = 1;
  o.save_path = (dir / "model.safetensors").string();
  o.dp = TrainLocalOptions::Dp{1.0, -1, /*target_epsilon=*/5.0, 1e-5, /*patient_level=*/true};
  std::ostringstream out;
  absl::Status s = TrainLocal(o, out);
  ASSERT_TRUE(s.ok()) << s;
  const std::string report = out.str();
  // Patients in the 80% training split, q = 4 / patients, steps = epochs / q.
  EXPECT_NE(report.find("patient-level"), std::string::npos) << report;
  EXPECT_NE(report.find("held-out accuracy"), std::string::npos) << report;
  const size_t at = report.find("-> epsilon = ");
  ASSERT_NE(at, std::string::npos) << report;
  const double epsilon = std::stod(report.substr(at + 13));
  EXPECT_LE(epsilon, 5.0);  // sigma was the smallest meeting the target
  EXPECT_GT(epsilon, 4.9);
  auto model = ReadSafetensorsFile(o.save_path);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->metadata.at("architecture"), "ctnet");
  EXPECT_EQ(model->metadata.at("input_size"), "16");
  EXPECT_EQ(model->metadata.at("num_classes"), "2");
  // The saved model evaluates on the same data, its shape taken from the file.
  EvaluateOptions eo;
  eo.spec = o.spec;
  eo.spec.preprocess.output_size = 0;
  auto e = EvaluateModelFile(o.save_path, eo);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->count, 40);
  EXPECT_GE(e->accuracy, 0.0);
  ASSERT_EQ(e->scores.size(), 40u);
  EXPECT_EQ(e->scores.probabilities.size(), 80u);
  EXPECT_NEAR(e->scores.probabilities[0] + e->scores.probabilities[1], 1.0, 1e-5);
  absl::StatusOr<Metrics> m = ComputeMetrics(e->scores);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_DOUBLE_EQ(m->accuracy, e->accuracy);
  // Only the validation part of the patient split, as the node makes it.
  eo.validation_fraction = 0.2;
  auto v = EvaluateModelFile(o.save_path, eo);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_GT(v->count, 0);
  EXPECT_LT(v->count, 40);
  // A size that contradicts the file is refused, naming both.
  eo.spec.preprocess.output_size = 32;
  auto wrong = EvaluateModelFile(o.save_path, eo);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("input_size 16, not 32"), std::string::npos) << wrong.status();
  EXPECT_FALSE(EvaluateModelFile((dir / "missing.safetensors").string(), eo).ok());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fedrad::node
