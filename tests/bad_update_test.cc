// Nodes that send bad updates: a NaN, a wrong size, a norm past the plan's
// bound. Each is rejected with its reason and recorded; the round goes on
// with the good nodes and the federation finishes.
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/harness.h"

namespace fedrad::testing {
namespace {

TEST(BadUpdateTest, RejectedWithAReasonAndTheRoundGoesOn) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 5, .rounds = 2, .min_nodes = 2, .patients = 6, .images = 2,
                                           .start_grace_s = 20});
  // (rogue nodes answer evaluations with nothing counted, so rounds close promptly)
  ASSERT_FALSE(::testing::Test::HasFailure());
  auto coordinator = StartCoordinator(f, "coordinator.log");
  auto a = StartNode(f, "site-a");
  auto b = StartNode(f, "site-b");
  const std::string address = absl::StrCat("127.0.0.1:", f.port);
  const std::vector<std::pair<std::string, std::string>> rogues = {
      {"site-c", "nan"}, {"site-d", "shape"}, {"site-e", "norm"}};
  std::vector<std::unique_ptr<Process>> rogue;
  for (const auto& [site, mode] : rogues) {
    rogue.push_back(std::make_unique<Process>(
        std::vector<std::string>{RogueNodeBin(), dir + "/kits/" + site, address, mode}, dir + "/" + site + ".log"));
  }
  ASSERT_EQ(coordinator->Wait(std::chrono::minutes(4)), 0) << coordinator->Log();
  EXPECT_EQ(a->Wait(std::chrono::seconds(30)), 0) << a->Log();
  EXPECT_EQ(b->Wait(std::chrono::seconds(30)), 0) << b->Log();
  for (auto& r : rogue) EXPECT_EQ(r->Wait(std::chrono::seconds(30)), 0) << r->Log();

  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM rounds WHERE status = 'applied'")[0][0],
            SqlValue(int64_t{2}));
  // Both rounds were applied with the two good updates, on their first attempt.
  EXPECT_TRUE(QueryDb(f.StateDb(), "SELECT 1 FROM rounds WHERE status != 'applied'").empty());
  const std::vector<std::pair<std::string, std::string>> reasons = {
      {"site-c", "non-finite value at parameter"},
      {"site-d", "bytes; the model's manifest needs"},
      {"site-e", "L2 norm passes the plan's max_update_norm 1000"}};
  for (const auto& [site, reason] : reasons) {
    SCOPED_TRACE(site);
    std::vector<SqlRow> rows = QueryDb(
        f.StateDb(), absl::StrCat("SELECT round, status, reason FROM submissions WHERE site = '", site, "'"));
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

}  // namespace
}  // namespace fedrad::testing
