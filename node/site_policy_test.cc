#include "node/site_policy.h"

#include <gtest/gtest.h>

namespace fedrad::node {
namespace {

TEST(SitePolicyTest, NamesTheFieldATaskGoesBeyond) {
  SitePolicy p;
  const TaskAsk ask{"ctnet", 5, 32};
  EXPECT_FALSE(PolicyViolation(p, ask).has_value()) << "the default allows what the kits' plans ask";
  p.architectures = {"tbcnn28"};
  ASSERT_TRUE(PolicyViolation(p, ask).has_value());
  EXPECT_NE(PolicyViolation(p, ask)->find("[policy] architectures"), std::string::npos);
  EXPECT_EQ(ArchitectureViolation(p, "ctnet"), PolicyViolation(p, ask));
  p.architectures = {"tbcnn28", "ctnet"};
  EXPECT_FALSE(PolicyViolation(p, ask).has_value());
  EXPECT_FALSE(ArchitectureViolation(p, "ctnet").has_value());
  p.max_local_epochs = 4;
  ASSERT_TRUE(PolicyViolation(p, ask).has_value());
  EXPECT_NE(PolicyViolation(p, ask)->find("asks 5 local epochs, more than this site's 4"), std::string::npos);
  p.max_local_epochs = 5;
  EXPECT_FALSE(PolicyViolation(p, ask).has_value());
  p.min_batch_size = 64;
  ASSERT_TRUE(PolicyViolation(p, ask).has_value());
  EXPECT_NE(PolicyViolation(p, ask)->find("[policy] min_batch_size"), std::string::npos);
}

TEST(SitePolicyTest, ThePlanCanRaiseMinReportNeverLowerIt) {
  SitePolicy p;
  p.min_report = 25;
  EXPECT_EQ(EffectiveMinReport(p, 1), 25);
  EXPECT_EQ(EffectiveMinReport(p, 40), 40);
}

}  // namespace
}  // namespace fedrad::node
