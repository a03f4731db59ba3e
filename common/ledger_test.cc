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
    ASSERT_TRUE(CreateLedgerTable(*db_).ok());
    const char* kinds[] = {"data_access", "model_received", "dp_charge", "update_sent", "model_received"};
    for (int i = 0; i < 5; ++i) {
      auto e = AppendLedgerEntry(*db_, site_.private_key_pem, kinds[i], "{\"round\":" + std::to_string(i) + "}",
                                 1000 + i);
      ASSERT_TRUE(e.ok()) << e.status();
      EXPECT_EQ(e->seq, i + 1);
    }
  }
  void TearDown() override {
    db_.reset();
    std::filesystem::remove(path_);
  }

  std::vector<LedgerProblem> Verify() {
    auto entries = ReadLedger(*db_);
    EXPECT_TRUE(entries.ok());
    return VerifyLedger(*entries, site_.certificate_pem);
  }
  void Tamper(const std::string& sql) {
    ASSERT_TRUE(db_->ExecScript("DROP TRIGGER IF EXISTS ledger_no_update; DROP TRIGGER IF EXISTS ledger_no_delete;")
                    .ok());
    ASSERT_TRUE(db_->ExecScript(sql).ok()) << sql;
  }
  static std::string All(const std::vector<LedgerProblem>& problems) {
    std::string out;
    for (const LedgerProblem& p : problems) out += p.ToString() + "\n";
    return out;
  }

  std::string path_;
  crypto::IssuedCertificate site_, other_;
  std::unique_ptr<Database> db_;
};

TEST_F(LedgerTest, AnIntactLedgerVerifiesAndRefusesUpdatesAndDeletes) {
  EXPECT_TRUE(Verify().empty()) << All(Verify());
  // Against another site's certificate, every signature fails.
  auto entries = ReadLedger(*db_);
  EXPECT_EQ(VerifyLedger(*entries, other_.certificate_pem).size(), 5u);
  EXPECT_FALSE(db_->Execute("UPDATE ledger SET body = '{}' WHERE seq = 2").ok());
  EXPECT_FALSE(db_->Execute("DELETE FROM ledger WHERE seq = 5").ok());
  EXPECT_TRUE(Verify().empty());
}

TEST_F(LedgerTest, AnEditedEntryIsNamed) {
  Tamper("UPDATE ledger SET body = '{\"round\":9}' WHERE seq = 3");
  const std::vector<LedgerProblem> p = Verify();
  ASSERT_EQ(p.size(), 1u) << All(p);
  EXPECT_EQ(p[0].position, 3);
  EXPECT_EQ(p[0].kind, "dp_charge");
  EXPECT_NE(p[0].problem.find("edited"), std::string::npos);
}

TEST_F(LedgerTest, AnEditRehashedWithoutTheKeyFailsItsSignatureAndTheNextLink) {
  const std::string forged = LedgerEntryDigest(3, 1002, "dp_charge", "{\"round\":9}", "x");
  Tamper("UPDATE ledger SET body = '{\"round\":9}', prev_sha256 = 'x', sha256 = '" + forged + "' WHERE seq = 3");
  const std::vector<LedgerProblem> p = Verify();
  ASSERT_EQ(p.size(), 3u) << All(p);
  EXPECT_EQ(p[0].position, 3);  // does not link back
  EXPECT_NE(p[0].problem.find("does not link"), std::string::npos);
  EXPECT_EQ(p[1].position, 3);
  EXPECT_NE(p[1].problem.find("signature"), std::string::npos);
  EXPECT_EQ(p[2].position, 4);  // the next entry no longer links to it
}

TEST_F(LedgerTest, ADeletedEntryIsNamed) {
  Tamper("DELETE FROM ledger WHERE seq = 2");
  const std::vector<LedgerProblem> p = Verify();
  ASSERT_EQ(p.size(), 2u) << All(p);
  EXPECT_EQ(p[0].position, 2);
  EXPECT_EQ(p[0].seq, 3);
  EXPECT_NE(p[0].problem.find("jumps from 1 to 3: 1 entry deleted"), std::string::npos) << All(p);
  EXPECT_NE(p[1].problem.find("does not link"), std::string::npos);
}

TEST_F(LedgerTest, DeletingTheFirstEntriesIsFound) {
  Tamper("DELETE FROM ledger WHERE seq <= 2");
  const std::vector<LedgerProblem> p = Verify();
  ASSERT_FALSE(p.empty());
  EXPECT_EQ(p[0].position, 1);
  EXPECT_EQ(p[0].kind, "dp_charge");
}

TEST_F(LedgerTest, AnInsertedEntryIsNamedEvenWithAValidSignatureOfAnotherKey) {
  // Entries 4 and 5 move up; a new entry 4 is signed by someone else's key.
  Tamper("UPDATE ledger SET seq = seq + 10 WHERE seq >= 4; UPDATE ledger SET seq = seq - 9 WHERE seq >= 14;");
  auto entries = ReadLedger(*db_);
  ASSERT_TRUE(entries.ok());
  const std::string prev = (*entries)[2].sha256;
  const std::string digest = LedgerEntryDigest(4, 1003, "update_sent", "{\"round\":42}", prev);
  auto sig = crypto::SignSha256(other_.private_key_pem, digest);
  ASSERT_TRUE(sig.ok());
  const std::string hex = crypto::HexEncode(*sig);
  Tamper("INSERT INTO ledger VALUES(4, 1003, 'update_sent', '{\"round\":42}', '" + prev + "', '" + digest + "', '" +
         hex + "')");
  const std::vector<LedgerProblem> p = Verify();
  ASSERT_FALSE(p.empty()) << All(p);
  EXPECT_EQ(p[0].position, 4);
  EXPECT_EQ(p[0].kind, "update_sent");
  EXPECT_NE(p[0].problem.find("signature"), std::string::npos) << All(p);
  // The entries after it were renumbered: their hashes no longer hold.
  EXPECT_GE(p.size(), 3u) << All(p);
}

TEST_F(LedgerTest, ReorderedEntriesAreNamed) {
  // Entries 2 and 4 change places, each keeping its own seq number.
  Tamper("UPDATE ledger SET seq = 100 WHERE seq = 2; UPDATE ledger SET seq = 2 WHERE seq = 4;"
         "UPDATE ledger SET seq = 4 WHERE seq = 100;");
  const std::vector<LedgerProblem> p = Verify();
  std::set<int64_t> positions;
  for (const LedgerProblem& x : p) positions.insert(x.position);
  EXPECT_EQ(positions, (std::set<int64_t>{2, 3, 4, 5})) << All(p);
}

}  // namespace
}  // namespace fedrad
