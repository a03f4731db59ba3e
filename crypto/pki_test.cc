#include "crypto/pki.h"

#include <gtest/gtest.h>

namespace fedrad::crypto {
namespace {

TEST(PkiTest, IssuesVerifiableServerAndClientCertificates) {
  auto ca = CertificateAuthority::Create("test-ca", 30);
  ASSERT_TRUE(ca.ok()) << ca.status();

  CertificateRequest server{"coordinator", CertificateRequest::Usage::kServer, {"localhost"}, {"127.0.0.1"}, 30};
  auto issued = (*ca)->Issue(server);
  ASSERT_TRUE(issued.ok()) << issued.status();
  auto info = ParseCertificate(issued->certificate_pem, "server");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->common_name, "coordinator");
  EXPECT_EQ(info->dns_names, std::vector<std::string>{"localhost"});
  EXPECT_EQ(info->ip_addresses, std::vector<std::string>{"127.0.0.1"});
  EXPECT_FALSE(info->is_ca);
  EXPECT_GT(info->not_after_unix, info->not_before_unix + 29 * 86400);

  EXPECT_TRUE(VerifyCertificateChain(issued->certificate_pem, (*ca)->certificate_pem(), "s").ok());
  EXPECT_TRUE(CheckKeyMatchesCertificate(issued->certificate_pem, issued->private_key_pem, "s").ok());

  auto client = (*ca)->Issue({"hospital-a", CertificateRequest::Usage::kClient, {}, {}, 30});
  ASSERT_TRUE(client.ok());
  EXPECT_EQ(ParseCertificate(client->certificate_pem, "c")->common_name, "hospital-a");
  // Keys are not interchangeable.
  EXPECT_FALSE(CheckKeyMatchesCertificate(client->certificate_pem, issued->private_key_pem, "c").ok());
}

TEST(PkiTest, SignaturesVerifyOnlyForTheSignersCertificateAndTheSameData) {
  auto ca = CertificateAuthority::Create("test-ca", 30);
  ASSERT_TRUE(ca.ok());
  auto a = (*ca)->Issue({"hospital-a", CertificateRequest::Usage::kClient, {}, {}, 30});
  auto b = (*ca)->Issue({"hospital-b", CertificateRequest::Usage::kClient, {}, {}, 30});
  ASSERT_TRUE(a.ok() && b.ok());
  absl::StatusOr<std::string> sig = SignSha256(a->private_key_pem, "entry 1");
  ASSERT_TRUE(sig.ok()) << sig.status();
  EXPECT_TRUE(VerifySha256(a->certificate_pem, "entry 1", *sig).ok());
  EXPECT_EQ(VerifySha256(a->certificate_pem, "entry 2", *sig).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(VerifySha256(b->certificate_pem, "entry 1", *sig).code(), absl::StatusCode::kPermissionDenied);
  std::string bent = *sig;
  bent[bent.size() / 2] ^= 1;
  EXPECT_FALSE(VerifySha256(a->certificate_pem, "entry 1", bent).ok());
  EXPECT_FALSE(VerifySha256(a->certificate_pem, "entry 1", "").ok());
  EXPECT_FALSE(SignSha256("not a key", "x").ok());
}

TEST(PkiTest, CertificateFromAnotherCaFailsVerification) {
  auto ca = CertificateAuthority::Create("ca-one", 30);
  auto other = CertificateAuthority::Create("ca-two", 30);
  ASSERT_TRUE(ca.ok() && other.ok());
  auto leaf = (*other)->Issue({"hospital-a", CertificateRequest::Usage::kClient, {}, {}, 30});
  ASSERT_TRUE(leaf.ok());
  absl::Status s = VerifyCertificateChain(leaf->certificate_pem, (*ca)->certificate_pem(), "leaf");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("leaf"), std::string::npos);
  // A bundle holding both CAs accepts it.
  EXPECT_TRUE(
      VerifyCertificateChain(leaf->certificate_pem, (*ca)->certificate_pem() + (*other)->certificate_pem(), "leaf")
          .ok());
}

TEST(PkiTest, LoadRoundTripsAndRejectsMismatchedKey) {
  auto ca = CertificateAuthority::Create("ca", 30);
  auto other = CertificateAuthority::Create("other", 30);
  ASSERT_TRUE(ca.ok() && other.ok());
  auto loaded = CertificateAuthority::Load((*ca)->certificate_pem(), (*ca)->private_key_pem());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto leaf = (*loaded)->Issue({"x", CertificateRequest::Usage::kClient, {}, {}, 1});
  ASSERT_TRUE(leaf.ok());
  EXPECT_TRUE(VerifyCertificateChain(leaf->certificate_pem, (*ca)->certificate_pem(), "x").ok());

  EXPECT_FALSE(CertificateAuthority::Load((*ca)->certificate_pem(), (*other)->private_key_pem()).ok());
  EXPECT_FALSE(ParseCertificate("garbage", "g").ok());
}

}  // namespace
}  // namespace fedrad::crypto
