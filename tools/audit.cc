#include "tools/audit.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/clock.h"
#include "common/model_publication.h"
#include "common/sqlite.h"
#include "crypto/pki.h"
#include "crypto/sha256.h"

namespace fedrad::tools {
namespace {

std::string Where(const std::string& path, const LedgerEntry& e, int64_t position) {
  return absl::StrCat(path, ": entry ", position, " (seq ", e.seq, ", ", absl::CEscape(e.kind), ")");
}

std::string Where(const AuditedLedger& l, const LedgerEntry& e, int64_t position) { return Where(l.path, e, position); }

}  // namespace

AuditedLedger AuditEntries(const std::string& path, const std::string& role, std::vector<LedgerEntry> entries,
                           const std::string& ca_pem) {
  AuditedLedger out;
  out.path = path;
  out.role = role;
  LedgerVerification v = VerifyLedger(entries, ca_pem);
  out.writer = v.writer;
  out.problems = std::move(v.problems);
  out.entries = std::move(entries);
  for (size_t i = 0; i < out.entries.size(); ++i) {
    const LedgerEntry& e = out.entries[i];
    absl::StatusOr<ledger::Body> body = ledger::DecodeBody(e.kind, e.body);
    if (body.ok()) {
      out.bodies.push_back(*std::move(body));
    } else {
      out.bodies.push_back(std::nullopt);
      out.unreadable.push_back(
          absl::StrCat(Where(path, e, static_cast<int64_t>(i) + 1), ": ", body.status().message()));
    }
  }
  return out;
}

namespace {

absl::StatusOr<AuditedLedger> ReadAudited(const std::string& path, const std::string& role, const std::string& ca_pem) {
  absl::StatusOr<std::unique_ptr<Database>> db = Database::OpenReadOnly(path);
  if (!db.ok()) return db.status();
  absl::StatusOr<std::vector<SqlRow>> has =
      (*db)->Query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger'");
  if (!has.ok()) return has.status();
  if (has->empty()) {
    return absl::FailedPreconditionError(absl::StrCat(path, " has no audit ledger: it is not a fedrad ",
                                                      role == "node" ? "node.db" : "state.db",
                                                      ", or comes from a version before ledgers"));
  }
  absl::StatusOr<std::vector<LedgerEntry>> entries = ReadLedger(**db);
  if (!entries.ok()) return entries.status();
  return AuditEntries(path, role, std::move(*entries), ca_pem);
}

// Every model publication a node's ledger records as verified is re-checked
// here, without the coordinator: its signature must verify with the
// coordinator certificate the ledger recorded before it, and that
// certificate must come from the federation's CA.
void CheckPublications(AuditVerification& v, const std::string& ca_pem) {
  for (const AuditedLedger& l : v.ledgers) {
    if (l.role != "node") continue;
    std::map<std::string, std::string> certificates;  // sha256 -> PEM, as recorded so far
    for (size_t i = 0; i < l.entries.size(); ++i) {
      const LedgerEntry& e = l.entries[i];
      const std::string where = Where(l, e, static_cast<int64_t>(i) + 1);
      if (const auto* c = l.As<ledger::CoordinatorCertificate>(i)) {
        if (crypto::Sha256Hex(c->certificate) != c->sha256) {
          v.problems.push_back(absl::StrCat(where, ": the certificate does not match its recorded SHA-256"));
        } else if (absl::Status chain = crypto::VerifyCertificateChain(
                       c->certificate, ca_pem, "the coordinator's certificate", /*at_any_time=*/true);
                   !chain.ok()) {
          v.problems.push_back(absl::StrCat(where, ": ", chain.message()));
        } else {
          certificates[c->sha256] = c->certificate;
        }
      } else if (const auto* m = l.As<ledger::ModelVerified>(i)) {
        auto cert = certificates.find(m->coordinator_certificate_sha256);
        const std::optional<std::string> signature = crypto::HexDecode(m->signature);
        const bool hex = signature.has_value();
        if (cert == certificates.end()) {
          v.problems.push_back(absl::StrCat(where, ": names a coordinator certificate the ledger does not hold"));
        } else if (absl::Status ok =
                       VerifyModelPublication(cert->second, {m->federation, static_cast<int>(m->round), m->sha256},
                                              signature.value_or(std::string()));
                   !ok.ok() || !hex) {
          v.problems.push_back(absl::StrCat(where, ": the publication it records does not verify: ",
                                            hex ? ok.message() : "the signature is not hex"));
        } else {
          ++v.publications_verified;
        }
      }
    }
  }
}

// What a ledger is, beyond its chain: not empty (a database created anew,
// or one whose ledger was lost, proves nothing), of the role it was given
// as (a state.db given as --node, or the reverse, is named, not read as the
// other), and without restarts (a ledger started over where one was lost
// holds none of what that one recorded).
void CheckLedgerShape(AuditVerification& v, const AuditedLedger& l) {
  if (l.entries.empty()) {
    v.problems.push_back(absl::StrCat(l.path,
                                      ": the ledger is empty: a database created anew, or one whose ledger "
                                      "was lost, holds nothing to verify"));
    return;
  }
  const ledger::EntryWriter own = l.role == "node" ? ledger::EntryWriter::kNode : ledger::EntryWriter::kCoordinator;
  for (size_t i = 0; i < l.entries.size(); ++i) {
    if (!l.bodies[i]) continue;
    const ledger::EntryWriter writer = ledger::WriterOf(*l.bodies[i]);
    if (writer != ledger::EntryWriter::kEither && writer != own) {
      v.problems.push_back(absl::StrCat(Where(l, l.entries[i], static_cast<int64_t>(i) + 1), ": given as the ", l.role,
                                        "'s ledger, but this is an entry of the ",
                                        l.role == "node" ? "coordinator's" : "node's",
                                        " ledger: were --node and --coordinator swapped?"));
      break;
    }
  }
  for (size_t i = 0; i < l.entries.size(); ++i) {
    const auto* r = l.As<ledger::LedgerRestarted>(i);
    if (r == nullptr) continue;
    v.problems.push_back(absl::StrCat(
        Where(l, l.entries[i], static_cast<int64_t>(i) + 1), ": the ledger started over here, ",
        UtcTime(l.entries[i].at_ms), ", in place of ledger ", absl::CEscape(r->previous_first_sha256.substr(0, 12)),
        r->previous_started_at_ms > 0 ? absl::StrCat(" (started ", UtcTime(r->previous_started_at_ms), ")") : "",
        ", lost; the operator said: \"", absl::CEscape(r->reason),
        "\". What that ledger recorded (for a site, the privacy it spent) is not in this one"));
  }
}

struct NodeIndex {
  const AuditedLedger* ledger = nullptr;
  std::set<std::pair<int64_t, std::string>> sent;                      // (round, update sha256)
  std::map<std::pair<int64_t, int64_t>, std::string> sent_by_attempt;  // (round, attempt) -> sha256
};

void CrossCheck(AuditVerification& v) {
  const AuditedLedger* coordinator = nullptr;
  std::map<std::string, NodeIndex> nodes;  // by site
  for (const AuditedLedger& l : v.ledgers) {
    if (l.role == "coordinator") {
      coordinator = &l;
      continue;
    }
    if (l.writer.empty()) continue;  // its certificate did not verify: nothing to pin it to
    if (nodes.count(l.writer)) {
      v.problems.push_back(absl::StrCat(l.path, ": a second ledger of site '", l.writer, "' (the first is ",
                                        nodes[l.writer].ledger->path, ")"));
      continue;
    }
    NodeIndex& n = nodes[l.writer];
    n.ledger = &l;
    for (size_t i = 0; i < l.entries.size(); ++i) {
      const auto* sent = l.As<ledger::UpdateSent>(i);
      if (sent == nullptr) continue;
      n.sent.insert({sent->round, sent->update_sha256});
      n.sent_by_attempt[{sent->round, sent->attempt}] = sent->update_sha256;
    }
  }
  if (coordinator == nullptr) {
    v.notes.push_back("no coordinator ledger given: updates and models were not cross-checked");
    return;
  }
  std::set<std::string> published;
  std::set<std::pair<int64_t, std::string>> published_as;                     // (round, sha256)
  std::set<std::tuple<int64_t, int64_t, std::string, std::string>> accepted;  // round, attempt, site, sha
  std::map<std::string, int> unchecked;  // aggregated updates of sites whose ledger was not given
  for (size_t i = 0; i < coordinator->entries.size(); ++i) {
    const LedgerEntry& e = coordinator->entries[i];
    const std::string where = Where(*coordinator, e, static_cast<int64_t>(i) + 1);
    if (const auto* p = coordinator->As<ledger::ModelPublished>(i)) {
      published.insert(p->sha256);
      published_as.insert({p->round, p->sha256});
    } else if (const auto* a = coordinator->As<ledger::Aggregate>(i)) {
      for (const ledger::AggregateInput& u : a->updates) {
        auto n = nodes.find(u.site);
        if (n == nodes.end()) {
          ++unchecked[u.site];
          continue;
        }
        if (n->second.sent.count({a->round, u.update_sha256})) {
          ++v.updates_cross_checked;
        } else {
          v.problems.push_back(absl::StrCat(where, ": the round ", a->round, " aggregate includes an update of ",
                                            u.site, " (sha256 ", u.update_sha256.substr(0, 12), ") that ", u.site,
                                            "'s ledger does not record as sent"));
        }
      }
    }
    const auto* accepted_update = coordinator->As<ledger::UpdateAccepted>(i);
    const auto* evaluation = coordinator->As<ledger::EvaluationReceived>(i);
    if (accepted_update != nullptr) {
      accepted.insert({accepted_update->round, accepted_update->attempt, accepted_update->site,
                       accepted_update->update_sha256.value_or("")});
    }
    // The node's ledger head it reported with an update or an evaluation:
    // that entry must be in its ledger, as the coordinator saw it.
    if (accepted_update == nullptr && evaluation == nullptr) continue;
    const bool update = accepted_update != nullptr;
    const std::string& site = update ? accepted_update->site : evaluation->site;
    const int64_t round = update ? accepted_update->round : evaluation->round;
    const int64_t seq = (update ? accepted_update->node_ledger_seq : evaluation->node_ledger_seq).value_or(0);
    const std::string head_sha =
        (update ? accepted_update->node_ledger_sha256 : evaluation->node_ledger_sha256).value_or("");
    auto n = nodes.find(site);
    if (n == nodes.end() || seq <= 0) continue;
    const char* what = update ? "update" : "evaluation report";
    const AuditedLedger& theirs = *n->second.ledger;
    auto at =
        std::find_if(theirs.entries.begin(), theirs.entries.end(), [&](const LedgerEntry& x) { return x.seq == seq; });
    if (at == theirs.entries.end()) {
      v.problems.push_back(
          absl::StrCat(theirs.path, ": the coordinator recorded this ledger's head at seq ", seq, " with the round ",
                       round, " ", what, " (", where, "), but the ledger ends at seq ",
                       theirs.entries.empty() ? 0 : theirs.entries.back().seq, ": entries were cut off its end"));
      continue;
    }
    const size_t index = static_cast<size_t>(at - theirs.entries.begin());
    const auto* sent = theirs.As<ledger::UpdateSent>(index);
    const auto* reported = theirs.As<ledger::EvaluationSent>(index);
    const bool same = at->sha256 == head_sha &&
                      (update ? sent != nullptr && sent->update_sha256 == accepted_update->update_sha256.value_or("")
                              : reported != nullptr && reported->model_sha256 == evaluation->model_sha256);
    if (!same) {
      v.problems.push_back(absl::StrCat(Where(theirs, *at, static_cast<int64_t>(index) + 1),
                                        ": is not the entry the coordinator recorded as this site's ledger head with "
                                        "its round ",
                                        round, " ", what, " (", where, "): the ledger was rewritten"));
    }
  }
  for (const auto& [site, count] : unchecked) {
    v.notes.push_back(absl::StrCat(count, " aggregated update(s) of ", site, " not cross-checked: ", site,
                                   "'s ledger was not given"));
  }
  for (const auto& [site, n] : nodes) {
    const AuditedLedger& l = *n.ledger;
    for (size_t i = 0; i < l.entries.size(); ++i) {
      const LedgerEntry& e = l.entries[i];
      const std::string where = Where(l, e, static_cast<int64_t>(i) + 1);
      std::string model;
      int64_t round = 0;
      if (const auto* j = l.As<ledger::RoundJoined>(i)) {
        model = j->model_sha256;
        round = j->round;
      } else if (const auto* r = l.As<ledger::ModelReceived>(i)) {
        model = r->sha256;
        round = r->round;
      }
      if (!model.empty()) {
        if (published.count(model)) {
          ++v.models_cross_checked;
        } else {
          v.problems.push_back(absl::StrCat(where, ": ", site, " used model ", model.substr(0, 12), " in round ", round,
                                            ", which the coordinator's ledger does not record as "
                                            "published"));
        }
      }
      // A publication the coordinator signed but did not record: it showed
      // this site a model that was not the round's global model.
      if (const auto* m = l.As<ledger::ModelVerified>(i); m != nullptr && !published_as.count({m->round, m->sha256})) {
        v.problems.push_back(absl::StrCat(where, ": the coordinator signed model ", m->sha256.substr(0, 12),
                                          " as round ", m->round, " for ", site,
                                          ", but its ledger does not record publishing it as that round"));
      }
      if (const auto* o = l.As<ledger::UpdateOutcome>(i); o != nullptr && o->outcome == "accepted") {
        auto sent = n.sent_by_attempt.find({o->round, o->attempt});
        const std::string sha = sent == n.sent_by_attempt.end() ? "" : sent->second;
        if (!accepted.count({o->round, o->attempt, site, sha})) {
          v.problems.push_back(absl::StrCat(where, ": ", site, " records its round ", o->round,
                                            " update as accepted, but the coordinator's ledger does not record "
                                            "accepting it: entries were removed from the coordinator's ledger"));
        }
      }
    }
  }
}

}  // namespace

absl::StatusOr<AuditVerification> VerifyAudit(const std::vector<std::string>& node_dbs,
                                              const std::string& coordinator_db, const std::string& ca_pem) {
  std::vector<AuditedLedger> ledgers;
  for (const std::string& path : node_dbs) {
    absl::StatusOr<AuditedLedger> l = ReadAudited(path, "node", ca_pem);
    if (!l.ok()) return l.status();
    ledgers.push_back(std::move(*l));
  }
  if (!coordinator_db.empty()) {
    absl::StatusOr<AuditedLedger> l = ReadAudited(coordinator_db, "coordinator", ca_pem);
    if (!l.ok()) return l.status();
    ledgers.push_back(std::move(*l));
  }
  return VerifyAudited(std::move(ledgers), ca_pem);
}

AuditVerification VerifyAudited(std::vector<AuditedLedger> ledgers, const std::string& ca_pem) {
  AuditVerification v;
  v.ledgers = std::move(ledgers);
  for (const AuditedLedger& l : v.ledgers) {
    for (const LedgerProblem& p : l.problems) v.problems.push_back(absl::StrCat(l.path, ": ", p.ToString()));
    // An entry whose body its kind cannot read is a problem of its own: the
    // cross-checks below cannot see what it says.
    for (const std::string& p : l.unreadable) v.problems.push_back(p);
    CheckLedgerShape(v, l);
  }
  CheckPublications(v, ca_pem);
  CrossCheck(v);
  return v;
}

std::string FormatVerification(const AuditVerification& v) {
  std::string out;
  for (const AuditedLedger& l : v.ledgers) {
    absl::StrAppend(&out, l.problems.empty() ? "intact  " : "BROKEN  ", l.role, " ledger ", l.path, " (",
                    l.writer.empty() ? "writer unknown" : l.writer, "): ", l.entries.size(), " entries",
                    l.problems.empty() ? "" : absl::StrCat(", ", l.problems.size(), " problem(s)"), "\n");
  }
  absl::StrAppend(&out, "cross-checked: ", v.updates_cross_checked,
                  " aggregated update(s) found in their site's "
                  "ledger, ",
                  v.models_cross_checked, " model use(s) found published\n");
  absl::StrAppend(&out, "model publications: ", v.publications_verified,
                  " signature(s) of the coordinator verified from the sites' ledgers\n");
  // A ledger checked against the wrong CA fails every entry: the first
  // problems say why, the rest only how many (the report lists them all).
  constexpr size_t kShown = 100;
  for (size_t i = 0; i < v.problems.size() && i < kShown; ++i) absl::StrAppend(&out, "problem: ", v.problems[i], "\n");
  if (v.problems.size() > kShown) {
    absl::StrAppend(&out, "... and ", v.problems.size() - kShown,
                    " more problem(s); `fedrad audit report` lists "
                    "them all\n");
  }
  for (const std::string& n : v.notes) absl::StrAppend(&out, "note: ", n, "\n");
  absl::StrAppend(&out, v.ok() ? "PASS: every ledger is intact and consistent with the others\n"
                               : absl::StrCat("FAIL: ", v.problems.size(), " problem(s)\n"));
  return out;
}

}  // namespace fedrad::tools
