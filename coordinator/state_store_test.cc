#include "coordinator/state_store.h"
#include "coordinator/round_driver.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/scratch_dir.h"

namespace fedrad::coordinator {
namespace {

class StateStoreTest : public ::testing::Test {
 protected:
  std::string Db() const { return (dir_ / "state.db").string(); }
  ScratchDir scratch_{"state_store"};
  const std::filesystem::path dir_ = scratch_.path();
};

const std::map<std::string, std::string> kTwoSites = {{"site-a", std::string("\x00\x01nonce-a", 9)},
                                                      {"site-b", "nonce-b"}};

TEST_F(StateStoreTest, RoundLifecycleAndResume) {
  {
    auto s = StateStore::Open(Db());
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_FALSE((*s)->LatestModel()->has_value());
    ASSERT_TRUE((*s)->AddInitialModel(std::string(64, 'a'), 1).ok());
    EXPECT_EQ(*(*s)->NextAttempt(1), 1);
    ASSERT_TRUE((*s)->OpenRound(1, 1, std::string(64, 'a'), kTwoSites, 10).ok());
    ASSERT_TRUE((*s)->FailRound(1, 1, 1, "too few", 20).ok());
    EXPECT_EQ(*(*s)->NextAttempt(1), 2);
    ASSERT_TRUE((*s)->OpenRound(1, 2, std::string(64, 'a'), kTwoSites, 30).ok());
    ASSERT_TRUE((*s)->ApplyRound(1, 2, std::string(64, 'b'), 2, "fedavg", {}, 40).ok());
    ASSERT_TRUE((*s)->OpenRound(2, 1, std::string(64, 'b'), kTwoSites, 50).ok());
    // "crash" with round 2 open
  }
  auto s = StateStore::Open(Db());
  ASSERT_TRUE(s.ok());
  auto latest = (*s)->LatestModel();
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->round, 1);
  EXPECT_EQ((*latest)->sha256, std::string(64, 'b'));
  // The open attempt is there to resume, with its sites' nonces as sent.
  absl::StatusOr<std::optional<StateStore::OpenAttempt>> open = (*s)->LatestOpenAttempt();
  ASSERT_TRUE(open.ok() && open->has_value()) << open.status();
  EXPECT_EQ((*open)->round, 2);
  EXPECT_EQ((*open)->attempt, 1);
  EXPECT_EQ((*open)->base_sha256, std::string(64, 'b'));
  EXPECT_EQ((*open)->nonces, kTwoSites);
  // Resumed: it stays open.
  EXPECT_EQ(*(*s)->AbandonOpenRounds(60, std::pair{2, 1}), 0);
  EXPECT_TRUE((*(*s)->LatestOpenAttempt()).has_value());
  EXPECT_EQ(*(*s)->AbandonOpenRounds(60), 1);
  EXPECT_FALSE((*(*s)->LatestOpenAttempt()).has_value());
  EXPECT_EQ(*(*s)->NextAttempt(2), 2);
  EXPECT_TRUE(*(*s)->HasModel(std::string(64, 'b')));
  EXPECT_FALSE(*(*s)->HasModel(std::string(64, 'c')));
}

TEST_F(StateStoreTest, ARoundCannotBeAppliedTwice) {
  auto s = StateStore::Open(Db());
  ASSERT_TRUE((*s)->AddInitialModel(std::string(64, 'a'), 1).ok());
  ASSERT_TRUE((*s)->OpenRound(1, 1, std::string(64, 'a'), {{"a", "n"}}, 1).ok());
  ASSERT_TRUE((*s)->ApplyRound(1, 1, std::string(64, 'b'), 1, "fedavg", {}, 2).ok());
  ASSERT_TRUE((*s)->OpenRound(1, 2, std::string(64, 'a'), {{"a", "n"}}, 3).ok());
  EXPECT_FALSE((*s)->ApplyRound(1, 2, std::string(64, 'c'), 1, "fedavg", {}, 4).ok());
  // The failed apply left nothing behind: round 1's model is still 'b'.
  EXPECT_EQ((*(*s)->LatestModel())->sha256, std::string(64, 'b'));
}

TEST_F(StateStoreTest, EvaluationsPerRound) {
  auto s = StateStore::Open(Db());
  ASSERT_TRUE((*s)->RecordEvaluation(1, "m", {"b", 0.5, 0.75, 40}, 1).ok());
  ASSERT_TRUE((*s)->RecordEvaluation(1, "m", {"a", 0.4, 0.8, 20}, 1).ok());
  auto e = (*s)->Evaluations(1);
  ASSERT_TRUE(e.ok());
  ASSERT_EQ(e->size(), 2u);
  EXPECT_EQ((*e)[0].site, "a");
  EXPECT_DOUBLE_EQ((*e)[1].accuracy, 0.75);
}

TEST_F(StateStoreTest, FederatedEvaluationPoolsReportingSitesAndCountsTheSuppressed) {
  auto s = StateStore::Open(Db());
  SiteEvaluation a{"a", 0.5, 0.8, 20};
  a.confusion = {9, 1, 3, 7};  // 16 of 20 right
  a.roc_auc = 0.9;
  a.ece = 0.1;
  SiteEvaluation b{"b", 0.3, 0.9, 10};
  b.confusion = {4, 1, 0, 5};  // 9 of 10
  b.roc_auc = 0.6;
  b.ece = 0.4;
  SiteEvaluation c{"c", 0, 0, 7};
  c.suppressed = true;
  for (const SiteEvaluation& e : {a, b, c}) ASSERT_TRUE((*s)->RecordEvaluation(1, "m", e, 1).ok());
  auto stored = (*s)->Evaluations(1);
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 3u);
  EXPECT_EQ((*stored)[0].confusion, a.confusion);
  EXPECT_TRUE((*stored)[2].suppressed);
  EXPECT_FALSE((*stored)[2].roc_auc.has_value());

  const RoundEvaluation g = CombineEvaluations(1, "m", 2, *stored);
  const Metrics& m = g.metrics;
  EXPECT_EQ(g.sites, 3);
  EXPECT_EQ(g.reporting_sites, 2);
  EXPECT_EQ(g.suppressed_count, 7);
  EXPECT_EQ(m.count, 30);
  EXPECT_EQ(m.confusion, (std::vector<std::vector<int64_t>>{{13, 2}, {3, 12}}));
  EXPECT_DOUBLE_EQ(m.accuracy, 25.0 / 30);
  // Recall of class 0: 13/15, of class 1: 12/15.
  EXPECT_DOUBLE_EQ(m.balanced_accuracy, (13.0 / 15 + 12.0 / 15) / 2);
  EXPECT_DOUBLE_EQ(*m.sensitivity, 12.0 / 15);
  EXPECT_DOUBLE_EQ(*m.specificity, 13.0 / 15);
  // Count-weighted: (0.5*20 + 0.3*10) / 30, and likewise AUC and ECE.
  EXPECT_DOUBLE_EQ(g.loss, 13.0 / 30);
  EXPECT_DOUBLE_EQ(*m.roc_auc, (0.9 * 20 + 0.6 * 10) / 30);
  EXPECT_DOUBLE_EQ(m.ece, (0.1 * 20 + 0.4 * 10) / 30);

  ASSERT_TRUE((*s)->RecordRoundEvaluation(g, 2).ok());
  auto back = (*s)->GetRoundEvaluation(1);
  ASSERT_TRUE(back.ok() && back->has_value()) << back.status();
  EXPECT_EQ((*back)->metrics.confusion, m.confusion);
  EXPECT_DOUBLE_EQ((*back)->metrics.accuracy, m.accuracy);
  EXPECT_DOUBLE_EQ(*(*back)->metrics.roc_auc, *m.roc_auc);
  EXPECT_DOUBLE_EQ((*back)->loss, g.loss);
  EXPECT_EQ((*back)->suppressed_count, 7);
  EXPECT_FALSE((*(*s)->GetRoundEvaluation(2)).has_value());
  // The stored column for SQL readers: macro F1 of the pooled matrix.
  // F1 of class 0: 2*13/(2*13+2+3) = 26/31; of class 1: 24/29.
  EXPECT_DOUBLE_EQ(m.MacroF1(), (26.0 / 31 + 24.0 / 29) / 2);

  // Only suppressed sites: no figures at all.
  const RoundEvaluation none = CombineEvaluations(2, "m", 2, {c});
  EXPECT_EQ(none.reporting_sites, 0);
  EXPECT_EQ(none.metrics.count, 0);
  EXPECT_FALSE(none.metrics.roc_auc.has_value());
}

}  // namespace
}  // namespace fedrad::coordinator
