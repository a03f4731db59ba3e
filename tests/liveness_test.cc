// A node that trains for longer than the keepalive intervals (node 20 s,
// coordinator 30 s) is not taken for a dropout: its task stream stays up,
// and its update counts in the round's first attempt.
#include <signal.h>

#include <gtest/gtest.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "tests/harness.h"

namespace fedrad::testing {
namespace {

TEST(LivenessTest, LongTrainingIsNotADropout) {
  const std::string dir = MakeWorkspace();
  MiniFederation f =
      SetUpFederation(dir, {.sites = 2, .rounds = 1, .min_nodes = 2, .round_deadline_s = 180, .start_grace_s = 1});
  ASSERT_FALSE(::testing::Test::HasFailure());
  UseNoopTrainers(f, {{"site-b", 45}});
  std::vector<std::string> logs = RunFederationToCompletion(f, std::chrono::minutes(4));
  const std::string& coordinator = logs[0];
  const size_t accepted = coordinator.find("accepted the update of site-b");
  ASSERT_NE(accepted, std::string::npos) << coordinator;
  EXPECT_EQ(coordinator.substr(0, accepted).find("site site-b disconnected"), std::string::npos) << coordinator;
  EXPECT_EQ(logs[2].find("task stream ended"), std::string::npos) << logs[2];
  std::vector<SqlRow> rounds = QueryDb(f.StateDb(), "SELECT attempt, status FROM rounds");
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(AsInt(rounds[0][0]), 1);
  EXPECT_EQ(AsText(rounds[0][1]), "applied");
  RemoveWorkspaceIfPassed(dir);
}

// A node that really disappears mid-round is dropped at the deadline, and
// the round closes with the others since min_nodes still holds.
TEST(LivenessTest, AKilledNodeIsDroppedAtTheDeadline) {
  const std::string dir = MakeWorkspace();
  MiniFederation f =
      SetUpFederation(dir, {.sites = 3, .rounds = 1, .min_nodes = 2, .round_deadline_s = 8, .start_grace_s = 5});
  ASSERT_FALSE(::testing::Test::HasFailure());
  UseNoopTrainers(f, {{"site-c", 600}});
  auto coordinator = StartCoordinator(f, "coordinator.log");
  auto a = StartNode(f, "site-a");
  auto b = StartNode(f, "site-b");
  auto c = StartNode(f, "site-c");
  const auto until = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (std::chrono::steady_clock::now() < until &&
         ReadText(dir + "/site-c.log").find("round 1 (attempt 1): training") == std::string::npos) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  c->Signal(SIGKILL);
  ASSERT_EQ(c->Wait(std::chrono::seconds(10)), 128 + SIGKILL);
  ASSERT_EQ(coordinator->Wait(std::chrono::minutes(2)), 0) << coordinator->Log();
  EXPECT_EQ(a->Wait(std::chrono::seconds(30)), 0);
  EXPECT_EQ(b->Wait(std::chrono::seconds(30)), 0);
  std::vector<SqlRow> rounds = QueryDb(f.StateDb(), "SELECT attempt, status, selected, answered FROM rounds");
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(AsInt(rounds[0][0]), 1);
  EXPECT_EQ(AsText(rounds[0][1]), "applied");
  EXPECT_EQ(AsInt(rounds[0][2]), 3);
  EXPECT_EQ(AsInt(rounds[0][3]), 2);
  EXPECT_NE(coordinator->Log().find("site site-c disconnected"), std::string::npos);
  RemoveWorkspaceIfPassed(dir);
}

// Straggler policy: with close_at_fraction below 1 the round closes once
// that share has answered, without waiting for a slow site's deadline.
TEST(LivenessTest, CloseAtFractionDoesNotWaitForAStraggler) {
  const std::string dir = MakeWorkspace();
  MiniFederation f =
      SetUpFederation(dir, {.sites = 3, .rounds = 1, .min_nodes = 2, .round_deadline_s = 300, .start_grace_s = 5});
  ASSERT_FALSE(::testing::Test::HasFailure());
  ReplaceInFile(dir + "/kits/coordinator/federation.toml", "[federation]\n", "[federation]\nclose_at_fraction = 0.6\n");
  UseNoopTrainers(f, {{"site-c", 600}});
  auto coordinator = StartCoordinator(f, "coordinator.log");
  auto a = StartNode(f, "site-a");
  auto b = StartNode(f, "site-b");
  auto c = StartNode(f, "site-c");
  ASSERT_EQ(coordinator->Wait(std::chrono::minutes(2)), 0) << coordinator->Log();
  c->Signal(SIGKILL);
  c->Wait(std::chrono::seconds(10));
  std::vector<SqlRow> rounds =
      QueryDb(f.StateDb(), "SELECT attempt, status, answered, closed_at_ms - started_at_ms FROM rounds");
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(AsText(rounds[0][1]), "applied");
  EXPECT_EQ(AsInt(rounds[0][2]), 2);
  EXPECT_LT(AsInt(rounds[0][3]), 60000) << "the round waited for the straggler";
  RemoveWorkspaceIfPassed(dir);
}

// A node that stalls mid-upload (half its bytes sent, its connection up) is
// cut off after coordinator.toml's upload_idle_timeout_s and rejected with
// the reason; the round closes with the others long before its deadline.
TEST(LivenessTest, AStalledUploadIsCutOffAndTheRoundGoesOn) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(
      dir, {.sites = 3, .rounds = 1, .min_nodes = 2, .round_deadline_s = 600, .start_grace_s = 20, .dp = false});
  ASSERT_FALSE(::testing::Test::HasFailure());
  UseNoopTrainers(f);
  ReplaceInFile(f.CoordinatorConfig(), "upload_idle_timeout_s = 60", "upload_idle_timeout_s = 2");
  auto coordinator = StartCoordinator(f, "coordinator.log");
  auto a = StartNode(f, "site-a");
  auto b = StartNode(f, "site-b");
  Process stall({RogueNodeBin(), dir + "/kits/site-c", absl::StrCat("127.0.0.1:", f.port), "stall"},
                dir + "/site-c.log");
  // Well inside the round's 600 s deadline.
  ASSERT_EQ(coordinator->Wait(std::chrono::seconds(90)), 0) << coordinator->Log();
  EXPECT_EQ(a->Wait(std::chrono::seconds(30)), 0) << a->Log();
  EXPECT_EQ(b->Wait(std::chrono::seconds(30)), 0) << b->Log();
  EXPECT_EQ(stall.Wait(std::chrono::seconds(30)), 0) << stall.Log();
  EXPECT_NE(stall.Log().find("round 1 (stall): refused: the upload brought nothing for 2s"), std::string::npos)
      << stall.Log();

  std::vector<SqlRow> rounds = QueryDb(f.StateDb(), "SELECT attempt, status FROM rounds");
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(AsInt(rounds[0][0]), 1);
  EXPECT_EQ(AsText(rounds[0][1]), "applied");
  std::vector<SqlRow> rows = QueryDb(f.StateDb(), "SELECT site, status, reason FROM submissions ORDER BY site");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(AsText(rows[0][1]), "accepted");
  EXPECT_EQ(AsText(rows[1][1]), "accepted");
  EXPECT_EQ(AsText(rows[2][0]), "site-c");
  EXPECT_EQ(AsText(rows[2][1]), "rejected");
  EXPECT_NE(AsText(rows[2][2]).find("brought nothing for 2s (coordinator.toml upload_idle_timeout_s)"),
            std::string::npos)
      << AsText(rows[2][2]);
  RemoveWorkspaceIfPassed(dir);
}

// A node that stops reading a model download (the connection stays up)
// would hold its site's download slot for good: it is cut off after
// upload_idle_timeout_s, and the site can download again. The model is 32 MB,
// more than the transport's buffers, so the stall reaches the coordinator.
TEST(LivenessTest, AStalledDownloadIsCutOffAndFreesItsSlot) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(
      dir, {.sites = 1, .rounds = 1, .min_nodes = 1, .round_deadline_s = 600, .start_grace_s = 0, .dp = false});
  ASSERT_FALSE(::testing::Test::HasFailure());
  ReplaceInFile(dir + "/kits/coordinator/federation.toml", "architecture = \"ctnet\"\ninput_size = 32",
                "architecture = \"flat\"\nparameters = 8000000");
  ReplaceInFile(f.CoordinatorConfig(), "upload_idle_timeout_s = 60", "upload_idle_timeout_s = 2");
  auto coordinator = StartCoordinator(f, "coordinator.log");
  Process rogue({RogueNodeBin(), dir + "/kits/site-a", absl::StrCat("127.0.0.1:", f.port), "fetch-stall"},
                dir + "/site-a.log");
  ASSERT_EQ(coordinator->Wait(std::chrono::seconds(90)), 0) << coordinator->Log();
  EXPECT_EQ(rogue.Wait(std::chrono::seconds(30)), 0) << rogue.Log();
  EXPECT_NE(coordinator->Log().find("site-a: the model download took nothing for 2s"), std::string::npos)
      << coordinator->Log();
  EXPECT_NE(rogue.Log().find("stalled download: first chunk read, then ended"), std::string::npos) << rogue.Log();
  EXPECT_NE(rogue.Log().find("second download: complete, 32"), std::string::npos) << rogue.Log();
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing
