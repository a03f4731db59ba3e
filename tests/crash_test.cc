// The coordinator is SIGKILLed in the middle of a round and started again:
// every round finishes, round numbers only go up, and no round is applied
// twice. Nodes ride out the outage with their reconnect backoff.
#include <signal.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "tests/harness.h"

namespace fedrad::testing {
namespace {

TEST(CrashTest, CoordinatorKilledMidRoundResumesWithoutLosingOrRepeatingRounds) {
  const std::string dir = MakeWorkspace();
  // Enough local work that a round lasts long enough to be caught open.
  MiniFederation f = SetUpFederation(dir, {.sites = 2, .rounds = 4, .min_nodes = 2, .local_epochs = 12,
                                           .patients = 12, .images = 4});
  ASSERT_FALSE(::testing::Test::HasFailure());
  auto coordinator = StartCoordinator(f, "coordinator-1.log");
  auto a = StartNode(f, "site-a");
  auto b = StartNode(f, "site-b");

  // Wait until round 2 is open (round 1 applied), then kill without warning.
  ASSERT_TRUE(WaitForRow(f.StateDb(), "SELECT 1 FROM rounds WHERE round = 2 AND status = 'open'",
                         std::chrono::minutes(2), coordinator.get()))
      << coordinator->Log();
  coordinator->Signal(SIGKILL);
  ASSERT_EQ(coordinator->Wait(std::chrono::seconds(10)), 128 + SIGKILL);

  auto restarted = StartCoordinator(f, "coordinator-2.log");
  ASSERT_EQ(restarted->Wait(std::chrono::minutes(4)), 0) << restarted->Log();
  EXPECT_EQ(a->Wait(std::chrono::seconds(30)), 0) << a->Log();
  EXPECT_EQ(b->Wait(std::chrono::seconds(30)), 0) << b->Log();

  // The killed attempt is on record as abandoned, and was redone.
  std::vector<SqlRow> abandoned =
      QueryDb(f.StateDb(), "SELECT round FROM rounds WHERE status = 'abandoned'");
  ASSERT_FALSE(abandoned.empty());
  EXPECT_EQ(AsInt(abandoned[0][0]), 2);
  EXPECT_NE(restarted->Log().find("resuming after round 1"), std::string::npos) << restarted->Log();

  // Exactly one applied attempt per round, rounds applied in increasing order
  // of time, and one model per round.
  std::vector<SqlRow> applied = QueryDb(
      f.StateDb(), "SELECT round, started_at_ms, closed_at_ms FROM rounds WHERE status = 'applied' ORDER BY closed_at_ms");
  ASSERT_EQ(applied.size(), 4u);
  for (size_t i = 0; i < applied.size(); ++i) {
    EXPECT_EQ(AsInt(applied[i][0]), static_cast<int64_t>(i + 1));
    if (i > 0) {
      EXPECT_GE(AsInt(applied[i][1]), AsInt(applied[i - 1][2]));
    }
  }
  std::vector<SqlRow> models = QueryDb(f.StateDb(), "SELECT round FROM models ORDER BY round");
  ASSERT_EQ(models.size(), 5u);
  for (size_t i = 0; i < models.size(); ++i) EXPECT_EQ(AsInt(models[i][0]), static_cast<int64_t>(i));
  // Attempts of a round are numbered in the order they were started.
  std::vector<SqlRow> attempts = QueryDb(f.StateDb(), "SELECT round, attempt FROM rounds ORDER BY started_at_ms");
  for (size_t i = 1; i < attempts.size(); ++i) {
    EXPECT_GE(AsInt(attempts[i][0]), AsInt(attempts[i - 1][0]));
  }
  RemoveWorkspaceIfPassed(dir);
}

// A stateful server optimiser (FedAdam: its moments) is restored after a
// crash: a federation whose coordinator is SIGKILLed after round 2 ends with
// the very model of one that ran through, and only the last round's state
// file is kept (each is twice the model's size).
TEST(CrashTest, ServerOptimizerStateSurvivesACrash) {
  auto run = [](const std::string& dir, bool crash) -> std::string {
    MiniFederation f = SetUpFederation(dir, {.sites = 2, .rounds = 3, .min_nodes = 2, .start_grace_s = 20,
                                             .dp = false});
    if (!std::filesystem::exists(f.CoordinatorConfig())) return "";  // SetUpFederation said why
    // The same update every round from both; site-b takes 2 s to answer, so
    // that round 2's end can be caught.
    UseNoopTrainers(f, {{"site-b", 2}});
    const std::string plan = dir + "/kits/coordinator/federation.toml";
    WriteText(plan, ReadText(plan) + "\n[strategy]\nname = \"fedadam\"\nserver_learning_rate = 0.01\n");
    auto coordinator = StartCoordinator(f, "coordinator-1.log");
    auto a = StartNode(f, "site-a");
    auto b = StartNode(f, "site-b");
    if (crash) {
      EXPECT_TRUE(WaitForRow(f.StateDb(), "SELECT 1 FROM rounds WHERE round = 2 AND status = 'applied'",
                             std::chrono::minutes(2), coordinator.get()))
          << coordinator->Log();
      coordinator->Signal(SIGKILL);
      EXPECT_EQ(coordinator->Wait(std::chrono::seconds(10)), 128 + SIGKILL);
      coordinator = StartCoordinator(f, "coordinator-2.log");
    }
    EXPECT_EQ(coordinator->Wait(std::chrono::minutes(3)), 0) << coordinator->Log();
    EXPECT_EQ(a->Wait(std::chrono::seconds(30)), 0) << a->Log();
    EXPECT_EQ(b->Wait(std::chrono::seconds(30)), 0) << b->Log();
    if (crash) {
      EXPECT_NE(coordinator->Log().find("restored the fedadam server state of round 2"), std::string::npos)
          << coordinator->Log();
    }
    std::vector<std::string> states;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir + "/kits/coordinator/state/strategy", ec)) {
      states.push_back(e.path().filename().string());
    }
    EXPECT_EQ(states, std::vector<std::string>{"round-3.f32"});
    std::vector<SqlRow> model = QueryDb(f.StateDb(), "SELECT sha256 FROM models WHERE round = 3");
    return model.size() == 1 ? AsText(model[0][0]) : "";
  };
  const std::string dir = MakeWorkspace();
  std::filesystem::create_directories(dir + "/through");
  std::filesystem::create_directories(dir + "/crashed");
  const std::string through = run(dir + "/through", false);
  const std::string crashed = run(dir + "/crashed", true);
  ASSERT_FALSE(through.empty());
  EXPECT_EQ(crashed, through);
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing
