#ifndef FEDRAD_COMMON_LEDGER_H_
#define FEDRAD_COMMON_LEDGER_H_

// A tamper-evident, append-only log in a SQLite table ("ledger"), kept by
// the node (node.db) and the coordinator (state.db). Each entry holds the
// SHA-256 of the entry before it and is signed with the writer's kit key, so
// an entry edited, deleted, inserted or moved after the fact is found by
// VerifyLedger, by position and kind, given only the writer's certificate.
// (Cutting entries off the end leaves a valid shorter chain; the other
// party's ledger, which records what it received, is the check for that.)

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/sqlite.h"

namespace fedrad {

struct LedgerEntry {
  int64_t seq = 0;  // 1, 2, 3, ... with no gaps
  int64_t at_ms = 0;
  std::string kind;         // what happened: "data_access", "update_sent", "round_opened", ...
  std::string body;         // its facts, a JSON object
  std::string prev_sha256;  // the previous entry's sha256; 64 zeros for the first
  std::string sha256;       // LedgerEntryDigest of the fields above, hex
  std::string signature;    // hex DER signature of `sha256` by the writer's key
};

// SHA-256 (hex) of an entry's fields in a length-prefixed canonical form, so
// no two different entries share the bytes hashed.
std::string LedgerEntryDigest(int64_t seq, int64_t at_ms, const std::string& kind, const std::string& body,
                              const std::string& prev_sha256);

// Creates the table if missing, with triggers that refuse UPDATE and DELETE
// (a guard against mistakes; the chain is the guard against intent).
absl::Status CreateLedgerTable(Database& db);

// The entry that names the writer is a ledger::WriterCertificate
// (common/ledger_entries.h): the certificate's PEM and its subject. A
// ledger starts with one, and gains another when the writer's kit is
// renewed; VerifyLedger checks every later entry against it, and it against
// the federation's CA.

// Who appends: the kit's key and the certificate that goes with it.
struct LedgerSigner {
  std::string key_pem;
  std::string certificate_pem;
  std::string subject;  // the certificate's common name
};

// Creates the table if missing and, unless the newest writer_certificate
// entry already holds `signer`'s certificate, appends one. Call once when
// the store opens.
absl::Status OpenLedger(Database& db, const LedgerSigner& signer, int64_t now_ms);

// Appends an entry signed with the signer's key. The caller serialises
// access to `db`, and may hold a transaction so the entry commits with the
// state change it records.
absl::StatusOr<LedgerEntry> AppendLedgerEntry(Database& db, const LedgerSigner& signer, const std::string& kind,
                                              const std::string& body, int64_t now_ms);

// Every entry in seq order, as stored (nothing checked).
absl::StatusOr<std::vector<LedgerEntry>> ReadLedger(Database& db);

// The newest entry, if any: what a party reports as its ledger's head.
absl::StatusOr<std::optional<LedgerEntry>> LedgerHead(Database& db);

struct LedgerProblem {
  int64_t position = 0;  // 1-based place in seq order
  int64_t seq = 0;       // as stored
  std::string kind;      // as stored
  std::string problem;

  std::string ToString() const;
};

struct LedgerVerification {
  std::vector<LedgerProblem> problems;  // empty: the ledger is intact
  std::string writer;                   // the subject of the newest writer certificate ("" if none)
  bool ok() const { return problems.empty(); }
};

// Checks every entry against the one before it and the writer's
// certificate: the sequence runs 1, 2, 3 without gaps or repeats, each
// entry links to the previous one's hash, its content gives its hash, and
// its signature verifies with the certificate of the writer_certificate
// entry before it (or its own, for that entry). Each writer certificate must
// be issued by `ca_pem` (whenever: a ledger outlives its kit) and keep the
// first one's subject.
LedgerVerification VerifyLedger(const std::vector<LedgerEntry>& entries, const std::string& ca_pem);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_LEDGER_H_
