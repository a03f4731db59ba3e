#include "common/ledger.h"

#include <filesystem>
#include <variant>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/clock.h"
#include "common/files.h"
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

std::string LedgerMarkerPath(const std::string& db_path) { return db_path + ".origin"; }

namespace {

constexpr char kMarkerHeader[] = "fedrad ledger origin v1";

struct Origin {
  std::string first_sha256;
  int64_t started_at_ms = 0;
};

std::string DescribeOrigin(const Origin& o) {
  return absl::StrCat("ledger ", o.first_sha256.substr(0, 12), ", started ", UtcTime(o.started_at_ms));
}

// The marker at `path`: nullopt if there is none, an error if it cannot be
// read as one (it is refused rather than overwritten).
absl::StatusOr<std::optional<Origin>> ReadMarker(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::optional<Origin>();
  absl::StatusOr<std::string> text = ReadFile(path, 4096);
  if (!text.ok()) return text.status();
  const std::vector<std::string> lines = absl::StrSplit(*text, '\n', absl::SkipEmpty());
  Origin o;
  if (lines.size() != 3 || lines[0] != kMarkerHeader || !absl::StartsWith(lines[1], "first_sha256 ") ||
      !crypto::IsSha256Hex(lines[1].substr(13)) || !absl::StartsWith(lines[2], "started_at_ms ") ||
      !absl::SimpleAtoi(lines[2].substr(14), &o.started_at_ms)) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", path, "' is not a ledger marker (", kMarkerHeader,
                     "); it names the ledger this state directory holds: restore it or the database it belongs to"));
  }
  o.first_sha256 = lines[1].substr(13);
  return std::optional<Origin>(o);
}

absl::Status WriteMarker(const std::string& path, const LedgerEntry& first) {
  const std::string text =
      absl::StrCat(kMarkerHeader, "\nfirst_sha256 ", first.sha256, "\nstarted_at_ms ", first.at_ms, "\n");
  return WriteFileAtomically(path, std::string_view(text));
}

// The ledger's first entry or (newest) its last, if any.
absl::StatusOr<std::optional<LedgerEntry>> EndEntry(Database& db, bool newest) {
  absl::StatusOr<std::vector<SqlRow>> rows =
      db.Query(absl::StrCat("SELECT seq, at_ms, kind, body, prev_sha256, sha256, signature FROM ledger ORDER BY seq",
                            newest ? " DESC" : "", " LIMIT 1"));
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return std::optional<LedgerEntry>();
  const SqlRow& r = (*rows)[0];
  return std::optional<LedgerEntry>(
      LedgerEntry{AsInt(r[0]), AsInt(r[1]), AsText(r[2]), AsText(r[3]), AsText(r[4]), AsText(r[5]), AsText(r[6])});
}

absl::StatusOr<std::optional<LedgerEntry>> FirstEntry(Database& db) { return EndEntry(db, /*newest=*/false); }

// Unless the newest writer_certificate entry already holds `signer`'s
// certificate, appends one.
absl::Status AppendWriterCertificate(Database& db, const LedgerSigner& signer, int64_t now_ms) {
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

// How many files each of `folders` holds, where any: evidence of an earlier
// ledger.
std::string HistoryIn(const std::vector<std::string>& folders) {
  std::vector<std::string> found;
  for (const std::string& folder : folders) {
    std::error_code ec;
    size_t n = 0;
    for (auto it = std::filesystem::directory_iterator(folder, ec); !ec && it != std::filesystem::directory_iterator();
         it.increment(ec)) {
      ++n;
    }
    if (n > 0) found.push_back(absl::StrCat("'", folder, "' holds ", n, " file(s)"));
  }
  return absl::StrJoin(found, ", ");
}

// The ledger a restarted one says it replaced (its second entry), if any.
absl::StatusOr<std::optional<std::string>> RestartedFrom(Database& db) {
  absl::StatusOr<std::vector<SqlRow>> rows = db.Query("SELECT kind, body FROM ledger WHERE seq = 2");
  if (!rows.ok()) return rows.status();
  if (rows->empty() || AsText((*rows)[0][0]) != ledger::LedgerRestarted::kKind) return std::optional<std::string>();
  absl::StatusOr<ledger::Body> body = ledger::DecodeBody(ledger::LedgerRestarted::kKind, AsText((*rows)[0][1]));
  if (!body.ok()) return std::optional<std::string>();
  return std::optional<std::string>(std::get<ledger::LedgerRestarted>(*body).previous_first_sha256);
}

// What is wrong with `db` against its marker, or OK; `origin` is the marker.
// A ledger restarted in place of the marker's (the marker not yet rewritten
// when the process stopped) is this directory's.
absl::Status Mismatch(Database& db, const std::string& db_path, const std::optional<Origin>& origin,
                      const std::optional<LedgerEntry>& first, const std::string& evidence,
                      const std::string& restart_command) {
  const std::string marker = LedgerMarkerPath(db_path);
  if (first && origin && first->sha256 != origin->first_sha256) {
    absl::StatusOr<std::optional<std::string>> replaced = RestartedFrom(db);
    if (!replaced.ok()) return replaced.status();
    if (*replaced == origin->first_sha256) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("'", db_path, "' holds ledger ", first->sha256.substr(0, 12), ", but '", marker,
                     "' says this state directory's is ", DescribeOrigin(*origin),
                     ": the database was replaced. Put back the one this directory started with"));
  }
  if (!first && (origin || !evidence.empty())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "'", db_path, "' holds no ledger, but this state directory held one (",
        origin ? absl::StrCat(DescribeOrigin(*origin), ", named by '", marker, "'") : evidence,
        "): it was lost or replaced, and what it recorded would be forgotten. Put back the database from a backup; "
        "if it is gone for good, start once with ",
        restart_command, ": a new ledger starts, and its first entries record your account for the audit"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckLedgerContinuity(Database& db, const std::string& db_path) {
  absl::StatusOr<std::optional<Origin>> origin = ReadMarker(LedgerMarkerPath(db_path));
  if (!origin.ok()) return origin.status();
  absl::StatusOr<std::optional<LedgerEntry>> first = FirstEntry(db);
  if (!first.ok()) return first.status();
  return Mismatch(db, db_path, *origin, *first, "", "--ledger-lost \"<what happened>\"");
}

absl::Status OpenLedger(Database& db, const LedgerSigner& signer, int64_t now_ms, const LedgerContinuity& continuity) {
  absl::Status s = CreateLedgerTable(db);
  if (!s.ok()) return s;
  std::optional<Origin> origin;
  std::optional<LedgerEntry> first;
  std::string evidence;
  const std::string& db_path = continuity.db_path;
  const std::string marker_path = LedgerMarkerPath(db_path);
  if (!db_path.empty()) {
    absl::StatusOr<std::optional<Origin>> marker = ReadMarker(marker_path);
    if (!marker.ok()) return marker.status();
    origin = *marker;
    absl::StatusOr<std::optional<LedgerEntry>> head = FirstEntry(db);
    if (!head.ok()) return head.status();
    first = *head;
    if (!first && !origin) evidence = HistoryIn(continuity.history_folders);
    if (first && !continuity.restart_reason.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("--ledger-lost is for a ledger that is gone; '", db_path,
                                                        "' holds one (", first->sha256.substr(0, 12), ")"));
    }
    if (continuity.restart_reason.empty()) {
      s = Mismatch(db, db_path, origin, first, evidence, continuity.restart_command);
      if (!s.ok()) return s;
    }
  }
  const bool restart = !db_path.empty() && !first && !continuity.restart_reason.empty();
  if (!restart) {
    s = AppendWriterCertificate(db, signer, now_ms);
    if (!s.ok()) return s;
  } else {
    // The new ledger's first two entries commit together: it never exists
    // without the account of what it replaced.
    absl::StatusOr<Database::Transaction> tx = db.Begin();
    if (!tx.ok()) return tx.status();
    s = AppendWriterCertificate(db, signer, now_ms);
    if (!s.ok()) return s;
    ledger::LedgerRestarted restarted{continuity.restart_reason, origin ? origin->first_sha256 : "unknown",
                                      origin ? origin->started_at_ms : 0,
                                      origin ? absl::StrCat("its marker '", marker_path, "'") : evidence};
    absl::StatusOr<LedgerEntry> e =
        AppendLedgerEntry(db, signer, ledger::LedgerRestarted::kKind, ledger::Encode(restarted), now_ms);
    if (!e.ok()) return e.status();
    s = tx->Commit();
    if (!s.ok()) return s;
  }
  if (db_path.empty()) return absl::OkStatus();
  if (!first) {
    absl::StatusOr<std::optional<LedgerEntry>> head = FirstEntry(db);
    if (!head.ok()) return head.status();
    first = *head;
  }
  // A ledger from before markers, or whose first entry just went in.
  if (first && (!origin || origin->first_sha256 != first->sha256)) return WriteMarker(marker_path, *first);
  return absl::OkStatus();
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

absl::StatusOr<std::optional<LedgerEntry>> LedgerHead(Database& db) { return EndEntry(db, /*newest=*/true); }

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
