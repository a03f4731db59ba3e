#include "common/evaluation_release.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "crypto/secure_noise.h"

namespace fedrad {
namespace {

// n images of `k` classes with random probabilities; unit of image i is i / per_unit.
struct Case {
  Scores scores;
  std::vector<double> losses;
  std::vector<std::string> units;
};
Case Random(int n, int k, int per_unit, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.01, 1);
  Case c;
  c.scores.num_classes = k;
  for (int i = 0; i < n; ++i) {
    c.scores.labels.push_back(static_cast<int>(rng() % k));
    std::vector<double> p(k);
    double sum = 0;
    for (double& x : p) sum += (x = u(rng));
    for (double x : p) c.scores.probabilities.push_back(static_cast<float>(x / sum));
    c.losses.push_back(3 * u(rng));  // some above the clip
    c.units.push_back("u" + std::to_string(i / per_unit));
  }
  return c;
}

double L2(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(s);
}

TEST(EvaluationReleaseTest, WithoutNoiseTheFiguresAreTheExactOnes) {
  for (int k : {2, 4}) {
    Case c = Random(300, k, 1, 3);
    absl::StatusOr<EvaluationStatistics> s = CollectStatistics(c.scores, c.losses, c.units);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE(s->CheckShape().ok());
    const ReleasedFigures f = FiguresFromRelease(*s);
    absl::StatusOr<Metrics> exact = ComputeMetrics(c.scores);
    ASSERT_TRUE(exact.ok());
    EXPECT_EQ(f.metrics.confusion, exact->confusion) << k;
    EXPECT_DOUBLE_EQ(f.metrics.accuracy, exact->accuracy);
    EXPECT_DOUBLE_EQ(f.metrics.balanced_accuracy, exact->balanced_accuracy);
    double loss = 0;
    for (double l : c.losses) loss += std::min(l, kLossClip);
    EXPECT_NEAR(f.loss, loss / 300, 1e-12);
    // AUC and calibration from 10 bins: close to the exact figures.
    ASSERT_TRUE(f.metrics.roc_auc && exact->roc_auc);
    EXPECT_NEAR(*f.metrics.roc_auc, *exact->roc_auc, 0.05) << k;
    EXPECT_NEAR(f.metrics.ece, exact->ece, 0.06) << k;
  }
}

TEST(EvaluationReleaseTest, BinnedAucIsExactWhenScoresFallInDistinctBins) {
  // Positives at 0.95, 0.75, 0.35; negatives at 0.85, 0.25, 0.05: 7 of 9 pairs won.
  Scores s;
  s.num_classes = 2;
  for (double p : {0.95, 0.75, 0.35, 0.85, 0.25, 0.05}) {
    s.probabilities.push_back(static_cast<float>(1 - p));
    s.probabilities.push_back(static_cast<float>(p));
  }
  s.labels = {1, 1, 1, 0, 0, 0};
  absl::StatusOr<EvaluationStatistics> r =
      CollectStatistics(s, std::vector<double>(6, 0.1), {"a", "b", "c", "d", "e", "f"});
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(*FiguresFromRelease(*r).metrics.roc_auc, 7.0 / 9.0, 1e-12);
}

// Adding one unit, with however many images, moves each block by at most
// its stated sensitivity (L2), so the scaled vector moves by at most the
// joint sensitivity the noise is calibrated to.
TEST(EvaluationReleaseTest, OneUnitMovesEachBlockByAtMostItsSensitivity) {
  for (int k : {2, 5}) {
    for (int extra_images : {1, 7, 40}) {
      Case base = Random(200, k, 3, 11 + k);
      Case more = base;
      Case added = Random(extra_images, k, extra_images, 97 + extra_images);
      for (int i = 0; i < extra_images; ++i) {
        more.scores.labels.push_back(added.scores.labels[i]);
        for (int c = 0; c < k; ++c) more.scores.probabilities.push_back(added.scores.row(i)[c]);
        more.losses.push_back(1e9);  // an enormous loss is clipped
        more.units.push_back("newcomer");
      }
      absl::StatusOr<EvaluationStatistics> a = CollectStatistics(base.scores, base.losses, base.units);
      absl::StatusOr<EvaluationStatistics> b = CollectStatistics(more.scores, more.losses, more.units);
      ASSERT_TRUE(a.ok() && b.ok());
      const double dc = L2(a->confusion, b->confusion), dl = std::fabs(a->loss_sum - b->loss_sum),
                   dh = L2(a->confidence, b->confidence), ds = L2(a->scores, b->scores);
      EXPECT_LE(dc, 1 + 1e-9);
      EXPECT_LE(dl, kLossClip + 1e-9);
      EXPECT_LE(dh, 1 + 1e-9);
      EXPECT_LE(ds, std::sqrt(EvaluationStatistics::ScoreClasses(k)) + 1e-9);
      const double scaled =
          std::sqrt(std::pow(dc * kConfusionWeight, 2) + std::pow(dl / kLossClip * kLossWeight, 2) +
                    std::pow(dh * kConfidenceWeight, 2) +
                    std::pow(ds / std::sqrt(EvaluationStatistics::ScoreClasses(k)) * kScoresWeight, 2));
      EXPECT_LE(scaled, std::sqrt(2.5) + 1e-9);
    }
  }
}

TEST(EvaluationReleaseTest, NoiseHasTheStatedScalePerBlock) {
  const double sigma = 3;
  const ReleaseNoise n = NoiseFor(sigma, 3);
  // Written out: σ·sqrt(1 + 1 + 0.25 + 0.25) over each block's weight, times its sensitivity.
  EXPECT_NEAR(n.confusion, 3 * std::sqrt(2.5), 1e-12);
  EXPECT_NEAR(n.loss_sum, 3 * std::sqrt(2.5) * kLossClip, 1e-12);
  EXPECT_NEAR(n.confidence, 3 * std::sqrt(2.5) * 2, 1e-12);
  EXPECT_NEAR(n.scores, 3 * std::sqrt(2.5) * 2 * std::sqrt(3.0), 1e-12);
  auto rng = crypto::SecureRandom::ForTesting(4);
  double sc = 0, ss = 0;
  int nc = 0, ns = 0;
  for (int r = 0; r < 400; ++r) {
    EvaluationStatistics s = EvaluationStatistics::Empty(3);
    AddReleaseNoise(sigma, *rng, &s);
    ASSERT_TRUE(s.CheckShape().ok());
    for (double v : s.confusion) sc += v * v, ++nc;
    for (double v : s.scores) ss += v * v, ++ns;
  }
  EXPECT_NEAR(std::sqrt(sc / nc), n.confusion, 0.03 * n.confusion);  // 3,600 draws
  EXPECT_NEAR(std::sqrt(ss / ns), n.scores, 0.02 * n.scores);        // 24,000 draws
}

TEST(EvaluationReleaseTest, ShapesAreCheckedAndReleasesPool) {
  EvaluationStatistics a = EvaluationStatistics::Empty(2);
  EXPECT_TRUE(a.CheckShape().ok());
  a.confusion.pop_back();
  EXPECT_FALSE(a.CheckShape().ok());
  a = EvaluationStatistics::Empty(2);
  a.scores[3] = NAN;
  EXPECT_FALSE(a.CheckShape().ok());
  a = EvaluationStatistics::Empty(2);
  a.confusion = {10, 2, 3, 5};
  EvaluationStatistics sum = EvaluationStatistics::Empty(2);
  ASSERT_TRUE(AddInto(a, &sum).ok());
  ASSERT_TRUE(AddInto(a, &sum).ok());
  EXPECT_EQ(sum.confusion, (std::vector<double>{20, 4, 6, 10}));
  EXPECT_FALSE(AddInto(EvaluationStatistics::Empty(3), &sum).ok());
  // Noisy negative cells are clamped before the figures.
  sum.confusion = {-3, 0, 0, 4};
  EXPECT_EQ(FiguresFromRelease(sum).metrics.count, 4);
}

}  // namespace
}  // namespace fedrad

namespace fedrad {
namespace {

// A segmentation case: `images` images of `pixels` pixels each, two
// classes, image i of unit i / per_unit, and each image's Dice.
struct SegmentationCase {
  Scores pixels;
  std::vector<double> losses, dice;
  std::vector<std::string> units;
};
SegmentationCase RandomSegmentation(int images, int pixels, int per_unit, uint64_t seed, const std::string& prefix) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.01, 0.99);
  SegmentationCase c;
  c.pixels.num_classes = 2;
  for (int i = 0; i < images; ++i) {
    for (int p = 0; p < pixels; ++p) {
      const double q = u(rng);
      c.pixels.labels.push_back(u(rng) < 0.2 ? 1 : 0);
      c.pixels.probabilities.push_back(static_cast<float>(1 - q));
      c.pixels.probabilities.push_back(static_cast<float>(q));
      c.losses.push_back(3 * u(rng));
    }
    c.dice.push_back(u(rng));
    c.units.push_back(prefix + std::to_string(i / per_unit));
  }
  return c;
}

// The release's mean Dice is the mean over patients of their images' mean
// Dice (each patient weighs 1, whatever its images), and the pixel blocks
// still count each patient once.
TEST(SegmentationReleaseTest, WithoutNoiseTheMeanDiceIsThePatientsMean) {
  SegmentationCase c = RandomSegmentation(40, 16, 4, 5, "u");
  // Patient 0's images all score 1: its mean is 1 however many images it has.
  for (int i = 0; i < 4; ++i) c.dice[i] = 1.0;
  absl::StatusOr<EvaluationStatistics> s = CollectSegmentationStatistics(c.pixels, c.losses, c.dice, c.units);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(s->CheckShape().ok());
  ASSERT_TRUE(s->segmentation());
  double expected = 0;
  for (int unit = 0; unit < 10; ++unit) {
    double m = 0;
    for (int i = 0; i < 4; ++i) m += c.dice[unit * 4 + i] / 4;
    expected += m / 10;
  }
  const ReleasedFigures f = FiguresFromRelease(*s);
  ASSERT_TRUE(f.mean_dice.has_value());
  EXPECT_NEAR(*f.mean_dice, expected, 1e-9);
  EXPECT_EQ(f.metrics.count, 10);  // patients, not images or pixels
  double histogram = 0;
  for (double v : s->dice) histogram += v;
  EXPECT_NEAR(histogram, 10, 1e-9);
  // A classification release has no Dice.
  EXPECT_FALSE(FiguresFromRelease(EvaluationStatistics::Empty(2)).mean_dice.has_value());
}

// One more patient, with any number of images of any Dice, moves every
// block (the pixel blocks and the two Dice blocks) by at most its
// sensitivity: the joint sensitivity the noise is calibrated to holds.
TEST(SegmentationReleaseTest, OnePatientMovesEachBlockByAtMostItsSensitivity) {
  for (int extra : {1, 6}) {
    SegmentationCase base = RandomSegmentation(30, 9, 3, 21, "u");
    SegmentationCase added = RandomSegmentation(extra, 9, extra, 77 + extra, "new");
    SegmentationCase more = base;
    more.pixels.labels.insert(more.pixels.labels.end(), added.pixels.labels.begin(), added.pixels.labels.end());
    more.pixels.probabilities.insert(more.pixels.probabilities.end(), added.pixels.probabilities.begin(),
                                     added.pixels.probabilities.end());
    more.losses.insert(more.losses.end(), added.losses.size(), 1e9);
    more.dice.insert(more.dice.end(), extra, 5.0);  // out of range: clipped to 1
    more.units.insert(more.units.end(), added.units.begin(), added.units.end());
    auto a = CollectSegmentationStatistics(base.pixels, base.losses, base.dice, base.units);
    auto b = CollectSegmentationStatistics(more.pixels, more.losses, more.dice, more.units);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    EXPECT_LE(L2(a->confusion, b->confusion), 1 + 1e-9);
    EXPECT_LE(std::fabs(a->loss_sum - b->loss_sum), kLossClip + 1e-9);
    EXPECT_LE(L2(a->confidence, b->confidence), 1 + 1e-9);
    EXPECT_LE(L2(a->scores, b->scores), 1 + 1e-9);
    EXPECT_LE(std::fabs(a->dice_sum - b->dice_sum), 1 + 1e-9);
    EXPECT_LE(L2(a->dice, b->dice), 1 + 1e-9);
  }
}

TEST(SegmentationReleaseTest, NoiseCoversTheDiceBlocksAndShapesAreChecked) {
  const ReleaseNoise n = NoiseFor(2, 2, /*segmentation=*/true);
  const double joint = std::sqrt(2.5 + kDiceSumWeight * kDiceSumWeight + kDiceWeight * kDiceWeight);
  EXPECT_NEAR(n.confusion, 2 * joint, 1e-12);
  EXPECT_NEAR(n.dice_sum, 2 * joint / kDiceSumWeight, 1e-12);
  EXPECT_NEAR(n.dice, 2 * joint / kDiceWeight, 1e-12);
  EXPECT_EQ(NoiseFor(2, 2).dice, 0);
  auto rng = crypto::SecureRandom::ForTesting(9);
  EvaluationStatistics s = EvaluationStatistics::Empty(2, true);
  AddReleaseNoise(2, *rng, &s);
  EXPECT_NE(s.dice_sum, 0);
  EXPECT_TRUE(std::any_of(s.dice.begin(), s.dice.end(), [](double v) { return v != 0; }));
  s.dice.pop_back();
  EXPECT_FALSE(s.CheckShape().ok());
  EvaluationStatistics classification = EvaluationStatistics::Empty(2);
  EXPECT_FALSE(AddInto(EvaluationStatistics::Empty(2, true), &classification).ok()) << "shapes differ";
}

}  // namespace
}  // namespace fedrad

#include "common/protocol.h"

namespace fedrad {
namespace {

// The coordinator takes a release only in its plan's task's shape: Dice from
// a segmentation site, none from a classification site.
TEST(SegmentationReleaseTest, TheReleaseMustMatchThePlansTask) {
  protocol::EvaluationReport e;
  e.release = protocol::ReleasedEvaluation{};
  e.release->num_classes = 2;
  e.release->statistics = EvaluationStatistics::Empty(2, true);
  e.release->statistics.confusion[0] = 20;  // twenty patients
  e.release->statistics.dice_sum = 15;
  std::optional<ReleasedFigures> figures;
  EXPECT_TRUE(protocol::CheckEvaluationReport(e, {2, false, 10, true}, &figures).ok());
  ASSERT_TRUE(figures && figures->mean_dice);
  EXPECT_NEAR(*figures->mean_dice, 0.75, 1e-12);
  const absl::Status wrong = protocol::CheckEvaluationReport(e, {2, false, 10, false}, &figures);
  EXPECT_NE(wrong.message().find("carries Dice"), std::string::npos) << wrong;
  e.release->statistics = EvaluationStatistics::Empty(2);
  e.release->statistics.confusion[0] = 20;
  EXPECT_FALSE(protocol::CheckEvaluationReport(e, {2, false, 10, true}, &figures).ok());
}

}  // namespace
}  // namespace fedrad
