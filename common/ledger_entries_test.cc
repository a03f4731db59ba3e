#include "common/ledger_entries.h"

#include <gtest/gtest.h>

#include <string>

namespace fedrad::ledger {
namespace {

template <class T>
std::string RoundTrip(const T& entry) {
  LedgerEntry e;
  e.kind = T::kKind;
  e.body = Encode(entry);
  absl::StatusOr<T> back = Decode<T>(e);
  EXPECT_TRUE(back.ok()) << T::kKind << ": " << back.status();
  return back.ok() ? Encode(*back) : std::string();
}

std::string Problem(const std::string& kind, const std::string& body) {
  absl::StatusOr<Body> b = DecodeBody(kind, body);
  EXPECT_FALSE(b.ok()) << kind << " " << body.substr(0, 80);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(b.status().message());
}

TEST(LedgerEntriesTest, EveryFieldIsWrittenAndReadBack) {
  UpdateSent sent{.round = 3,
                  .attempt = 2,
                  .base_model_sha256 = "ab",
                  .update_sha256 = "cd",
                  .bytes = 1 << 20,
                  .dtype = "bfloat16",
                  .num_examples = 41,
                  .resent_from_attempt = 1};
  const std::string text = Encode(sent);
  EXPECT_EQ(RoundTrip(sent), text);
  EXPECT_NE(text.find("\"resent_from_attempt\":1"), std::string::npos) << text;
  sent.resent_from_attempt.reset();
  EXPECT_EQ(Encode(sent).find("resent_from_attempt"), std::string::npos) << "an empty optional is left out";
  EXPECT_EQ(RoundTrip(sent), Encode(sent));

  Config config{.file = "/etc/fedrad/node.toml", .split_seed = 7, .preprocess = "window"};
  config.privacy = {.enabled = true, .unit = "patient", .clip_norm = 1, .delta = 1e-5, .epsilon_max = 8};
  config.privacy.target_epsilon = 4;
  EXPECT_EQ(RoundTrip(config), Encode(config));
  EXPECT_NE(Encode(config).find("\"privacy\":{"), std::string::npos);

  Aggregate aggregate{.round = 1, .attempt = 1, .strategy = "fedavg", .sha256 = "ff"};
  aggregate.updates = {{"a", "01"}, {"b", "02"}};
  EXPECT_EQ(RoundTrip(aggregate), Encode(aggregate));

  EvaluationSent eval{.round = 2, .model_sha256 = "aa", .suppressed = false};
  eval.release = JsonObject{R"({"confusion":[[1,2],[3,4]],"noise_multiplier":3.5})"};
  EXPECT_EQ(RoundTrip(eval), Encode(eval));
  absl::StatusOr<Body> decoded = DecodeBody(EvaluationSent::kKind, Encode(eval));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(std::get<EvaluationSent>(*decoded).release->text, eval.release->text);

  UpdateAccepted accepted;
  accepted.round = 4;
  accepted.site = "hospital-a";
  accepted.update_sha256 = "12";
  accepted.epsilon_spent = 1.5;
  EXPECT_EQ(RoundTrip(accepted), Encode(accepted));
  absl::StatusOr<Body> as_rejected = DecodeBody(UpdateRejected::kKind, Encode(accepted));
  ASSERT_TRUE(as_rejected.ok());
  EXPECT_STREQ(KindOf(*as_rejected), "update_rejected") << "the kind, not the fields, says which";
}

TEST(LedgerEntriesTest, EveryKindIsKnownByItsName) {
  // A body with every field any kind needs would not exist; an empty one
  // names the first missing field of the kind, which shows the kind is
  // known (an unknown one says so).
  for (const char* kind : {"writer_certificate",  "config",
                           "round_joined",        "model_received",
                           "model_refused",       "coordinator_certificate",
                           "model_verified",      "data_access",
                           "update_sent",         "update_outcome",
                           "budget_refused",      "policy_refused",
                           "evaluation_sent",     "dp_charge",
                           "model_published",     "round_opened",
                           "round_resumed",       "round_closed",
                           "aggregate",           "update_accepted",
                           "update_rejected",     "update_declined",
                           "evaluation_received", "report_refused"}) {
    const std::string p = Problem(kind, "{}");
    EXPECT_NE(p.find("is missing"), std::string::npos) << kind << ": " << p;
  }
  EXPECT_NE(Problem("update_snet", "{}").find("unknown kind 'update_snet'"), std::string::npos);
  EXPECT_NE(Problem("\xff", "{}").find("unknown kind '\\377'"), std::string::npos) << "escaped, never raw bytes";
}

TEST(LedgerEntriesTest, HostileBodiesAreNamedProblemsNotCrashes) {
  EXPECT_NE(Problem("update_sent", R"({"round":"3"})").find("field 'round' is not an integer"), std::string::npos);
  EXPECT_NE(Problem("update_sent", R"({"round":3.5})").find("field 'round' is not an integer"), std::string::npos);
  EXPECT_NE(Problem("update_sent", R"({"round":18446744073709551615})").find("'round' is not an integer"),
            std::string::npos);
  EXPECT_NE(Problem("update_outcome", R"({"round":1,"attempt":1,"outcome":true})").find("'outcome' is not a string"),
            std::string::npos);
  EXPECT_NE(Problem("evaluation_sent", R"({"round":1,"model_sha256":"a","suppressed":1})")
                .find("'suppressed' is not true or false"),
            std::string::npos);
  EXPECT_NE(Problem("evaluation_sent", R"({"round":1,"model_sha256":"a","suppressed":false,"release":[1]})")
                .find("'release' is not an object"),
            std::string::npos);
  EXPECT_NE(Problem("config", R"({"file":"f","file_sha256":"x","coordinator":"c","site":"s","dicom_dir":"d",
                                  "labels":"l","trainer":"t","validation_fraction":0.2,"split_seed":1,
                                  "preprocess":"p","privacy":{"enabled":true,"unit":"patient","clip_norm":1,
                                  "delta":"tiny","epsilon_max":8}})")
                .find("field 'privacy.delta' is not a number"),
            std::string::npos);
  EXPECT_NE(Problem("aggregate", R"({"round":1,"attempt":1,"strategy":"s","sha256":"h","updates":[{"site":"a",
                                     "update_sha256":"1"},7]})")
                .find("field 'updates[1]' is not an object"),
            std::string::npos);
  EXPECT_NE(Problem("aggregate", R"({"round":1,"attempt":1,"strategy":"s","sha256":"h","updates":[{"site":"a"}]})")
                .find("field 'updates[0].update_sha256' is missing"),
            std::string::npos);
  EXPECT_NE(Problem("model_published", "[1, 2]").find("is not a JSON object"), std::string::npos);
  EXPECT_NE(Problem("model_published", "{\"round\": ").find("is not JSON"), std::string::npos);
  // Nested 200,000 levels deep: refused before parsing.
  const std::string deep =
      "{\"round\":1,\"sha256\":\"a\",\"x\":" + std::string(200000, '[') + std::string(200000, ']') + "}";
  EXPECT_NE(Problem("model_published", deep).find("nested more than 16 levels"), std::string::npos);
  // Brackets inside strings do not count.
  EXPECT_TRUE(DecodeBody("model_published", "{\"round\":1,\"sha256\":\"" + std::string(100, '[') + "\"}").ok());
  const std::string big = "{\"round\":1,\"sha256\":\"" + std::string(kMaxBodyBytes, 'a') + "\"}";
  EXPECT_NE(Problem("model_published", big).find("more than 1048576"), std::string::npos);
  // An optional field present with the wrong type is a problem, not absent.
  EXPECT_NE(
      Problem("round_closed", R"({"round":1,"attempt":1,"status":"failed","note":5})").find("'note' is not a string"),
      std::string::npos);
  EXPECT_TRUE(DecodeBody("round_closed", R"({"round":1,"attempt":1,"status":"failed","note":null})").ok());
  // Fields a later version adds are ignored.
  EXPECT_TRUE(DecodeBody("model_published", R"({"round":1,"sha256":"a","new_field":[1]})").ok());
}

TEST(LedgerEntriesTest, DecodeWantsTheKindItIsAskedFor) {
  LedgerEntry e;
  e.seq = 9;
  e.kind = "model_published";
  e.body = Encode(ModelPublished{.round = 2, .sha256 = "ab"});
  absl::StatusOr<ModelPublished> ok = Decode<ModelPublished>(e);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->round, 2);
  EXPECT_EQ(ok->sha256, "ab");
  absl::StatusOr<RoundOpened> wrong = Decode<RoundOpened>(e);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("entry 9 is a 'model_published', not a 'round_opened'"), std::string::npos);
}

}  // namespace
}  // namespace fedrad::ledger
