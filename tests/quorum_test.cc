// A round with fewer than min_nodes accepted updates is not applied: it is
// recorded as failed and retried, and the retry is applied once the quorum
// is back.
#include <signal.h>

#include <gtest/gtest.h>

#include <thread>

#include "tests/harness.h"

namespace fedrad::testing {
namespace {

TEST(QuorumTest, RoundWithTooFewAnswersIsRetriedNeverApplied) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 2, .rounds = 2, .min_nodes = 2, .local_epochs = 12,
                                           .patients = 12, .images = 4, .round_deadline_s = 4,
                                           .dp = false});
  ASSERT_FALSE(::testing::Test::HasFailure());
  auto coordinator = StartCoordinator(f, "coordinator.log");
  auto a = StartNode(f, "site-a");
  auto b = StartNode(f, "site-b");

  // As soon as round 1 is open, site-b dies while it trains.
  ASSERT_TRUE(WaitForRow(f.StateDb(), "SELECT 1 FROM rounds WHERE round = 1 AND status = 'open'",
                         std::chrono::minutes(2), coordinator.get()))
      << coordinator->Log();
  b->Signal(SIGKILL);
  ASSERT_EQ(b->Wait(std::chrono::seconds(10)), 128 + SIGKILL);

  // The deadline passes with one accepted update of the two required.
  ASSERT_TRUE(WaitForRow(f.StateDb(), "SELECT 1 FROM rounds WHERE round = 1 AND status = 'failed'",
                         std::chrono::minutes(1)))
      << coordinator->Log();
  EXPECT_TRUE(QueryDb(f.StateDb(), "SELECT 1 FROM models WHERE round = 1").empty());

  // site-b comes back; the federation finishes.
  auto b2 = StartNode(f, "site-b");
  ASSERT_EQ(coordinator->Wait(std::chrono::minutes(3)), 0) << coordinator->Log();
  EXPECT_EQ(a->Wait(std::chrono::seconds(30)), 0) << a->Log();
  EXPECT_EQ(b2->Wait(std::chrono::seconds(30)), 0) << b2->Log();

  std::vector<SqlRow> r1 = QueryDb(f.StateDb(), "SELECT attempt, status, note FROM rounds WHERE round = 1 ORDER BY attempt");
  ASSERT_GE(r1.size(), 2u);
  EXPECT_EQ(AsText(r1[0][1]), "failed");
  EXPECT_NE(AsText(r1[0][2]).find("1 accepted update(s) of 2 selected; min_nodes is 2"), std::string::npos)
      << AsText(r1[0][2]);
  EXPECT_EQ(AsText(r1.back()[1]), "applied");
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM rounds WHERE status = 'applied'")[0][0], SqlValue(int64_t{2}));
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM models")[0][0], SqlValue(int64_t{3}));
  EXPECT_NE(coordinator->Log().find("round 1 (attempt 1) not applied"), std::string::npos);
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing
