#include "common/ledger.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "crypto/pki.h"
#include "crypto/sha256.h"

namespace fedrad {
namespace {

// Tampering as someone with write access to the database file would do it:
// with the append-only triggers dropped, rows edited, deleted, inserted and
// swapped. Each is found, at its position, with its kind.
class LedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = ::testing::TempDir() + "/ledger_test_" + std::to_string(::getpid()) + ".db";
    std::filesystem::remove(path_);
    auto ca = crypto::CertificateAuthority::Create("ca", 30);
    ASSERT_TRUE(ca.ok());
    auto site = (*ca)->Issue({"hospital-a", crypto::CertificateRequest::Usage::kClient, {}, {}, 30});
    auto other = (*ca)->Issue({"hospital-b", crypto::CertificateRequest::Usage::kClient, {}, {}, 30});
    ASSERT_TRUE(site.ok() && other.ok());
    site_ = *site;
    other_ = *other;
    auto db = Database::Open(path_);
    ASSERT_TRUE(db.ok());
    db_ = std::move(*db);
    ca_pem_ = (*ca)->certificate_pem();
    signer_ = {site_.private_key_pem, site_.certificate_pem, "hospital-a"};
    // Entry 1 names the writer; 2 to 6 are the records.
    ASSERT_TRUE(OpenLedger(*db_, signer_, 999).ok());
    const char* kinds[] = {"data_access", "model_received", "dp_charge", "update_sent", "model_received"};
    for (int i = 0; i < 5; ++i) {
      auto e = AppendLedgerEntry(*db_, signer_, kinds[i], "{\"round\":" + std::to_string(i) + "}", 1000 + i);
      ASSERT_TRUE(e.ok()) << e.status();
      EXPECT_EQ(e->seq, i + 2);
    }
  }
  void TearDown() override {
    db_.reset();
    std::filesystem::remove(path_);
  }

  std::vector<LedgerProblem> Verify() {
    auto entries = ReadLedger(*db_);
    EXPECT_TRUE(entries.ok());
    LedgerVerification v = VerifyLedger(*entries, ca_pem_);
    if (v.ok()) {
      EXPECT_EQ(v.writer, "hospital-a");
    }
    return v.problems;
  }
  void Tamper(const std::string& sql) {
    ASSERT_TRUE(
        db_->ExecScript("DROP TRIGGER IF EXISTS ledger_no_update; DROP TRIGGER IF EXISTS ledger_no_delete;").ok());
    ASSERT_TRUE(db_->ExecScript(sql).ok()) << sql;
  }
  static std::string All(const std::vector<LedgerProblem>& problems) {
    std::string out;
    for (const LedgerProblem& p : problems) out += p.ToString() + "\n";
    return out;
  }

  std::string path_;
  std::string ca_pem_;
  crypto::IssuedCertificate site_, other_;
  LedgerSigner signer_;
  std::unique_ptr<Database> db_;
};

TEST_F(LedgerTest, AnIntactLedgerVerifiesAndRefusesUpdatesAndDeletes) {
  EXPECT_TRUE(Verify().empty()) << All(Verify());
  // Reopening with the same kit adds nothing; a renewed kit adds its certificate.
  ASSERT_TRUE(OpenLedger(*db_, signer_, 2000).ok());
  EXPECT_EQ(ReadLedger(*db_)->size(), 6u);
  EXPECT_FALSE(db_->Execute("UPDATE ledger SET body = '{}' WHERE seq = 2").ok());
  EXPECT_FALSE(db_->Execute("DELETE FROM ledger WHERE seq = 5").ok());
  EXPECT_TRUE(Verify().empty());
  auto head = LedgerHead(*db_);
  ASSERT_TRUE(head.ok() && head->has_value());
  EXPECT_EQ((*head)->seq, 6);
}

TEST_F(LedgerTest, ARenewedKitOfTheSameSiteContinuesTheChain) {
  auto ca = crypto::CertificateAuthority::Create("ca", 30);  // not the federation's
  ASSERT_TRUE(ca.ok());
  // The federation's CA issues a new certificate for the same site: fine.
  auto fresh = crypto::CertificateAuthority::Create("fed", 30);
  ASSERT_TRUE(fresh.ok());
  auto a1 = (*fresh)->Issue({"hospital-a", crypto::CertificateRequest::Usage::kClient, {}, {}, 30});
  auto a2 = (*fresh)->Issue({"hospital-a", crypto::CertificateRequest::Usage::kClient, {}, {}, 30});
  auto b = (*fresh)->Issue({"hospital-b", crypto::CertificateRequest::Usage::kClient, {}, {}, 30});
  auto rogue = (*ca)->Issue({"hospital-a", crypto::CertificateRequest::Usage::kClient, {}, {}, 30});
  ASSERT_TRUE(a1.ok() && a2.ok() && b.ok() && rogue.ok());
  auto db = Database::Open(path_ + ".renew");
  ASSERT_TRUE(db.ok());
  LedgerSigner s1{a1->private_key_pem, a1->certificate_pem, "hospital-a"};
  LedgerSigner s2{a2->private_key_pem, a2->certificate_pem, "hospital-a"};
  ASSERT_TRUE(OpenLedger(**db, s1, 1).ok());
  ASSERT_TRUE(AppendLedgerEntry(**db, s1, "round_joined", "{}", 2).ok());
  ASSERT_TRUE(OpenLedger(**db, s2, 3).ok());
  ASSERT_TRUE(AppendLedgerEntry(**db, s2, "round_joined", "{}", 4).ok());
  LedgerVerification v = VerifyLedger(*ReadLedger(**db), (*fresh)->certificate_pem());
  EXPECT_TRUE(v.ok()) << All(v.problems);
  EXPECT_EQ(v.writer, "hospital-a");
  // Another site's kit, or a certificate from another CA, cannot take over.
  ASSERT_TRUE(OpenLedger(**db, {b->private_key_pem, b->certificate_pem, "hospital-b"}, 5).ok());
  ASSERT_TRUE(OpenLedger(**db, {rogue->private_key_pem, rogue->certificate_pem, "hospital-a"}, 6).ok());
  ASSERT_TRUE(
      AppendLedgerEntry(**db, {rogue->private_key_pem, rogue->certificate_pem, "hospital-a"}, "round_joined", "{}", 7)
          .ok());
  v = VerifyLedger(*ReadLedger(**db), (*fresh)->certificate_pem());
  ASSERT_EQ(v.problems.size(), 5u) << All(v.problems);
  EXPECT_NE(v.problems[0].problem.find("changes from 'hospital-a' to 'hospital-b'"), std::string::npos);
  EXPECT_EQ(v.problems[1].position, 5);  // signed by hospital-b, checked against hospital-a's certificate
  EXPECT_NE(v.problems[2].problem.find("not issued by the federation's CA"), std::string::npos);
  EXPECT_EQ(v.problems[4].position, 7);
  db->reset();
  std::filesystem::remove(path_ + ".renew");
}

TEST_F(LedgerTest, AnEditedEntryIsNamed) {
  Tamper("UPDATE ledger SET body = '{\"round\":9}' WHERE seq = 4");
  const std::vector<LedgerProblem> p = Verify();
  ASSERT_EQ(p.size(), 1u) << All(p);
  EXPECT_EQ(p[0].position, 4);
  EXPECT_EQ(p[0].kind, "dp_charge");
  EXPECT_NE(p[0].problem.find("edited"), std::string::npos);
}

TEST_F(LedgerTest, AnEditRehashedWithoutTheKeyFailsItsSignatureAndTheNextLink) {
  const std::string forged = LedgerEntryDigest(4, 1002, "dp_charge", "{\"round\":9}", "x");
  Tamper("UPDATE ledger SET body = '{\"round\":9}', prev_sha256 = 'x', sha256 = '" + forged + "' WHERE seq = 4");
  const std::vector<LedgerProblem> p = Verify();
  ASSERT_EQ(p.size(), 3u) << All(p);
  EXPECT_EQ(p[0].position, 4);  // does not link back
  EXPECT_NE(p[0].problem.find("does not link"), std::string::npos);
  EXPECT_EQ(p[1].position, 4);
  EXPECT_NE(p[1].problem.find("signature"), std::string::npos);
  EXPECT_EQ(p[2].position, 5);  // the next entry no longer links to it
}

TEST_F(LedgerTest, ADeletedEntryIsNamed) {
  Tamper("DELETE FROM ledger WHERE seq = 3");
  const std::vector<LedgerProblem> p = Verify();
  ASSERT_EQ(p.size(), 2u) << All(p);
  EXPECT_EQ(p[0].position, 3);
  EXPECT_EQ(p[0].seq, 4);
  EXPECT_NE(p[0].problem.find("jumps from 2 to 4: 1 entry deleted"), std::string::npos) << All(p);
  EXPECT_NE(p[1].problem.find("does not link"), std::string::npos);
}

TEST_F(LedgerTest, DeletingTheFirstEntriesIsFound) {
  Tamper("DELETE FROM ledger WHERE seq <= 3");
  const std::vector<LedgerProblem> p = Verify();
  ASSERT_FALSE(p.empty());
  EXPECT_EQ(p[0].position, 1);
  EXPECT_EQ(p[0].kind, "dp_charge");
}

TEST_F(LedgerTest, AnInsertedEntryIsNamedEvenWithAValidSignatureOfAnotherKey) {
  // Entries 5 and 6 move up; a new entry 5 is signed by someone else's key.
  Tamper("UPDATE ledger SET seq = seq + 10 WHERE seq >= 5; UPDATE ledger SET seq = seq - 9 WHERE seq >= 15;");
  auto entries = ReadLedger(*db_);
  ASSERT_TRUE(entries.ok());
  const std::string prev = (*entries)[3].sha256;
  const std::string digest = LedgerEntryDigest(5, 1003, "update_sent", "{\"round\":42}", prev);
  auto sig = crypto::SignSha256(other_.private_key_pem, digest);
  ASSERT_TRUE(sig.ok());
  const std::string hex = crypto::HexEncode(*sig);
  Tamper("INSERT INTO ledger VALUES(5, 1003, 'update_sent', '{\"round\":42}', '" + prev + "', '" + digest + "', '" +
         hex + "')");
  const std::vector<LedgerProblem> p = Verify();
  ASSERT_FALSE(p.empty()) << All(p);
  EXPECT_EQ(p[0].position, 5);
  EXPECT_EQ(p[0].kind, "update_sent");
  EXPECT_NE(p[0].problem.find("signature"), std::string::npos) << All(p);
  // The entries after it were renumbered: their hashes no longer hold.
  EXPECT_GE(p.size(), 3u) << All(p);
}

TEST_F(LedgerTest, ReorderedEntriesAreNamed) {
  // Entries 3 and 5 change places, each keeping its own seq number.
  Tamper(
      "UPDATE ledger SET seq = 100 WHERE seq = 3; UPDATE ledger SET seq = 3 WHERE seq = 5;"
      "UPDATE ledger SET seq = 5 WHERE seq = 100;");
  const std::vector<LedgerProblem> p = Verify();
  std::set<int64_t> positions;
  for (const LedgerProblem& x : p) positions.insert(x.position);
  EXPECT_EQ(positions, (std::set<int64_t>{3, 4, 5, 6})) << All(p);
}

TEST_F(LedgerTest, ALedgerWithoutItsWriterCertificateFailsEveryEntry) {
  Tamper("DELETE FROM ledger WHERE seq = 1");
  const std::vector<LedgerProblem> p = Verify();
  ASSERT_FALSE(p.empty());
  EXPECT_NE(All(p).find("no writer certificate comes before it"), std::string::npos) << All(p);
}

}  // namespace
}  // namespace fedrad
