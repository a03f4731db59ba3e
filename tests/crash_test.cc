// The coordinator is SIGKILLed in the middle of a round and started again:
// it resumes the open attempt, the sites send the updates they kept (no
// second training, no second charge), every round finishes once. A node
// stopped with SIGTERM exits cleanly and says what it was charged for.
#include <signal.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <thread>

#include "tests/harness.h"

namespace fedrad::testing {
namespace {

// The dp-sgd charges of each round in a site's privacy ledger.
std::map<int64_t, int64_t> ChargesByRound(const std::string& node_db) {
  std::map<int64_t, int64_t> out;
  for (const SqlRow& r :
       QueryDb(node_db, "SELECT round, COUNT(*) FROM privacy_ledger WHERE kind = 'dp-sgd' GROUP BY round")) {
    out[AsInt(r[0])] = AsInt(r[1]);
  }
  return out;
}

TEST(CrashTest, CoordinatorKilledMidRoundResumesTheAttemptWithTheSitesKeptUpdates) {
  const std::string dir = MakeWorkspace();
  // Enough local work that site-c, stopped while it trains round 2, holds
  // the round open (close_at_fraction 1) after the others' updates are in.
  MiniFederation f = SetUpFederation(dir, {.sites = 3,
                                           .rounds = 3,
                                           .min_nodes = 2,
                                           .local_epochs = 12,
                                           .patients = 12,
                                           .images = 4,
                                           .round_deadline_s = 120});
  ASSERT_FALSE(::testing::Test::HasFailure());
  auto coordinator = StartCoordinator(f, "coordinator-1.log");
  auto a = StartNode(f, "site-a");
  auto b = StartNode(f, "site-b");
  auto c = StartNode(f, "site-c");

  ASSERT_TRUE(WaitForRow(f.StateDb(), "SELECT 1 FROM rounds WHERE round = 2 AND status = 'open'",
                         std::chrono::minutes(2), coordinator.get()))
      << coordinator->Log();
  c->Signal(SIGSTOP);
  // Both other sites' updates of round 2 are in; then the coordinator dies.
  ASSERT_TRUE(WaitForRow(f.StateDb(),
                         "SELECT 1 FROM submissions WHERE round = 2 AND status = 'accepted' GROUP BY round "
                         "HAVING COUNT(*) = 2",
                         std::chrono::minutes(2), coordinator.get()))
      << coordinator->Log();
  coordinator->Signal(SIGKILL);
  ASSERT_EQ(coordinator->Wait(std::chrono::seconds(10)), 128 + SIGKILL);

  auto restarted = StartCoordinator(f, "coordinator-2.log");
  c->Signal(SIGCONT);
  ASSERT_EQ(restarted->Wait(std::chrono::minutes(4)), 0) << restarted->Log();
  EXPECT_EQ(a->Wait(std::chrono::seconds(30)), 0) << a->Log();
  EXPECT_EQ(b->Wait(std::chrono::seconds(30)), 0) << b->Log();
  EXPECT_EQ(c->Wait(std::chrono::seconds(30)), 0) << c->Log();

  // Round 2's attempt was resumed, not abandoned and redone.
  EXPECT_NE(restarted->Log().find("round 2/3 (attempt 1): resumed after a restart"), std::string::npos)
      << restarted->Log();
  std::vector<SqlRow> attempts = QueryDb(f.StateDb(), "SELECT round, attempt, status FROM rounds ORDER BY round");
  ASSERT_EQ(attempts.size(), 3u);
  for (size_t i = 0; i < attempts.size(); ++i) {
    EXPECT_EQ(AsInt(attempts[i][0]), static_cast<int64_t>(i + 1));
    EXPECT_EQ(AsInt(attempts[i][1]), 1);
    EXPECT_EQ(AsText(attempts[i][2]), "applied");
  }
  std::vector<SqlRow> models = QueryDb(f.StateDb(), "SELECT round FROM models ORDER BY round");
  ASSERT_EQ(models.size(), 4u);
  // Every site paid once per round: the updates a and b had sent were sent
  // again from their kept copies, with no training and no charge.
  for (const std::string& site : f.sites) {
    EXPECT_EQ(ChargesByRound(f.NodeDb(site)), (std::map<int64_t, int64_t>{{1, 1}, {2, 1}, {3, 1}})) << site;
  }
  for (const char* site : {"site-a", "site-b"}) {
    std::vector<SqlRow> resent =
        QueryDb(f.NodeDb(site),
                "SELECT body FROM ledger WHERE kind = 'update_sent' AND body LIKE '%\"resent_from_attempt\":1%'");
    EXPECT_EQ(resent.size(), 1u) << site;
    std::vector<SqlRow> round2 =
        QueryDb(f.NodeDb(site), "SELECT status FROM privacy_ledger WHERE kind = 'dp-sgd' AND round = 2");
    ASSERT_EQ(round2.size(), 1u);
    EXPECT_EQ(AsText(round2[0][0]), "accepted (sent again in attempt 1)") << site;
    // Nothing is kept once the federation is over.
    EXPECT_TRUE(QueryDb(f.NodeDb(site), "SELECT 1 FROM kept_updates").empty()) << site;
  }
  // The ledgers agree: every aggregated update is one the sites recorded.
  std::vector<std::string> argv = {FedradBin(),     "audit",    "verify", "--ca", dir + "/kits/coordinator/ca.pem",
                                   "--coordinator", f.StateDb()};
  for (const std::string& site : f.sites) {
    argv.push_back("--node");
    argv.push_back(f.NodeDb(site));
  }
  EXPECT_EQ(RunCommand(argv, dir + "/verify.log"), 0) << ReadText(dir + "/verify.log");
  RemoveWorkspaceIfPassed(dir);
}

// A federation of two DP sites whose 40 local epochs leave time to stop one
// mid-round, running: its coordinator and both nodes started.
class NodeStopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeWorkspace();
    f_ = SetUpFederation(dir_, {.sites = 2,
                                .rounds = 2,
                                .min_nodes = 2,
                                .local_epochs = 40,
                                .patients = 12,
                                .images = 4,
                                .round_deadline_s = 120});
    ASSERT_FALSE(HasFailure());
    coordinator_ = StartCoordinator(f_, "coordinator.log");
    a_ = StartNode(f_, "site-a");
    b_ = StartNode(f_, "site-b");
  }
  void TearDown() override { RemoveWorkspaceIfPassed(dir_); }

  std::string dir_;
  MiniFederation f_;
  std::unique_ptr<Process> coordinator_, a_, b_;
};

// SIGTERM while a node trains: it stops at the next step and exits 0, its
// round's charge marked interrupted; restarted, it serves the round under
// that charge, with no second one.
TEST_F(NodeStopTest, ANodeStoppedWhileTrainingExitsCleanlyAndSaysWhatItWasCharged) {
  // site-a's round 1 charge is committed: it is training.
  ASSERT_TRUE(WaitForRow(f_.NodeDb("site-a"),
                         "SELECT 1 FROM privacy_ledger WHERE kind = 'dp-sgd' AND round = 1 AND status = 'charged'",
                         std::chrono::minutes(2), a_.get()))
      << a_->Log();
  a_->Signal(SIGTERM);
  EXPECT_EQ(a_->Wait(std::chrono::seconds(20)), 0) << a_->Log();
  EXPECT_NE(a_->Log().find("because the node is stopping; the round's charge stands"), std::string::npos) << a_->Log();
  std::vector<SqlRow> charge =
      QueryDb(f_.NodeDb("site-a"), "SELECT status FROM privacy_ledger WHERE kind = 'dp-sgd' AND round = 1");
  ASSERT_EQ(charge.size(), 1u);
  EXPECT_EQ(AsText(charge[0][0]).rfind("interrupted: the node was stopped during training", 0), 0u)
      << AsText(charge[0][0]);

  auto again = StartNode(f_, "site-a");
  ASSERT_EQ(coordinator_->Wait(std::chrono::minutes(4)), 0) << coordinator_->Log();
  EXPECT_EQ(again->Wait(std::chrono::seconds(30)), 0) << again->Log();
  EXPECT_EQ(b_->Wait(std::chrono::seconds(30)), 0) << b_->Log();
  // Restarted, it trained round 1 again under the charge the stop cut
  // short: one charge per round, and that one's update was accepted.
  EXPECT_NE(again->Log().find("no second charge"), std::string::npos) << again->Log();
  EXPECT_EQ(ChargesByRound(f_.NodeDb("site-a")), (std::map<int64_t, int64_t>{{1, 1}, {2, 1}}));
  charge = QueryDb(f_.NodeDb("site-a"), "SELECT status FROM privacy_ledger WHERE kind = 'dp-sgd' AND round = 1");
  ASSERT_EQ(charge.size(), 1u);
  EXPECT_EQ(AsText(charge[0][0]), "accepted");
}

// SIGTERM after a node's update was accepted, while the round waits for
// another site: the node exits 0, and restarted it neither trains nor pays
// for that round again; the round is applied with the update it had sent.
TEST_F(NodeStopTest, ANodeStoppedAfterItsUpdateWasAcceptedPaysOnceAndLosesNothing) {
  ASSERT_TRUE(WaitForRow(f_.StateDb(), "SELECT 1 FROM rounds WHERE round = 1 AND status = 'open'",
                         std::chrono::minutes(2), coordinator_.get()))
      << coordinator_->Log();
  b_->Signal(SIGSTOP);  // round 1 waits for site-b (40 local epochs: it has not answered yet)
  ASSERT_TRUE(WaitForRow(f_.StateDb(),
                         "SELECT 1 FROM submissions WHERE round = 1 AND site = 'site-a' AND status = 'accepted'",
                         std::chrono::minutes(2), coordinator_.get()))
      << coordinator_->Log();
  // The point this test is about: round 1 still waits for site-b.
  ASSERT_EQ(AsText(QueryDb(f_.StateDb(), "SELECT status FROM rounds WHERE round = 1")[0][0]), "open");
  a_->Signal(SIGTERM);
  EXPECT_EQ(a_->Wait(std::chrono::seconds(20)), 0) << a_->Log();
  auto again = StartNode(f_, "site-a");
  b_->Signal(SIGCONT);
  ASSERT_EQ(coordinator_->Wait(std::chrono::minutes(4)), 0) << coordinator_->Log();
  EXPECT_EQ(again->Wait(std::chrono::seconds(30)), 0) << again->Log();
  EXPECT_EQ(b_->Wait(std::chrono::seconds(30)), 0) << b_->Log();

  for (const std::string& site : f_.sites) {
    EXPECT_EQ(ChargesByRound(f_.NodeDb(site)), (std::map<int64_t, int64_t>{{1, 1}, {2, 1}})) << site;
  }
  std::vector<SqlRow> rounds = QueryDb(f_.StateDb(), "SELECT round, attempt, status FROM rounds ORDER BY round");
  ASSERT_EQ(rounds.size(), 2u);
  for (const SqlRow& r : rounds) {
    EXPECT_EQ(AsInt(r[1]), 1) << "round " << AsInt(r[0]);
    EXPECT_EQ(AsText(r[2]), "applied") << "round " << AsInt(r[0]);
  }
  // The update site-a sent before the stop is the one round 1 used.
  std::vector<SqlRow> sent = QueryDb(f_.NodeDb("site-a"), "SELECT update_sha256 FROM updates_sent WHERE round = 1");
  std::vector<SqlRow> accepted =
      QueryDb(f_.StateDb(),
              "SELECT update_sha256 FROM submissions WHERE round = 1 AND site = 'site-a' AND status = 'accepted'");
  ASSERT_FALSE(sent.empty());
  ASSERT_EQ(accepted.size(), 1u);
  EXPECT_EQ(AsText(accepted[0][0]), AsText(sent.back()[0]));
}

// A stateful server optimiser (FedAdam: its moments) is restored after a
// crash: a federation whose coordinator is SIGKILLed after round 2 ends with
// the very model of one that ran through, and only the last round's state
// file is kept (each is twice the model's size).
TEST(CrashTest, ServerOptimizerStateSurvivesACrash) {
  auto run = [](const std::string& dir, bool crash) -> std::string {
    MiniFederation f =
        SetUpFederation(dir, {.sites = 2, .rounds = 3, .min_nodes = 2, .start_grace_s = 20, .dp = false});
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
