// A round with fewer than min_nodes accepted updates is not applied: it is
// recorded as failed and retried, and the retry is applied once the quorum
// is back.
#include <signal.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "tests/harness.h"

namespace fedrad::testing {
namespace {

TEST(QuorumTest, RoundWithTooFewAnswersIsRetriedNeverApplied) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 2,
                                           .rounds = 2,
                                           .min_nodes = 2,
                                           .local_epochs = 12,
                                           .patients = 12,
                                           .images = 4,
                                           .round_deadline_s = 4,
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
  ASSERT_TRUE(
      WaitForRow(f.StateDb(), "SELECT 1 FROM rounds WHERE round = 1 AND status = 'failed'", std::chrono::minutes(1)))
      << coordinator->Log();
  EXPECT_TRUE(QueryDb(f.StateDb(), "SELECT 1 FROM models WHERE round = 1").empty());

  // site-b comes back; the federation finishes.
  auto b2 = StartNode(f, "site-b");
  ASSERT_EQ(coordinator->Wait(std::chrono::minutes(3)), 0) << coordinator->Log();
  EXPECT_EQ(a->Wait(std::chrono::seconds(30)), 0) << a->Log();
  EXPECT_EQ(b2->Wait(std::chrono::seconds(30)), 0) << b2->Log();

  std::vector<SqlRow> r1 =
      QueryDb(f.StateDb(), "SELECT attempt, status, note FROM rounds WHERE round = 1 ORDER BY attempt");
  ASSERT_GE(r1.size(), 2u);
  EXPECT_EQ(AsText(r1[0][1]), "failed");
  EXPECT_NE(AsText(r1[0][2]).find("1 accepted update(s) of 2 selected; min_nodes is 2"), std::string::npos)
      << AsText(r1[0][2]);
  EXPECT_EQ(AsText(r1.back()[1]), "applied");
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM rounds WHERE status = 'applied'")[0][0], SqlValue(int64_t{2}));
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM models")[0][0], SqlValue(int64_t{3}));
  EXPECT_NE(coordinator->Log().find("round 1 (attempt 1) not applied"), std::string::npos);
  // site-a's update of the failed attempt was accepted, then not used: its
  // ledger says so last.
  const std::vector<SqlRow> outcomes =
      QueryDb(f.NodeDb("site-a"),
              "SELECT json_extract(body, '$.outcome') FROM ledger WHERE kind = 'update_outcome' AND "
              "json_extract(body, '$.round') = 1 AND json_extract(body, '$.attempt') = 1 ORDER BY seq");
  ASSERT_EQ(outcomes.size(), 2u) << a->Log();
  EXPECT_EQ(AsText(outcomes[0][0]), "accepted");
  EXPECT_NE(AsText(outcomes[1][0]).find("discarded: 1 accepted update(s) of 2 selected"), std::string::npos)
      << AsText(outcomes[1][0]);
  // The retried attempts had the same base: site-a answered them with the
  // update it kept, trained once.
  EXPECT_EQ(QueryDb(f.NodeDb("site-a"),
                    "SELECT COUNT(*) FROM ledger WHERE kind = 'data_access' AND "
                    "json_extract(body, '$.purpose') = 'train' AND json_extract(body, '$.round') = 1")[0][0],
            SqlValue(int64_t{1}));
  const std::vector<SqlRow> sent =
      QueryDb(f.NodeDb("site-a"),
              "SELECT DISTINCT json_extract(body, '$.update_sha256') FROM ledger WHERE kind = "
              "'update_sent' AND json_extract(body, '$.round') = 1");
  EXPECT_EQ(sent.size(), 1u);
  EXPECT_FALSE(QueryDb(f.NodeDb("site-a"),
                       "SELECT 1 FROM ledger WHERE kind = 'update_sent' AND "
                       "json_extract(body, '$.resent_from_attempt') = 1")
                   .empty());
  RemoveWorkspaceIfPassed(dir);
}

// Every attempt is a charged training task at every DP site: a round that
// keeps failing (here every update is refused) is retried a bounded number
// of times, with a pause between attempts, and the federation then ends
// with the reason instead of charging the sites again and again.
TEST(QuorumTest, ARoundThatKeepsFailingEndsAfterMaxAttempts) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 1,
                                           .rounds = 2,
                                           .min_nodes = 1,
                                           .patients = 4,
                                           .images = 1,
                                           .dp = false,
                                           .max_attempts = 3,
                                           .retry_backoff_s = 0.5});
  ASSERT_FALSE(::testing::Test::HasFailure());
  auto coordinator = StartCoordinator(f, "coordinator.log");
  Process rogue({RogueNodeBin(), dir + "/kits/site-a", absl::StrCat("127.0.0.1:", f.port), "nan"}, dir + "/site-a.log");
  ASSERT_EQ(coordinator->Wait(std::chrono::minutes(2)), 1) << coordinator->Log();
  EXPECT_EQ(rogue.Wait(std::chrono::seconds(30)), 0) << "told to stop\n" << rogue.Log();
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM rounds WHERE round = 1 AND status = 'failed'")[0][0],
            SqlValue(int64_t{3}));
  EXPECT_TRUE(QueryDb(f.StateDb(), "SELECT 1 FROM rounds WHERE round = 2").empty());
  const std::string log = coordinator->Log();
  EXPECT_NE(log.find("round 1 failed 3 attempt(s) (federation.max_attempts)"), std::string::npos) << log;
  // The pauses double: 0.5 s, then 1 s.
  EXPECT_NE(log.find("round 1: attempt 2 of at most 3 in 0.5s"), std::string::npos) << log;
  EXPECT_NE(log.find("round 1: attempt 3 of at most 3 in 1.0s"), std::string::npos) << log;
  RemoveWorkspaceIfPassed(dir);
}

// A coordinator that cannot store the updates it is sent (its spool is
// gone) does not ask the sites to train again: the sites did their part and
// paid for it. It stops after the one attempt, saying what to fix.
TEST(QuorumTest, ACoordinatorThatCannotStoreUpdatesStopsWithoutRetrying) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(
      dir, {.sites = 1, .rounds = 2, .min_nodes = 1, .patients = 4, .images = 1, .dp = false, .retry_backoff_s = 0.1});
  ASSERT_FALSE(::testing::Test::HasFailure());
  auto coordinator = StartCoordinator(f, "coordinator.log");
  // The spool directory replaced by a file: every spool open fails (ENOTDIR),
  // even for root.
  const std::string spool = dir + "/kits/coordinator/state/spool";
  std::filesystem::remove_all(spool);
  WriteText(spool, "not a directory");
  Process node({RogueNodeBin(), dir + "/kits/site-a", absl::StrCat("127.0.0.1:", f.port), "eval-small"},
               dir + "/site-a.log");
  ASSERT_EQ(coordinator->Wait(std::chrono::minutes(2)), 1) << coordinator->Log();
  const std::string log = coordinator->Log();
  EXPECT_NE(log.find("could not store the sites' updates (site-a: coordinator cannot spool the update: Not a "
                     "directory)"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("stopping rather than ask them to train and spend privacy budget again"), std::string::npos);
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM rounds")[0][0], SqlValue(int64_t{1})) << "one attempt only";
  node.Signal(SIGKILL);
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing
