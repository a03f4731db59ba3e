#include "common/metrics.h"

#include <gtest/gtest.h>

#include <random>

namespace fedrad {
namespace {

Scores Binary(const std::vector<int>& labels, const std::vector<float>& p1) {
  Scores s;
  s.num_classes = 2;
  s.labels = labels;
  for (float p : p1) {
    s.probabilities.push_back(1 - p);
    s.probabilities.push_back(p);
  }
  return s;
}

TEST(MetricsTest, BinaryByHand) {
  // Predictions (P(1) > 0.5): 0, 0, 0, 1; confusion [[2, 0], [1, 1]].
  absl::StatusOr<Metrics> m = ComputeMetrics(Binary({0, 0, 1, 1}, {0.1f, 0.4f, 0.35f, 0.8f}));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->count, 4);
  EXPECT_EQ(m->confusion, (std::vector<std::vector<int64_t>>{{2, 0}, {1, 1}}));
  EXPECT_DOUBLE_EQ(m->accuracy, 0.75);
  EXPECT_DOUBLE_EQ(*m->sensitivity, 0.5);
  EXPECT_DOUBLE_EQ(*m->specificity, 1.0);
  EXPECT_DOUBLE_EQ(m->balanced_accuracy, 0.75);
  EXPECT_NEAR(m->per_class[0].precision, 2.0 / 3, 1e-12);
  EXPECT_DOUBLE_EQ(m->per_class[1].precision, 1.0);
  EXPECT_NEAR(m->per_class[0].f1, 0.8, 1e-12);
  EXPECT_NEAR(m->per_class[1].f1, 2.0 / 3, 1e-12);
  // Positive scores {0.35, 0.8} against negative {0.1, 0.4}: 3 of 4 pairs
  // ordered (scikit-learn's roc_auc_score example gives 0.75 too).
  EXPECT_DOUBLE_EQ(*m->roc_auc, 0.75);
}

// A model that says one class for everything, while two occur, is named
// as such (accuracy is then the class's share: 0.75 here looks good); a model
// with any spread of predictions, or a set of one class, is not.
TEST(MetricsTest, AModelPredictingOneClassIsNamed) {
  absl::StatusOr<Metrics> prior = ComputeMetrics(Binary({0, 0, 0, 1}, {0.1f, 0.2f, 0.3f, 0.4f}));
  ASSERT_TRUE(prior.ok());
  std::optional<std::string> w = SingleClassWarning(*prior);
  ASSERT_TRUE(w.has_value());
  EXPECT_NE(w->find("every one of the 4 images is predicted as class 0 although 2 classes occur"), std::string::npos)
      << *w;
  EXPECT_NE(w->find("balanced accuracy 0.5000"), std::string::npos) << *w;
  EXPECT_NE(FormatMetrics(*prior, {}).find("warning: every one"), std::string::npos);
  EXPECT_FALSE(SingleClassWarning(*ComputeMetrics(Binary({0, 0, 0, 1}, {0.1f, 0.2f, 0.3f, 0.6f}))).has_value());
  EXPECT_FALSE(SingleClassWarning(*ComputeMetrics(Binary({0, 0, 0, 0}, {0.1f, 0.2f, 0.3f, 0.4f}))).has_value());
}

// Noisy counts (the coordinator's pooled view of DP releases): a class never
// predicted still shows a few counts; with share 0.98, 99% of the
// predictions in one class while two classes occur is named, 90% is not, and
// a class that is the truth of only 1% does not count as occurring.
TEST(MetricsTest, NoisyCountsPredictingOneClassAreNamedWithAShare) {
  const Metrics nearly = MetricsFromConfusion({{396, 4}, {594, 6}});
  EXPECT_FALSE(SingleClassWarning(nearly).has_value()) << "exact counts: two classes are predicted";
  std::optional<std::string> w = SingleClassWarning(nearly, 0.98);
  ASSERT_TRUE(w.has_value());
  EXPECT_NE(w->find("99.0% of about 1000 images are predicted as class 0 although 2 classes occur"), std::string::npos)
      << *w;
  EXPECT_FALSE(SingleClassWarning(MetricsFromConfusion({{360, 40}, {540, 60}}), 0.98).has_value());
  EXPECT_FALSE(SingleClassWarning(MetricsFromConfusion({{985, 5}, {10, 0}}), 0.98).has_value());
}

TEST(MetricsTest, AucTiesCountOneHalf) {
  // Positives {0.5, 0.9}, negatives {0.5, 0.2}: 1/2 + 1 + 1 + 1 over 4 pairs.
  EXPECT_DOUBLE_EQ(*RocAuc({0.5f, 0.5f, 0.2f, 0.9f}, {false, true, false, true}), 0.875);
  // Every score tied: chance.
  EXPECT_DOUBLE_EQ(*RocAuc({0.3f, 0.3f, 0.3f}, {true, false, false}), 0.5);
  EXPECT_DOUBLE_EQ(*RocAuc({0.1f, 0.2f, 0.9f}, {true, true, false}), 0.0);
  EXPECT_FALSE(RocAuc({0.1f, 0.2f}, {true, true}).has_value()) << "no negatives";
}

TEST(MetricsTest, MultiClassByHand) {
  Scores s;
  s.num_classes = 3;
  s.labels = {0, 1, 2, 2};
  s.probabilities = {0.7f, 0.2f, 0.1f,   // -> 0, right, confidence 0.7
                     0.2f, 0.5f, 0.3f,   // -> 1, right, 0.5
                     0.1f, 0.3f, 0.6f,   // -> 2, right, 0.6
                     0.3f, 0.4f, 0.3f};  // -> 1, wrong, 0.4
  absl::StatusOr<Metrics> m = ComputeMetrics(s);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->confusion, (std::vector<std::vector<int64_t>>{{1, 0, 0}, {0, 1, 0}, {0, 1, 1}}));
  EXPECT_DOUBLE_EQ(m->accuracy, 0.75);
  EXPECT_NEAR(m->balanced_accuracy, (1 + 1 + 0.5) / 3, 1e-12);
  EXPECT_DOUBLE_EQ(m->per_class[1].precision, 0.5);
  EXPECT_DOUBLE_EQ(m->per_class[2].recall, 0.5);
  EXPECT_NEAR(m->per_class[1].f1, 2.0 / 3, 1e-12);
  EXPECT_NEAR(m->per_class[2].f1, 2.0 / 3, 1e-12);
  EXPECT_FALSE(m->sensitivity.has_value()) << "binary tasks only";
  // One-vs-rest: class 0 and 1 separate perfectly; class 2's positives
  // {0.6, 0.3} against {0.1, 0.3}: 3.5 of 4 pairs.
  EXPECT_NEAR(*m->roc_auc, (1 + 1 + 0.875) / 3, 1e-12);
  // Each example alone in its bin: mean |correct - confidence|.
  EXPECT_NEAR(m->ece, (0.3 + 0.5 + 0.4 + 0.4) / 4, 1e-6);
}

TEST(MetricsTest, CalibrationBinsShareExamples) {
  // Confidences 0.9 (right), 0.9 (wrong) share bin (13/15, 14/15]; 0.95
  // (right) is alone in the last: 2/3 |0.5 - 0.9| + 1/3 |1 - 0.95|.
  absl::StatusOr<Metrics> m = ComputeMetrics(Binary({1, 0, 1}, {0.9f, 0.9f, 0.95f}));
  ASSERT_TRUE(m.ok());
  EXPECT_NEAR(m->ece, 2.0 / 3 * 0.4 + 1.0 / 3 * 0.05, 1e-6);
}

TEST(MetricsTest, UndefinedFiguresAreLeftOut) {
  // No example of class 1, and nothing predicted as class 1.
  absl::StatusOr<Metrics> m = ComputeMetrics(Binary({0, 0}, {0.2f, 0.3f}));
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->sensitivity.has_value());
  EXPECT_DOUBLE_EQ(*m->specificity, 1.0);
  EXPECT_FALSE(m->roc_auc.has_value());
  const std::map<std::string, double> scalars = m->Scalars();
  EXPECT_EQ(scalars.count("recall[1]"), 0u);
  EXPECT_EQ(scalars.count("precision[1]"), 0u);
  EXPECT_EQ(scalars.count("f1[1]"), 0u);
  EXPECT_EQ(scalars.at("recall[0]"), 1.0);
}

TEST(MetricsTest, BadInputIsRefusedWithTheReason) {
  Scores s = Binary({0, 2}, {0.1f, 0.2f});
  EXPECT_NE(ComputeMetrics(s).status().message().find("example 1 has label 2"), std::string::npos);
  s = Binary({0, 1}, {0.1f, 0.2f});
  s.probabilities.pop_back();
  EXPECT_FALSE(ComputeMetrics(s).ok());
  s = Binary({0, 1}, {0.1f, std::nanf("")});
  EXPECT_NE(ComputeMetrics(s).status().message().find("non-finite"), std::string::npos);
  EXPECT_FALSE(ComputeMetrics(Binary({}, {})).ok());
}

TEST(MetricsTest, BootstrapIntervalMatchesTheBinomialStandardError) {
  // 400 examples, 320 right: the accuracy's standard error is
  // sqrt(0.8 * 0.2 / 400) = 0.02, so the 95% interval is about 0.8 +- 0.039.
  std::vector<int> labels(400);
  std::vector<float> p1(400);
  for (int i = 0; i < 400; ++i) {
    labels[i] = i % 2;
    const bool right = i % 5 != 0;
    p1[i] = (labels[i] == 1) == right ? 0.8f : 0.2f;
  }
  const Scores s = Binary(labels, p1);
  ASSERT_DOUBLE_EQ(ComputeMetrics(s)->accuracy, 0.8);
  absl::StatusOr<std::map<std::string, Interval>> ci = BootstrapIntervals(s, 2000, 7);
  ASSERT_TRUE(ci.ok()) << ci.status();
  const Interval acc = ci->at("accuracy");
  EXPECT_NEAR(acc.low, 0.8 - 1.96 * 0.02, 0.012);
  EXPECT_NEAR(acc.high, 0.8 + 1.96 * 0.02, 0.012);
  EXPECT_LE(ci->at("roc_auc").low, ci->at("roc_auc").high);
  // The same seed gives the same intervals.
  EXPECT_EQ(BootstrapIntervals(s, 2000, 7)->at("accuracy").low, acc.low);
}

TEST(MetricsTest, BootstrapOfAPerfectModelIsAPoint) {
  absl::StatusOr<std::map<std::string, Interval>> ci =
      BootstrapIntervals(Binary({0, 1, 0, 1, 1}, {0.1f, 0.9f, 0.2f, 0.7f, 0.8f}), 200, 3);
  ASSERT_TRUE(ci.ok());
  EXPECT_EQ(ci->at("accuracy").low, 1.0);
  EXPECT_EQ(ci->at("accuracy").high, 1.0);
}

TEST(MetricsTest, PooledConfusionMatricesGiveThePooledFigures) {
  // Two sites' matrices summed give what the examples of both together give.
  const Scores a = Binary({0, 0, 1, 1, 1}, {0.2f, 0.7f, 0.9f, 0.4f, 0.8f});
  const Scores b = Binary({0, 1, 0}, {0.1f, 0.6f, 0.3f});
  const Scores both = Binary({0, 0, 1, 1, 1, 0, 1, 0}, {0.2f, 0.7f, 0.9f, 0.4f, 0.8f, 0.1f, 0.6f, 0.3f});
  std::vector<std::vector<int64_t>> pooled = ComputeMetrics(a)->confusion;
  const std::vector<std::vector<int64_t>> cb = ComputeMetrics(b)->confusion;
  for (int t = 0; t < 2; ++t) {
    for (int p = 0; p < 2; ++p) pooled[t][p] += cb[t][p];
  }
  const Metrics m = MetricsFromConfusion(pooled);
  const Metrics want = *ComputeMetrics(both);
  EXPECT_EQ(m.count, 8);
  EXPECT_DOUBLE_EQ(m.accuracy, want.accuracy);  // 6 of 8
  EXPECT_DOUBLE_EQ(m.accuracy, 0.75);
  EXPECT_DOUBLE_EQ(m.balanced_accuracy, want.balanced_accuracy);
  EXPECT_DOUBLE_EQ(*m.sensitivity, *want.sensitivity);
  EXPECT_DOUBLE_EQ(*m.specificity, *want.specificity);
  EXPECT_DOUBLE_EQ(m.per_class[1].f1, want.per_class[1].f1);
  EXPECT_FALSE(m.roc_auc.has_value());
  // No examples: zero counts, nothing divided by zero.
  EXPECT_EQ(MetricsFromConfusion({{0, 0}, {0, 0}}).count, 0);
}

}  // namespace
}  // namespace fedrad
