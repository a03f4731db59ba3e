#include "coordinator/state_store.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace fedrad::coordinator {
namespace {

class StateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("state_store_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Db() const { return (dir_ / "state.db").string(); }
  std::filesystem::path dir_;
};

TEST_F(StateStoreTest, RoundLifecycleAndResume) {
  {
    auto s = StateStore::Open(Db());
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_FALSE((*s)->LatestModel()->has_value());
    ASSERT_TRUE((*s)->AddInitialModel(std::string(64, 'a'), 1).ok());
    EXPECT_EQ(*(*s)->NextAttempt(1), 1);
    ASSERT_TRUE((*s)->OpenRound(1, 1, std::string(64, 'a'), 2, 10).ok());
    ASSERT_TRUE((*s)->FailRound(1, 1, 1, "too few", 20).ok());
    EXPECT_EQ(*(*s)->NextAttempt(1), 2);
    ASSERT_TRUE((*s)->OpenRound(1, 2, std::string(64, 'a'), 2, 30).ok());
    ASSERT_TRUE((*s)->ApplyRound(1, 2, std::string(64, 'b'), 2, 40).ok());
    ASSERT_TRUE((*s)->OpenRound(2, 1, std::string(64, 'b'), 2, 50).ok());
    // "crash" with round 2 open
  }
  auto s = StateStore::Open(Db());
  ASSERT_TRUE(s.ok());
  auto latest = (*s)->LatestModel();
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->round, 1);
  EXPECT_EQ((*latest)->sha256, std::string(64, 'b'));
  EXPECT_EQ(*(*s)->AbandonOpenRounds(60), 1);
  EXPECT_EQ(*(*s)->NextAttempt(2), 2);
  EXPECT_TRUE(*(*s)->HasModel(std::string(64, 'b')));
  EXPECT_FALSE(*(*s)->HasModel(std::string(64, 'c')));
}

TEST_F(StateStoreTest, ARoundCannotBeAppliedTwice) {
  auto s = StateStore::Open(Db());
  ASSERT_TRUE((*s)->AddInitialModel(std::string(64, 'a'), 1).ok());
  ASSERT_TRUE((*s)->OpenRound(1, 1, std::string(64, 'a'), 1, 1).ok());
  ASSERT_TRUE((*s)->ApplyRound(1, 1, std::string(64, 'b'), 1, 2).ok());
  ASSERT_TRUE((*s)->OpenRound(1, 2, std::string(64, 'a'), 1, 3).ok());
  EXPECT_FALSE((*s)->ApplyRound(1, 2, std::string(64, 'c'), 1, 4).ok());
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

}  // namespace
}  // namespace fedrad::coordinator
