// The privacy budget end to end: each node charges its ledger before it
// trains, reports ε with its update, and declines (BUDGET_EXHAUSTED) the round
// that would pass its epsilon_max; the coordinator records every report and
// ends the federation when too few sites have budget left. A node whose
// budget is already spent does not read its data at all.
#include <signal.h>

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/privacy_accountant.h"
#include "tests/harness.h"

namespace fedrad::testing {
namespace {

constexpr double kDelta = 1e-5;
constexpr double kCountSigma = 20;  // node/privacy_budget.h: kCountNoiseMultiplier

// ε after the count release and `rounds` rounds of one full-batch step at σ = 1.
double EpsilonAfter(int rounds) {
  PrivacyAccountant a;
  a.Compose(kCountSigma, 1, 1);
  a.Compose(1.0, 1, rounds);
  return a.GetEpsilon(kDelta).epsilon;
}

void SetPrivacy(const MiniFederation& f, double epsilon_max, double sigma = 1.0) {
  for (const std::string& site : f.sites) {
    std::string cfg = ReadText(f.NodeConfig(site));
    // A fixed σ; the plan's batch (1000, set by the tests) exceeds any
    // released count of the sites' patients, so q = 1 and each round is
    // local_epochs steps.
    cfg.replace(cfg.find("target_epsilon = 2.7"), 20, absl::StrCat("noise_multiplier = ", sigma));
    cfg.replace(cfg.find("epsilon_max = 3.0"), 17, absl::StrCat("epsilon_max = ", epsilon_max));
    WriteText(f.NodeConfig(site), cfg);
  }
}

TEST(PrivacyTest, NodesStopAtTheirBudgetAndTheCoordinatorRecordsEpsilon) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(
      dir,
      {.sites = 2, .rounds = 4, .min_nodes = 2, .patients = 8, .images = 2, .start_grace_s = 1, .batch_size = 1000});
  ASSERT_FALSE(::testing::Test::HasFailure());
  // Room for two rounds, not three.
  const double epsilon_max = (EpsilonAfter(2) + EpsilonAfter(3)) / 2;
  SetPrivacy(f, epsilon_max);

  std::vector<std::string> logs = RunFederationToCompletion(f, std::chrono::minutes(4));
  const std::string& coordinator = logs[0];
  EXPECT_NE(coordinator.find("round 1/4: privacy, epsilon spent/max per site"), std::string::npos) << coordinator;
  EXPECT_NE(coordinator.find("round 2/4: privacy, epsilon spent/max per site"), std::string::npos);
  EXPECT_NE(coordinator.find("only 0 site(s) have privacy budget left"), std::string::npos) << coordinator;
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM rounds WHERE status = 'applied'")[0][0], SqlValue(int64_t{2}));

  for (const std::string& site : f.sites) {
    SCOPED_TRACE(site);
    // The node's ledger: the count release and two rounds, each accepted,
    // with ε as an independent composition gives it.
    std::vector<SqlRow> ledger =
        QueryDb(f.NodeDb(site),
                "SELECT kind, round, noise_multiplier, sampling_rate, steps, epsilon_after, status "
                "FROM privacy_ledger WHERE kind != 'evaluation' ORDER BY id");
    ASSERT_EQ(ledger.size(), 3u);
    EXPECT_EQ(AsText(ledger[0][0]), "count");
    for (int r = 1; r <= 2; ++r) {
      EXPECT_EQ(AsText(ledger[r][0]), "dp-sgd");
      EXPECT_EQ(AsInt(ledger[r][1]), r);
      EXPECT_DOUBLE_EQ(AsDouble(ledger[r][2]), 1.0);
      EXPECT_DOUBLE_EQ(AsDouble(ledger[r][3]), 1.0);
      EXPECT_EQ(AsInt(ledger[r][4]), 1);
      EXPECT_NEAR(AsDouble(ledger[r][5]), EpsilonAfter(r), 1e-9);
      EXPECT_EQ(AsText(ledger[r][6]), "accepted");
    }
    EXPECT_LE(AsDouble(ledger[2][5]), epsilon_max);

    // The coordinator's copy agrees with the node's ledger, and it recorded
    // the decline of round 3.
    std::vector<SqlRow> sent =
        QueryDb(f.StateDb(), absl::StrCat("SELECT round, status, epsilon_spent, dp_noise_multiplier, dp_unit, reason "
                                          "FROM submissions WHERE site = '",
                                          site, "' ORDER BY round"));
    ASSERT_EQ(sent.size(), 3u);
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(AsText(sent[r][1]), "accepted");
      EXPECT_DOUBLE_EQ(AsDouble(sent[r][2]), AsDouble(ledger[r + 1][5]));
      EXPECT_DOUBLE_EQ(AsDouble(sent[r][3]), 1.0);
      EXPECT_EQ(AsText(sent[r][4]), "patient");
    }
    EXPECT_EQ(AsInt(sent[2][0]), 3);
    EXPECT_EQ(AsText(sent[2][1]), "declined");
    EXPECT_NE(AsText(sent[2][5]).find("BUDGET_EXHAUSTED"), std::string::npos);
    // Under DP the node sends no training loss and a noised count.
    EXPECT_TRUE(QueryDb(f.NodeDb(site), "SELECT 1 FROM updates_sent WHERE train_loss != 0").empty());

    // The privacy officer's view.
    const std::string out = dir + "/privacy-" + site + ".txt";
    ASSERT_EQ(RunCommand({NodeBin(), "privacy", "--config", f.NodeConfig(site), "--charges"}, out), 0) << ReadText(out);
    const std::string report = ReadText(out);
    EXPECT_NE(report.find(absl::StrFormat("epsilon spent: %.4f", EpsilonAfter(2))), std::string::npos) << report;
    EXPECT_NE(report.find("rounds left like the last one at sigma 1: 0"), std::string::npos) << report;
    EXPECT_NE(report.find("dp-sgd"), std::string::npos) << report;

    // The audit ledger holds the refusal of round 3, and both ledgers verify together.
    std::vector<SqlRow> refused = QueryDb(f.NodeDb(site), "SELECT body FROM ledger WHERE kind = 'budget_refused'");
    ASSERT_EQ(refused.size(), 1u);
    EXPECT_NE(AsText(refused[0][0]).find("\"round\":3"), std::string::npos) << AsText(refused[0][0]);
    std::vector<SqlRow> declined = QueryDb(
        f.StateDb(),
        absl::StrCat("SELECT body FROM ledger WHERE kind = 'update_declined' AND body LIKE '%\"", site, "\"%'"));
    EXPECT_EQ(declined.size(), 1u);
  }
  const std::string audit = dir + "/audit.txt";
  EXPECT_EQ(RunCommand({FedradBin(), "audit", "verify", "--ca", dir + "/kits/coordinator/ca.pem", "--coordinator",
                        f.StateDb(), "--node", f.NodeDb(f.sites[0]), "--node", f.NodeDb(f.sites[1])},
                       audit),
            0)
      << ReadText(audit);

  // A new run of the federation (fresh coordinator state) with each site's
  // budget exactly spent: the nodes decline without reading their data.
  std::filesystem::remove_all(dir + "/kits/coordinator/state");
  for (const std::string& site : f.sites) {
    std::string cfg = ReadText(f.NodeConfig(site));
    const size_t at = cfg.find("epsilon_max = ");
    cfg.replace(
        at, cfg.find('\n', at) - at,
        absl::StrFormat(
            "epsilon_max = %.17g",
            AsDouble(QueryDb(f.NodeDb(site),
                             "SELECT MAX(epsilon_after) FROM privacy_ledger WHERE kind != 'evaluation'")[0][0])));
    WriteText(f.NodeConfig(site), cfg);
  }
  logs = RunFederationToCompletion(f, std::chrono::minutes(2));
  EXPECT_NE(logs[0].find("only 0 site(s) have privacy budget left"), std::string::npos) << logs[0];
  for (size_t i = 1; i < logs.size(); ++i) {
    const std::string second_run = logs[i].substr(logs[i].rfind("connecting to"));  // the log is appended to
    EXPECT_NE(second_run.find("does not read its data"), std::string::npos) << second_run;
    EXPECT_EQ(second_run.find("] info: data: "), std::string::npos) << "the node read its data:\n" << second_run;
  }
  for (const std::string& site : f.sites) {
    EXPECT_EQ(QueryDb(f.NodeDb(site), "SELECT COUNT(*) FROM privacy_ledger WHERE kind != 'evaluation'")[0][0],
              SqlValue(int64_t{3}));
  }
  RemoveWorkspaceIfPassed(dir);
}

// A node killed after charging a round but before sending it keeps the
// charge: the ledger over-counts, never under-counts.
TEST(PrivacyTest, ACrashAfterTheChargeKeepsIt) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 2,
                                           .rounds = 2,
                                           .min_nodes = 2,
                                           .local_epochs = 100,
                                           .patients = 8,
                                           .images = 3,
                                           .round_deadline_s = 600,
                                           .start_grace_s = 1,
                                           .batch_size = 1000});
  ASSERT_FALSE(::testing::Test::HasFailure());
  SetPrivacy(f, 100, 5.0);
  auto coordinator = StartCoordinator(f, "coordinator.log");
  auto a = StartNode(f, "site-a");
  auto b = StartNode(f, "site-b");
  ASSERT_TRUE(WaitForRow(f.NodeDb("site-b"),
                         "SELECT 1 FROM privacy_ledger WHERE kind = 'dp-sgd' AND status = 'charged'",
                         std::chrono::minutes(2), b.get()))
      << b->Log();
  b->Signal(SIGKILL);
  ASSERT_EQ(b->Wait(std::chrono::seconds(10)), 128 + SIGKILL);
  EXPECT_TRUE(QueryDb(f.NodeDb("site-b"), "SELECT 1 FROM updates_sent").empty()) << "killed too late";

  auto b2 = StartNode(f, "site-b");
  ASSERT_EQ(coordinator->Wait(std::chrono::minutes(4)), 0) << coordinator->Log();
  EXPECT_EQ(a->Wait(std::chrono::seconds(30)), 0) << a->Log();
  EXPECT_EQ(b2->Wait(std::chrono::seconds(30)), 0) << b2->Log();

  std::vector<SqlRow> ledger =
      QueryDb(f.NodeDb("site-b"),
              "SELECT kind, round, status, epsilon_after FROM privacy_ledger WHERE kind != 'evaluation' ORDER BY id");
  ASSERT_EQ(ledger.size(), 4u);
  EXPECT_EQ(AsText(ledger[1][0]), "dp-sgd");
  EXPECT_EQ(AsInt(ledger[1][1]), 1);
  EXPECT_EQ(AsText(ledger[1][2]), "charged");  // the round that never left
  EXPECT_EQ(AsInt(ledger[2][1]), 1);
  EXPECT_EQ(AsText(ledger[2][2]), "accepted");
  EXPECT_EQ(AsText(ledger[3][2]), "accepted");
  PrivacyAccountant all;
  all.Compose(kCountSigma, 1, 1);
  all.Compose(5.0, 1, 3 * 100);
  EXPECT_NEAR(AsDouble(ledger[3][3]), all.GetEpsilon(kDelta).epsilon, 1e-9);
  PrivacyAccountant sent_only;
  sent_only.Compose(kCountSigma, 1, 1);
  sent_only.Compose(5.0, 1, 2 * 100);
  EXPECT_GT(AsDouble(ledger[3][3]), sent_only.GetEpsilon(kDelta).epsilon + 1);
  RemoveWorkspaceIfPassed(dir);
}

TEST(PrivacyTest, APlanThatRequiresDpTurnsAwayANodeWithoutIt) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 2});
  ASSERT_FALSE(::testing::Test::HasFailure());
  const std::string plan = dir + "/kits/coordinator/federation.toml";
  WriteText(plan, ReadText(plan) + "\n[privacy]\nrequire_dp = true\n");
  std::string cfg = ReadText(f.NodeConfig("site-b"));
  cfg.replace(cfg.find("enabled = true"), 14, "enabled = false");
  WriteText(f.NodeConfig("site-b"), cfg);
  auto coordinator = StartCoordinator(f, "coordinator.log");
  const std::string out = dir + "/check-b.log";
  EXPECT_EQ(RunCommand({NodeBin(), "check", "--config", f.NodeConfig("site-b")}, out), 1) << ReadText(out);
  EXPECT_NE(ReadText(out).find("accepts only differentially private updates"), std::string::npos) << ReadText(out);
  const std::string ok = dir + "/check-a.log";
  EXPECT_EQ(RunCommand({NodeBin(), "check", "--config", f.NodeConfig("site-a")}, ok), 0) << ReadText(ok);
  coordinator->Signal(SIGTERM);
  coordinator->Wait(std::chrono::seconds(30));
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing

namespace fedrad::testing {
namespace {

// [policy] max_round_epsilon: a round whose charge alone would cost more is
// declined as the site's policy (not as a spent budget), with the reason,
// and nothing is charged or trained for it.
TEST(PrivacyTest, ARoundCostingMoreThanTheSitesLimitIsAPolicyDecline) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 2, .rounds = 2, .min_nodes = 1, .start_grace_s = 1});
  ASSERT_FALSE(::testing::Test::HasFailure());
  ReplaceInFile(f.NodeConfig("site-b"), "min_report = 10\n", "min_report = 10\nmax_round_epsilon = 0.001\n");
  std::vector<std::string> logs = RunFederationToCompletion(f, std::chrono::minutes(3));
  std::vector<SqlRow> declined =
      QueryDb(f.StateDb(), "SELECT status, reason FROM submissions WHERE site = 'site-b' ORDER BY round");
  ASSERT_EQ(declined.size(), 1u) << logs[0];
  EXPECT_EQ(AsText(declined[0][0]), "declined");
  EXPECT_EQ(AsText(declined[0][1]).rfind("POLICY: [policy] max_round_epsilon: this round would cost epsilon", 0), 0u)
      << AsText(declined[0][1]);
  EXPECT_EQ(QueryDb(f.NodeDb("site-b"), "SELECT COUNT(*) FROM privacy_ledger WHERE kind = 'dp-sgd'")[0][0],
            SqlValue(int64_t{0}));
  EXPECT_TRUE(QueryDb(f.NodeDb("site-b"),
                      "SELECT 1 FROM ledger WHERE kind = 'data_access' AND body LIKE '%\"purpose\":\"train\"%'")
                  .empty());
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM rounds WHERE status = 'applied'")[0][0], SqlValue(int64_t{2}));
  RemoveWorkspaceIfPassed(dir);
}

// node.toml's [policy]: a task beyond it is declined before the model is
// fetched or the data used for it, with the reason in the site's ledger, in
// the coordinator's state and log; the others go on.
TEST(PrivacyTest, ATaskBeyondASitesPolicyIsDeclinedWithItsReason) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 2, .rounds = 2, .min_nodes = 1, .start_grace_s = 1});
  ASSERT_FALSE(::testing::Test::HasFailure());
  // The plan asks batches of 16.
  ReplaceInFile(f.NodeConfig("site-b"), "min_report = 10\n", "min_report = 10\nmin_batch_size = 64\n");
  std::vector<std::string> logs = RunFederationToCompletion(f, std::chrono::minutes(3));
  EXPECT_NE(logs[0].find("site site-b declined: the task goes beyond its policy ([policy] min_batch_size: the task "
                         "asks a batch of 16, smaller than this site's 64)"),
            std::string::npos)
      << logs[0];
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM rounds WHERE status = 'applied'")[0][0], SqlValue(int64_t{2}));
  std::vector<SqlRow> declined =
      QueryDb(f.StateDb(), "SELECT status, reason FROM submissions WHERE site = 'site-b' ORDER BY round");
  ASSERT_EQ(declined.size(), 1u) << "asked once, then left out of the run";
  EXPECT_EQ(AsText(declined[0][0]), "declined");
  EXPECT_EQ(AsText(declined[0][1]).rfind("POLICY: [policy] min_batch_size", 0), 0u) << AsText(declined[0][1]);
  // The site's ledger says why; it charged nothing and trained on nothing.
  std::vector<SqlRow> refused = QueryDb(
      f.NodeDb("site-b"), "SELECT body FROM ledger WHERE kind = 'policy_refused' AND body LIKE '%\"task\":\"train\"%'");
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_NE(AsText(refused[0][0]).find("min_batch_size"), std::string::npos);
  EXPECT_EQ(QueryDb(f.NodeDb("site-b"), "SELECT COUNT(*) FROM privacy_ledger WHERE kind != 'evaluation'")[0][0],
            SqlValue(int64_t{0}));
  EXPECT_TRUE(QueryDb(f.NodeDb("site-b"),
                      "SELECT 1 FROM ledger WHERE kind = 'data_access' AND body LIKE '%\"purpose\":\"train\"%'")
                  .empty());
  // Refused before the round's model was fetched (the evaluations that follow fetch later ones).
  std::vector<SqlRow> order = QueryDb(f.NodeDb("site-b"),
                                      "SELECT kind FROM ledger WHERE kind IN ('policy_refused', "
                                      "'model_received') ORDER BY seq LIMIT 1");
  ASSERT_EQ(order.size(), 1u);
  EXPECT_EQ(AsText(order[0][0]), "policy_refused");
  const std::string audit = dir + "/audit.txt";
  EXPECT_EQ(RunCommand({FedradBin(), "audit", "verify", "--ca", dir + "/kits/coordinator/ca.pem", "--coordinator",
                        f.StateDb(), "--node", f.NodeDb("site-a"), "--node", f.NodeDb("site-b")},
                       audit),
            0)
      << ReadText(audit);
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing

namespace fedrad::testing {
namespace {

// Federated evaluation is a DP release: what the coordinator stores differs
// from the exact figures computed locally on the same model and split by
// noise of the scale the release states; each release is an "evaluation"
// charge in the site's ledger, and the ledgers still verify.
TEST(PrivacyTest, EvaluationFiguresAreADpReleaseChargedInTheLedger) {
  const std::string dir = MakeWorkspace();
  // One image per patient: the patient-weighted confusion matrix is then
  // the image counts fedrad-node evaluate prints.
  MiniFederation f = SetUpFederation(
      dir,
      {.sites = 2, .rounds = 2, .min_nodes = 2, .patients = 120, .images = 1, .start_grace_s = 1, .min_report = 5});
  ASSERT_FALSE(::testing::Test::HasFailure());
  RunFederationToCompletion(f, std::chrono::minutes(4));
  ASSERT_FALSE(::testing::Test::HasFailure());

  double squares = 0;  // of the noise, in units of its stated standard deviation
  int cells = 0, differ = 0;
  for (const std::string& site : f.sites) {
    SCOPED_TRACE(site);
    std::vector<SqlRow> charges =
        QueryDb(f.NodeDb(site),
                "SELECT round, noise_multiplier, epsilon_after FROM privacy_ledger WHERE kind = 'evaluation' "
                "ORDER BY id");
    ASSERT_EQ(charges.size(), 2u) << "one release per round";
    for (const SqlRow& charge : charges) {
      const int64_t round = AsInt(charge[0]);
      const double sigma = AsDouble(charge[1]);
      ASSERT_GT(sigma, 0);
      std::vector<SqlRow> stored = QueryDb(
          f.StateDb(), absl::StrCat("SELECT r.noise_multiplier, r.release, m.sha256 FROM evaluation_releases r JOIN "
                                    "models m ON m.round = r.round WHERE r.round = ",
                                    round, " AND r.site = '", site, "'"));
      ASSERT_EQ(stored.size(), 1u) << round;
      EXPECT_DOUBLE_EQ(AsDouble(stored[0][0]), sigma) << "the coordinator holds the release the ledger charged";
      const nlohmann::json release = nlohmann::json::parse(AsText(stored[0][1]));
      // The exact figures, on the site, of the same model and split.
      const std::string model = dir + "/kits/coordinator/state/models/" + AsText(stored[0][2]) + ".safetensors";
      const std::string out = absl::StrCat(dir, "/evaluate-", site, "-", round, ".json");
      ASSERT_EQ(RunCommand({NodeBin(), "evaluate", "--config", f.NodeConfig(site), "--model", model, "--json",
                            "--bootstrap", "10"},
                           out),
                0)
          << ReadText(out);
      const std::string text = ReadText(out);
      const nlohmann::json exact = nlohmann::json::parse(text.substr(text.find('{')));
      const std::vector<double> noisy = release.at("confusion").get<std::vector<double>>();
      const double stated = sigma * std::sqrt(2.5);  // common/evaluation_release.h: NoiseFor(σ).confusion
      ASSERT_EQ(noisy.size(), 4u);
      for (int t = 0; t < 2; ++t) {
        for (int p = 0; p < 2; ++p) {
          const double noise = noisy[t * 2 + p] - exact.at("confusion")[t][p].get<double>();
          EXPECT_LT(std::fabs(noise), 6 * stated) << "round " << round << " cell " << t << p;
          squares += (noise / stated) * (noise / stated);
          ++cells;
          differ += std::fabs(noise) > 1e-9;
        }
      }
    }
    // Both parts of the site's ε are in its own report.
    const std::string report = dir + "/privacy-" + site + ".txt";
    ASSERT_EQ(RunCommand({NodeBin(), "privacy", "--config", f.NodeConfig(site)}, report), 0);
    EXPECT_NE(ReadText(report).find("evaluation:"), std::string::npos) << ReadText(report);
    EXPECT_NE(ReadText(report).find("2 release(s)"), std::string::npos) << ReadText(report);
    EXPECT_FALSE(QueryDb(f.NodeDb(site),
                         "SELECT 1 FROM ledger WHERE kind = 'dp_charge' AND body LIKE "
                         "'%\"charge\":\"evaluation\"%'")
                     .empty());
  }
  EXPECT_EQ(differ, cells) << "every released cell carries noise";
  // 16 cells: the noise's RMS over its stated scale is near 1 (chi with 16
  // degrees of freedom: within [0.45, 1.6] with probability above 0.999).
  const double rms = std::sqrt(squares / cells);
  EXPECT_GT(rms, 0.45);
  EXPECT_LT(rms, 1.6);
  const std::string audit = dir + "/audit.txt", json = dir + "/audit.json";
  EXPECT_EQ(RunCommand({FedradBin(), "audit", "report", "--ca", dir + "/kits/coordinator/ca.pem", "--coordinator",
                        f.StateDb(), "--node", f.NodeDb(f.sites[0]), "--node", f.NodeDb(f.sites[1]), "--out",
                        dir + "/audit.html", "--json", json},
                       audit),
            0)
      << ReadText(audit);
  const nlohmann::json report = nlohmann::json::parse(ReadText(json));
  EXPECT_NE(report.dump().find("evaluation_releases"), std::string::npos);
  // The two parts compose in parallel only while the split stays put: a
  // node with evaluation releases refuses to start with another split seed.
  ReplaceInFile(f.NodeConfig(f.sites[0]), "split_seed = 42", "split_seed = 43");
  const std::string moved = dir + "/moved-split.log";
  EXPECT_NE(RunCommand({NodeBin(), "run", "--config", f.NodeConfig(f.sites[0])}, moved, std::chrono::seconds(30)), 0);
  EXPECT_NE(ReadText(moved).find("changes [data] validation_fraction or split_seed"), std::string::npos)
      << ReadText(moved);
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing

namespace fedrad::testing {
namespace {

// A site with no validation patients still pays for and sends a release
// (zeros plus noise, suppressed below min_report): refusing would tell the
// coordinator that its validation split is empty.
TEST(PrivacyTest, AnEmptyValidationSplitIsReleasedNotRefused) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 2, .rounds = 1, .min_nodes = 2, .start_grace_s = 1});
  ASSERT_FALSE(::testing::Test::HasFailure());
  ReplaceInFile(f.NodeConfig("site-b"), "validation_fraction = 0.2", "validation_fraction = 0.0");
  RunFederationToCompletion(f);
  ASSERT_FALSE(::testing::Test::HasFailure());
  EXPECT_EQ(QueryDb(f.NodeDb("site-b"), "SELECT COUNT(*) FROM privacy_ledger WHERE kind = 'evaluation'")[0][0],
            SqlValue(int64_t{1}));
  EXPECT_TRUE(QueryDb(f.NodeDb("site-b"), "SELECT 1 FROM ledger WHERE kind = 'policy_refused'").empty());
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM evaluation_figures WHERE site = 'site-b'")[0][0],
            SqlValue(int64_t{1}));
  RemoveWorkspaceIfPassed(dir);
}

// What the coordinator stores about a site's size, for several sizes: the
// update's weight, batch / q and the steps follow from the count the site
// released (its ledger's `count` charge, noised with σ = 20), and the exact
// count is only in the site's own ledger. Two sizes one patient apart and a
// larger one: every stored figure matches the release, none needs the exact
// count.
TEST(PrivacyTest, TheCoordinatorStoresOnlyReleasedCounts) {
  const std::string workspace = MakeWorkspace();
  for (int patients : {40, 41, 90}) {
    SCOPED_TRACE(patients);
    const std::string dir = workspace + "/patients-" + std::to_string(patients);
    std::filesystem::create_directories(dir);
    MiniFederation f = SetUpFederation(dir, {.sites = 1,
                                             .rounds = 1,
                                             .min_nodes = 1,
                                             .patients = patients,
                                             .images = 1,
                                             .start_grace_s = 1,
                                             .min_report = 0,
                                             .batch_size = 8});
    ASSERT_FALSE(::testing::Test::HasFailure());
    RunFederationToCompletion(f);
    ASSERT_FALSE(::testing::Test::HasFailure());
    const std::vector<SqlRow> count =
        QueryDb(f.NodeDb(f.sites[0]), "SELECT units, released FROM privacy_ledger WHERE kind = 'count'");
    ASSERT_EQ(count.size(), 1u);
    const int64_t exact = AsInt(count[0][0]);
    const double released = AsDouble(count[0][1]);
    EXPECT_GT(exact, patients / 2);  // the training split's patients: in the site's ledger only
    const std::vector<SqlRow> stored = QueryDb(
        f.StateDb(), "SELECT num_examples, dp_sampling_rate, dp_steps FROM submissions WHERE status = 'accepted'");
    ASSERT_EQ(stored.size(), 1u);
    EXPECT_EQ(AsInt(stored[0][0]), static_cast<int64_t>(released)) << "the weight is the release";
    const double q = AsDouble(stored[0][1]);
    const double rounded = static_cast<double>(std::llround(released));
    EXPECT_NEAR(8 / q, std::max(rounded, 8.0), 1e-6 * rounded) << "batch / q is the release";
    // The steps are the plan's one epoch over q: nothing else of the data.
    EXPECT_EQ(AsInt(stored[0][2]), std::max<int64_t>(1, std::llround(1 / q))) << q;
    const std::vector<SqlRow> charged =
        QueryDb(f.NodeDb(f.sites[0]), "SELECT steps FROM privacy_ledger WHERE kind = 'dp-sgd'");
    ASSERT_EQ(charged.size(), 1u);
    EXPECT_EQ(AsInt(charged[0][0]), AsInt(stored[0][2]));
    // Nowhere in the submissions is the exact count.
    EXPECT_EQ(QueryDb(f.StateDb(), absl::StrCat("SELECT 1 FROM submissions WHERE num_examples = ", exact,
                                                " AND num_examples != ", static_cast<int64_t>(released)))
                  .size(),
              0u);
  }
  RemoveWorkspaceIfPassed(workspace);
}

}  // namespace
}  // namespace fedrad::testing
