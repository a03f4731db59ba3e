#include "node/saved_model.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/model_zoo.h"
#include "common/scratch_dir.h"
#include "crypto/sha256.h"

namespace fedrad::node {
namespace {

namespace fs = std::filesystem;

class SavedModelTest : public ::testing::Test {
 protected:
  void SetUp() override { site_.output_size = 16; }

  // A ctnet file with `metadata` on top of its shape.
  SavedModel Save(const SafetensorsMetadata& extra) {
    const ModelSpec spec{"ctnet", 1, 16, 2};
    absl::StatusOr<ModelParameters> p = InitialParameters(spec, 1);
    EXPECT_TRUE(p.ok());
    SafetensorsMetadata m = ModelShapeMetadata(spec);
    for (const auto& [k, v] : extra) m[k] = v;
    const std::string path = (dir_ / "m.safetensors").string();
    EXPECT_TRUE(WriteSafetensorsFile(path, *p, m).ok());
    absl::StatusOr<SavedModel> model = LoadSavedModel(path);
    EXPECT_TRUE(model.ok()) << model.status();
    EXPECT_EQ(model->sha256, *crypto::Sha256File(path));  // the hash of what was read
    return *model;
  }

  ScratchDir scratch_{"saved_model"};
  const fs::path dir_ = scratch_.path();
  PreprocessSettings site_;
};

TEST_F(SavedModelTest, AcceptsTheSamePipelineAndNamesEachDifference) {
  SafetensorsMetadata m;
  SetPipelineMetadata(site_, &m);
  EXPECT_TRUE(CheckPipeline(Save(m), site_).ok());

  PreprocessSettings other = site_;
  other.window = "lung";
  other.normalize = "zscore";
  absl::Status s = CheckPipeline(Save(m), other);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("window=explicit(40,400) in the model, window=lung(40,400) here"), std::string::npos) << s;
  EXPECT_NE(s.message().find("no normalize in the model, normalize=zscore here"), std::string::npos) << s;
  EXPECT_EQ(s.message().find("resize"), std::string::npos) << s;  // equal steps are not named
}

TEST_F(SavedModelTest, AModelOfSeveralPipelinesAcceptsEachOfThem) {
  PreprocessSettings b = site_;
  b.clahe = true;
  SafetensorsMetadata m;
  m["preprocessing"] = DescribePipeline(site_) + "\n" + DescribePipeline(b);
  const SavedModel model = Save(m);
  EXPECT_TRUE(CheckPipeline(model, site_).ok());
  EXPECT_TRUE(CheckPipeline(model, b).ok());
  PreprocessSettings c = site_;
  c.output_size = 32;
  absl::Status s = CheckPipeline(model, c);
  EXPECT_NE(s.message().find("resize=pad(16) in the model, resize=pad(32) here"), std::string::npos) << s;
  EXPECT_NE(s.message().find("for its other pipeline"), std::string::npos) << s;
}

TEST_F(SavedModelTest, AModelWithoutAPipelineIsRefused) {
  absl::Status s = CheckPipeline(Save({}), site_);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("does not name the preprocessing"), std::string::npos) << s;
}

TEST_F(SavedModelTest, TensorsOfAnotherShapeAreRefused) {
  const ModelSpec spec{"ctnet", 1, 16, 3};
  absl::StatusOr<ModelParameters> p = InitialParameters(spec, 1);
  ASSERT_TRUE(p.ok());
  SafetensorsMetadata m = ModelShapeMetadata(spec);
  m["num_classes"] = "2";  // says 2, holds 3
  const std::string path = (dir_ / "lying.safetensors").string();
  ASSERT_TRUE(WriteSafetensorsFile(path, *p, m).ok());
  absl::StatusOr<SavedModel> model = LoadSavedModel(path);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("not those of ctnet with 2 classes"), std::string::npos) << model.status();
}

}  // namespace
}  // namespace fedrad::node
