#include "common/ledger.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/ledger_entries.h"
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

namespace fedrad {
namespace {

// A ledger outlives its database file (issue 18, defect 7): a database found
// empty, replaced or re-created beside the marker is refused, and only the
// operator's account starts a new ledger, which records it.
class LedgerContinuityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/ledger_continuity_" + std::to_string(::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ + "/models");
    auto ca = crypto::CertificateAuthority::Create("ca", 30);
    ASSERT_TRUE(ca.ok());
    auto site = (*ca)->Issue({"hospital-a", crypto::CertificateRequest::Usage::kClient, {}, {}, 30});
    ASSERT_TRUE(site.ok());
    signer_ = {site->private_key_pem, site->certificate_pem, "hospital-a"};
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Opens `name` (a fresh connection) as a store would.
  absl::Status Open(const std::string& name, const std::string& reason = "", int64_t now_ms = 1000) {
    auto db = Database::Open(dir_ + "/" + name);
    if (!db.ok()) return db.status();
    return OpenLedger(**db, signer_, now_ms, {dir_ + "/" + name, {dir_ + "/models"}, reason, "serve --ledger-lost X"});
  }
  std::vector<LedgerEntry> Entries(const std::string& name) {
    auto db = Database::Open(dir_ + "/" + name);
    EXPECT_TRUE(db.ok());
    auto entries = ReadLedger(**db);
    EXPECT_TRUE(entries.ok());
    return entries.value_or(std::vector<LedgerEntry>{});
  }
  std::string ReadMarker(const std::string& name) {
    std::ifstream in(LedgerMarkerPath(dir_ + "/" + name));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  std::string dir_;
  LedgerSigner signer_;
};

TEST_F(LedgerContinuityTest, AMarkerNamesTheFirstEntryAndReopeningKeepsIt) {
  ASSERT_TRUE(Open("state.db").ok());
  const std::vector<LedgerEntry> entries = Entries("state.db");
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(ReadMarker("state.db"),
            "fedrad ledger origin v1\nfirst_sha256 " + entries[0].sha256 + "\nstarted_at_ms 1000\n");
  ASSERT_TRUE(Open("state.db", "", 2000).ok());
  EXPECT_EQ(Entries("state.db").size(), 1u) << "the same writer certificate is not appended again";
}

TEST_F(LedgerContinuityTest, AnEmptiedOrReplacedDatabaseIsRefusedAndNothingWritten) {
  ASSERT_TRUE(Open("state.db").ok());
  const std::string first = Entries("state.db")[0].sha256;
  const std::string marker = ReadMarker("state.db");
  std::filesystem::remove(dir_ + "/state.db");
  std::ofstream(dir_ + "/state.db").close();  // 0 bytes
  absl::Status lost = Open("state.db");
  EXPECT_EQ(lost.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(lost.message().find(absl::StrCat("'", dir_,
                                             "/state.db' holds no ledger, but this state directory held one "
                                             "(ledger ",
                                             first.substr(0, 12), ", started 1970-01-01 00:00:01 UTC, named by '")),
            std::string::npos)
      << lost;
  EXPECT_NE(lost.message().find("start once with serve --ledger-lost X"), std::string::npos) << lost;
  EXPECT_TRUE(Entries("state.db").empty());
  EXPECT_EQ(ReadMarker("state.db"), marker);
  EXPECT_FALSE(CheckLedgerContinuity(**Database::Open(dir_ + "/state.db"), dir_ + "/state.db").ok());

  // Another ledger put in its place (a site's node.db swapped for another's).
  ASSERT_TRUE(Open("other.db", "", 5000).ok());
  std::filesystem::copy_file(dir_ + "/other.db", dir_ + "/state.db", std::filesystem::copy_options::overwrite_existing);
  absl::Status swapped = Open("state.db");
  EXPECT_NE(swapped.message().find("the database was replaced"), std::string::npos) << swapped;
  EXPECT_NE(CheckLedgerContinuity(**Database::Open(dir_ + "/state.db"), dir_ + "/state.db")
                .message()
                .find("the database was replaced"),
            std::string::npos);
  EXPECT_EQ(ReadMarker("state.db"), marker);

  // A marker that is not one is refused too, not overwritten.
  std::ofstream(LedgerMarkerPath(dir_ + "/other.db")) << "garbage";
  EXPECT_NE(Open("other.db").message().find("is not a ledger marker"), std::string::npos);
}

TEST_F(LedgerContinuityTest, WithoutAMarkerFilesOfAnEarlierLedgerAreEvidenceToo) {
  std::ofstream(dir_ + "/models/3f2a.safetensors") << "x";
  absl::Status lost = Open("state.db");
  EXPECT_NE(lost.message().find(absl::StrCat("held one ('", dir_, "/models' holds 1 file(s))")), std::string::npos)
      << lost;
  EXPECT_FALSE(std::filesystem::exists(LedgerMarkerPath(dir_ + "/state.db")));
  // A ledger from before markers is adopted: its marker is written.
  std::filesystem::remove(dir_ + "/models/3f2a.safetensors");
  ASSERT_TRUE(Open("state.db").ok());
  std::filesystem::remove(LedgerMarkerPath(dir_ + "/state.db"));
  std::ofstream(dir_ + "/models/3f2a.safetensors") << "x";
  ASSERT_TRUE(Open("state.db").ok());
  EXPECT_NE(ReadMarker("state.db").find(Entries("state.db")[0].sha256), std::string::npos);
}

TEST_F(LedgerContinuityTest, TheOperatorsAccountStartsANewLedgerThatRecordsIt) {
  ASSERT_TRUE(Open("state.db").ok());
  const std::string first = Entries("state.db")[0].sha256;
  std::filesystem::remove(dir_ + "/state.db");
  absl::Status early = Open("state.db", "", 3000);
  ASSERT_FALSE(early.ok());
  std::filesystem::remove(dir_ + "/state.db");
  ASSERT_TRUE(Open("state.db", "disk failed", 4000).ok());
  const std::vector<LedgerEntry> entries = Entries("state.db");
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].kind, "writer_certificate");
  EXPECT_EQ(entries[1].kind, "ledger_restarted");
  absl::StatusOr<ledger::LedgerRestarted> r = ledger::Decode<ledger::LedgerRestarted>(entries[1]);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->reason, "disk failed");
  EXPECT_EQ(r->previous_first_sha256, first);
  EXPECT_EQ(r->previous_started_at_ms, 1000);
  EXPECT_NE(ReadMarker("state.db").find(entries[0].sha256), std::string::npos);
  ASSERT_TRUE(Open("state.db", "", 5000).ok());
  // The account again, with a ledger there: refused.
  EXPECT_NE(Open("state.db", "again").message().find("--ledger-lost is for a ledger that is gone"), std::string::npos);
  // Stopped after the new ledger committed but before its marker was
  // rewritten: the ledger that says it replaced the marker's is this one.
  std::ofstream(LedgerMarkerPath(dir_ + "/state.db"))
      << "fedrad ledger origin v1\nfirst_sha256 " << first << "\nstarted_at_ms 1000\n";
  ASSERT_TRUE(Open("state.db", "", 6000).ok());
  EXPECT_NE(ReadMarker("state.db").find(entries[0].sha256), std::string::npos);
}

}  // namespace
}  // namespace fedrad
