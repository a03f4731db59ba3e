#include "common/ledger.h"

#include <variant>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/ledger_entries.h"
#include "crypto/pki.h"
#include "crypto/sha256.h"

namespace fedrad {
namespace {

const std::string& Genesis() {
  static const std::string* zeros = new std::string(64, '0');
  return *zeros;
}

}  // namespace

std::string LedgerEntryDigest(int64_t seq, int64_t at_ms, const std::string& kind, const std::string& body,
                              const std::string& prev_sha256) {
  return crypto::Sha256Hex(absl::StrCat("fedrad-ledger-v1\n", seq, "\n", at_ms, "\n", kind.size(), ":", kind, "\n",
                                        prev_sha256, "\n", body.size(), ":", body));
}

absl::Status CreateLedgerTable(Database& db) {
  return db.ExecScript(R"sql(
CREATE TABLE IF NOT EXISTS ledger(
  seq INTEGER PRIMARY KEY,
  at_ms INTEGER NOT NULL,
  kind TEXT NOT NULL,
  body TEXT NOT NULL,
  prev_sha256 TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  signature TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger
  BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON ledger
  BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
)sql");
}

absl::StatusOr<LedgerEntry> AppendLedgerEntry(Database& db, const LedgerSigner& signer, const std::string& kind,
                                              const std::string& body, int64_t now_ms) {
  absl::StatusOr<std::vector<SqlRow>> last = db.Query("SELECT seq, sha256 FROM ledger ORDER BY seq DESC LIMIT 1");
  if (!last.ok()) return last.status();
  LedgerEntry e;
  e.seq = last->empty() ? 1 : AsInt((*last)[0][0]) + 1;
  e.prev_sha256 = last->empty() ? Genesis() : AsText((*last)[0][1]);
  e.at_ms = now_ms;
  e.kind = kind;
  e.body = body;
  e.sha256 = LedgerEntryDigest(e.seq, e.at_ms, e.kind, e.body, e.prev_sha256);
  absl::StatusOr<std::string> signature = crypto::SignSha256(signer.key_pem, e.sha256);
  if (!signature.ok()) return signature.status();
  e.signature = crypto::HexEncode(*signature);
  absl::Status s = db.Execute(
      "INSERT INTO ledger(seq, at_ms, kind, body, prev_sha256, sha256, signature) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
      {e.seq, e.at_ms, e.kind, e.body, e.prev_sha256, e.sha256, e.signature});
  if (!s.ok()) return s;
  return e;
}

absl::Status OpenLedger(Database& db, const LedgerSigner& signer, int64_t now_ms) {
  absl::Status s = CreateLedgerTable(db);
  if (!s.ok()) return s;
  using ledger::WriterCertificate;
  absl::StatusOr<std::vector<SqlRow>> last = db.Query(
      "SELECT body FROM ledger WHERE kind = ?1 ORDER BY seq DESC LIMIT 1", {std::string(WriterCertificate::kKind)});
  if (!last.ok()) return last.status();
  if (!last->empty()) {
    absl::StatusOr<ledger::Body> b = ledger::DecodeBody(WriterCertificate::kKind, AsText((*last)[0][0]));
    if (b.ok() && std::get<WriterCertificate>(*b).certificate == signer.certificate_pem) return absl::OkStatus();
  }
  return AppendLedgerEntry(db, signer, WriterCertificate::kKind,
                           ledger::Encode(WriterCertificate{signer.certificate_pem, signer.subject}), now_ms)
      .status();
}

absl::StatusOr<std::vector<LedgerEntry>> ReadLedger(Database& db) {
  absl::StatusOr<std::vector<SqlRow>> rows =
      db.Query("SELECT seq, at_ms, kind, body, prev_sha256, sha256, signature FROM ledger ORDER BY seq");
  if (!rows.ok()) return rows.status();
  std::vector<LedgerEntry> out;
  out.reserve(rows->size());
  for (const SqlRow& r : *rows) {
    out.push_back({AsInt(r[0]), AsInt(r[1]), AsText(r[2]), AsText(r[3]), AsText(r[4]), AsText(r[5]), AsText(r[6])});
  }
  return out;
}

std::string LedgerProblem::ToString() const {
  return absl::StrCat("entry ", position, " (seq ", seq, ", ", absl::CEscape(kind), "): ", problem);
}

absl::StatusOr<std::optional<LedgerEntry>> LedgerHead(Database& db) {
  absl::StatusOr<std::vector<SqlRow>> rows =
      db.Query("SELECT seq, at_ms, kind, body, prev_sha256, sha256, signature FROM ledger ORDER BY seq DESC LIMIT 1");
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return std::optional<LedgerEntry>();
  const SqlRow& r = (*rows)[0];
  return std::optional<LedgerEntry>(
      LedgerEntry{AsInt(r[0]), AsInt(r[1]), AsText(r[2]), AsText(r[3]), AsText(r[4]), AsText(r[5]), AsText(r[6])});
}

LedgerVerification VerifyLedger(const std::vector<LedgerEntry>& entries, const std::string& ca_pem) {
  LedgerVerification out;
  std::vector<LedgerProblem>& problems = out.problems;
  std::string certificate;  // the writer's, once a writer_certificate entry was read
  std::string first_subject;
  for (size_t i = 0; i < entries.size(); ++i) {
    const LedgerEntry& e = entries[i];
    const int64_t position = static_cast<int64_t>(i) + 1;
    auto report = [&](std::string problem) { problems.push_back({position, e.seq, e.kind, std::move(problem)}); };
    const int64_t expected_seq = i == 0 ? 1 : entries[i - 1].seq + 1;
    if (e.seq > expected_seq) {
      report(absl::StrCat("the sequence jumps from ", expected_seq - 1, " to ", e.seq, ": ", e.seq - expected_seq,
                          " entr", e.seq - expected_seq == 1 ? "y" : "ies", " deleted"));
    } else if (e.seq < expected_seq) {
      report(absl::StrCat("the sequence goes back from ", expected_seq - 1, " to ", e.seq,
                          ": an entry was inserted or moved"));
    }
    const std::string& expected_prev = i == 0 ? Genesis() : entries[i - 1].sha256;
    if (e.prev_sha256 != expected_prev) {
      report(i == 0 ? std::string("the first entry does not start the chain: entries before it were deleted")
                    : std::string("it does not link to the entry before it: entries were deleted, inserted "
                                  "or reordered"));
    }
    if (LedgerEntryDigest(e.seq, e.at_ms, e.kind, e.body, e.prev_sha256) != e.sha256) {
      report("its content does not give its hash: it was edited");
    }
    if (e.kind == ledger::WriterCertificate::kKind) {
      absl::StatusOr<ledger::Body> b = ledger::DecodeBody(e.kind, e.body);
      const std::string pem = b.ok() ? std::get<ledger::WriterCertificate>(*b).certificate : std::string();
      absl::StatusOr<crypto::CertificateInfo> info = crypto::ParseCertificate(pem, "the writer certificate");
      if (!info.ok()) {
        report("it names no readable writer certificate");
      } else if (absl::Status chain = crypto::VerifyCertificateChain(pem, ca_pem, "the writer certificate", true);
                 !chain.ok()) {
        report(absl::StrCat("its writer certificate ('", info->common_name,
                            "') was not issued by the federation's CA: ", chain.message()));
      } else if (!first_subject.empty() && info->common_name != first_subject) {
        report(absl::StrCat("the writer changes from '", first_subject, "' to '", info->common_name,
                            "': entries of another party's ledger"));
      } else {
        if (first_subject.empty()) first_subject = info->common_name;
        certificate = pem;
        out.writer = info->common_name;
      }
    }
    if (certificate.empty()) {
      report("no writer certificate comes before it: the ledger's start was removed or replaced");
      continue;
    }
    const std::optional<std::string> signature = crypto::HexDecode(e.signature);
    if (!signature || !crypto::VerifySha256(certificate, e.sha256, *signature).ok()) {
      report("its signature does not verify with the writer's certificate: forged, or re-hashed after an edit");
    }
  }
  return out;
}

}  // namespace fedrad
