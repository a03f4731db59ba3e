#include "node/predict.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/model_zoo.h"
#include "common/safetensors.h"
#include "common/scratch_dir.h"
#include "node/inference.h"
#include "node/saved_model.h"
#include "node/test_dicom.h"
#include "node/trainer.h"

namespace fedrad::node {
namespace {

namespace fs = std::filesystem;

class PredictTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir_ / "in/sub");
    for (int i = 0; i < 6; ++i) {
      testing::TestImage im;
      im.rows = 24;
      im.cols = 16;
      im.seed = i;
      im.sop_instance_uid = "2.25.50" + std::to_string(i);
      ASSERT_TRUE(testing::WriteTestImage(im, (dir_ / "in" / ("i" + std::to_string(i) + ".dcm")).string()));
    }
    testing::TestImage multi;
    multi.rows = multi.cols = 16;
    multi.frames = 3;
    multi.sop_instance_uid = "2.25.599";
    ASSERT_TRUE(testing::WriteTestImage(multi, (dir_ / "in/sub/multi.dcm").string()));
    std::ofstream((dir_ / "in/notes.txt").string()) << "not an image";

    settings_.output_size = 16;
    const ModelSpec spec{"ctnet", 1, 16, 2};
    absl::StatusOr<ModelParameters> p = InitialParameters(spec, 3);
    ASSERT_TRUE(p.ok());
    SafetensorsMetadata m = ModelShapeMetadata(spec);
    SetPipelineMetadata(settings_, &m);
    model_path_ = (dir_ / "model.safetensors").string();
    ASSERT_TRUE(WriteSafetensorsFile(model_path_, *p, m).ok());

    o_.model_path = model_path_;
    o_.input = (dir_ / "in").string();
    o_.out_csv = (dir_ / "out.csv").string();
    o_.preprocess = settings_;
    o_.class_names = {"normal", "lesion"};
    o_.batch = 4;  // several batches, one spanning files
  }
  // The input folder's images, frame by frame in the CSV's order, as the
  // pipeline prepares them (labels 0; `labels` zero targets each).
  ImageSet InputImages(int labels) const {
    ImageSet set;
    set.size = 16;
    for (const std::string name : {"i0.dcm", "i1.dcm", "i2.dcm", "i3.dcm", "i4.dcm", "i5.dcm", "sub/multi.dcm"}) {
      LoadedImage image = ImageLoader::Load((dir_ / "in" / name).string(), o_.preprocess);
      EXPECT_TRUE(image.status.ok()) << name;
      for (const PreparedFrame& f : image.frames) {
        set.pixels.insert(set.pixels.end(), f.pixels.begin(), f.pixels.end());
        set.labels.push_back(0);
        set.targets.insert(set.targets.end(), static_cast<size_t>(labels), 0);
      }
    }
    return set;
  }
  ScratchDir scratch_{"predict"};
  const fs::path dir_ = scratch_.path();
  std::string model_path_;
  PreprocessSettings settings_;
  PredictOptions o_;
};

TEST_F(PredictTest, OneRowPerFrameWithTheEvaluatorsProbabilities) {
  o_.heatmap_dir = (dir_ / "heatmaps").string();
  o_.dicom_overlays = true;
  o_.heatmap_negatives = true;  // every image gets its heatmap here
  absl::StatusOr<PredictReport> r = Predict(o_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->files, 8);
  EXPECT_EQ(r->images, 9);
  EXPECT_EQ(r->heatmaps, 9);
  ASSERT_EQ(r->skipped.size(), 1u);

  const auto rows = testing::ReadCsvRows(o_.out_csv);
  ASSERT_EQ(rows.size(), 11u);  // header, 9 frames, the text file
  EXPECT_EQ(rows[0], (std::vector<std::string>{"path", "sop_instance_uid", "frame", "predicted_class", "p_normal",
                                               "p_lesion", "heatmap", "error"}));
  // Sorted by path: i0..i5, notes.txt, sub/multi.dcm frames 1-3.
  EXPECT_EQ(rows[1][0], "i0.dcm");
  EXPECT_EQ(rows[1][1], "2.25.500");
  EXPECT_EQ(rows[7][0], "notes.txt");
  EXPECT_FALSE(rows[7][7].empty());
  EXPECT_TRUE(rows[7][3].empty());
  EXPECT_EQ(rows[8][0], "sub/multi.dcm");
  EXPECT_EQ(rows[10][2], "3");
  // Named without the source's .dcm (no "i0.dcm.dcm").
  EXPECT_EQ(rows[10][6], "sub/multi.frame3.heatmap.png");
  EXPECT_TRUE(fs::exists(dir_ / "heatmaps/sub/multi.frame3.heatmap.png"));
  EXPECT_TRUE(fs::exists(dir_ / "heatmaps/sub/multi.frame3.heatmap.dcm"));
  EXPECT_TRUE(fs::exists(dir_ / "heatmaps/i0.heatmap.png"));
  EXPECT_TRUE(fs::exists(dir_ / "heatmaps/i0.heatmap.dcm"));

  // The same images through the evaluator's own forward pass.
  ImageSet set = InputImages(0);
  absl::StatusOr<SavedModel> model = LoadSavedModel(model_path_);
  ASSERT_TRUE(model.ok());
  absl::StatusOr<Evaluation> e = EvaluateModel(model->spec, model->parameters, set);
  ASSERT_TRUE(e.ok()) << e.status();
  const std::vector<size_t> csv_row = {1, 2, 3, 4, 5, 6, 8, 9, 10};
  for (size_t i = 0; i < 9; ++i) {
    const auto& row = rows[csv_row[i]];
    const double p0 = std::stod(row[4]), p1 = std::stod(row[5]);
    EXPECT_NEAR(p0, e->scores.probabilities[2 * i], 1e-5) << i;
    EXPECT_NEAR(p1, e->scores.probabilities[2 * i + 1], 1e-5) << i;
    EXPECT_NEAR(p0 + p1, 1.0, 1e-5);
    EXPECT_EQ(row[3], p1 > p0 ? "lesion" : "normal");
  }
}

TEST_F(PredictTest, HeatmapsOfABatchAreEachImagesOwn) {
  absl::StatusOr<SavedModel> model = LoadSavedModel(model_path_);
  ASSERT_TRUE(model.ok());
  absl::StatusOr<std::unique_ptr<Predictor>> predictor = Predictor::Create(*model);
  ASSERT_TRUE(predictor.ok()) << predictor.status();
  std::vector<float> pixels;
  for (int i = 0; i < 6; ++i) {
    LoadedImage image = ImageLoader::Load((dir_ / "in" / ("i" + std::to_string(i) + ".dcm")).string(), settings_);
    ASSERT_TRUE(image.status.ok());
    pixels.insert(pixels.end(), image.frames[0].pixels.begin(), image.frames[0].pixels.end());
  }
  absl::StatusOr<BatchOutput> all = (*predictor)->Run(pixels.data(), 6, true);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->heatmaps.size(), 6u * 256);
  int nonzero_maps = 0;
  for (int i = 0; i < 6; ++i) {
    absl::StatusOr<BatchOutput> one = (*predictor)->Run(pixels.data() + i * 256, 1, true);
    ASSERT_TRUE(one.ok());
    float peak = 0;
    for (int j = 0; j < 256; ++j) {
      const float v = all->heatmaps[i * 256 + j];
      EXPECT_NEAR(v, one->heatmaps[j], 1e-4) << i << " " << j;
      EXPECT_GE(v, 0.0f);
      EXPECT_LE(v, 1.0f);
      peak = std::max(peak, v);
    }
    // Scaled per image: the strongest point is 1 unless nothing supports the class.
    if (peak > 0) {
      EXPECT_NEAR(peak, 1.0f, 1e-5);
      ++nonzero_maps;
    }
    EXPECT_NEAR(all->probabilities[2 * i], one->probabilities[0], 1e-5);
  }
  EXPECT_GT(nonzero_maps, 0);
  // Without heatmap_negatives, images predicted as class 0 get none.
  PredictOptions skip = o_;
  skip.heatmap_dir = (dir_ / "skip").string();
  skip.out_csv = (dir_ / "skip.csv").string();
  absl::StatusOr<PredictReport> skipped = Predict(skip);
  ASSERT_TRUE(skipped.ok()) << skipped.status();
  EXPECT_EQ(skipped->heatmaps, skipped->images - skipped->predicted[0]);
  // Without heatmaps, the same probabilities.
  absl::StatusOr<BatchOutput> plain = (*predictor)->Run(pixels.data(), 6, false);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->heatmaps.empty());
  for (size_t j = 0; j < plain->probabilities.size(); ++j) {
    EXPECT_NEAR(plain->probabilities[j], all->probabilities[j], 1e-6);
  }
}

// A ResNet at 64x64 ends in a 2x2 stage; its heatmaps come from the last
// layer of at least 5x5 (the second stage, 8x8). Bilinear upsampling to 64
// with align_corners = false copies a source row over the border rows: from
// a 2x2 map rows 0 to 15 would all be alike, from an 8x8 one only rows 0 to 3.
TEST_F(PredictTest, AResNetsHeatmapsComeFromAStageFinerThanItsLast) {
  ModelSpec spec{"resnet18", 1, 64, 2};
  spec.base_width = 8;
  absl::StatusOr<ModelParameters> p = InitialParameters(spec, 5);
  ASSERT_TRUE(p.ok()) << p.status();
  SafetensorsMetadata m = ModelShapeMetadata(spec);
  PreprocessSettings settings = settings_;
  settings.output_size = 64;
  SetPipelineMetadata(settings, &m);
  const std::string path = (dir_ / "resnet.safetensors").string();
  ASSERT_TRUE(WriteSafetensorsFile(path, *p, m).ok());
  absl::StatusOr<SavedModel> model = LoadSavedModel(path);
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<std::unique_ptr<Predictor>> predictor = Predictor::Create(*model);
  ASSERT_TRUE(predictor.ok()) << predictor.status();
  std::vector<float> pixels(4 * 64 * 64);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<float>((i * 7919) % 101) / 100.0f;
  absl::StatusOr<BatchOutput> out = (*predictor)->Run(pixels.data(), 4, true);
  ASSERT_TRUE(out.ok()) << out.status();
  int compared = 0;
  for (int n = 0; n < 4; ++n) {
    const float* map = out->heatmaps.data() + n * 64 * 64;
    if (*std::max_element(map, map + 64 * 64) == 0) continue;  // nothing supports the class
    ++compared;
    float row_difference = 0;
    for (int x = 0; x < 64; ++x) row_difference = std::max(row_difference, std::abs(map[x] - map[8 * 64 + x]));
    EXPECT_GT(row_difference, 1e-4) << "image " << n << ": rows 0 and 8 alike, as from a 2x2 map";
  }
  EXPECT_GT(compared, 0);
}

// A multilabel model: each label's own sigmoid (not a softmax: the row need
// not sum to 1), the labels found at 0.5 or more '|'-separated, as the
// evaluator's forward pass gives them, and a heatmap only where one is found.
TEST_F(PredictTest, AMultilabelModelListsTheLabelsItFinds) {
  ModelSpec spec{"ctnet", 1, 16, 3};
  spec.task = ModelTask::kMultilabel;
  spec.class_names = {"lesion", "effusion", "clip"};
  absl::StatusOr<ModelParameters> p = InitialParameters(spec, 11);
  ASSERT_TRUE(p.ok());
  // A head bias that puts the labels on both sides of 0.5.
  const std::string head = p->manifest.tensors.back().name;
  ASSERT_NE(head.find("bias"), std::string::npos) << head;
  const size_t bias_at = p->values.size() - 3;
  p->values[bias_at] = 3;
  p->values[bias_at + 1] = -3;
  p->values[bias_at + 2] = 0;
  SafetensorsMetadata m = ModelShapeMetadata(spec);
  SetPipelineMetadata(settings_, &m);
  o_.model_path = (dir_ / "labels.safetensors").string();
  ASSERT_TRUE(WriteSafetensorsFile(o_.model_path, *p, m).ok());
  o_.class_names.clear();
  o_.heatmap_dir = (dir_ / "heatmaps").string();
  absl::StatusOr<PredictReport> r = Predict(o_);
  ASSERT_TRUE(r.ok()) << r.status();
  const auto rows = testing::ReadCsvRows(o_.out_csv);
  ASSERT_EQ(rows.size(), 11u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"path", "sop_instance_uid", "frame", "predicted_labels", "p_lesion",
                                               "p_effusion", "p_clip", "heatmap", "error"}));
  ImageSet set = InputImages(3);
  absl::StatusOr<Evaluation> e = EvaluateModel(spec, *p, set);
  ASSERT_TRUE(e.ok()) << e.status();
  const std::vector<size_t> csv_row = {1, 2, 3, 4, 5, 6, 8, 9, 10};
  for (size_t i = 0; i < 9; ++i) {
    const auto& row = rows[csv_row[i]];
    std::vector<std::string> found;
    for (int c = 0; c < 3; ++c) {
      const double got = std::stod(row[4 + c]);
      EXPECT_NEAR(got, e->scores.probabilities[3 * i + c], 1e-5) << i << " " << c;
      if (got >= 0.5) found.push_back(spec.class_names[c]);
    }
    EXPECT_GT(std::stod(row[4]), 0.9);
    EXPECT_LT(std::stod(row[5]), 0.1);
    std::string joined;
    for (const std::string& f : found) joined += (joined.empty() ? "" : "|") + f;
    EXPECT_EQ(row[3], joined) << i;
    EXPECT_FALSE(row[7].empty()) << "lesion is found in every image, so each has its heatmap";
  }
  EXPECT_EQ(r->predicted.at(0), 9) << "every row shows lesion";
  EXPECT_EQ(r->predicted.count(1) ? r->predicted.at(1) : 0, 0);
}

TEST_F(PredictTest, RefusesAnotherPipelineAndWritesNothing) {
  o_.preprocess.window_width = 1500;
  absl::StatusOr<PredictReport> r = Predict(o_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("window=explicit(40,400) in the model, window=explicit(40,1500) here"),
            std::string::npos)
      << r.status();
  EXPECT_FALSE(fs::exists(o_.out_csv));
}

// A broken model gives no confident-looking rows (issue 18, defect 5): a NaN
// weight is refused on load, and weights that overflow (1e38: finite, but
// every output NaN) are refused at the first prediction; no CSV is written.
TEST_F(PredictTest, ABrokenModelIsRefusedAndWritesNothing) {
  absl::StatusOr<SavedModel> saved = LoadSavedModel(model_path_);
  ASSERT_TRUE(saved.ok()) << saved.status();
  for (float value : {std::nanf(""), 1e38f}) {
    ModelParameters broken = saved->parameters;
    std::fill(broken.values.begin(), broken.values.end(), value);
    ASSERT_TRUE(WriteSafetensorsFile(model_path_, broken, saved->metadata).ok());
    absl::StatusOr<PredictReport> r = Predict(o_);
    ASSERT_FALSE(r.ok()) << value;
    EXPECT_NE(r.status().message().find(std::isnan(value) ? "a model must be finite" : "non-finite probability"),
              std::string::npos)
        << r.status();
    EXPECT_FALSE(fs::exists(o_.out_csv)) << value;
  }
}

// A model file whose metadata asks for an image side no model takes
// (issue 18, defect 4: it once ended in an uncaught OpenCV exception) is
// refused on load, naming the file and the field.
TEST_F(PredictTest, AModelAskingForAHugeInputIsRefused) {
  absl::StatusOr<SavedModel> saved = LoadSavedModel(model_path_);
  ASSERT_TRUE(saved.ok()) << saved.status();
  SafetensorsMetadata metadata = saved->metadata;
  metadata["input_size"] = "99999999";
  ASSERT_TRUE(WriteSafetensorsFile(model_path_, saved->parameters, metadata).ok());
  absl::StatusOr<PredictReport> r = Predict(o_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(absl::StrCat("'", model_path_, "': model input_size must be 1 to 1024")),
            std::string::npos)
      << r.status();
  EXPECT_FALSE(fs::exists(o_.out_csv));
}

TEST_F(PredictTest, ClassNamesMustMatchTheModel) {
  o_.class_names = {"a", "b", "c"};
  absl::StatusOr<PredictReport> r = Predict(o_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("has 2 classes, the site names 3"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace fedrad::node
