#include "common/wire_codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "proto/federation.pb.h"

namespace fedrad::protocol {
namespace {

template <class T, class Message>
T RoundTrip(const T& in) {
  Message m;
  Encode(in, &m);
  Message parsed;  // through the bytes, as on the wire
  EXPECT_TRUE(parsed.ParseFromString(m.SerializeAsString()));
  return Decode(parsed);
}

TEST(WireCodecTest, ThePlanTravelsWhole) {
  JoinedPlan p{.federation = "f",
               .site = "hospital-a",
               .manifest_sha256 = std::string(64, 'a'),
               .rounds = 7,
               .chunk_bytes = 65536,
               .require_dp = true,
               .update_dtype = WireDtype::kBFloat16,
               .min_report = 25};
  p.model = {.architecture = "flat", .in_channels = 3, .input_size = 128, .num_classes = 4, .parameters = 1000};
  JoinedPlan q = RoundTrip<JoinedPlan, v1::Plan>(p);
  EXPECT_EQ(q.federation, "f");
  EXPECT_EQ(q.site, "hospital-a");
  EXPECT_EQ(q.model.architecture, "flat");
  EXPECT_EQ(q.model.in_channels, 3);
  EXPECT_EQ(q.model.input_size, 128);
  EXPECT_EQ(q.model.num_classes, 4);
  EXPECT_EQ(q.model.parameters, 1000);
  EXPECT_EQ(q.manifest_sha256, p.manifest_sha256);
  EXPECT_EQ(q.rounds, 7);
  EXPECT_EQ(q.chunk_bytes, 65536u);
  EXPECT_TRUE(q.require_dp);
  EXPECT_EQ(q.update_dtype, WireDtype::kBFloat16);
  EXPECT_EQ(q.min_report, 25);
  EXPECT_EQ(q.model.task, ModelTask::kClassification);

  p.model = {.architecture = "unet2d",
             .in_channels = 1,
             .input_size = 64,
             .num_classes = 2,
             .task = ModelTask::kSegmentation,
             .depth = 4,
             .base_width = 8,
             .class_names = {"background", "lesion"}};
  q = RoundTrip<JoinedPlan, v1::Plan>(p);
  EXPECT_EQ(q.model.task, ModelTask::kSegmentation);
  EXPECT_EQ(q.model.depth, 4);
  EXPECT_EQ(q.model.base_width, 8);
  EXPECT_EQ(q.model.class_names, p.model.class_names);
  p.model.freeze = {"down0", "down1"};
  p.trained_sha256 = std::string(64, 'b');
  q = RoundTrip<JoinedPlan, v1::Plan>(p);
  EXPECT_EQ(q.model.freeze, p.model.freeze);
  EXPECT_EQ(q.trained_sha256, p.trained_sha256);

  v1::Plan odd;
  odd.mutable_model()->set_task(9);
  odd.set_update_dtype(static_cast<v1::WireDtype>(9));
  odd.set_rounds(std::numeric_limits<uint32_t>::max());
  JoinedPlan o = Decode(odd);
  EXPECT_FALSE(o.update_dtype.has_value()) << "a dtype this build lacks is not read as another";
  EXPECT_GT(o.rounds, 0) << "no wrap into a negative count";
  EXPECT_EQ(o.min_report, 10) << "0: a coordinator from before min_report";
  EXPECT_EQ(static_cast<int>(o.model.task), 9) << "an unknown task stays unknown, for CheckModelSpec to refuse";
}

TEST(WireCodecTest, EveryTaskKindTravelsWhole) {
  TrainingTask t{.round = 3,
                 .attempt = 2,
                 .model_sha256 = "m",
                 .nonce = std::string("\0\1\2", 3),
                 .seed = 99,
                 .deadline_unix_ms = 123456789,
                 .publication = {2, "sig"}};
  t.settings = {.local_epochs = 2, .batch_size = 64, .learning_rate = 0.01, .momentum = 0.5, .proximal_mu = 0.1};
  Task back = RoundTrip<Task, v1::Task>(t);
  const auto* u = std::get_if<TrainingTask>(&back);
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(u->round, 3);
  EXPECT_EQ(u->attempt, 2);
  EXPECT_EQ(u->nonce, t.nonce);
  EXPECT_EQ(u->seed, 99u);
  EXPECT_EQ(u->deadline_unix_ms, 123456789);
  EXPECT_EQ(u->publication.round, 2);
  EXPECT_EQ(u->publication.signature, "sig");
  EXPECT_EQ(u->settings.local_epochs, 2);
  EXPECT_EQ(u->settings.batch_size, 64);
  EXPECT_DOUBLE_EQ(u->settings.learning_rate, 0.01);
  EXPECT_DOUBLE_EQ(u->settings.momentum, 0.5);
  EXPECT_DOUBLE_EQ(u->settings.proximal_mu, 0.1);

  EvaluationTask e{
      .round = 4, .model_sha256 = "x", .nonce = "n", .deadline_unix_ms = 5, .min_report = 12, .publication = {4, "s"}};
  back = RoundTrip<Task, v1::Task>(e);
  const auto* f = std::get_if<EvaluationTask>(&back);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->round, 4);
  EXPECT_EQ(f->min_report, 12);
  EXPECT_EQ(f->publication.round, 4);

  back = RoundTrip<Task, v1::Task>(StopTask{"done"});
  ASSERT_TRUE(std::holds_alternative<StopTask>(back));
  EXPECT_EQ(std::get<StopTask>(back).reason, "done");
  back = RoundTrip<Task, v1::Task>(RoundFailedNotice{5, 1, "quorum"});
  ASSERT_TRUE(std::holds_alternative<RoundFailedNotice>(back));
  EXPECT_EQ(std::get<RoundFailedNotice>(back).attempt, 1);
  EXPECT_TRUE(std::holds_alternative<std::monostate>(Decode(v1::Task())));
}

TEST(WireCodecTest, AnUpdateClaimTravelsWholeAndItsChecksNameWhatIsWrong) {
  UpdateClaim c{.round = 2,
                .attempt = 1,
                .nonce = "n",
                .base_model_sha256 = std::string(64, 'b'),
                .update_sha256 = std::string(64, 'c'),
                .total_bytes = 400,
                .num_examples = 37,
                .dtype = WireDtype::kFloat16,
                .pipeline = "window 40/400",
                .ledger_seq = 9,
                .ledger_sha256 = std::string(64, 'd')};
  c.privacy = PrivacyReport{"patient", 1.1, 1.0, 0.05, 20, 1e-5, 2.5, 8};
  UpdateClaim d = RoundTrip<UpdateClaim, v1::UpdateHeader>(c);
  EXPECT_EQ(d.round, 2);
  EXPECT_EQ(d.base_model_sha256, c.base_model_sha256);
  EXPECT_EQ(d.update_sha256, c.update_sha256);
  EXPECT_EQ(d.total_bytes, 400u);
  EXPECT_EQ(d.num_examples, 37u);
  EXPECT_FALSE(d.train_loss.has_value()) << "no loss under DP";
  EXPECT_EQ(d.dtype, WireDtype::kFloat16);
  EXPECT_EQ(d.pipeline, "window 40/400");
  EXPECT_EQ(d.ledger_seq, 9u);
  ASSERT_TRUE(d.privacy.has_value());
  EXPECT_EQ(d.privacy->unit, "patient");
  EXPECT_EQ(d.privacy->steps, 20);
  EXPECT_DOUBLE_EQ(d.privacy->epsilon_spent, 2.5);
  EXPECT_TRUE(CheckUpdateClaim(d).ok()) << CheckUpdateClaim(d);
  c.privacy.reset();
  c.train_loss = 0.7;
  d = RoundTrip<UpdateClaim, v1::UpdateHeader>(c);
  ASSERT_TRUE(d.train_loss.has_value());
  EXPECT_DOUBLE_EQ(*d.train_loss, 0.7);

  auto problem = [&](auto change) {
    UpdateClaim bad = c;
    change(bad);
    absl::Status s = CheckUpdateClaim(RoundTrip<UpdateClaim, v1::UpdateHeader>(bad));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    return std::string(s.message());
  };
  EXPECT_NE(problem([](UpdateClaim& b) { b.update_sha256 = "zz"; }).find("update_sha256"), std::string::npos);
  EXPECT_NE(problem([](UpdateClaim& b) { b.num_examples = 0; }).find("num_examples"), std::string::npos);
  EXPECT_NE(problem([](UpdateClaim& b) { b.num_examples = kMaxExamplesPerUpdate + 1; }).find("num_examples"),
            std::string::npos);
  EXPECT_NE(problem([](UpdateClaim& b) { b.train_loss = std::nan(""); }).find("train_loss"), std::string::npos);
  EXPECT_NE(problem([](UpdateClaim& b) { b.pipeline = "a\nb"; }).find("pipeline"), std::string::npos);
  EXPECT_NE(problem([](UpdateClaim& b) { b.ledger_sha256 = ""; }).find("ledger head"), std::string::npos);
  EXPECT_NE(problem([](UpdateClaim& b) {
              b.privacy = PrivacyReport{"cohort", 1, 1, 0.1, 1, 1e-5, 1, 2};
            }).find("privacy.unit"),
            std::string::npos);
  EXPECT_NE(problem([](UpdateClaim& b) {
              b.privacy = PrivacyReport{"patient", 1, 1, 0.1, 1, 1e-5, 3, 2};
            }).find("past the site's own epsilon_max"),
            std::string::npos);
  // A NaN loss sent without its flag is still refused, not silently taken.
  v1::UpdateHeader h;
  Encode(c, &h);
  h.set_has_train_loss(false);
  h.set_train_loss(std::nan(""));
  EXPECT_FALSE(CheckUpdateClaim(Decode(h)).ok());
  h.set_dtype(static_cast<v1::WireDtype>(7));
  EXPECT_FALSE(Decode(h).dtype.has_value());
}

TEST(WireCodecTest, DeclinesAndEvaluationsTravelWhole) {
  for (DeclineReason r : {DeclineReason::kBudgetExhausted, DeclineReason::kPolicy, DeclineReason::kModelRefused,
                          DeclineReason::kUnspecified}) {
    DeclineNotice d = RoundTrip<DeclineNotice, v1::Decline>(DeclineNotice{4, 2, "n", r, 7.5, 8, "spent"});
    EXPECT_EQ(d.reason, r);
    EXPECT_EQ(d.round, 4);
    EXPECT_EQ(d.attempt, 2);
    EXPECT_DOUBLE_EQ(d.epsilon_spent, 7.5);
    EXPECT_EQ(d.detail, "spent");
  }
  v1::Decline odd;
  odd.set_reason(static_cast<v1::Decline::Reason>(42));
  EXPECT_EQ(Decode(odd).reason, DeclineReason::kUnspecified);

  EvaluationReport e{.round = 3, .nonce = "n", .model_sha256 = "m", .ledger_seq = 4, .ledger_sha256 = "h"};
  ReleasedEvaluation r{
      .noise_multiplier = 2.5, .num_classes = 2, .epsilon_spent = 1.5, .delta = 1e-5, .unit = "patient"};
  r.statistics = EvaluationStatistics::Empty(2);
  r.statistics.confusion = {10.5, 2, 3, 12};
  r.statistics.loss_sum = 9.25;
  e.release = r;
  EvaluationReport f = RoundTrip<EvaluationReport, v1::Evaluation>(e);
  ASSERT_TRUE(f.release.has_value());
  EXPECT_EQ(f.release->num_classes, 2);
  EXPECT_EQ(f.release->statistics.num_classes, 2);
  EXPECT_EQ(f.release->statistics.confusion, r.statistics.confusion);
  EXPECT_EQ(f.release->statistics.confidence, r.statistics.confidence);
  EXPECT_EQ(f.release->statistics.scores, r.statistics.scores);
  EXPECT_DOUBLE_EQ(f.release->statistics.loss_sum, 9.25);
  EXPECT_DOUBLE_EQ(f.release->noise_multiplier, 2.5);
  EXPECT_EQ(f.release->unit, "patient");
  EXPECT_EQ(f.ledger_seq, 4u);
  e.release.reset();
  e.suppressed = true;
  f = RoundTrip<EvaluationReport, v1::Evaluation>(e);
  EXPECT_TRUE(f.suppressed);
  EXPECT_FALSE(f.release.has_value());
}

}  // namespace
}  // namespace fedrad::protocol
