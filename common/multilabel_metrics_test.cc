#include "common/multilabel_metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/evaluation_release.h"
#include "common/protocol.h"
#include "crypto/secure_noise.h"

namespace fedrad {
namespace {

// n images of k labels: each label shown with its own prevalence, the
// sigmoid higher on images that show it (so the AUCs are neither 0.5 nor
// 1); unit of image i is i / per_unit.
struct Case {
  Scores scores;
  std::vector<double> losses;
  std::vector<std::string> units;
};
Case Random(int n, int k, int per_unit, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  Case c;
  c.scores.num_classes = k;
  for (int i = 0; i < n; ++i) {
    for (int l = 0; l < k; ++l) {
      const bool shows = u(rng) < 0.2 + 0.15 * l;
      c.scores.targets.push_back(shows ? 1 : 0);
      // Quantised so that ties occur.
      c.scores.probabilities.push_back(static_cast<float>(std::round((0.6 * u(rng) + (shows ? 0.35 : 0)) * 20) / 20));
    }
    c.losses.push_back(3 * u(rng));
    c.units.push_back("u" + std::to_string(i / per_unit));
  }
  return c;
}

// The slow, obviously correct AUC: every positive-negative pair, ties one half.
double PairwiseAuc(const std::vector<double>& pos, const std::vector<double>& neg) {
  double wins = 0;
  for (double p : pos) {
    for (double q : neg) wins += p > q ? 1 : p == q ? 0.5 : 0;
  }
  return wins / (static_cast<double>(pos.size()) * static_cast<double>(neg.size()));
}

// Every figure against a direct count over the images: each label's
// sensitivity, specificity and AUC (pairwise), their means (macro), the
// pooled decisions (micro) and the exact-match share.
TEST(MultilabelMetricsTest, FiguresMatchADirectCount) {
  const Case c = Random(300, 4, 1, 7);
  absl::StatusOr<MultilabelMetrics> m = ComputeMultilabelMetrics(c.scores);
  ASSERT_TRUE(m.ok()) << m.status();
  const int k = 4;
  ASSERT_EQ(m->per_label.size(), 4u);
  EXPECT_EQ(m->count, 300);
  double sens_sum = 0, spec_sum = 0, auc_sum = 0;
  int64_t tp_all = 0, fn_all = 0, tn_all = 0, fp_all = 0, exact = 0;
  std::vector<double> pos_all, neg_all;
  for (int l = 0; l < k; ++l) {
    int64_t tp = 0, fn = 0, tn = 0, fp = 0;
    std::vector<double> pos, neg;
    for (int i = 0; i < 300; ++i) {
      const bool shows = c.scores.targets[i * k + l] == 1;
      const double p = c.scores.probabilities[i * k + l];
      const bool said = p >= 0.5;
      tp += shows && said, fn += shows && !said, tn += !shows && !said, fp += !shows && said;
      (shows ? pos : neg).push_back(p);
      (shows ? pos_all : neg_all).push_back(p);
    }
    const Metrics& got = m->per_label[l];
    ASSERT_TRUE(got.sensitivity && got.specificity && got.roc_auc);
    EXPECT_NEAR(*got.sensitivity, static_cast<double>(tp) / (tp + fn), 1e-12) << l;
    EXPECT_NEAR(*got.specificity, static_cast<double>(tn) / (tn + fp), 1e-12) << l;
    EXPECT_NEAR(*got.roc_auc, PairwiseAuc(pos, neg), 1e-9) << l;
    EXPECT_NEAR(got.per_class[1].f1, 2.0 * tp / (2.0 * tp + fp + fn), 1e-12) << l;
    sens_sum += *got.sensitivity, spec_sum += *got.specificity, auc_sum += *got.roc_auc;
    tp_all += tp, fn_all += fn, tn_all += tn, fp_all += fp;
  }
  for (int i = 0; i < 300; ++i) {
    bool all = true;
    for (int l = 0; l < k; ++l)
      all = all && (c.scores.probabilities[i * k + l] >= 0.5) == (c.scores.targets[i * k + l] == 1);
    exact += all;
  }
  EXPECT_NEAR(*m->macro_sensitivity, sens_sum / k, 1e-12);
  EXPECT_NEAR(*m->macro_specificity, spec_sum / k, 1e-12);
  EXPECT_NEAR(*m->macro_roc_auc, auc_sum / k, 1e-12);
  EXPECT_NEAR(*m->micro.sensitivity, static_cast<double>(tp_all) / (tp_all + fn_all), 1e-12);
  EXPECT_NEAR(*m->micro.specificity, static_cast<double>(tn_all) / (tn_all + fp_all), 1e-12);
  EXPECT_NEAR(*m->micro.roc_auc, PairwiseAuc(pos_all, neg_all), 1e-9);
  EXPECT_NEAR(m->micro.accuracy, static_cast<double>(tp_all + tn_all) / (300 * k), 1e-12);
  EXPECT_NEAR(*m->exact_match, exact / 300.0, 1e-12);
  // Macro and micro differ when the labels do.
  EXPECT_NE(*m->macro_sensitivity, *m->micro.sensitivity);
  // The counts alone give the same matrices back.
  const MultilabelMetrics again = MultilabelFromCounts(k, MultilabelCells(*m));
  EXPECT_NEAR(*again.macro_sensitivity, *m->macro_sensitivity, 1e-12);
  EXPECT_EQ(again.micro.confusion, m->micro.confusion);
  EXPECT_FALSE(again.macro_roc_auc.has_value()) << "counts give no AUC";
}

// A hand-worked case: 4 images, 2 labels.
TEST(MultilabelMetricsTest, AWorkedExample) {
  Scores s;
  s.num_classes = 2;
  s.targets = {1, 0, 1, 1, 0, 0, 0, 1};
  s.probabilities = {0.9f, 0.2f, 0.4f, 0.7f, 0.1f, 0.6f, 0.3f, 0.8f};
  absl::StatusOr<MultilabelMetrics> m = ComputeMultilabelMetrics(s);
  ASSERT_TRUE(m.ok());
  // Label 0: shown by images 0 and 1 (0.9 found, 0.4 missed), absent in 2, 3 (0.1, 0.3: right).
  EXPECT_DOUBLE_EQ(*m->per_label[0].sensitivity, 0.5);
  EXPECT_DOUBLE_EQ(*m->per_label[0].specificity, 1.0);
  EXPECT_DOUBLE_EQ(*m->per_label[0].roc_auc, 1.0);  // 0.9 and 0.4 above 0.1 and 0.3
  // Label 1: shown by 1 and 3 (0.7, 0.8 found), absent in 0 and 2 (0.2 right, 0.6 wrong).
  EXPECT_DOUBLE_EQ(*m->per_label[1].sensitivity, 1.0);
  EXPECT_DOUBLE_EQ(*m->per_label[1].specificity, 0.5);
  EXPECT_DOUBLE_EQ(*m->per_label[1].roc_auc, 1.0);
  EXPECT_DOUBLE_EQ(*m->macro_sensitivity, 0.75);
  EXPECT_DOUBLE_EQ(*m->micro.sensitivity, 0.75);  // 3 of 4
  EXPECT_DOUBLE_EQ(m->micro.accuracy, 6.0 / 8);
  EXPECT_DOUBLE_EQ(*m->exact_match, 0.5);  // images 0 and 3 (1 misses label 0, 2 says label 1)
  // Micro AUC over all 8 decisions: positives 0.9, 0.4, 0.7, 0.8 against
  // negatives 0.2, 0.1, 0.6, 0.3: only 0.4 < 0.6 is lost.
  EXPECT_DOUBLE_EQ(*m->micro.roc_auc, 15.0 / 16);
}

TEST(MultilabelMetricsTest, BadScoresAreRefusedAndConstantLabelsFlagged) {
  Scores s;
  s.num_classes = 2;
  s.targets = {1, 0, 2, 0};
  s.probabilities = {0.5f, 0.5f, 0.5f, 0.5f};
  EXPECT_NE(ComputeMultilabelMetrics(s).status().message().find("target 2"), std::string::npos);
  s.targets = {1, 0, 0, 1};
  s.probabilities = {0.5f, 0.5f, 1.5f, 0.5f};
  EXPECT_NE(ComputeMultilabelMetrics(s).status().message().find("outside [0, 1]"), std::string::npos);
  s.probabilities = {0.1f};
  EXPECT_FALSE(ComputeMultilabelMetrics(s).ok());
  // Label "b" is said of every image though one does not show it; "a" varies.
  s.probabilities = {0.9f, 0.9f, 0.1f, 0.8f};
  absl::StatusOr<MultilabelMetrics> m = ComputeMultilabelMetrics(s);
  ASSERT_TRUE(m.ok());
  std::optional<std::string> w = ConstantLabelWarning(*m, {"a", "b"});
  ASSERT_TRUE(w.has_value());
  EXPECT_NE(w->find("b (always predicted)"), std::string::npos) << *w;
  EXPECT_EQ(w->find("a ("), std::string::npos) << *w;
  s.probabilities = {0.9f, 0.1f, 0.1f, 0.8f};
  EXPECT_FALSE(ConstantLabelWarning(*ComputeMultilabelMetrics(s), {"a", "b"}).has_value());
  // The table and JSON name the labels.
  const std::string table = FormatMultilabelMetrics(*m, {}, {"a", "b"});
  EXPECT_NE(table.find("ROC AUC (macro)"), std::string::npos) << table;
  EXPECT_NE(MultilabelMetricsJson(*m, {}, {"a", "b"}).find("\"name\": \"b\""), std::string::npos);
  // The bootstrap resamples images with all their labels.
  absl::StatusOr<std::map<std::string, Interval>> ci = BootstrapIntervals(Random(200, 3, 1, 3).scores, 200);
  ASSERT_TRUE(ci.ok()) << ci.status();
  ASSERT_TRUE(ci->count("macro_roc_auc") && ci->count("roc_auc[2]"));
  EXPECT_LT(ci->at("macro_roc_auc").low, ci->at("macro_roc_auc").high);
}

// The exact release (no noise) gives the exact figures back: per-label
// counts weighted by patient, and AUCs from the binned histograms.
TEST(MultilabelReleaseTest, WithoutNoiseTheFiguresAreTheExactCounts) {
  Case c = Random(240, 3, 1, 5);  // one image per unit: weights are 1
  absl::StatusOr<EvaluationStatistics> s = CollectMultilabelStatistics(c.scores, c.losses, c.units);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(s->CheckShape().ok()) << s->CheckShape();
  EXPECT_EQ(s->confusion.size(), 12u);
  EXPECT_EQ(s->scores.size(), 3u * 2 * kReleaseBins);
  const ReleasedFigures f = FiguresFromRelease(*s);
  const MultilabelMetrics exact = *ComputeMultilabelMetrics(c.scores);
  ASSERT_TRUE(f.multilabel.has_value());
  EXPECT_EQ(f.metrics.count, 240);
  EXPECT_EQ(MultilabelCells(*f.multilabel), MultilabelCells(exact));
  EXPECT_NEAR(*f.multilabel->macro_sensitivity, *exact.macro_sensitivity, 1e-12);
  EXPECT_NEAR(f.metrics.accuracy, exact.micro.accuracy, 1e-12);
  // Scores quantised to 0.05 share bins of 0.1: the binned AUC is close, not equal.
  for (int l = 0; l < 3; ++l) EXPECT_NEAR(*f.multilabel->per_label[l].roc_auc, *exact.per_label[l].roc_auc, 0.05) << l;
  EXPECT_NEAR(*f.metrics.roc_auc, *exact.macro_roc_auc, 0.05);
  double loss = 0;
  for (double v : c.losses) loss += std::min(v, kLossClip);
  EXPECT_NEAR(f.loss, loss / 240, 1e-9);
}

// Adding one unit, with however many images, moves the per-label blocks by
// at most sqrt(L) and the others by at most their classification
// sensitivity, so the noise NoiseFor scales by sqrt(L) covers it.
TEST(MultilabelReleaseTest, OneUnitMovesEachBlockByAtMostItsSensitivity) {
  for (int k : {2, 6}) {
    for (int extra : {1, 9}) {
      Case base = Random(150, k, 3, 21 + k);
      Case more = base;
      // The newcomer shows every label and is predicted to show none:
      // every per-label block moves as far as it can.
      for (int i = 0; i < extra; ++i) {
        for (int l = 0; l < k; ++l) {
          more.scores.targets.push_back(1);
          more.scores.probabilities.push_back(0.01f);
        }
        more.losses.push_back(1e9);
        more.units.push_back("newcomer");
      }
      absl::StatusOr<EvaluationStatistics> a = CollectMultilabelStatistics(base.scores, base.losses, base.units);
      absl::StatusOr<EvaluationStatistics> b = CollectMultilabelStatistics(more.scores, more.losses, more.units);
      ASSERT_TRUE(a.ok() && b.ok());
      auto l2 = [](const std::vector<double>& x, const std::vector<double>& y) {
        double s = 0;
        for (size_t i = 0; i < x.size(); ++i) s += (x[i] - y[i]) * (x[i] - y[i]);
        return std::sqrt(s);
      };
      const double dc = l2(a->confusion, b->confusion), ds = l2(a->scores, b->scores),
                   dh = l2(a->confidence, b->confidence), dl = std::fabs(a->loss_sum - b->loss_sum);
      EXPECT_LE(dc, std::sqrt(k) + 1e-9);
      EXPECT_NEAR(dc, std::sqrt(k), 1e-9) << "the bound is reached: it is the sensitivity, not a loose one";
      EXPECT_LE(ds, std::sqrt(k) + 1e-9);
      EXPECT_LE(dh, 1 + 1e-9);
      EXPECT_LE(dl, kLossClip + 1e-9);
      const ReleaseNoise n = NoiseFor(1, k, false, true), one = NoiseFor(1, k);
      EXPECT_NEAR(n.confusion, one.confusion * std::sqrt(k), 1e-12);
      EXPECT_NEAR(n.scores,
                  NoiseFor(1, k, false, false).scores / std::sqrt(EvaluationStatistics::ScoreClasses(k)) * std::sqrt(k),
                  1e-12);
      EXPECT_EQ(n.confidence, one.confidence);
      EXPECT_EQ(n.loss_sum, one.loss_sum);
      // Scaled by the noise: the whole move is within the joint sensitivity.
      const double scaled = std::sqrt(std::pow(dc / n.confusion, 2) + std::pow(ds / n.scores, 2) +
                                      std::pow(dh / n.confidence, 2) + std::pow(dl / n.loss_sum, 2));
      EXPECT_LE(scaled, 1 + 1e-9);
    }
  }
}

TEST(MultilabelReleaseTest, NoiseHasTheScaleOfItsShapeAndShapesAreChecked) {
  const double sigma = 2;
  EvaluationStatistics s = EvaluationStatistics::Empty(4, false, true);
  ASSERT_TRUE(s.CheckShape().ok());
  auto rng = crypto::SecureRandom::ForTesting(9);
  double sc = 0;
  int nc = 0;
  for (int r = 0; r < 300; ++r) {
    EvaluationStatistics t = EvaluationStatistics::Empty(4, false, true);
    AddReleaseNoise(sigma, *rng, &t);
    for (double v : t.confusion) sc += v * v, ++nc;
  }
  EXPECT_NEAR(std::sqrt(sc / nc), NoiseFor(sigma, 4, false, true).confusion,
              0.03 * NoiseFor(sigma, 4, false, true).confusion);
  // A 4-label release is not a 4-class one, and the two never pool.
  EvaluationStatistics classes = EvaluationStatistics::Empty(4);
  EXPECT_FALSE(AddInto(classes, &s).ok());
  EvaluationStatistics three = EvaluationStatistics::Empty(3);
  three.multilabel = true;
  EXPECT_FALSE(three.CheckShape().ok()) << "9 cells are a 3-class matrix, not 3 labels' 2x2";
  // The coordinator takes only its plan's kind.
  protocol::EvaluationReport e;
  e.release = protocol::ReleasedEvaluation{};
  e.release->num_classes = 4;
  e.release->statistics = EvaluationStatistics::Empty(4, false, true);
  for (int l = 0; l < 4; ++l) e.release->statistics.confusion[l * 4] = 20;  // twenty patients
  std::optional<ReleasedFigures> figures;
  protocol::EvaluationRules rules{4, false, 10, false, true};
  ASSERT_TRUE(protocol::CheckEvaluationReport(e, rules, &figures).ok());
  ASSERT_TRUE(figures && figures->multilabel);
  EXPECT_EQ(figures->metrics.count, 20);
  rules.multilabel = false;
  EXPECT_NE(protocol::CheckEvaluationReport(e, rules, &figures).message().find("not multilabel"), std::string::npos);
  e.release->statistics = EvaluationStatistics::Empty(4);
  e.release->statistics.confusion[0] = 20;
  rules.multilabel = true;
  EXPECT_NE(protocol::CheckEvaluationReport(e, rules, &figures).message().find("must be per label"), std::string::npos);
}

}  // namespace
}  // namespace fedrad
