#include "node/privacy_budget.h"

#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "crypto/pki.h"
#include "node/node_store.h"

namespace fedrad::node {
namespace {

PrivacySettings Fixed(double sigma, double epsilon_max) {
  PrivacySettings s;
  s.noise_multiplier = sigma;
  s.epsilon_max = epsilon_max;
  return s;
}

// Appends a planned round's charges to `ledger` as the runtime would.
void Commit(const RoundCharges& r, std::vector<PrivacyCharge>* ledger) {
  if (r.count) ledger->push_back(*r.count);
  ledger->push_back(r.training);
}

TEST(PrivacyBudgetTest, ScheduleIsEpochsOverTheSamplingRate) {
  DpSchedule d = ScheduleFor(1000, 50, 2);
  EXPECT_DOUBLE_EQ(d.sampling_rate, 0.05);
  EXPECT_EQ(d.steps, 40);
  d = ScheduleFor(10, 64, 3);  // batch larger than the data: every unit every step
  EXPECT_DOUBLE_EQ(d.sampling_rate, 1.0);
  EXPECT_EQ(d.steps, 3);
  EXPECT_EQ(ScheduleFor(1000, 50, 0.001).steps, 1);
}

TEST(PrivacyBudgetTest, UnitsArePatientsOrImages) {
  const std::vector<std::string> patients = {"p1", "p2", "p1", "p3", "p2"};
  EXPECT_EQ(CountUnits(patients, true), 3);
  EXPECT_EQ(CountUnits(patients, false), 5);
}

TEST(PrivacyBudgetTest, FixedSigmaChargesMatchTheAccountantAndStopAtTheBudget) {
  const PrivacySettings s = Fixed(1.0, 3.0);
  std::vector<PrivacyCharge> ledger;
  int rounds = 0;
  while (true) {
    absl::StatusOr<RoundCharges> r = PlanRound(s, ledger, 500, 25, 1, 100);
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
      EXPECT_NE(r.status().message().find("epsilon_max"), std::string::npos) << r.status();
      break;
    }
    EXPECT_EQ(r->count.has_value(), rounds == 0) << "the count is released once";
    EXPECT_EQ(r->training.steps, 20);
    EXPECT_DOUBLE_EQ(r->training.sampling_rate, 0.05);
    Commit(*r, &ledger);
    ++rounds;
    ASSERT_LT(rounds, 1000);
  }
  ASSERT_GT(rounds, 1);
  // The independent check: the same composition from scratch.
  PrivacyAccountant a;
  a.Compose(kCountNoiseMultiplier, 1, 1);
  a.Compose(1.0, 0.05, 20 * rounds);
  EXPECT_NEAR(a.GetEpsilon(1e-5).epsilon, ledger.back().epsilon_after, 1e-9);
  EXPECT_LE(ledger.back().epsilon_after, 3.0);
  a.Compose(1.0, 0.05, 20);
  EXPECT_GT(a.GetEpsilon(1e-5).epsilon, 3.0);
  EXPECT_TRUE(BudgetSpent(Fixed(1.0, ledger.back().epsilon_after), ledger));
  EXPECT_FALSE(BudgetSpent(s, ledger));  // spent < max, yet no whole round fits

  const BudgetReport report = ReportBudget(s, ledger);
  EXPECT_NEAR(report.spent.epsilon, ledger.back().epsilon_after, 1e-12);
  EXPECT_EQ(report.dp_rounds, rounds);
  EXPECT_EQ(report.rounds_left, 0);
}

TEST(PrivacyBudgetTest, TargetEpsilonEndsTheLastRoundExactlyOnTarget) {
  PrivacySettings s;
  s.epsilon_max = 3;
  s.target_epsilon = 2;
  std::vector<PrivacyCharge> ledger;
  double first_sigma = 0;
  for (int round = 1; round <= 5; ++round) {
    absl::StatusOr<RoundCharges> r = PlanRound(s, ledger, 400, 40, 2, 5 - round + 1);
    ASSERT_TRUE(r.ok()) << r.status();
    if (round == 1) first_sigma = r->training.noise_multiplier;
    // The same σ each round, since every round follows the plan.
    EXPECT_NEAR(r->training.noise_multiplier, first_sigma, 1e-6 * first_sigma);
    Commit(*r, &ledger);
  }
  EXPECT_NEAR(ledger.back().epsilon_after, 2.0, 1e-6);
  EXPECT_LE(ledger.back().epsilon_after, 2.0);
  // Rounds past the plan (retries) keep the last σ and spend the margin up
  // to epsilon_max, then stop.
  int extra = 0;
  while (true) {
    absl::StatusOr<RoundCharges> more = PlanRound(s, ledger, 400, 40, 2, 1);
    if (!more.ok()) {
      EXPECT_EQ(more.status().code(), absl::StatusCode::kResourceExhausted);
      break;
    }
    EXPECT_DOUBLE_EQ(more->training.noise_multiplier, ledger.back().noise_multiplier);
    Commit(*more, &ledger);
    ASSERT_LT(++extra, 1000);
  }
  EXPECT_GT(extra, 0);
  EXPECT_LE(ledger.back().epsilon_after, 3.0);
  // With the target at epsilon_max there is no margin: a sixth round is declined.
  s.epsilon_max = 2;
  ledger.resize(ledger.size() - static_cast<size_t>(extra));
  EXPECT_EQ(PlanRound(s, ledger, 400, 40, 2, 1).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(BudgetSpent(s, ledger));
}

TEST(PrivacyBudgetTest, ANewCountIsChargedWhenTheDataChanges) {
  const PrivacySettings s = Fixed(2.0, 10);
  std::vector<PrivacyCharge> ledger;
  Commit(*PlanRound(s, ledger, 100, 10, 1, 3), &ledger);
  EXPECT_TRUE(LastCountRelease(ledger, 100).has_value());
  EXPECT_FALSE(LastCountRelease(ledger, 101).has_value());
  absl::StatusOr<RoundCharges> again = PlanRound(s, ledger, 100, 10, 1, 2);
  EXPECT_FALSE(again->count.has_value());
  absl::StatusOr<RoundCharges> changed = PlanRound(s, ledger, 101, 10, 1, 2);
  ASSERT_TRUE(changed->count.has_value());
  EXPECT_EQ(changed->count->units, 101);
}

TEST(PrivacyBudgetTest, TheLedgerSurvivesReopeningNodeDb) {
  const std::string dir = ::testing::TempDir() + "/privacy_ledger_test_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const PrivacySettings s = Fixed(1.5, 8);
  absl::StatusOr<RoundCharges> r = PlanRound(s, {}, 200, 20, 1, 3);
  ASSERT_TRUE(r.ok()) << r.status();
  auto ca = crypto::CertificateAuthority::Create("ca", 30);
  ASSERT_TRUE(ca.ok());
  auto kit = (*ca)->Issue({"hospital-a", crypto::CertificateRequest::Usage::kClient, {}, {}, 30});
  ASSERT_TRUE(kit.ok());
  const LedgerSigner signer{kit->private_key_pem, kit->certificate_pem, "hospital-a"};
  {
    auto store = NodeStore::Open(dir + "/node.db", signer, 1);
    ASSERT_TRUE(store.ok()) << store.status();
    r->count->released = 207;
    r->count->status = "charged";
    r->training.status = "charged";
    ASSERT_TRUE((*store)->ChargePrivacy({&*r->count, &r->training}).ok());
    EXPECT_GT(r->training.id, r->count->id);
    ASSERT_TRUE((*store)->SetChargeStatus(r->training.id, "accepted").ok());
  }
  auto store = NodeStore::Open(dir + "/node.db");
  ASSERT_TRUE(store.ok());
  absl::StatusOr<std::vector<PrivacyCharge>> ledger = (*store)->PrivacyLedger();
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  ASSERT_EQ(ledger->size(), 2u);
  EXPECT_EQ((*ledger)[0].kind, "count");
  EXPECT_EQ((*ledger)[0].released, 207);
  EXPECT_EQ((*ledger)[1].status, "accepted");
  EXPECT_EQ((*ledger)[1].steps, r->training.steps);
  EXPECT_DOUBLE_EQ((*ledger)[1].epsilon_after, r->training.epsilon_after);
  EXPECT_NEAR(SpentBy(*ledger).GetEpsilon(1e-5).epsilon, r->training.epsilon_after, 1e-12);
  // Each charge is also in the audit ledger, after the writer's certificate.
  auto audit = (*store)->AuditLedger();
  ASSERT_TRUE(audit.ok());
  ASSERT_EQ(audit->size(), 3u);
  EXPECT_EQ((*audit)[1].kind, "dp_charge");
  EXPECT_NE((*audit)[1].body.find("\"released\":207"), std::string::npos) << (*audit)[1].body;
  EXPECT_TRUE(VerifyLedger(*audit, (*ca)->certificate_pem()).ok());
  // Opened for reading (no kit key), nothing can be recorded.
  EXPECT_FALSE((*store)->RecordRoundJoined("f", 1, 1, std::string(64, 'a'), 2).ok());
}

}  // namespace
}  // namespace fedrad::node
