#ifndef FEDRAD_TOOLS_AUDIT_H_
#define FEDRAD_TOOLS_AUDIT_H_

// `fedrad audit verify` and `fedrad audit report`: what a privacy officer
// checks after the fact, from the ledgers alone (common/ledger.h) and the
// federation's CA — without trusting the coordinator or the node software.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/ledger.h"
#include "common/ledger_entries.h"

namespace fedrad::tools {

struct AuditedLedger {
  std::string path;
  std::string role;    // "node" or "coordinator"
  std::string writer;  // the site or coordinator its certificate names
  std::vector<LedgerEntry> entries;
  // Each entry's body, read once through its kind's schema
  // (common/ledger_entries.h); empty where it could not be read, which
  // `unreadable` then says.
  std::vector<std::optional<ledger::Body>> bodies;
  std::vector<LedgerProblem> problems;  // of the chain and signatures
  std::vector<std::string> unreadable;  // entries whose body could not be read, one line each

  // Entry i's body if it is a T.
  template <class T>
  const T* As(size_t i) const {
    return bodies[i] ? std::get_if<T>(&*bodies[i]) : nullptr;
  }
};

struct AuditVerification {
  std::vector<AuditedLedger> ledgers;
  // Every problem, one line each, naming the file, the entry's position
  // and kind: chain and signature problems first, then cross-checks.
  std::vector<std::string> problems;
  // Checks that could not be made (a site's ledger was not given, ...).
  std::vector<std::string> notes;
  int updates_cross_checked = 0;  // aggregated updates found in their site's ledger
  int models_cross_checked = 0;   // models a site used, found published
  int publications_verified = 0;  // coordinator signatures of models sites used, re-verified
  bool ok() const { return problems.empty(); }
};

// Reads each ledger (read-only), verifies its chain and signatures against
// `ca_pem`, and cross-checks node ledgers against the coordinator's:
//  - every update the coordinator aggregated from a site is one that site's
//    ledger records as sent (same round and SHA-256);
//  - the node-ledger head the coordinator recorded with each accepted update
//    is in that ledger (so a node ledger cut short or rewritten is found);
//  - every model a site joined a round with or received is one the
//    coordinator published;
//  - every update a site records as accepted is one the coordinator's
//    ledger records as accepted (so a coordinator ledger cut short is found);
//  - every model publication a site verified re-verifies with the
//    coordinator certificate its ledger recorded (no coordinator ledger
//    needed), and is one the coordinator's ledger records for that round.
// Errors only for files that cannot be read at all.
absl::StatusOr<AuditVerification> VerifyAudit(const std::vector<std::string>& node_dbs,
                                              const std::string& coordinator_db, const std::string& ca_pem);

// The steps of VerifyAudit after the files are read, for ledgers already in
// memory (and the fuzz target of the audit): one ledger's entries checked
// and their bodies decoded; then every ledger's problems, publications and
// cross-checks. The coordinator's ledger, if any, comes last.
AuditedLedger AuditEntries(const std::string& path, const std::string& role, std::vector<LedgerEntry> entries,
                           const std::string& ca_pem);
AuditVerification VerifyAudited(std::vector<AuditedLedger> ledgers, const std::string& ca_pem);

// The human-readable verdict: one line per ledger, then problems and notes.
std::string FormatVerification(const AuditVerification& v);

// The report's facts (also written as JSON): per site, its DP parameters
// and ε after each round, budget, data accesses, updates sent, models
// received; for the federation, the coordinator's rounds and aggregates.
std::string AuditReportJson(const AuditVerification& v);

// A self-contained HTML page (no external resources) of the same facts,
// with a chart of ε spent per site over rounds.
std::string AuditReportHtml(const AuditVerification& v);

}  // namespace fedrad::tools

#endif  // FEDRAD_TOOLS_AUDIT_H_
