#include "common/model_zoo.h"

#include <gtest/gtest.h>

namespace fedrad {
namespace {

TEST(ModelZooTest, ManifestIsStableAndSeededInitIsDeterministic) {
  ModelSpec spec;
  auto m = ModelManifest(spec);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_FALSE(m->tensors.empty());
  EXPECT_EQ(m->tensors.front().name, "conv1.weight");
  EXPECT_EQ(m->tensors.front().shape, (std::vector<int64_t>{16, 1, 5, 5}));
  EXPECT_EQ(m->tensors.back().name, "fc2.bias");
  auto a = InitialParameters(spec, 7);
  auto b = InitialParameters(spec, 7);
  auto c = InitialParameters(spec, 8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->values, b->values);
  EXPECT_NE(a->values, c->values);
  EXPECT_EQ(static_cast<int64_t>(a->values.size()), m->total_elements());
}

TEST(ModelZooTest, TramerBonehCnnHasPublishedShape) {
  ModelSpec spec{"tbcnn28", 1, 28, 10};
  auto m = ModelManifest(spec);
  ASSERT_TRUE(m.ok()) << m.status();
  // conv 16 k8, conv 32 k4, linear 512->32, linear 32->10: 26,010 parameters.
  EXPECT_EQ(m->total_elements(), 16 * 64 + 16 + 32 * 16 * 16 + 32 + 512 * 32 + 32 + 32 * 10 + 10);
  spec.input_size = 64;
  EXPECT_FALSE(CheckModelSpec(spec).ok());
}

// Every dimension is bounded (issue 18, defect 4): an input_size of
// 99,999,999 in a plan or a model file once reached OpenCV's resize.
TEST(ModelZooTest, EveryDimensionIsBounded) {
  EXPECT_TRUE(CheckModelSpec(ModelSpec{"ctnet", 1, kMaxInputSize, 2}).ok());
  const absl::Status big = CheckModelSpec(ModelSpec{"ctnet", 1, 99999999, 2});
  EXPECT_NE(big.message().find("input_size must be 1 to 1024, not 99999999"), std::string::npos) << big;
  EXPECT_FALSE(CheckModelSpec(ModelSpec{"ctnet", 1, kMaxInputSize + 1, 2}).ok());
  EXPECT_FALSE(CheckModelSpec(ModelSpec{"ctnet", 1, 0, 2}).ok());
  EXPECT_FALSE(CheckModelSpec(ModelSpec{"ctnet", 5, 64, 2}).ok());
  EXPECT_FALSE(CheckModelSpec(ModelSpec{"ctnet", 1, 64, 1001}).ok());
  ModelSpec flat{"flat", 1, 64, 2};
  flat.parameters = (int64_t{1} << 31) + 1;
  EXPECT_FALSE(CheckModelSpec(flat).ok());
}

// unet2d: its sizes are bounded, the input must halve depth times, the task
// must be segmentation (and a classifier's classification), class names
// one per class, distinct and printable.
TEST(ModelZooTest, UNetSpecIsCheckedAndItsManifestHasEveryLevel) {
  ModelSpec spec{"unet2d", 1, 64, 2};
  spec.task = ModelTask::kSegmentation;
  ASSERT_TRUE(CheckModelSpec(spec).ok()) << CheckModelSpec(spec);
  absl::StatusOr<Manifest> m = ModelManifest(spec);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->tensors.front().name, "down0.conv1.weight");
  EXPECT_EQ(m->tensors.back().name, "head.bias");
  // 4 per down level (conv1, norm1, conv2, norm2: 8 tensors), 6 layers per up level, the head.
  EXPECT_EQ(m->tensors.size(), static_cast<size_t>(8 * (spec.depth + 1) + 12 * spec.depth + 2));
  ModelSpec bad = spec;
  bad.input_size = 60;  // not a multiple of 8
  EXPECT_NE(CheckModelSpec(bad).message().find("multiple of 8"), std::string::npos) << CheckModelSpec(bad);
  bad = spec;
  bad.depth = 6;
  EXPECT_FALSE(CheckModelSpec(bad).ok());
  bad = spec;
  bad.base_width = 6;
  EXPECT_FALSE(CheckModelSpec(bad).ok());
  bad = spec;
  bad.task = ModelTask::kClassification;
  EXPECT_NE(CheckModelSpec(bad).message().find("does segmentation"), std::string::npos) << CheckModelSpec(bad);
  bad = spec;
  bad.task = static_cast<ModelTask>(7);
  EXPECT_NE(CheckModelSpec(bad).message().find("task 7"), std::string::npos) << CheckModelSpec(bad);
  ModelSpec classifier{"ctnet", 1, 64, 2};
  classifier.task = ModelTask::kSegmentation;
  EXPECT_NE(CheckModelSpec(classifier).message().find("unet2d"), std::string::npos) << CheckModelSpec(classifier);
  ModelSpec named = spec;
  named.class_names = {"background", "lesion"};
  EXPECT_TRUE(CheckModelSpec(named).ok());
  named.class_names = {"background"};
  EXPECT_FALSE(CheckModelSpec(named).ok());
  named.class_names = {"lesion", "lesion"};
  EXPECT_FALSE(CheckModelSpec(named).ok());
  named.class_names = {"background", "bad\nname"};
  EXPECT_FALSE(CheckModelSpec(named).ok());
  named.class_names = {"background", ""};
  EXPECT_FALSE(CheckModelSpec(named).ok());
  // The shape travels in the metadata, class names as JSON.
  named.class_names = {"background", "lesion"};
  const SafetensorsMetadata meta = ModelShapeMetadata(named);
  EXPECT_EQ(meta.at("task"), "segmentation");
  EXPECT_EQ(meta.at("depth"), "3");
  EXPECT_EQ(meta.at("base_width"), "16");
  EXPECT_EQ(meta.at("class_names"), "[\"background\",\"lesion\"]");
}

TEST(ModelZooTest, UnknownArchitectureIsNamed) {
  ModelSpec spec{"resnet999", 1, 64, 2};
  absl::Status s = CheckModelSpec(spec);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("resnet999"), std::string::npos);
}

}  // namespace
}  // namespace fedrad

namespace fedrad {
namespace {

TEST(ModelZooFlatTest, FlatModelHasItsPlannedLength) {
  ModelSpec spec;
  spec.architecture = "flat";
  spec.parameters = 1000;
  absl::StatusOr<Manifest> m = ModelManifest(spec);
  ASSERT_TRUE(m.ok()) << m.status();
  absl::StatusOr<ModelParameters> p = InitialParameters(spec, 1);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->manifest == *m);
  EXPECT_EQ(p->values.size(), 1000u);
  spec.parameters = 0;
  EXPECT_FALSE(CheckModelSpec(spec).ok());
}

}  // namespace
}  // namespace fedrad
