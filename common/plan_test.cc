#include "common/plan.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace fedrad {
namespace {

std::string WritePlan(const std::string& text) {
  std::string path =
      std::filesystem::temp_directory_path() / ("fedrad_plan_test_" + std::to_string(::getpid()) + ".toml");
  std::ofstream(path) << text;
  return path;
}

TEST(PlanTest, LoadsSitesAndDefaults) {
  auto p =
      LoadPlan(WritePlan("[federation]\nname = \"demo\"\nrounds = 3\nmin_nodes = 2\n"
                         "[[site]]\nname = \"a\"\n[[site]]\nname = \"b\"\n"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->name, "demo");
  EXPECT_EQ(p->rounds, 3);
  EXPECT_EQ(p->sites, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(p->model.architecture, "ctnet");
  EXPECT_TRUE(p->HasSite("b"));
  EXPECT_FALSE(p->HasSite("c"));
}

TEST(PlanTest, RejectsBadSitesAndImpossibleQuorum) {
  auto dup =
      LoadPlan(WritePlan("[federation]\nname = \"d\"\nmin_nodes = 1\n"
                         "[[site]]\nname = \"a\"\n[[site]]\nname = \"a\"\n"));
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("twice"), std::string::npos);
  auto bad =
      LoadPlan(WritePlan("[federation]\nname = \"d\"\nmin_nodes = 1\n"
                         "[[site]]\nname = \"a b/c\"\n"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("site[0].name"), std::string::npos);
  auto quorum =
      LoadPlan(WritePlan("[federation]\nname = \"d\"\nmin_nodes = 3\n"
                         "[[site]]\nname = \"a\"\n"));
  ASSERT_FALSE(quorum.ok());
  EXPECT_NE(quorum.status().message().find("min_nodes"), std::string::npos);
}

TEST(PlanTest, StrategyPrivacyAndNormBound) {
  const std::string sites = "[[site]]\nname = \"a\"\n[[site]]\nname = \"b\"\n";
  auto p =
      LoadPlan(WritePlan("[federation]\nname = \"d\"\nmax_update_norm = 50\n"
                         "[strategy]\nname = \"fedadam\"\ntau = 0.01\nserver_learning_rate = 0.1\n"
                         "[privacy]\nrequire_dp = true\n" +
                         sites));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->strategy.name, "fedadam");
  EXPECT_DOUBLE_EQ(p->strategy.tau, 0.01);
  EXPECT_DOUBLE_EQ(p->strategy.server_learning_rate, 0.1);
  EXPECT_DOUBLE_EQ(p->max_update_norm, 50);
  EXPECT_TRUE(p->require_dp);
  auto defaults = LoadPlan(WritePlan("[federation]\nname = \"d\"\n" + sites));
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->strategy.name, "fedavg");
  EXPECT_FALSE(defaults->require_dp);
  auto unknown = LoadPlan(WritePlan("[federation]\nname = \"d\"\n[strategy]\nname = \"fedsgd\"\n" + sites));
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("field 'strategy.name' is 'fedsgd'; known: fedavg, fedavgm"),
            std::string::npos)
      << unknown.status();
  auto sized = LoadPlan(WritePlan("[federation]\nname = \"d\"\n[model]\nparameters = 10\n" + sites));
  ASSERT_FALSE(sized.ok());
  EXPECT_NE(sized.status().message().find("field 'model.parameters' applies only to architecture \"flat\""),
            std::string::npos)
      << sized.status();
}

// A robust strategy the plan's quorum cannot feed is refused before anyone
// trains (it would keep the model while every DP site pays for the round).
TEST(PlanTest, RobustStrategiesNeedTheUpdatesTheyWorkWith) {
  std::string five;
  for (const char* site : {"a", "b", "c", "d", "e"}) five += std::string("[[site]]\nname = \"") + site + "\"\n";
  auto plan = [&](int min_nodes, const std::string& strategy) {
    return LoadPlan(WritePlan("[federation]\nname = \"d\"\nmin_nodes = " + std::to_string(min_nodes) +
                              "\n[strategy]\n" + strategy + five));
  };
  auto krum3 = plan(3, "name = \"krum\"\n");  // f = 1 needs 5
  ASSERT_FALSE(krum3.ok());
  EXPECT_NE(krum3.status().message().find("needs at least 2f + 3 = 5 updates"), std::string::npos) << krum3.status();
  EXPECT_TRUE(plan(5, "name = \"krum\"\n").ok());
  EXPECT_TRUE(plan(3, "name = \"krum\"\nbyzantine = 0\n").ok());
  auto select = plan(5, "name = \"multi-krum\"\nmulti_krum_select = 5\n");
  ASSERT_FALSE(select.ok());
  EXPECT_NE(select.status().message().find("multi_krum_select"), std::string::npos);
  auto median = plan(2, "name = \"median\"\n");
  ASSERT_FALSE(median.ok());
  EXPECT_NE(median.status().message().find("fewer than 3"), std::string::npos);
  EXPECT_TRUE(plan(3, "name = \"median\"\n").ok());
  auto trimmed = plan(4, "name = \"trimmed-mean\"\ntrim_fraction = 0.2\n");  // floor(0.8) = 0
  ASSERT_FALSE(trimmed.ok());
  EXPECT_NE(trimmed.status().message().find("may trim nothing"), std::string::npos) << trimmed.status();
  EXPECT_TRUE(plan(5, "name = \"trimmed-mean\"\ntrim_fraction = 0.2\n").ok());
}

TEST(PlanTest, UpdateDtype) {
  const std::string sites = "[[site]]\nname = \"a\"\n[[site]]\nname = \"b\"\n";
  auto p = LoadPlan(WritePlan("[federation]\nname = \"d\"\n" + sites));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->update_dtype, WireDtype::kFloat32);
  p = LoadPlan(WritePlan("[federation]\nname = \"d\"\nupdate_dtype = \"bfloat16\"\n" + sites));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->update_dtype, WireDtype::kBFloat16);
  p = LoadPlan(WritePlan("[federation]\nname = \"d\"\nupdate_dtype = \"fp8\"\n" + sites));
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("federation.update_dtype"), std::string::npos) << p.status();
}

TEST(PlanTest, SiteNames) {
  EXPECT_TRUE(IsValidSiteName("hospital-a"));
  EXPECT_TRUE(IsValidSiteName("st.marys_2"));
  EXPECT_FALSE(IsValidSiteName(""));
  EXPECT_FALSE(IsValidSiteName(".hidden"));
  EXPECT_FALSE(IsValidSiteName("a/b"));
  EXPECT_FALSE(IsValidSiteName(std::string(65, 'a')));
}

}  // namespace
}  // namespace fedrad
