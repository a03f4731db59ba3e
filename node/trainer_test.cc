#include "node/trainer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "common/model_zoo.h"
#include "common/multilabel_metrics.h"

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

// Bright squares at varied places (half the images have none) and masks
// that mark them: a U-Net learns them, with plain SGD and under DP-SGD.
ImageSet ToySegmentationSet(int n, int size) {
  ImageSet s;
  s.size = size;
  for (int i = 0; i < n; ++i) {
    const bool lesion = i % 2 == 1;
    const int cx = 4 + (i * 5) % (size - 8), cy = 4 + (i * 3) % (size - 8), r = 2 + i % 3;
    int64_t foreground = 0;
    for (int y = 0; y < size; ++y) {
      for (int x = 0; x < size; ++x) {
        const bool in = lesion && std::abs(x - cx) <= r && std::abs(y - cy) <= r;
        s.pixels.push_back(in ? 0.9f : 0.2f + 0.02f * static_cast<float>((x * 7 + y * 3 + i) % 10));
        s.masks.push_back(in ? 1 : 0);
        foreground += in;
      }
    }
    s.labels.push_back(foreground > 0);
    s.patients.push_back("p" + std::to_string(i / 2));
  }
  return s;
}

double MeanDice(const Evaluation& e) {
  double sum = 0;
  for (double d : e.dice) sum += d;
  return e.dice.empty() ? 0 : sum / static_cast<double>(e.dice.size());
}

TEST(TrainerTest, UNetLearnsToSegment) {
  SetTorchThreads(1);
  ModelSpec spec{"unet2d", 1, 16, 2};
  spec.task = ModelTask::kSegmentation;
  spec.depth = 2;
  spec.base_width = 8;
  auto global = InitialParameters(spec, 1);
  ASSERT_TRUE(global.ok());
  ImageSet train = ToySegmentationSet(64, 16);
  auto before = EvaluateModel(spec, *global, train);
  ASSERT_TRUE(before.ok());
  LocalTrainingSettings settings;
  settings.local_epochs = 20;
  settings.batch_size = 16;
  settings.learning_rate = 0.05;
  auto out = TrainLocally(spec, *global, train, settings);
  ASSERT_TRUE(out.ok()) << out.status();
  ModelParameters trained = *global;
  for (size_t i = 0; i < trained.values.size(); ++i) trained.values[i] += out->delta[i];
  auto after = EvaluateModel(spec, trained, train);
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->dice.size(), 64u);
  ASSERT_EQ(after->predicted_masks.size(), 64u * 16 * 16);
  EXPECT_LT(after->loss, before->loss);
  EXPECT_GE(MeanDice(*after), 0.9) << "before: " << MeanDice(*before);
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

TEST(TrainerTest, DpSgdStillLearnsAndCountsItsSteps) {
  SetTorchThreads(1);
  ModelSpec spec;
  spec.input_size = 16;
  auto global = InitialParameters(spec, 1);
  ImageSet train = ToySet(128, 16);
  for (int64_t i = 0; i < train.count(); ++i) train.patients[i] = "p" + std::to_string(i / 2);  // 2 images each
  LocalTrainingSettings settings;
  settings.learning_rate = 0.5;
  settings.momentum = 0.5;
  settings.dp = DpTrainingSettings{/*noise_multiplier=*/0.8,
                                   /*clip_norm=*/1.0,
                                   /*sampling_rate=*/0.25,
                                   /*steps=*/60,
                                   /*patient_level=*/true,
                                   /*test_seed=*/9};
  auto out = TrainLocally(spec, *global, train, settings);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->dp_steps, 60);
  EXPECT_EQ(out->dp_units, 64);  // patients, not images
  EXPECT_GT(out->dp_mean_norm, 0);
  ModelParameters trained = *global;
  for (size_t i = 0; i < trained.values.size(); ++i) trained.values[i] += out->delta[i];
  auto after = EvaluateModel(spec, trained, train);
  ASSERT_TRUE(after.ok());
  EXPECT_GE(after->accuracy, 0.9);
  // The noise is real: the same data and seed-free runs give different models.
  settings.dp->test_seed = 0;
  auto a = TrainLocally(spec, *global, train, settings);
  auto b = TrainLocally(spec, *global, train, settings);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->delta, b->delta);
}

// Multilabel: two findings drawn independently (a bright centre, a bright
// left edge) in images that may show both, one or none: the trainer learns
// each from its own sigmoid, with plain SGD and under DP-SGD, and the
// evaluation's scores hold one sigmoid per label.
ImageSet ToyMultilabelSet(int n, int size) {
  ImageSet s;
  s.size = size;
  for (int i = 0; i < n; ++i) {
    const bool centre = i % 2 == 1, edge = (i / 2) % 2 == 1;
    for (int y = 0; y < size; ++y) {
      for (int x = 0; x < size; ++x) {
        const bool in_centre = centre && std::abs(y - size / 2) < 3 && std::abs(x - size / 2) < 3;
        const bool in_edge = edge && x < 3;
        s.pixels.push_back(in_centre || in_edge ? 1.0f : 0.2f + 0.01f * static_cast<float>((x * 7 + y * 3 + i) % 10));
      }
    }
    s.targets.push_back(centre);
    s.targets.push_back(edge);
    s.labels.push_back(centre || edge);
    s.patients.push_back("p" + std::to_string(i / 2));
  }
  return s;
}

TEST(TrainerTest, MultilabelLearnsEachLabelPlainAndUnderDp) {
  SetTorchThreads(1);
  ModelSpec spec{"ctnet", 1, 16, 2};
  spec.task = ModelTask::kMultilabel;
  spec.class_names = {"centre", "edge"};
  auto global = InitialParameters(spec, 1);
  ASSERT_TRUE(global.ok());
  ImageSet train = ToyMultilabelSet(128, 16);
  auto before = EvaluateModel(spec, *global, train);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_TRUE(before->scores.multilabel());
  ASSERT_EQ(before->scores.probabilities.size(), 256u);
  EXPECT_EQ(before->class_names, spec.class_names);
  LocalTrainingSettings plain;
  plain.local_epochs = 15;
  plain.batch_size = 16;
  plain.learning_rate = 0.05;
  LocalTrainingSettings dp;
  dp.learning_rate = 0.5;
  dp.momentum = 0.5;
  dp.dp = DpTrainingSettings{0.8, 1.0, 0.25, 80, true, 9};
  for (const LocalTrainingSettings* settings : {&plain, &dp}) {
    auto out = TrainLocally(spec, *global, train, *settings);
    ASSERT_TRUE(out.ok()) << out.status();
    ModelParameters trained = *global;
    for (size_t i = 0; i < trained.values.size(); ++i) trained.values[i] += out->delta[i];
    auto after = EvaluateModel(spec, trained, train);
    ASSERT_TRUE(after.ok());
    EXPECT_LT(after->loss, before->loss) << (settings->dp ? "DP" : "plain");
    absl::StatusOr<MultilabelMetrics> m = ComputeMultilabelMetrics(after->scores);
    ASSERT_TRUE(m.ok()) << m.status();
    for (int l = 0; l < 2; ++l) {
      EXPECT_GE(*m->per_label[l].roc_auc, 0.95) << "label " << l << (settings->dp ? " DP" : " plain");
    }
    EXPECT_GE(after->accuracy, 0.9) << (settings->dp ? "DP" : "plain");
  }
  // Targets that do not cover every label are refused, not read past.
  train.targets.pop_back();
  EXPECT_FALSE(TrainLocally(spec, *global, train, plain).ok());
}

// [model] freeze: frozen layers do not move, under plain SGD and DP-SGD
// alike, and the delta holds the trained parameters only. The first step's
// gradient of the trained ones is the same whether the others are frozen or
// not; from the second step on it differs, because unfrozen layers moved in
// the first (with nothing frozen, the two runs would agree at every step).
// Under DP the unit norms leave the frozen layers out: the same first step's
// mean norm is smaller with them frozen.
TEST(TrainerTest, FrozenLayersDoNotTrainAndLeaveTheDelta) {
  SetTorchThreads(1);
  ModelSpec spec;
  spec.input_size = 16;
  ModelSpec frozen = spec;
  frozen.freeze = {"conv1", "norm1", "fc1"};
  auto global = InitialParameters(spec, 1);
  ASSERT_TRUE(global.ok());
  auto trained = TrainedParametersOf(frozen);
  ASSERT_TRUE(trained.ok()) << trained.status();
  ImageSet train = ToySet(32, 16);
  for (bool dp : {false, true}) {
    SCOPED_TRACE(dp ? "DP-SGD" : "SGD");
    auto run = [&](const ModelSpec& s, int steps) {
      LocalTrainingSettings settings;
      settings.learning_rate = 0.05;
      settings.momentum = 0;
      settings.batch_size = 32;  // one full batch a step
      settings.local_epochs = steps;
      // q = 1 takes every unit at each step; no noise, no clipping in effect.
      if (dp) settings.dp = DpTrainingSettings{0.0, 1e6, 1.0, steps, /*patient_level=*/false, /*test_seed=*/3};
      auto out = TrainLocally(s, *global, train, settings);
      EXPECT_TRUE(out.ok()) << out.status();
      return *out;
    };
    const TrainingOutcome one_frozen = run(frozen, 1), one_all = run(spec, 1);
    ASSERT_EQ(one_frozen.delta.size(), static_cast<size_t>(trained->elements()));
    ASSERT_EQ(one_all.delta.size(), global->values.size());
    const std::vector<float> one_all_trained = trained->Gather(one_all.delta);
    for (size_t i = 0; i < one_frozen.delta.size(); ++i) {
      ASSERT_NEAR(one_frozen.delta[i], one_all_trained[i], 1e-6 + 1e-4 * std::fabs(one_all_trained[i])) << i;
    }
    const TrainingOutcome two_frozen = run(frozen, 2), two_all = run(spec, 2);
    const std::vector<float> two_all_trained = trained->Gather(two_all.delta);
    double differ = 0;
    for (size_t i = 0; i < two_frozen.delta.size(); ++i) {
      differ = std::max(differ, static_cast<double>(std::fabs(two_frozen.delta[i] - two_all_trained[i])));
    }
    EXPECT_GT(differ, 1e-4);
    if (dp) EXPECT_LT(one_frozen.dp_mean_norm, 0.99 * one_all.dp_mean_norm);
  }
}

// What leaves is divided by q x the released count, not the exact one: the
// update's scale (its noise std is σC over that divisor) would otherwise
// tell the coordinator the exact count. One SGD step without momentum, the
// same seed: the delta scales exactly as 1 / divisor.
TEST(TrainerTest, TheUpdateIsDividedByTheReleasedCount) {
  SetTorchThreads(1);
  ModelSpec spec;
  spec.input_size = 16;
  auto global = InitialParameters(spec, 1);
  ImageSet train = ToySet(20, 16);
  LocalTrainingSettings settings;
  settings.learning_rate = 0.1;
  settings.momentum = 0;
  settings.dp = DpTrainingSettings{/*noise_multiplier=*/1.0,
                                   /*clip_norm=*/1.0,
                                   /*sampling_rate=*/0.5,
                                   /*steps=*/1,
                                   /*patient_level=*/true,
                                   /*test_seed=*/5};
  auto exact = TrainLocally(spec, *global, train, settings);  // released_units 0: the exact 20
  settings.dp->released_units = 20;
  auto same = TrainLocally(spec, *global, train, settings);
  settings.dp->released_units = 40;
  auto half = TrainLocally(spec, *global, train, settings);
  ASSERT_TRUE(exact.ok() && same.ok() && half.ok());
  EXPECT_EQ(exact->delta, same->delta);
  double largest = 0;
  for (size_t i = 0; i < exact->delta.size(); ++i) {
    // To float32 rounding of trained - global (weights near 1: an ulp is 1.2e-7).
    EXPECT_NEAR(half->delta[i], exact->delta[i] / 2, 1e-5 * std::fabs(exact->delta[i]) + 2.5e-7) << i;
    largest = std::max(largest, std::fabs(static_cast<double>(exact->delta[i])));
  }
  EXPECT_GT(largest, 0);
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

// Gradient canaries as the auditor reads them: at q = 1 every canary in the
// set joins every step, so without noise its score is exactly C per step
// (whatever its norm before clipping) and an absent canary's is 0; with noise, absent canaries' scores are the noise
// alone, N(0, (σC)² · steps).
TEST(TrainerTest, CanaryScoresAreTheirStepsTimesCPlusTheReleasedNoise) {
  SetTorchThreads(1);
  ModelSpec spec;
  spec.input_size = 16;
  auto global = InitialParameters(spec, 1);
  ASSERT_TRUE(global.ok());
  ImageSet train = ToySet(32, 16);
  auto canaries = std::make_shared<GradientCanaries>();
  for (int i = 0; i < 2000; ++i) {
    canaries->coordinates.push_back(i * 3);
    canaries->signs.push_back(i % 3 == 0 ? -1.0 : 1.0);
    canaries->included.push_back(i % 2 == 0);
  }
  LocalTrainingSettings settings;
  settings.learning_rate = 0.05;
  settings.dp = DpTrainingSettings{0.0, 0.5, 1.0, 4, false, 11};
  settings.dp->canaries = canaries;
  auto quiet = TrainLocally(spec, *global, train, settings);
  ASSERT_TRUE(quiet.ok()) << quiet.status();
  ASSERT_EQ(quiet->canary_scores.size(), 2000u);
  for (int i = 0; i < 2000; ++i) {
    EXPECT_NEAR(quiet->canary_scores[i], i % 2 == 0 ? 4 * 0.5 : 0.0, 1e-4) << i;
  }
  // Canaries ten times C pass through the units' clipping: C per step
  // still; with clipping broken they show it, ten times over.
  canaries->norm_in_clips = 10;
  auto clipped = TrainLocally(spec, *global, train, settings);
  ASSERT_TRUE(clipped.ok()) << clipped.status();
  settings.dp->without_clipping = true;
  auto unclipped = TrainLocally(spec, *global, train, settings);
  ASSERT_TRUE(unclipped.ok()) << unclipped.status();
  for (int i = 0; i < 2000; i += 2) {
    EXPECT_NEAR(clipped->canary_scores[i], 4 * 0.5, 1e-4) << i;
    EXPECT_NEAR(unclipped->canary_scores[i], 4 * 0.5 * 10, 1e-3) << i;
  }
  settings.dp->without_clipping = false;
  canaries->norm_in_clips = 1;
  settings.dp->noise_multiplier = 2.0;
  auto noisy = TrainLocally(spec, *global, train, settings);
  ASSERT_TRUE(noisy.ok());
  double sum = 0, squares = 0;
  for (int i = 1; i < 2000; i += 2) {
    sum += noisy->canary_scores[i];
    squares += noisy->canary_scores[i] * noisy->canary_scores[i];
  }
  const double mean = sum / 1000, sd = std::sqrt(squares / 1000 - mean * mean);
  const double expected_sd = 2.0 * 0.5 * std::sqrt(4.0);  // σ C √steps
  EXPECT_NEAR(mean, 0, 4 * expected_sd / std::sqrt(1000.0));
  EXPECT_NEAR(sd, expected_sd, 0.1 * expected_sd);
  // A coordinate outside the model, or two canaries on one coordinate, are refused.
  canaries->coordinates[0] = static_cast<int64_t>(global->values.size());
  EXPECT_FALSE(TrainLocally(spec, *global, train, settings).ok());
  canaries->coordinates[0] = canaries->coordinates[1];
  EXPECT_FALSE(TrainLocally(spec, *global, train, settings).ok());
}

}  // namespace
}  // namespace fedrad::node
