// Segmentation as a federation: two nodes train a U-Net from the DICOM SEG
// objects in their folders, under patient-level DP, over mutual TLS, and
// release per-patient Dice as a DP statistic the coordinator pools.
#include <gtest/gtest.h>

#include <regex>

#include "common/safetensors.h"
#include "tests/harness.h"

namespace fedrad::testing {
namespace {

TEST(SegmentationFederationTest, TwoSitesTrainAUNetFromSegLabelsAndReleaseDice) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(
      dir,
      {.sites = 2, .rounds = 2, .min_nodes = 2, .patients = 12, .images = 3, .min_report = 0, .task = "segmentation"});
  ASSERT_FALSE(::testing::Test::HasFailure());
  std::vector<std::string> logs = RunFederationToCompletion(f);
  ASSERT_FALSE(::testing::Test::HasFailure());

  std::vector<SqlRow> models = QueryDb(f.StateDb(), "SELECT round, sha256 FROM models ORDER BY round");
  ASSERT_EQ(models.size(), 3u);
  const std::string final_sha = AsText(models[2][1]);
  auto file = ReadSafetensorsFile(dir + "/kits/coordinator/state/models/" + final_sha + ".safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata.at("architecture"), "unet2d");
  EXPECT_EQ(file->metadata.at("task"), "segmentation");
  EXPECT_EQ(file->metadata.at("class_names"), "[\"background\",\"lesion\"]");
  for (const std::string& site : f.sites) {
    std::vector<SqlRow> sent = QueryDb(f.NodeDb(site), "SELECT outcome FROM updates_sent ORDER BY round");
    ASSERT_EQ(sent.size(), 2u) << site;
    for (const SqlRow& r : sent) EXPECT_EQ(AsText(r[0]), "accepted") << site;
    // Each round's training was charged under DP before the data was read.
    EXPECT_GE(AsInt(QueryDb(f.NodeDb(site), "SELECT COUNT(*) FROM privacy_ledger WHERE kind = 'dp-sgd'")[0][0]), 2)
        << site;
  }
  // Every release the coordinator kept carries the Dice blocks, and its
  // log gives each site's Dice per round.
  std::vector<SqlRow> releases = QueryDb(f.StateDb(), "SELECT release FROM evaluation_releases");
  ASSERT_FALSE(releases.empty());
  for (const SqlRow& r : releases) EXPECT_NE(AsText(r[0]).find("\"dice\""), std::string::npos) << AsText(r[0]);
  const std::string& coordinator_log = logs[0];
  EXPECT_TRUE(std::regex_search(coordinator_log, std::regex("site-a Dice [0-9.]+"))) << coordinator_log;
  EXPECT_NE(coordinator_log.find("validation mean Dice"), std::string::npos) << coordinator_log;
  // Its closing summary tabulates the released Dice per site and round.
  EXPECT_NE(coordinator_log.find("validation mean Dice over patients per round"), std::string::npos) << coordinator_log;
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing
