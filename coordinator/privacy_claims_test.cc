#include "coordinator/privacy_claims.h"

#include <gtest/gtest.h>

#include "common/privacy_accountant.h"

namespace fedrad::coordinator {
namespace {

SitePrivacy Report(double sigma, double q, int64_t steps, double epsilon, double delta = 1e-5) {
  return SitePrivacy{"patient", sigma, 1.0, q, steps, delta, epsilon, 8.0};
}

TEST(PrivacyClaimsTest, AnHonestSitesClaimsPass) {
  PrivacyClaims claims;
  // What the node's accountant says after each round, plus a count release
  // (σ = 20) the coordinator never sees: honest claims are above the bound.
  PrivacyAccountant node;
  node.Compose(20, 1, 1);
  for (int round = 1; round <= 5; ++round) {
    node.Compose(1.1, 0.05, 200);
    const SitePrivacy r = Report(1.1, 0.05, 200, node.GetEpsilon(1e-5).epsilon);
    const std::string sha = "update-" + std::to_string(round);
    ASSERT_TRUE(claims.Check("a", r, sha).ok()) << round << ": " << claims.Check("a", r, sha);
    claims.RecordUpdate("a", r, sha);
  }
  PrivacyAccountant updates_only;
  updates_only.Compose(1.1, 0.05, 1000);
  EXPECT_DOUBLE_EQ(claims.LowerBound("a", 1e-5), updates_only.GetEpsilon(1e-5).epsilon);
  EXPECT_LT(claims.LowerBound("a", 1e-5), node.GetEpsilon(1e-5).epsilon);
}

TEST(PrivacyClaimsTest, AClaimBelowWhatItsParametersGiveIsRefused) {
  PrivacyClaims claims;
  // The review's case: no noise, every patient in every step, a million
  // steps, and a claim of 0.01.
  absl::Status s = claims.Check("a", Report(0, 1, 1000000, 0.01), "next");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("claims epsilon 0.01"), std::string::npos) << s;
  // A plausible mechanism with a claim just below its ε.
  const double eps = EpsilonFor(1.0, 0.01, 1000, 1e-5).epsilon;
  EXPECT_FALSE(claims.Check("a", Report(1.0, 0.01, 1000, eps * 0.99), "next").ok());
  EXPECT_TRUE(claims.Check("a", Report(1.0, 0.01, 1000, eps), "next").ok());
}

TEST(PrivacyClaimsTest, EarlierUpdatesCountTowardsTheBound) {
  PrivacyClaims claims;
  const double one = EpsilonFor(1.0, 0.01, 1000, 1e-5).epsilon;
  const double two = EpsilonFor(1.0, 0.01, 2000, 1e-5).epsilon;
  claims.RecordUpdate("a", Report(1.0, 0.01, 1000, one), "first");
  // The second round's claim is only its own round's ε: refused.
  absl::Status s = claims.Check("a", Report(1.0, 0.01, 1000, one * 1.01), "next");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("1 earlier accepted update"), std::string::npos) << s;
  EXPECT_TRUE(claims.Check("a", Report(1.0, 0.01, 1000, two), "next").ok());
  // Another site's history is its own.
  EXPECT_TRUE(claims.Check("b", Report(1.0, 0.01, 1000, one), "next").ok());
}

TEST(PrivacyClaimsTest, EpsilonThatGoesDownIsRefused) {
  PrivacyClaims claims;
  // A report whose claim is far above its mechanism's ε, then a lower one.
  claims.RecordUpdate("a", Report(5, 0.01, 10, 2.0), "first");
  absl::Status s = claims.Check("a", Report(5, 0.01, 10, 1.5), "next");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("never goes down"), std::string::npos) << s;
  EXPECT_FALSE(claims.CheckDecline("a", 1.5).ok());
  EXPECT_TRUE(claims.CheckDecline("a", 2.0).ok());
  // A decline's claim counts too.
  claims.RecordDecline("a", SitePrivacy{"", 0, 0, 0, 0, 0, 3.0, 3.0});
  EXPECT_FALSE(claims.Check("a", Report(5, 0.01, 10, 2.5), "next").ok());
  EXPECT_TRUE(claims.Check("a", Report(5, 0.01, 10, 3.0), "next").ok());
}

// A kept update sent again (to a resumed or retried attempt) is the same
// release: its mechanism counts once, so the site's unchanged claim passes;
// a new update with that claim does not.
TEST(PrivacyClaimsTest, AnUpdateSentAgainCountsOnce) {
  PrivacyClaims claims;
  const double one = EpsilonFor(1.0, 0.01, 1000, 1e-5).epsilon;
  claims.RecordUpdate("a", Report(1.0, 0.01, 1000, one), "kept");
  EXPECT_TRUE(claims.Check("a", Report(1.0, 0.01, 1000, one), "kept").ok());
  claims.RecordUpdate("a", Report(1.0, 0.01, 1000, one), "kept");
  EXPECT_DOUBLE_EQ(claims.LowerBound("a", 1e-5), one);
  absl::Status s = claims.Check("a", Report(1.0, 0.01, 1000, one), "new");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("1 earlier accepted update"), std::string::npos) << s;
}

}  // namespace
}  // namespace fedrad::coordinator
