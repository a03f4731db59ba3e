// Nodes that send bad updates: a NaN, a wrong size, a norm past the plan's
// bound, a preprocessing description with a control character. Each is rejected with its reason and recorded; the round
// goes on with the good nodes and the federation finishes.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/harness.h"

namespace fedrad::testing {
namespace {

// Runs the coordinator, real nodes for site-a and site-b, and a rogue node
// (site, mode) for each of `rogues` to the end; every process must exit 0.
// Returns the coordinator's log.
std::string RunWithRogues(const MiniFederation& f, const std::vector<std::pair<std::string, std::string>>& rogues) {
  auto coordinator = StartCoordinator(f, "coordinator.log");
  auto a = StartNode(f, "site-a");
  auto b = StartNode(f, "site-b");
  const std::string address = absl::StrCat("127.0.0.1:", f.port);
  std::vector<std::unique_ptr<Process>> rogue;
  for (const auto& [site, mode] : rogues) {
    rogue.push_back(std::make_unique<Process>(
        std::vector<std::string>{RogueNodeBin(), f.dir + "/kits/" + site, address, mode}, f.dir + "/" + site + ".log"));
  }
  EXPECT_EQ(coordinator->Wait(std::chrono::minutes(4)), 0) << coordinator->Log();
  EXPECT_EQ(a->Wait(std::chrono::seconds(30)), 0) << a->Log();
  EXPECT_EQ(b->Wait(std::chrono::seconds(30)), 0) << b->Log();
  for (auto& r : rogue) EXPECT_EQ(r->Wait(std::chrono::seconds(30)), 0) << r->Log();
  return coordinator->Log();
}

TEST(BadUpdateTest, RejectedWithAReasonAndTheRoundGoesOn) {
  const std::string dir = MakeWorkspace();
  MiniFederation f =
      SetUpFederation(dir, {.sites = 6, .rounds = 2, .min_nodes = 2, .patients = 6, .images = 2, .start_grace_s = 20});
  // (rogue nodes answer evaluations with nothing counted, so rounds close promptly)
  ASSERT_FALSE(::testing::Test::HasFailure());
  RunWithRogues(f, {{"site-c", "nan"}, {"site-d", "shape"}, {"site-e", "norm"}, {"site-f", "pipeline"}});
  ASSERT_FALSE(::testing::Test::HasFailure());
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM rounds WHERE status = 'applied'")[0][0], SqlValue(int64_t{2}));
  // Both rounds were applied with the two good updates, on their first attempt.
  EXPECT_TRUE(QueryDb(f.StateDb(), "SELECT 1 FROM rounds WHERE status != 'applied'").empty());
  const std::vector<std::pair<std::string, std::string>> reasons = {
      {"site-c", "non-finite value at parameter"},
      {"site-d", "bytes; the model's manifest needs"},
      {"site-e", "L2 norm passes the plan's max_update_norm 1000"},
      {"site-f", "the preprocessing pipeline is not a short printable description"}};
  for (const auto& [site, reason] : reasons) {
    SCOPED_TRACE(site);
    std::vector<SqlRow> rows =
        QueryDb(f.StateDb(), absl::StrCat("SELECT round, status, reason FROM submissions WHERE site = '", site, "'"));
    ASSERT_EQ(rows.size(), 2u);
    for (const SqlRow& r : rows) {
      EXPECT_EQ(AsText(r[1]), "rejected");
      EXPECT_NE(AsText(r[2]).find(reason), std::string::npos) << AsText(r[2]);
    }
  }
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM submissions WHERE status = 'accepted'")[0][0],
            SqlValue(int64_t{4}));
  RemoveWorkspaceIfPassed(dir);
}

// What a site claims about its size is bounded: a count beyond 10^9 is
// refused, and a plausible but outsized one is accepted with its weight
// capped at max_weight_ratio times the round's median, logged.
TEST(BadUpdateTest, ClaimedCountsCannotOutweighTheOthers) {
  const std::string dir = MakeWorkspace();
  MiniFederation f =
      SetUpFederation(dir, {.sites = 4, .rounds = 1, .min_nodes = 3, .patients = 6, .images = 2, .start_grace_s = 20});
  ASSERT_FALSE(::testing::Test::HasFailure());
  const std::string log = RunWithRogues(f, {{"site-c", "heavy"}, {"site-d", "huge"}});
  ASSERT_FALSE(::testing::Test::HasFailure());
  EXPECT_NE(log.find("the weight of site-c is capped from 1e+09 to "), std::string::npos) << log;
  std::vector<SqlRow> rows = QueryDb(f.StateDb(), "SELECT status, reason FROM submissions WHERE site = 'site-d'");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(AsText(rows[0][0]), "rejected");
  EXPECT_NE(AsText(rows[0][1]).find("num_examples 1099511627776 is out of range"), std::string::npos)
      << AsText(rows[0][1]);
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM rounds WHERE status = 'applied'")[0][0], SqlValue(int64_t{1}));
  RemoveWorkspaceIfPassed(dir);
}

// Evaluation releases are checked too: a release of fewer cases than
// min_report, or one of 2^40 cases with a loss of 1e308, is refused with the
// reason and not recorded; the federation finishes.
TEST(BadUpdateTest, BadEvaluationReportsAreRefused) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 2, .rounds = 1, .min_nodes = 2, .patients = 6, .images = 2});
  ASSERT_FALSE(::testing::Test::HasFailure());
  // Refused reports never arrive, so the evaluation ends at its deadline.
  ReplaceInFile(dir + "/kits/coordinator/federation.toml", "eval_deadline_s = 30", "eval_deadline_s = 3");
  auto coordinator = StartCoordinator(f, "coordinator.log");
  const std::string address = absl::StrCat("127.0.0.1:", f.port);
  Process small({RogueNodeBin(), dir + "/kits/site-a", address, "eval-small"}, dir + "/site-a.log");
  Process lie({RogueNodeBin(), dir + "/kits/site-b", address, "eval-huge"}, dir + "/site-b.log");
  ASSERT_EQ(coordinator->Wait(std::chrono::minutes(2)), 0) << coordinator->Log();
  EXPECT_EQ(small.Wait(std::chrono::seconds(30)), 0) << small.Log();
  EXPECT_EQ(lie.Wait(std::chrono::seconds(30)), 0) << lie.Log();
  EXPECT_NE(small.Log().find("refused: the release counts 3 case(s), below the plan's min_report of 10"),
            std::string::npos)
      << small.Log();
  EXPECT_NE(lie.Log().find("refused: the release holds a value beyond any site's size"), std::string::npos)
      << lie.Log();
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM evaluations")[0][0], SqlValue(int64_t{0}));
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM rounds WHERE status = 'applied'")[0][0], SqlValue(int64_t{1}));
  // Each refusal is in the coordinator's ledger, with the site and the reason.
  for (const auto& [site, reason] :
       std::vector<std::pair<std::string, std::string>>{{"site-a", "below the plan"}, {"site-b", "beyond any site"}}) {
    EXPECT_EQ(
        QueryDb(f.StateDb(), absl::StrCat("SELECT COUNT(*) FROM ledger WHERE kind = 'report_refused' AND "
                                          "json_extract(body, '$.what') = 'evaluation' AND "
                                          "json_extract(body, '$.site') = '",
                                          site, "' AND json_extract(body, '$.reason') LIKE '%", reason, "%'"))[0][0],
        SqlValue(int64_t{1}))
        << site;
  }
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing
