// Multilabel classification as a federation: two nodes train ctnet on
// synth's three findings (lesion, effusion, clip) under patient-level DP
// over mutual TLS, and release per-label statistics whose noise grows with
// the label count; the coordinator pools them label by label.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "common/safetensors.h"
#include "tests/harness.h"

namespace fedrad::testing {
namespace {

TEST(MultilabelFederationTest, TwoSitesTrainThreeFindingsAndReleaseThemLabelByLabel) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(
      dir,
      {.sites = 2, .rounds = 2, .min_nodes = 2, .patients = 16, .images = 3, .min_report = 0, .task = "multilabel"});
  ASSERT_FALSE(::testing::Test::HasFailure());
  EXPECT_NE(ReadText(dir + "/data/site-a/labels.csv").find("path,lesion,effusion,clip\n"), std::string::npos);
  std::vector<std::string> logs = RunFederationToCompletion(f);
  ASSERT_FALSE(::testing::Test::HasFailure());

  std::vector<SqlRow> models = QueryDb(f.StateDb(), "SELECT round, sha256 FROM models ORDER BY round");
  ASSERT_EQ(models.size(), 3u);
  auto file = ReadSafetensorsFile(dir + "/kits/coordinator/state/models/" + AsText(models[2][1]) + ".safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata.at("task"), "multilabel");
  EXPECT_EQ(file->metadata.at("class_names"), "[\"lesion\",\"effusion\",\"clip\"]");
  for (const std::string& site : f.sites) {
    std::vector<SqlRow> sent = QueryDb(f.NodeDb(site), "SELECT outcome FROM updates_sent ORDER BY round");
    ASSERT_EQ(sent.size(), 2u) << site;
    for (const SqlRow& r : sent) EXPECT_EQ(AsText(r[0]), "accepted") << site;
  }
  // Every release is per label: 3 labels' 2x2 matrices and score histograms,
  // with noise (DP is on in the kits).
  std::vector<SqlRow> releases = QueryDb(f.StateDb(), "SELECT noise_multiplier, release FROM evaluation_releases");
  ASSERT_FALSE(releases.empty());
  for (const SqlRow& r : releases) {
    EXPECT_GT(AsDouble(r[0]), 0);
    const nlohmann::json release = nlohmann::json::parse(AsText(r[1]));
    EXPECT_TRUE(release.at("multilabel").get<bool>()) << AsText(r[1]);
    EXPECT_EQ(release.at("confusion").size(), 12u);
    EXPECT_EQ(release.at("scores").size(), 60u);
  }
  // Each evaluated round's figures label by label, named.
  std::vector<SqlRow> labels =
      QueryDb(f.StateDb(), "SELECT round, label, name, confusion FROM round_label_evaluations ORDER BY round, label");
  ASSERT_FALSE(labels.empty());
  ASSERT_EQ(labels.size() % 3, 0u);
  EXPECT_EQ(AsText(labels[0][2]), "lesion");
  EXPECT_EQ(AsText(labels[1][2]), "effusion");
  EXPECT_EQ(AsText(labels[2][2]), "clip");
  const std::string& coordinator_log = logs[0];
  EXPECT_TRUE(std::regex_search(coordinator_log, std::regex("site-a AUC ([0-9.]+|-)"))) << coordinator_log;
  EXPECT_NE(coordinator_log.find("validation macro AUC"), std::string::npos) << coordinator_log;
  EXPECT_NE(coordinator_log.find("macro ROC AUC over the labels per round"), std::string::npos) << coordinator_log;
  // The node logs its own exact figures (they stay there).
  EXPECT_NE(logs[1].find("macro AUC"), std::string::npos) << logs[1];
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing
