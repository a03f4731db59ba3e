#include "node/empirical_audit.h"

#include <gtest/gtest.h>

#include <iostream>

#include "common/privacy_accountant.h"

namespace fedrad::node {
namespace {

// A run's shape as RunEmpiricalAudit fills it, without the training: its
// steps in `rounds` equal rounds.
EmpiricalAuditResult Shape(int64_t canaries, double sigma, double q, int64_t steps, int rounds = 1) {
  EmpiricalAuditResult r;
  r.canaries = canaries;
  r.canaries_in = canaries / 2;
  r.noise_multiplier = r.noise_used = sigma;
  r.clip_norm = 1;
  for (int i = 0; i < rounds; ++i) r.rounds.push_back({sigma, q, steps / rounds});
  r.steps = steps;
  r.delta = 1e-5;
  r.significance = 0.05;
  r.epsilon = EpsilonFor(sigma, q, steps, r.delta).epsilon;
  r.reach = OneRunEpsilon(r.canaries, r.canaries_in, r.canaries_in, r.significance / 3, r.delta);
  return r;
}

TEST(EmpiricalAuditTest, ThePowerIsTheUnderNoisingTheCanariesWouldRefute) {
  EmpiricalAuditResult r = Shape(5000, 1.2, 0.05, 100);  // ε 2.79: within reach of 5,000 canaries
  ASSERT_LT(r.epsilon, r.reach);
  const double ratio = DetectableNoiseRatio(r);
  EXPECT_GT(ratio, 0);
  EXPECT_LT(ratio, 1) << "an honest run is not refuted";
  std::cout << "5,000 canaries at epsilon " << r.epsilon << " refute sigma_true <= " << ratio << " x the claim\n";
  // A much smaller σ than the claim is refuted, one close to it is not:
  // checked through the simulation the figure comes from.
  r.detectable_noise_ratio = ratio;
  EXPECT_EQ(r.verdict(), EmpiricalAuditResult::Verdict::kPass);
  r.audit.epsilon_lower = r.epsilon * 1.01;
  EXPECT_EQ(r.verdict(), EmpiricalAuditResult::Verdict::kFail);
}

// The ledger's rounds are audited as they ran: the same steps in four
// rounds are the same claim and nearly the same power (the simulation draws
// each round's sampling apart), and each round's own σ enters the simulated
// noise.
TEST(EmpiricalAuditTest, RoundsFromTheLedgerComposeInTheClaimAndThePower) {
  const EmpiricalAuditResult one = Shape(5000, 1.2, 0.05, 100);
  const EmpiricalAuditResult four = Shape(5000, 1.2, 0.05, 100, 4);
  PrivacyAccountant composed;
  for (const AuditedRound& x : four.rounds) composed.Compose(x.noise_multiplier, x.sampling_rate, x.steps);
  EXPECT_NEAR(composed.GetEpsilon(four.delta).epsilon, one.epsilon, 1e-9);
  EXPECT_NEAR(DetectableNoiseRatio(four), DetectableNoiseRatio(one), 0.05);
  // A round with twice the σ, the claim kept: noisier scores, so less
  // under-noising can be refuted.
  EmpiricalAuditResult mixed = four;
  mixed.rounds[0].noise_multiplier = 2.4;
  EXPECT_LT(DetectableNoiseRatio(mixed), DetectableNoiseRatio(four));
}

TEST(EmpiricalAuditTest, AClaimBeyondTheCanariesReachIsInconclusiveNeverPass) {
  // The demo's ε (7.5) against 5,000 canaries, run without noise: the
  // canaries can show at most about 6.2, so not refuting proves nothing.
  EmpiricalAuditResult r = Shape(5000, 0.55, 0.064, 940);
  ASSERT_GT(r.epsilon, r.reach) << r.epsilon;
  r.detectable_noise_ratio = DetectableNoiseRatio(r);
  EXPECT_EQ(r.detectable_noise_ratio, 0);
  r.audit.epsilon_lower = r.reach;  // every canary guessed right
  EXPECT_EQ(r.verdict(), EmpiricalAuditResult::Verdict::kInconclusive);
  // Twenty canaries can refute nothing at all.
  EmpiricalAuditResult few = Shape(20, 1.2, 0.25, 200);
  few.detectable_noise_ratio = DetectableNoiseRatio(few);
  EXPECT_EQ(few.verdict(), EmpiricalAuditResult::Verdict::kInconclusive);
}

}  // namespace
}  // namespace fedrad::node
