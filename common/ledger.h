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

// A ledger outlives its database file. A marker file beside it names the
// ledger's first entry (its SHA-256 and time), written once that entry is
// in; a database later found empty (0 bytes, deleted, re-created) while the
// marker stands, or holding another ledger, is refused instead of taken for
// a new one, which would forget what was recorded (a node's privacy spent,
// a coordinator's rounds). Only the operator's account of the loss
// (--ledger-lost "what happened") starts a new ledger there, and its
// second entry records that account (ledger::LedgerRestarted) for the audit.
struct LedgerContinuity {
  std::string db_path;  // the database's file, whose marker is LedgerMarkerPath(db_path); empty: none kept
  // Folders whose files show the state directory held a ledger already (a
  // state directory from before markers): an empty database beside them is
  // refused as a lost one, too.
  std::vector<std::string> history_folders;
  std::string restart_reason;   // the operator's account of a lost ledger; empty: none
  std::string restart_command;  // how the operator gives it, for the refusal's message
};

// Creates the table if missing and, unless the newest writer_certificate
// entry already holds `signer`'s certificate, appends one; keeps the
// ledger's continuity as `continuity` says (FailedPrecondition naming the
// database, the marker and what to do for a ledger lost or replaced). Call
// once when the store opens.
absl::Status OpenLedger(Database& db, const LedgerSigner& signer, int64_t now_ms,
                        const LedgerContinuity& continuity = {});

// The marker's path for a ledger database: "<db>.origin".
std::string LedgerMarkerPath(const std::string& db_path);

// For readers (reports, audits): OK unless `db`'s ledger is empty or another
// one than its marker names; then FailedPrecondition saying so.
absl::Status CheckLedgerContinuity(Database& db, const std::string& db_path);

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
