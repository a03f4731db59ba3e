// Privacy audits end to end: a real federation writes its ledgers;
// `fedrad audit verify` passes them, and finds each kind of tampering in
// either ledger (an edit, a deletion, an insertion, a reordering, the end cut
// off), naming the file, the entry's position and its kind. `fedrad audit
// report` writes a page that headless Chromium renders, with the chart drawn
// and the numbers of the ledgers.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/ledger.h"
#include "common/privacy_accountant.h"
#include "crypto/pki.h"
#include "crypto/sha256.h"
#include "tests/harness.h"

namespace fedrad::testing {
namespace {

struct Verdict {
  int exit_code = -1;
  std::string output;
};

Verdict Verify(const MiniFederation& f, const std::vector<std::string>& node_dbs, const std::string& state_db,
               const std::string& name) {
  std::vector<std::string> argv = {FedradBin(), "audit", "verify", "--ca", f.dir + "/kits/coordinator/ca.pem"};
  for (const std::string& db : node_dbs) {
    argv.push_back("--node");
    argv.push_back(db);
  }
  if (!state_db.empty()) {
    argv.push_back("--coordinator");
    argv.push_back(state_db);
  }
  const std::string log = f.dir + "/" + name + ".log";
  Verdict v;
  v.exit_code = RunCommand(argv, log);
  v.output = ReadText(log);
  return v;
}

// A consistent copy of a ledger's database (VACUUM INTO), changed by `sql` as
// someone with write access to the file would (the append-only triggers dropped).
std::string TamperedCopy(const std::string& db, const std::string& out, const std::string& sql) {
  std::filesystem::remove(out);
  {
    auto source = Database::Open(db);
    EXPECT_TRUE(source.ok());
    EXPECT_TRUE((*source)->ExecScript("VACUUM INTO '" + out + "'").ok());
  }
  auto copy = Database::Open(out);
  EXPECT_TRUE(copy.ok());
  absl::Status s = (*copy)->ExecScript("DROP TRIGGER ledger_no_update; DROP TRIGGER ledger_no_delete; " + sql);
  EXPECT_TRUE(s.ok()) << s << "\n" << sql;
  return out;
}

// A copy with an entry of `kind` inserted after `after_seq` (the entries
// after it renumbered), linked to the entry before it and validly signed
// with `key_file` — someone else's key.
std::string InsertedCopy(const std::string& db, const std::string& out, int64_t after_seq, const std::string& kind,
                         const std::string& body, const std::string& key_file) {
  const std::string prev = AsText(QueryDb(db, absl::StrCat("SELECT sha256 FROM ledger WHERE seq = ", after_seq))[0][0]);
  const std::string digest = LedgerEntryDigest(after_seq + 1, 5, kind, body, prev);
  absl::StatusOr<std::string> sig = crypto::SignSha256(ReadText(key_file), digest);
  EXPECT_TRUE(sig.ok()) << sig.status();
  return TamperedCopy(db, out,
                      absl::StrCat("UPDATE ledger SET seq = seq + 100000 WHERE seq > ", after_seq,
                                   "; UPDATE ledger SET seq = seq - 99999 WHERE seq > 100000; INSERT INTO ledger "
                                   "VALUES(",
                                   after_seq + 1, ", 5, '", kind, "', '", body, "', '", prev, "', '", digest, "', '",
                                   crypto::HexEncode(sig.value_or("")), "');"));
}

// A copy with an entry of `kind` appended, linked and validly signed with
// `key_file`: what the ledger's own writer can always do.
std::string AppendedCopy(const std::string& db, const std::string& out, const std::string& kind,
                         const std::string& body, const std::string& key_file) {
  const SqlRow last = QueryDb(db, "SELECT seq, sha256 FROM ledger ORDER BY seq DESC LIMIT 1")[0];
  const int64_t seq = AsInt(last[0]) + 1;
  const std::string digest = LedgerEntryDigest(seq, 5, kind, body, AsText(last[1]));
  absl::StatusOr<std::string> sig = crypto::SignSha256(ReadText(key_file), digest);
  EXPECT_TRUE(sig.ok()) << sig.status();
  TamperedCopy(db, out, "SELECT 1;");
  auto copy = Database::Open(out);
  EXPECT_TRUE(copy.ok());
  absl::Status s = (*copy)->Execute("INSERT INTO ledger VALUES(?1, 5, ?2, ?3, ?4, ?5, ?6)",
                                    {seq, kind, body, AsText(last[1]), digest, crypto::HexEncode(sig.value_or(""))});
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

// A copy with entries `a` and `b` swapped, each keeping its place's seq.
std::string SwappedCopy(const std::string& db, const std::string& out, int64_t a, int64_t b) {
  return TamperedCopy(db, out,
                      absl::StrCat("UPDATE ledger SET seq = -1 WHERE seq = ", a, "; UPDATE ledger SET seq = ", a,
                                   " WHERE seq = ", b, "; UPDATE ledger SET seq = ", b, " WHERE seq = -1;"));
}

// The seq of the n-th (from 1) entry of `kind`, or of the last one if n = -1.
int64_t SeqOf(const std::string& db, const std::string& kind, int n = 1) {
  std::vector<SqlRow> rows = QueryDb(db, "SELECT seq FROM ledger WHERE kind = '" + kind + "' ORDER BY seq");
  EXPECT_FALSE(rows.empty()) << "no " << kind << " in " << db;
  if (rows.empty()) return 0;
  if (n < 0) return AsInt(rows.back()[0]);
  EXPECT_GE(static_cast<int>(rows.size()), n);
  return AsInt(rows[std::min<size_t>(n, rows.size()) - 1][0]);
}

// "entry P (seq S, KIND): ..." in the verdict, for the copy at `path`.
void ExpectNamed(const Verdict& v, const std::string& path, int64_t position, const std::string& kind,
                 const std::string& what) {
  EXPECT_EQ(v.exit_code, 1) << v.output;
  const std::string needle = absl::StrCat(path, ": entry ", position, " (seq ");
  size_t at = v.output.find(needle);
  ASSERT_NE(at, std::string::npos) << "expected " << needle << " in\n" << v.output;
  const std::string line = v.output.substr(at, v.output.find('\n', at) - at);
  if (!kind.empty()) {
    EXPECT_NE(line.find(", " + kind + "):"), std::string::npos) << line;
  }
  EXPECT_NE(v.output.find(what), std::string::npos) << "expected '" << what << "' in\n" << v.output;
  EXPECT_NE(v.output.find("FAIL:"), std::string::npos);
}

class AuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeWorkspace();
    f_ = SetUpFederation(dir_,
                         {.sites = 2, .rounds = 3, .min_nodes = 2, .patients = 8, .images = 2, .start_grace_s = 1});
    ASSERT_FALSE(HasFailure());
    // The second site aims lower, so the chart's lines differ.
    ReplaceInFile(f_.NodeConfig(f_.sites[1]), "target_epsilon = 2.7", "target_epsilon = 1.5");
    RunFederationToCompletion(f_, std::chrono::minutes(4));
    ASSERT_FALSE(HasFailure());
    for (const std::string& site : f_.sites) nodes_.push_back(f_.NodeDb(site));
  }
  void TearDown() override { RemoveWorkspaceIfPassed(dir_); }

  std::string dir_;
  MiniFederation f_;
  std::vector<std::string> nodes_;
};

TEST_F(AuditTest, ACleanFederationVerifiesAndEveryKindOfTamperingInEitherLedgerIsNamed) {
  const Verdict clean = Verify(f_, nodes_, f_.StateDb(), "clean");
  ASSERT_EQ(clean.exit_code, 0) << clean.output;
  // 2 sites x 3 rounds of updates, each found in its site's ledger.
  EXPECT_NE(clean.output.find("cross-checked: 6 aggregated update(s) found in their site's ledger"), std::string::npos)
      << clean.output;
  // Each site checked the coordinator's signature of the models of rounds
  // 0..3 (trained on 0-2, evaluated 1-3), and each re-verifies here.
  EXPECT_NE(clean.output.find("model publications: 8 signature(s) of the coordinator verified"), std::string::npos)
      << clean.output;
  EXPECT_NE(clean.output.find("PASS"), std::string::npos);
  EXPECT_NE(clean.output.find("(" + f_.sites[0] + ")"), std::string::npos);
  EXPECT_NE(clean.output.find("(coordinator)"), std::string::npos) << clean.output;
  // Every kind the issue names is there.
  for (const char* kind : {"config", "data_access", "round_joined", "model_received", "dp_charge", "update_sent",
                           "update_outcome", "evaluation_sent", "coordinator_certificate", "model_verified"}) {
    EXPECT_GT(SeqOf(nodes_[0], kind), 0) << kind;
  }
  for (const char* kind :
       {"round_opened", "update_accepted", "aggregate", "model_published", "round_closed", "evaluation_received"}) {
    EXPECT_GT(SeqOf(f_.StateDb(), kind), 0) << kind;
  }
  // The data access names counts and a hash, never a UID.
  const std::string access = AsText(QueryDb(nodes_[0], "SELECT body FROM ledger WHERE kind = 'data_access'")[0][0]);
  EXPECT_TRUE(std::regex_search(access, std::regex("\"sop_instance_uids_sha256\":\"[0-9a-f]{64}\""))) << access;
  EXPECT_EQ(access.find("1.2."), std::string::npos) << access;

  const std::string t = dir_ + "/tampered";
  std::filesystem::create_directories(t);
  const std::string node = nodes_[0], state = f_.StateDb(), other = nodes_[1];

  {  // Node: ε lowered in a charge.
    const int64_t seq = SeqOf(node, "dp_charge", 2);
    const std::string copy =
        TamperedCopy(node, t + "/edit-node.db",
                     absl::StrCat("UPDATE ledger SET body = json_set(body, '$.epsilon_after', 0.01) "
                                  "WHERE seq = ",
                                  seq));
    ExpectNamed(Verify(f_, {copy, other}, state, "edit-node"), copy, seq, "dp_charge", "it was edited");
  }
  {  // Node: a data access deleted.
    const int64_t seq = SeqOf(node, "data_access", 2);
    const std::string copy =
        TamperedCopy(node, t + "/delete-node.db", absl::StrCat("DELETE FROM ledger WHERE seq = ", seq));
    ExpectNamed(Verify(f_, {copy, other}, state, "delete-node"), copy, seq, "",
                absl::StrCat("jumps from ", seq - 1, " to ", seq + 1, ": 1 entry deleted"));
  }
  {  // Node: an update_sent inserted, signed by another site's valid key.
    const int64_t seq = SeqOf(node, "round_joined", 2);
    const std::string copy = InsertedCopy(node, t + "/insert-node.db", seq, "update_sent",
                                          "{\"round\":2,\"update_sha256\":\"" + std::string(64, 'e') + "\"}",
                                          dir_ + "/kits/" + f_.sites[1] + "/site.key");
    ExpectNamed(Verify(f_, {copy, other}, state, "insert-node"), copy, seq + 1, "update_sent",
                "signature does not verify");
  }
  {  // Node: entries the site signed itself whose bodies cannot be read as
     // their kind says (a site writes its own ledger with its own key).
     // Each is a named problem of verify, and the report still renders.
    const std::string key = dir_ + "/kits/" + f_.sites[0] + "/site.key";
    struct Hostile {
      std::string name, kind, body, problem;
    };
    const std::vector<Hostile> hostile = {
        {"string-round", "update_sent", R"({"round":"2","attempt":1})", "field 'round' is not an integer"},
        {"bool-suppressed", "evaluation_sent", R"({"round":1,"model_sha256":"a","suppressed":"yes"})",
         "field 'suppressed' is not true or false"},
        {"deep", "model_received", std::string(200000, '[') + std::string(200000, ']'),
         "nested more than 16 levels deep"},
        {"ff-kind", "\xff", "{}", "unknown kind '\\377'"},
    };
    for (const Hostile& h : hostile) {
      const std::string copy = AppendedCopy(node, t + "/" + h.name + "-node.db", h.kind, h.body, key);
      const Verdict v = Verify(f_, {copy, other}, state, h.name);
      EXPECT_EQ(v.exit_code, 1) << h.name << "\n" << v.output;
      EXPECT_NE(v.output.find(h.problem), std::string::npos) << h.name << "\n" << v.output;
      EXPECT_NE(v.output.find("intact  node ledger " + copy), std::string::npos) << "the chain itself holds";
      const std::string log = t + "/" + h.name + "-report.log";
      EXPECT_EQ(RunCommand({FedradBin(), "audit", "report", "--ca", dir_ + "/kits/coordinator/ca.pem", "--node", copy,
                            "--node", other, "--coordinator", state, "--out", t + "/" + h.name + ".html", "--json",
                            t + "/" + h.name + ".json"},
                           log),
                1)
          << h.name << "\n"
          << ReadText(log);
      EXPECT_NE(ReadText(t + "/" + h.name + ".json").find(h.problem.substr(0, 12)), std::string::npos) << h.name;
    }
  }
  {  // Node: two entries swapped.
    const int64_t a = SeqOf(node, "update_sent", 1), b = SeqOf(node, "model_received", 2);
    const std::string copy = SwappedCopy(node, t + "/reorder-node.db", a, b);
    ExpectNamed(Verify(f_, {copy, other}, state, "reorder-node"), copy, std::min(a, b), "",
                "does not link to the entry before it");
  }
  {  // Node: its last round cut off the end. The chain alone still holds;
     // the head the coordinator recorded with the last update does not.
    const int64_t seq = SeqOf(node, "update_sent", -1);
    const std::string copy =
        TamperedCopy(node, t + "/truncate-node.db", absl::StrCat("DELETE FROM ledger WHERE seq >= ", seq));
    const Verdict v = Verify(f_, {copy, other}, state, "truncate-node");
    EXPECT_EQ(v.exit_code, 1) << v.output;
    EXPECT_NE(v.output.find(absl::StrCat(copy, ": the coordinator recorded this ledger's head at seq ", seq)),
              std::string::npos)
        << v.output;
    EXPECT_NE(v.output.find("entries were cut off its end"), std::string::npos) << v.output;
    EXPECT_NE(v.output.find("does not record as sent"), std::string::npos) << v.output;
  }
  {  // Node: only its last evaluation report cut off. The coordinator kept the
     // head the node reported with it.
    const int64_t seq = SeqOf(node, "evaluation_sent", -1);
    ASSERT_EQ(seq, AsInt(QueryDb(node, "SELECT MAX(seq) FROM ledger")[0][0]));
    const std::string copy =
        TamperedCopy(node, t + "/truncate-eval-node.db", absl::StrCat("DELETE FROM ledger WHERE seq >= ", seq));
    const Verdict v = Verify(f_, {copy, other}, state, "truncate-eval-node");
    EXPECT_EQ(v.exit_code, 1) << v.output;
    EXPECT_NE(v.output.find(absl::StrCat(copy, ": the coordinator recorded this ledger's head at seq ", seq,
                                         " with the round 3 evaluation report")),
              std::string::npos)
        << v.output;
  }
  {  // Coordinator: an aggregate's inputs edited.
    const int64_t seq = SeqOf(state, "aggregate", 2);
    const std::string copy = TamperedCopy(
        state, t + "/edit-state.db",
        absl::StrCat("UPDATE ledger SET body = replace(body, '", f_.sites[1], "', 'site-z') WHERE seq = ", seq));
    ExpectNamed(Verify(f_, nodes_, copy, "edit-state"), copy, seq, "aggregate", "it was edited");
  }
  {  // Coordinator: a round's opening deleted.
    const int64_t seq = SeqOf(state, "round_opened", 2);
    const std::string copy =
        TamperedCopy(state, t + "/delete-state.db", absl::StrCat("DELETE FROM ledger WHERE seq = ", seq));
    ExpectNamed(Verify(f_, nodes_, copy, "delete-state"), copy, seq, "", "1 entry deleted");
  }
  {  // Coordinator: a model publication inserted, signed by a site's key.
    const int64_t seq = SeqOf(state, "model_published", 2);
    const std::string copy = InsertedCopy(state, t + "/insert-state.db", seq, "model_published",
                                          "{\"round\":9,\"sha256\":\"" + std::string(64, 'f') + "\"}",
                                          dir_ + "/kits/" + f_.sites[0] + "/site.key");
    ExpectNamed(Verify(f_, nodes_, copy, "insert-state"), copy, seq + 1, "model_published",
                "signature does not verify");
  }
  {  // Coordinator: two entries swapped.
    const int64_t a = SeqOf(state, "round_opened", 2), b = SeqOf(state, "round_closed", 2);
    const std::string copy = SwappedCopy(state, t + "/reorder-state.db", a, b);
    ExpectNamed(Verify(f_, nodes_, copy, "reorder-state"), copy, a, "round_closed",
                "does not link to the entry before it");
  }
  {  // Coordinator: the last round cut off. Its chain still holds; the sites'
     // ledgers, which record the model they received and the accepted
     // update, no longer match it.
    const int64_t seq = SeqOf(state, "round_opened", -1);
    const std::string copy =
        TamperedCopy(state, t + "/truncate-state.db", absl::StrCat("DELETE FROM ledger WHERE seq >= ", seq));
    const Verdict v = Verify(f_, nodes_, copy, "truncate-state");
    EXPECT_EQ(v.exit_code, 1) << v.output;
    EXPECT_NE(v.output.find("but the coordinator's ledger does not record accepting it"), std::string::npos)
        << v.output;
  }
  {  // Files that are not ledgers: named, exit 2, nothing else read.
    WriteText(t + "/not-a-db.db", "hello\n");
    std::string log = t + "/not-a-db.log";
    EXPECT_EQ(RunCommand({FedradBin(), "audit", "verify", "--ca", dir_ + "/kits/coordinator/ca.pem", "--node",
                          t + "/not-a-db.db"},
                         log),
              2);
    EXPECT_NE(ReadText(log).find(t + "/not-a-db.db' is not a readable SQLite database"), std::string::npos)
        << ReadText(log);
    ASSERT_TRUE(Database::Open(t + "/plain.db").ok());
    log = t + "/plain.log";
    EXPECT_EQ(RunCommand({FedradBin(), "audit", "verify", "--ca", dir_ + "/kits/coordinator/ca.pem", "--coordinator",
                          t + "/plain.db"},
                         log),
              2);
    EXPECT_NE(ReadText(log).find(t + "/plain.db has no audit ledger"), std::string::npos) << ReadText(log);
  }
  {  // Ledgers given as the wrong role, and an empty one: named, not read as
     // the other (issue 18, defect 8).
    const Verdict swapped = Verify(f_, {state}, node, "swapped");
    EXPECT_EQ(swapped.exit_code, 1) << swapped.output;
    EXPECT_NE(swapped.output.find(state + ": entry "), std::string::npos) << swapped.output;
    EXPECT_NE(swapped.output.find("given as the node's ledger, but this is an entry of the coordinator's ledger: were "
                                  "--node and --coordinator swapped?"),
              std::string::npos)
        << swapped.output;
    EXPECT_NE(swapped.output.find("given as the coordinator's ledger, but this is an entry of the node's ledger"),
              std::string::npos)
        << swapped.output;
    const std::string empty = TamperedCopy(node, t + "/empty-node.db", "DELETE FROM ledger;");
    const Verdict none = Verify(f_, {empty, other}, state, "empty");
    EXPECT_EQ(none.exit_code, 1) << none.output;
    EXPECT_NE(none.output.find(empty + ": the ledger is empty"), std::string::npos) << none.output;
  }
  {  // A ledger verified against another federation's CA: no writer is trusted.
    auto ca = crypto::CertificateAuthority::Create("another federation", 30);
    ASSERT_TRUE(ca.ok());
    WriteText(t + "/other-ca.pem", (*ca)->certificate_pem());
    const std::string log = t + "/other-ca.log";
    EXPECT_EQ(RunCommand({FedradBin(), "audit", "verify", "--ca", t + "/other-ca.pem", "--node", node}, log), 1);
    EXPECT_NE(ReadText(log).find("was not issued by the federation's CA"), std::string::npos) << ReadText(log);
  }
}

// A ledger whose database was lost (issue 18, defect 7: a 0-byte node.db
// once reset the site's privacy ledger to epsilon 0, and `audit verify`
// passed it; a 0-byte state.db beside models/ started a new federation at
// round 0) is refused by every command that would write or report it, until
// the operator says what happened; the new ledger records that account, and
// the audit names the gap in verify and in the report.
TEST_F(AuditTest, ALostLedgerIsRefusedUntilTheOperatorSaysWhatHappenedAndTheAuditShowsTheGap) {
  const std::string site = f_.sites[0], db = nodes_[0];
  const std::string first = AsText(QueryDb(db, "SELECT sha256 FROM ledger WHERE seq = 1")[0][0]);
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(db + suffix);
  WriteText(db, "");  // 0 bytes, as a failed disk or a careless restore leaves it
  const std::string refused_log = dir_ + "/lost-run.log";
  EXPECT_EQ(RunCommand({NodeBin(), "run", "--config", f_.NodeConfig(site)}, refused_log, std::chrono::seconds(30)), 1);
  const std::string refused = ReadText(refused_log);
  EXPECT_NE(refused.find(absl::StrCat("'", db, "' holds no ledger, but this state directory held one (ledger ",
                                      first.substr(0, 12), ", started ")),
            std::string::npos)
      << refused;
  EXPECT_NE(refused.find("named by '" + db + ".origin'"), std::string::npos) << refused;
  EXPECT_NE(refused.find("start once with fedrad-node run --ledger-lost \"<what happened>\""), std::string::npos)
      << refused;
  EXPECT_EQ(AsInt(QueryDb(db, "SELECT COUNT(*) FROM ledger")[0][0]), 0) << "nothing was written";
  const std::string privacy_log = dir_ + "/lost-privacy.log";
  EXPECT_NE(RunCommand({NodeBin(), "privacy", "--config", f_.NodeConfig(site)}, privacy_log), 0);
  EXPECT_NE(ReadText(privacy_log).find("holds no ledger, but this state directory held one"), std::string::npos)
      << ReadText(privacy_log);
  EXPECT_EQ(ReadText(privacy_log).find("epsilon spent: 0.0000"), std::string::npos) << ReadText(privacy_log);

  {  // The operator's account starts a new ledger (the federation is over:
     // the node opens its ledger, then retries the coordinator until stopped).
    Process node(
        {NodeBin(), "run", "--config", f_.NodeConfig(site), "--ledger-lost", "the disk failed; no backup (ticket 42)"},
        dir_ + "/lost-restart.log");
    ASSERT_TRUE(WaitForRow(db, "SELECT 1 FROM ledger WHERE seq = 2 AND kind = 'ledger_restarted'",
                           std::chrono::seconds(30), &node))
        << node.Log();
    // The marker is rewritten just after the new ledger commits (a stop in
    // between is covered: the new ledger names the one it replaced).
    for (int i = 0; i < 100 && ReadText(db + ".origin").find(first) != std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  const std::string body = AsText(QueryDb(db, "SELECT body FROM ledger WHERE kind = 'ledger_restarted'")[0][0]);
  EXPECT_NE(body.find("\"previous_first_sha256\":\"" + first + "\""), std::string::npos) << body;
  EXPECT_NE(body.find("ticket 42"), std::string::npos) << body;
  EXPECT_EQ(ReadText(db + ".origin").find(first), std::string::npos) << "the marker names the new ledger";

  const Verdict v = Verify(f_, nodes_, f_.StateDb(), "lost");
  EXPECT_EQ(v.exit_code, 1) << v.output;
  EXPECT_NE(v.output.find(db + ": entry 2 (seq 2, ledger_restarted): the ledger started over here, "),
            std::string::npos)
      << v.output;
  EXPECT_NE(v.output.find(absl::StrCat("in place of ledger ", first.substr(0, 12), " (started ")), std::string::npos)
      << v.output;
  EXPECT_NE(v.output.find("the operator said: \"the disk failed; no backup (ticket 42)\". What that ledger recorded "
                          "(for a site, the privacy it spent) is not in this one"),
            std::string::npos)
      << v.output;
  const std::string json = dir_ + "/lost.json";
  EXPECT_EQ(
      RunCommand({FedradBin(), "audit", "report", "--ca", f_.dir + "/kits/coordinator/ca.pem", "--node", db, "--node",
                  nodes_[1], "--coordinator", f_.StateDb(), "--out", dir_ + "/lost.html", "--json", json},
                 dir_ + "/lost-report.log"),
      1);
  const nlohmann::json report = nlohmann::json::parse(ReadText(json));
  const nlohmann::json& restarts = report["verification"]["ledgers"][0]["restarts"];
  ASSERT_EQ(restarts.size(), 1u) << report["verification"].dump();
  EXPECT_EQ(restarts[0]["previous_first_sha256"], first);
  EXPECT_EQ(restarts[0]["reason"], "the disk failed; no backup (ticket 42)");

  // The coordinator's state.db lost beside its models: refused, not a new
  // federation at round 0.
  const std::string state = f_.StateDb();
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(state + suffix);
  WriteText(state, "");
  const std::string serve_log = dir_ + "/lost-serve.log";
  EXPECT_EQ(
      RunCommand({CoordinatorBin(), "serve", "--config", f_.CoordinatorConfig()}, serve_log, std::chrono::seconds(30)),
      1);
  EXPECT_NE(ReadText(serve_log).find(absl::StrCat("'", state, "' holds no ledger, but this state directory held one")),
            std::string::npos)
      << ReadText(serve_log);
  EXPECT_NE(ReadText(serve_log).find("fedrad-coordinator serve --ledger-lost"), std::string::npos)
      << ReadText(serve_log);
  EXPECT_EQ(AsInt(QueryDb(state, "SELECT COUNT(*) FROM ledger")[0][0]), 0);
}

TEST_F(AuditTest, TheReportRendersInChromiumWithTheChartDrawnAndTheLedgersNumbers) {
  const std::string html = dir_ + "/report.html", json = dir_ + "/report.json";
  const std::string log = dir_ + "/report.log";
  // A site writes its own ledger: a string of its that opens an HTML comment
  // and a script ("<!--<script>") must not stop the chart's script (issue
  // 18, defect 8), nor one that closes the element.
  const std::string hostile = AppendedCopy(
      nodes_[0], dir_ + "/hostile-node.db", "data_access",
      R"({"purpose":"<!--<script>","round":0,"images":1,"patients":1,"sop_instance_uids_sha256":"</script>"})",
      dir_ + "/kits/" + f_.sites[0] + "/site.key");
  ASSERT_EQ(RunCommand({FedradBin(), "audit", "report", "--ca", f_.dir + "/kits/coordinator/ca.pem", "--node", hostile,
                        "--node", nodes_[1], "--coordinator", f_.StateDb(), "--out", html, "--json", json},
                       log),
            0)
      << ReadText(log);
  const std::string dom_log = dir_ + "/dom.log";
  // --dump-dom prints the document after its scripts ran.
  const std::vector<std::string> chromium = {"/usr/bin/chromium", "--headless",        "--no-sandbox",
                                             "--disable-gpu",     "--hide-scrollbars", "--window-size=1280,2400"};
  std::vector<std::string> dump = chromium;
  dump.push_back("--dump-dom");
  dump.push_back("file://" + html);
  ASSERT_EQ(RunCommand(dump, dom_log), 0) << ReadText(dom_log);
  const std::string dom = ReadText(dom_log);
  EXPECT_NE(dom.find("data-chart=\"drawn\""), std::string::npos) << "the chart script did not run";
  EXPECT_NE(dom.find("id=\"verdict\" class=\"pass\""), std::string::npos);
  for (const std::string& site : f_.sites) {
    // The line's last point and the summary are the ledger's final ε.
    const double epsilon = AsDouble(QueryDb(f_.NodeDb(site), "SELECT MAX(epsilon_after) FROM privacy_ledger")[0][0]);
    ASSERT_GT(epsilon, 0);
    std::smatch m;
    const std::regex line("<polyline[^>]*data-site=\"" + site + "\" data-points=\"(\\d+)\" data-last=\"([0-9.e+-]+)\"");
    ASSERT_TRUE(std::regex_search(dom, m, line)) << site << "\n" << dom.substr(0, 4000);
    EXPECT_EQ(m[1], "3");  // three rounds
    EXPECT_NEAR(std::stod(m[2]), epsilon, 1e-9 * epsilon);
    const std::regex summary("<section class=\"site\" data-site=\"" + site +
                             "\">[\\s\\S]*?data-key=\"epsilon_spent\">([0-9.e+-]+)<");
    ASSERT_TRUE(std::regex_search(dom, m, summary)) << site;
    EXPECT_EQ(m[1], absl::StrFormat("%.6g", epsilon));
    // Every update the site sent is listed with its hash.
    for (const SqlRow& r : QueryDb(f_.NodeDb(site), "SELECT update_sha256 FROM updates_sent")) {
      EXPECT_NE(dom.find(AsText(r[0])), std::string::npos) << site;
    }
  }
  // A screenshot, kept as the test's artefact: the lines are painted in
  // their colours (the first site's blue, the second's red).
  const std::string artefacts = std::string(FEDRAD_ARTEFACT_DIR);
  std::filesystem::create_directories(artefacts);
  const std::string png = artefacts + "/audit-report.png";
  std::filesystem::remove(png);
  std::vector<std::string> shot = chromium;
  shot.push_back("--screenshot=" + png);
  shot.push_back("file://" + html);
  ASSERT_EQ(RunCommand(shot, dir_ + "/shot.log"), 0) << ReadText(dir_ + "/shot.log");
  cv::Mat image = cv::imread(png, cv::IMREAD_COLOR);
  ASSERT_FALSE(image.empty()) << png;
  auto count = [&](int r, int g, int b) {
    cv::Mat mask;
    cv::inRange(image, cv::Scalar(b - 12, g - 12, r - 12), cv::Scalar(b + 12, g + 12, r + 12), mask);
    return cv::countNonZero(mask);
  };
  EXPECT_GT(count(0x1f, 0x77, 0xb4), 200) << "no blue line in " << png;
  EXPECT_GT(count(0xd6, 0x27, 0x28), 200) << "no red line in " << png;
  // The JSON holds the same facts.
  const std::string facts = ReadText(json);
  EXPECT_NE(facts.find("\"status\": \"pass\""), std::string::npos);
  EXPECT_NE(facts.find("\"epsilon_by_round\""), std::string::npos);
  // Each site's verified publications, rounds 0-3 (trained on 0-2, evaluated 1-3).
  const nlohmann::json j = nlohmann::json::parse(facts);
  for (const nlohmann::json& site : j["sites"]) EXPECT_EQ(site["models_verified"].size(), 4u) << site.dump();
  EXPECT_NE(ReadText(html).find("Model publications verified"), std::string::npos);
}

}  // namespace
}  // namespace fedrad::testing

namespace fedrad::testing {
namespace {

// The empirical audit on a site's real DICOM data with its kit's [privacy]
// (target epsilon 2.7): with DP, epsilon_lower stays within the accountant's
// epsilon; with the noise switched off, the same canaries show a far larger
// epsilon_lower and the verdict is that the guarantee does not hold.
TEST(EmpiricalAuditTest, WithNoiseTheBoundHoldsWithoutNoiseTheAuditRefutesIt) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 1, .rounds = 1, .min_nodes = 1, .patients = 40, .images = 1});
  ASSERT_FALSE(::testing::Test::HasFailure());
  auto run = [&](bool noise, const std::string& name, bool clipping = true) {
    std::vector<std::string> argv = {
        NodeBin(), "audit",    "empirical", "--config", f.NodeConfig(f.sites[0]),  "--size", "32", "--batch",
        "16",      "--epochs", "2",         "--json",   dir + "/" + name + ".json"};
    if (!noise) argv.push_back("--without-noise");
    if (!clipping) argv.push_back("--without-clipping");
    const int code = RunCommand(argv, dir + "/" + name + ".log", std::chrono::minutes(5));
    return std::make_pair(code, ReadText(dir + "/" + name + ".log"));
  };
  auto number = [](const std::string& json, const std::string& key) {
    std::smatch m;
    EXPECT_TRUE(std::regex_search(json, m, std::regex("\"" + key + "\": ([0-9.e+-]+)"))) << key << "\n" << json;
    return m.empty() ? -1.0 : std::stod(m[1]);
  };

  const auto [dp_code, dp_log] = run(true, "with-noise");
  ASSERT_EQ(dp_code, 0) << dp_log;
  const std::string dp_json = ReadText(dir + "/with-noise.json");
  const double epsilon = number(dp_json, "epsilon");
  EXPECT_NEAR(epsilon, 2.7, 1e-3);  // the kit's target, reached over this run
  EXPECT_LE(number(dp_json, "epsilon_lower"), epsilon);
  EXPECT_GT(number(dp_json, "noise_multiplier_used"), 0.5);
  EXPECT_NE(dp_log.find("PASS"), std::string::npos) << dp_log;

  const auto [open_code, open_log] = run(false, "without-noise");
  EXPECT_EQ(open_code, 1) << open_log;
  const std::string open_json = ReadText(dir + "/without-noise.json");
  EXPECT_EQ(number(open_json, "noise_multiplier_used"), 0);
  EXPECT_NEAR(number(open_json, "epsilon"), epsilon, 0.3);  // the same claim (the coin flips differ)
  EXPECT_GT(number(open_json, "epsilon_lower"), 4.0) << open_log;
  EXPECT_GT(number(open_json, "epsilon_lower"), 2 * number(dp_json, "epsilon_lower") + 1);
  EXPECT_NE(open_log.find("FAIL: the guarantee does not hold"), std::string::npos) << open_log;

  // The canaries (10 C before clipping) go through the units' clipping: with
  // the noise right but the clipping off, the same audit refutes the claim.
  EXPECT_EQ(number(dp_json, "canary_norm"), 10);
  const auto [unclipped_code, unclipped_log] = run(true, "without-clipping", false);
  EXPECT_EQ(unclipped_code, 1) << unclipped_log;
  const std::string unclipped_json = ReadText(dir + "/without-clipping.json");
  EXPECT_GT(number(unclipped_json, "noise_multiplier_used"), 0.5);
  EXPECT_GT(number(unclipped_json, "epsilon_lower"), 2 * number(dp_json, "epsilon_lower") + 1) << unclipped_log;
  EXPECT_NE(unclipped_log.find("(clipping switched off)"), std::string::npos) << unclipped_log;
  RemoveWorkspaceIfPassed(dir);
}

// Without flags the audit runs what the site ran: each DP-SGD round of its
// ledger with its own sigma, q and steps, on its newest global model's network.
TEST(EmpiricalAuditTest, ByDefaultItAuditsTheRoundsInTheSitesLedger) {
  const std::string dir = MakeWorkspace();
  MiniFederation f =
      SetUpFederation(dir, {.sites = 1, .rounds = 2, .min_nodes = 1, .patients = 40, .images = 1, .start_grace_s = 1});
  ASSERT_FALSE(::testing::Test::HasFailure());
  RunFederationToCompletion(f);
  ASSERT_FALSE(::testing::Test::HasFailure());
  const std::vector<SqlRow> charged =
      QueryDb(f.NodeDb(f.sites[0]),
              "SELECT noise_multiplier, sampling_rate, steps FROM privacy_ledger WHERE kind = 'dp-sgd' ORDER BY id");
  ASSERT_EQ(charged.size(), 2u);
  const std::string json_path = dir + "/ledger.json";
  const int code = RunCommand({NodeBin(), "audit", "empirical", "--config", f.NodeConfig(f.sites[0]), "--canaries",
                               "2000", "--json", json_path},
                              dir + "/ledger.log", std::chrono::minutes(5));
  const std::string log = ReadText(dir + "/ledger.log");
  EXPECT_NE(code, 1) << log;
  EXPECT_NE(code, 2) << log;
  const nlohmann::json j = nlohmann::json::parse(ReadText(json_path), nullptr, false);
  ASSERT_TRUE(j.is_object()) << log;
  EXPECT_NE(j.value("settings_from", "").find("privacy ledger"), std::string::npos) << j.dump(2);
  EXPECT_NE(j.value("model_from", "").find(".safetensors"), std::string::npos) << j.dump(2);
  ASSERT_EQ(j["rounds"].size(), 2u) << j.dump(2);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_DOUBLE_EQ(j["rounds"][i]["noise_multiplier"].get<double>(), std::get<double>(charged[i][0]));
    EXPECT_DOUBLE_EQ(j["rounds"][i]["sampling_rate"].get<double>(), std::get<double>(charged[i][1]));
    EXPECT_EQ(j["rounds"][i]["steps"].get<int64_t>(), std::get<int64_t>(charged[i][2]));
  }
  EXPECT_EQ(j["steps"].get<int64_t>(), std::get<int64_t>(charged[0][2]) + std::get<int64_t>(charged[1][2]));
  // The claim is both rounds composed (the count release is another mechanism).
  PrivacyAccountant both;
  for (const SqlRow& c : charged) both.Compose(std::get<double>(c[0]), std::get<double>(c[1]), std::get<int64_t>(c[2]));
  EXPECT_NEAR(j["epsilon"].get<double>(), both.GetEpsilon(j["delta"].get<double>()).epsilon, 1e-9);
  EXPECT_NE(log.find("settings: the site's privacy ledger"), std::string::npos) << log;
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing
