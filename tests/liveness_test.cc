// A node that trains for longer than the keepalive intervals (node 20 s,
// coordinator 30 s) is not taken for a dropout: its task stream stays up,
// and its update counts in the round's first attempt.
#include <gtest/gtest.h>

#include "tests/harness.h"

namespace fedrad::testing {
namespace {

TEST(LivenessTest, LongTrainingIsNotADropout) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 2, .rounds = 1, .min_nodes = 2, .round_deadline_s = 180,
                                           .start_grace_s = 1});
  ASSERT_FALSE(::testing::Test::HasFailure());
  for (const std::string& site : f.sites) {
    std::string cfg = ReadText(f.NodeConfig(site));
    cfg.replace(cfg.find("trainer = \"torch\""), 17,
                site == "site-b" ? "trainer = \"noop\"\nnoop_seconds = 45" : "trainer = \"noop\"");
    WriteText(f.NodeConfig(site), cfg);
  }
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

}  // namespace
}  // namespace fedrad::testing
