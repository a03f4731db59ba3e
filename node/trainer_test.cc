#include "node/trainer.h"

#include <gtest/gtest.h>

#include "common/model_zoo.h"

namespace fedrad::node {
namespace {

// Bright-centre images are class 1, dark ones class 0: trivially separable.
ImageSet ToySet(int n, int size) {
  ImageSet s;
  s.size = size;
  for (int i = 0; i < n; ++i) {
    const int label = i % 2;
    for (int y = 0; y < size; ++y) {
      for (int x = 0; x < size; ++x) {
        const bool centre = label == 1 && std::abs(y - size / 2) < 3 && std::abs(x - size / 2) < 3;
        s.pixels.push_back(centre ? 1.0f : 0.2f + 0.01f * static_cast<float>((x * 7 + y * 3 + i) % 10));
      }
    }
    s.labels.push_back(label);
    s.patients.push_back("p" + std::to_string(i));
  }
  return s;
}

TEST(TrainerTest, LearnsASeparableTaskAndReturnsADeltaOfTheModelsShape) {
  SetTorchThreads(1);
  ModelSpec spec;
  spec.input_size = 16;
  auto global = InitialParameters(spec, 1);
  ASSERT_TRUE(global.ok());
  ImageSet train = ToySet(64, 16);
  auto before = EvaluateModel(spec, *global, train);
  ASSERT_TRUE(before.ok());
  LocalTrainingSettings settings;
  settings.local_epochs = 15;
  settings.batch_size = 16;
  settings.learning_rate = 0.05;
  auto out = TrainLocally(spec, *global, train, settings);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->delta.size(), global->values.size());
  EXPECT_EQ(out->examples, 64);
  ModelParameters trained = *global;
  for (size_t i = 0; i < trained.values.size(); ++i) trained.values[i] += out->delta[i];
  auto after = EvaluateModel(spec, trained, train);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->count, 64);
  EXPECT_GE(after->accuracy, 0.95);
  EXPECT_LT(after->loss, before->loss);
}

TEST(TrainerTest, RefusesImagesOfTheWrongSize) {
  ModelSpec spec;
  spec.input_size = 32;
  auto global = InitialParameters(spec, 1);
  auto out = TrainLocally(spec, *global, ToySet(4, 16), LocalTrainingSettings{});
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("16x16"), std::string::npos);
  EXPECT_FALSE(TrainLocally(spec, *global, ImageSet{}, LocalTrainingSettings{}).ok());
}

}  // namespace
}  // namespace fedrad::node
