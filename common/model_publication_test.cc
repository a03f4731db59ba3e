#include "common/model_publication.h"

#include <gtest/gtest.h>

#include "crypto/pki.h"
#include "crypto/sha256.h"

namespace fedrad {
namespace {

class ModelPublicationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = crypto::CertificateAuthority::Create("ca", 30);
    ASSERT_TRUE(ca.ok()) << ca.status();
    auto coordinator = (*ca)->Issue({"coordinator", crypto::CertificateRequest::Usage::kServer, {"localhost"}, {}, 30});
    auto site = (*ca)->Issue({"hospital-a", crypto::CertificateRequest::Usage::kClient, {}, {}, 30});
    ASSERT_TRUE(coordinator.ok() && site.ok());
    coordinator_ = *coordinator;
    site_ = *site;
  }
  const ModelPublication p_{"demo", 3, crypto::Sha256Hex("model of round 3")};
  crypto::IssuedCertificate coordinator_, site_;
};

TEST_F(ModelPublicationTest, SignedStatementVerifiesWithTheSignersCertificateOnly) {
  absl::StatusOr<std::string> sig = SignModelPublication(coordinator_.private_key_pem, p_);
  ASSERT_TRUE(sig.ok()) << sig.status();
  EXPECT_TRUE(VerifyModelPublication(coordinator_.certificate_pem, p_, *sig).ok());
  // Another party's key (a site's kit) cannot speak for the coordinator.
  absl::StatusOr<std::string> forged = SignModelPublication(site_.private_key_pem, p_);
  ASSERT_TRUE(forged.ok());
  EXPECT_EQ(VerifyModelPublication(coordinator_.certificate_pem, p_, *forged).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(VerifyModelPublication(site_.certificate_pem, p_, *sig).code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(ModelPublicationTest, StatementBindsRoundModelAndFederation) {
  absl::StatusOr<std::string> sig = SignModelPublication(coordinator_.private_key_pem, p_);
  ASSERT_TRUE(sig.ok());
  ModelPublication other_round = p_;
  other_round.round = 4;
  ModelPublication other_model = p_;
  other_model.model_sha256 = crypto::Sha256Hex("a probe");
  ModelPublication other_federation = p_;
  other_federation.federation = "demo2";
  for (const ModelPublication& q : {other_round, other_model, other_federation}) {
    absl::Status s = VerifyModelPublication(coordinator_.certificate_pem, q, *sig);
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << q.round << " " << q.federation;
    EXPECT_NE(s.message().find("not used"), std::string_view::npos) << s;
  }
}

TEST_F(ModelPublicationTest, UnsignedAndMalformedStatementsAreRefused) {
  absl::Status s = VerifyModelPublication(coordinator_.certificate_pem, p_, "");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("did not sign"), std::string_view::npos) << s;
  EXPECT_EQ(VerifyModelPublication(coordinator_.certificate_pem, p_, "not a DER signature").code(),
            absl::StatusCode::kPermissionDenied);
  ModelPublication bad = p_;
  bad.model_sha256 = "zz";
  EXPECT_FALSE(SignModelPublication(coordinator_.private_key_pem, bad).ok());
  bad = p_;
  bad.federation = "demo\nround 9";
  EXPECT_FALSE(ModelPublicationText(bad).ok());
  EXPECT_EQ(*ModelPublicationText(p_),
            "fedrad model publication v1\nfederation demo\nround 3\nsha256 " + p_.model_sha256 + "\n");
}

}  // namespace
}  // namespace fedrad
