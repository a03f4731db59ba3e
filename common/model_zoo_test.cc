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
