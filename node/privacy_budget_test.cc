#include "node/privacy_budget.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include <gtest/gtest.h>

#include "common/scratch_dir.h"
#include "common/sqlite.h"
#include "crypto/pki.h"
#include "node/node_store.h"

namespace fedrad::node {
namespace {

// A charge plan as these tests check it: the charge, or a refusal as
// ResourceExhausted with its detail.
absl::StatusOr<PrivacyCharge> AsCharge(absl::StatusOr<ChargePlan> plan) {
  if (!plan.ok()) return plan.status();
  if (const BudgetRefusal* refused = std::get_if<BudgetRefusal>(&*plan)) {
    return absl::ResourceExhaustedError(refused->detail);
  }
  return std::get<PrivacyCharge>(*plan);
}

// PlanRound's outcome as these tests check it: the charges, or a refusal as
// a status whose code says which (ResourceExhausted: the budget;
// FailedPrecondition: the site's [policy]) with the refusal's detail.
absl::StatusOr<RoundCharges> Planned(const PrivacySettings& s, const std::vector<PrivacyCharge>& ledger,
                                     const RoundRequest& r) {
  absl::StatusOr<RoundPlan> plan = PlanRound(s, ledger, r);
  if (!plan.ok()) return plan.status();
  if (const RoundRefusal* refused = std::get_if<RoundRefusal>(&*plan)) {
    return refused->reason == RoundRefusal::Reason::kBudget ? absl::ResourceExhaustedError(refused->detail)
                                                            : absl::FailedPreconditionError(refused->detail);
  }
  return std::get<RoundCharges>(*plan);
}

PrivacySettings Fixed(double sigma, double epsilon_max) {
  PrivacySettings s;
  s.noise_multiplier = sigma;
  s.epsilon_max = epsilon_max;
  return s;
}

// A kit key for the audit ledger, from a fresh CA (its certificate in `ca_pem`).
LedgerSigner TestSigner(std::string* ca_pem = nullptr) {
  auto ca = crypto::CertificateAuthority::Create("ca", 30);
  EXPECT_TRUE(ca.ok());
  auto kit = (*ca)->Issue({"hospital-a", crypto::CertificateRequest::Usage::kClient, {}, {}, 30});
  EXPECT_TRUE(kit.ok());
  if (ca_pem) *ca_pem = (*ca)->certificate_pem();
  return LedgerSigner{kit->private_key_pem, kit->certificate_pem, "hospital-a"};
}

// A request for `units` units whose released count is `released` (the
// exact count when a test is not about the difference).
RoundRequest Request(int64_t units, int64_t batch, double epochs, int rounds_left, double released = 0) {
  RoundRequest r;
  r.units = units;
  r.released_units = released > 0 ? released : static_cast<double>(units);
  r.expected_batch = batch;
  r.local_epochs = epochs;
  r.rounds_left = rounds_left;
  return r;
}

// The count release of a data load, committed to `ledger`.
void ReleaseCount(const PrivacySettings& s, int64_t units, std::vector<PrivacyCharge>* ledger) {
  absl::StatusOr<PrivacyCharge> c = AsCharge(PlanCountRelease(s, *ledger, units));
  ASSERT_TRUE(c.ok()) << c.status();
  c->released = static_cast<double>(units);
  ledger->push_back(*c);
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
  ReleaseCount(s, 500, &ledger);
  int rounds = 0;
  while (true) {
    absl::StatusOr<RoundCharges> r = Planned(s, ledger, Request(500, 25, 1, 100));
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
      EXPECT_NE(r.status().message().find("epsilon_max"), std::string::npos) << r.status();
      break;
    }
    EXPECT_EQ(r->training.steps, 20);
    EXPECT_DOUBLE_EQ(r->training.sampling_rate, 0.05);
    ledger.push_back(r->training);
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
  ReleaseCount(s, 400, &ledger);
  double first_sigma = 0;
  for (int round = 1; round <= 5; ++round) {
    absl::StatusOr<RoundCharges> r = Planned(s, ledger, Request(400, 40, 2, 5 - round + 1));
    ASSERT_TRUE(r.ok()) << r.status();
    if (round == 1) first_sigma = r->training.noise_multiplier;
    // The same σ each round, since every round follows the plan.
    EXPECT_NEAR(r->training.noise_multiplier, first_sigma, 1e-6 * first_sigma);
    ledger.push_back(r->training);
  }
  EXPECT_NEAR(ledger.back().epsilon_after, 2.0, 1e-6);
  EXPECT_LE(ledger.back().epsilon_after, 2.0);
  // Rounds past the plan (retries) keep the last σ and spend the margin up
  // to epsilon_max, then stop.
  int extra = 0;
  while (true) {
    absl::StatusOr<RoundCharges> more = Planned(s, ledger, Request(400, 40, 2, 1));
    if (!more.ok()) {
      EXPECT_EQ(more.status().code(), absl::StatusCode::kResourceExhausted);
      break;
    }
    EXPECT_DOUBLE_EQ(more->training.noise_multiplier, ledger.back().noise_multiplier);
    ledger.push_back(more->training);
    ASSERT_LT(++extra, 1000);
  }
  EXPECT_GT(extra, 0);
  EXPECT_LE(ledger.back().epsilon_after, 3.0);
  // With the target at epsilon_max there is no margin: a sixth round is declined.
  s.epsilon_max = 2;
  ledger.resize(ledger.size() - static_cast<size_t>(extra));
  EXPECT_EQ(Planned(s, ledger, Request(400, 40, 2, 1)).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(BudgetSpent(s, ledger));
}

// What leaves the node about a round (the DP report: σ, C, q, steps, ε) is
// a function of the released count and the ledger, never of the exact
// count: for every dataset size, two sites whose releases came out equal
// send the same report, and q·released is the batch (not q·units).
TEST(PrivacyBudgetTest, WhatLeavesDependsOnTheReleasedCountNotTheExactOne) {
  PrivacySettings target;
  target.epsilon_max = 8;
  target.target_epsilon = 7.5;
  for (const PrivacySettings& s : {Fixed(1.2, 8), target}) {
    for (int64_t units = 20; units <= 2000; units = units * 5 / 4 + 1) {
      for (double released : {static_cast<double>(units) - 17, static_cast<double>(units) + 23}) {
        if (released < 1) continue;
        std::vector<PrivacyCharge> ledger;
        absl::StatusOr<PrivacyCharge> count = AsCharge(PlanCountRelease(s, ledger, units));
        ASSERT_TRUE(count.ok());
        count->released = released;
        ledger.push_back(*count);
        // A site with a different exact count whose release came out the same.
        std::vector<PrivacyCharge> other = ledger;
        other[0].units = units * 3 + 7;
        absl::StatusOr<RoundCharges> a = Planned(s, ledger, Request(units, 32, 2, 10, released));
        absl::StatusOr<RoundCharges> b = Planned(s, other, Request(units * 3 + 7, 32, 2, 10, released));
        ASSERT_TRUE(a.ok() && b.ok()) << units;
        EXPECT_EQ(a->training.noise_multiplier, b->training.noise_multiplier) << units;
        EXPECT_EQ(a->training.sampling_rate, b->training.sampling_rate) << units;
        EXPECT_EQ(a->training.steps, b->training.steps) << units;
        EXPECT_EQ(a->training.epsilon_after, b->training.epsilon_after) << units;
        // The coordinator's reconstruction, batch / q, gives the release (q
        // is 1 when the release is below the batch).
        EXPECT_NEAR(32 / a->training.sampling_rate, std::max(released, 32.0), 1e-6 * released) << units;
        EXPECT_EQ(a->training.units, units);  // the exact count stays in the site's own ledger
      }
    }
  }
}

TEST(PrivacyBudgetTest, TheCountReleaseIsChargedAndRefusedPastTheBudget) {
  PrivacyAccountant a;
  a.Compose(kCountNoiseMultiplier, 1, 1);
  absl::StatusOr<PrivacyCharge> c = AsCharge(PlanCountRelease(Fixed(1, 10), {}, 100));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->kind, ChargeKind::kCount);
  EXPECT_DOUBLE_EQ(c->epsilon_after, a.GetEpsilon(1e-5).epsilon);
  // A budget smaller than the count's own cost.
  EXPECT_EQ(AsCharge(PlanCountRelease(Fixed(1, a.GetEpsilon(1e-5).epsilon / 2), {}, 100)).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(PrivacyBudgetTest, ARoundCostingMoreThanThePolicyLimitIsDeclined) {
  const PrivacySettings s = Fixed(0.8, 50);
  std::vector<PrivacyCharge> ledger;
  ReleaseCount(s, 300, &ledger);
  RoundRequest r = Request(300, 30, 3, 10);
  absl::StatusOr<RoundCharges> free = Planned(s, ledger, r);
  ASSERT_TRUE(free.ok());
  const double cost = free->training.epsilon_after - free->epsilon_before;
  r.max_round_epsilon = cost * 0.9;
  absl::StatusOr<RoundCharges> limited = Planned(s, ledger, r);
  ASSERT_EQ(limited.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(limited.status().message().find("max_round_epsilon"), std::string::npos) << limited.status();
  r.max_round_epsilon = cost * 1.1;
  EXPECT_TRUE(Planned(s, ledger, r).ok());
}

TEST(PrivacyBudgetTest, SwitchingTheUnitUnderOneLedgerIsRefused) {
  PrivacySettings patient = Fixed(1, 8);
  std::vector<PrivacyCharge> ledger;
  ReleaseCount(patient, 50, &ledger);
  EXPECT_TRUE(CheckUnitUnchanged(patient, ledger, "node.toml").ok());
  PrivacySettings image = patient;
  image.patient_level = false;
  absl::Status s = CheckUnitUnchanged(image, ledger, "node.toml");
  ASSERT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("node.toml says [privacy] unit = \"image\""), std::string::npos) << s;
  EXPECT_NE(s.message().find("1 charge(s) at patient level"), std::string::npos) << s;
  EXPECT_TRUE(CheckUnitUnchanged(image, {}, "node.toml").ok());
}

// The evaluation part: releases compose among themselves, apart from
// training (disjoint patients), and the site's ε is the larger part.
TEST(PrivacyBudgetTest, EvaluationReleasesAreTheirOwnPartOfTheLedger) {
  PrivacySettings s = Fixed(1.0, 8);
  std::vector<PrivacyCharge> ledger;
  ReleaseCount(s, 100, &ledger);
  ledger.push_back(Planned(s, ledger, Request(100, 10, 1, 5))->training);
  const double training = SpentBy(ledger).GetEpsilon(1e-5).epsilon;
  double before = 0;
  for (int left = 4; left >= 1; --left) {
    absl::StatusOr<PrivacyCharge> e = AsCharge(PlanEvaluation(s, 2.0, ledger, left));
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ(e->kind, ChargeKind::kEvaluation);
    EXPECT_GT(e->epsilon_after, before);
    before = e->epsilon_after;
    ledger.push_back(*e);
    EXPECT_DOUBLE_EQ(SpentBy(ledger).GetEpsilon(1e-5).epsilon, training) << "training's part is untouched";
  }
  // Four releases planned for 2.0 end there, independently composed.
  EXPECT_NEAR(EvaluationSpentBy(ledger).GetEpsilon(1e-5).epsilon, 2.0, 1e-6);
  PrivacyAccountant a;
  for (const PrivacyCharge& c : ledger) {
    if (c.kind == ChargeKind::kEvaluation) a.Compose(c.noise_multiplier, 1, 1);
  }
  EXPECT_DOUBLE_EQ(a.GetEpsilon(1e-5).epsilon, EvaluationSpentBy(ledger).GetEpsilon(1e-5).epsilon);
  EXPECT_DOUBLE_EQ(SiteEpsilon(ledger, 1e-5), std::max(training, EvaluationSpentBy(ledger).GetEpsilon(1e-5).epsilon));
  EXPECT_EQ(AsCharge(PlanEvaluation(s, 2.0, ledger, 1)).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(AsCharge(PlanEvaluation(s, 0, {}, 1)).status().code(), absl::StatusCode::kResourceExhausted);
}

// A node.db written before evaluation releases existed (its CHECK lists two
// kinds) takes evaluation charges after it is opened, its charges kept.
TEST(PrivacyBudgetTest, AnOlderNodeDbIsMigrated) {
  ScratchDir dir("node_db_migration");
  const std::string path = (dir.path() / "node.db").string();
  {
    absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)
                    ->ExecScript(R"sql(
CREATE TABLE privacy_ledger(id INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK(kind IN ('dp-sgd', 'count')),
  federation TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL, unit TEXT NOT NULL,
  units INTEGER NOT NULL, noise_multiplier REAL NOT NULL, clip_norm REAL NOT NULL, sampling_rate REAL NOT NULL,
  steps INTEGER NOT NULL, delta REAL NOT NULL, epsilon_after REAL NOT NULL, rdp_order REAL NOT NULL,
  released REAL NOT NULL DEFAULT 0, status TEXT NOT NULL, at_ms INTEGER NOT NULL);
INSERT INTO privacy_ledger VALUES(7, 'count', 'f', 1, 1, 'patient', 50, 20, 1, 1, 1, 1e-5, 0.1, 10, 52, 'sent', 1);
)sql")
                    .ok());
  }
  auto store = NodeStore::Open(path, TestSigner(), 1);
  ASSERT_TRUE(store.ok()) << store.status();
  PrivacyCharge e = *AsCharge(PlanEvaluation(Fixed(1, 8), 2, {}, 3));
  e.federation = "f";
  e.status = "charged";
  ASSERT_TRUE((*store)->ChargePrivacy({&e}).ok());
  absl::StatusOr<std::vector<PrivacyCharge>> ledger = (*store)->PrivacyLedger();
  ASSERT_TRUE(ledger.ok());
  ASSERT_EQ(ledger->size(), 2u);
  EXPECT_EQ((*ledger)[0].id, 7);
  EXPECT_EQ((*ledger)[0].released, 52);
  EXPECT_EQ((*ledger)[1].kind, ChargeKind::kEvaluation);
}

TEST(PrivacyBudgetTest, TheLedgerSurvivesReopeningNodeDb) {
  const std::string dir = ::testing::TempDir() + "/privacy_ledger_test_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const PrivacySettings s = Fixed(1.5, 8);
  absl::StatusOr<PrivacyCharge> count = AsCharge(PlanCountRelease(s, {}, 200));
  ASSERT_TRUE(count.ok()) << count.status();
  absl::StatusOr<RoundCharges> r = Planned(s, {*count}, Request(200, 20, 1, 3));
  ASSERT_TRUE(r.ok()) << r.status();
  std::string ca_pem;
  const LedgerSigner signer = TestSigner(&ca_pem);
  {
    auto store = NodeStore::Open(dir + "/node.db", signer, 1);
    ASSERT_TRUE(store.ok()) << store.status();
    count->released = 207;
    count->status = "charged";
    r->training.status = "charged";
    ASSERT_TRUE((*store)->ChargePrivacy({&*count, &r->training}).ok());
    EXPECT_GT(r->training.id, count->id);
    ASSERT_TRUE((*store)->SetChargeStatus(r->training.id, "accepted").ok());
  }
  auto store = NodeStore::Open(dir + "/node.db");
  ASSERT_TRUE(store.ok());
  absl::StatusOr<std::vector<PrivacyCharge>> ledger = (*store)->PrivacyLedger();
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  ASSERT_EQ(ledger->size(), 2u);
  EXPECT_EQ((*ledger)[0].kind, ChargeKind::kCount);
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
  EXPECT_TRUE(VerifyLedger(*audit, ca_pem).ok());
  // Opened for reading (no kit key), nothing can be recorded.
  EXPECT_FALSE((*store)->RecordRoundJoined("f", 1, 1, std::string(64, 'a'), 2).ok());
}

}  // namespace
}  // namespace fedrad::node
