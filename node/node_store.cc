#include "node/node_store.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "crypto/sha256.h"

namespace fedrad::node {

namespace {

// The privacy ledger: every charge of the Gaussian mechanism on this site's
// data, committed before the data is touched. Append-only; only status moves.
constexpr char kPrivacyLedgerColumns[] = R"sql((
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL CHECK(kind IN ('dp-sgd', 'count', 'evaluation')),
  federation TEXT NOT NULL,
  round INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  unit TEXT NOT NULL,
  units INTEGER NOT NULL,
  noise_multiplier REAL NOT NULL,
  clip_norm REAL NOT NULL,
  sampling_rate REAL NOT NULL,
  steps INTEGER NOT NULL,
  delta REAL NOT NULL,
  epsilon_after REAL NOT NULL,
  rdp_order REAL NOT NULL,
  released REAL NOT NULL DEFAULT 0,
  status TEXT NOT NULL,
  at_ms INTEGER NOT NULL))sql";

}  // namespace

absl::StatusOr<std::unique_ptr<NodeStore>> NodeStore::Open(const std::string& path,
                                                           const std::optional<LedgerSigner>& signer, int64_t now_ms,
                                                           const std::string& ledger_lost) {
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path);
  if (!db.ok()) return db.status();
  absl::Status s = (*db)->ExecScript(R"sql(
CREATE TABLE IF NOT EXISTS models_received(
  sha256 TEXT PRIMARY KEY,
  received_at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS updates_sent(
  round INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  base_sha256 TEXT NOT NULL,
  update_sha256 TEXT NOT NULL,
  num_examples INTEGER NOT NULL,
  train_loss REAL NOT NULL,
  sent_at_ms INTEGER NOT NULL,
  outcome TEXT NOT NULL DEFAULT 'sending',
  PRIMARY KEY(round, attempt));
CREATE TABLE IF NOT EXISTS kept_updates(
  federation TEXT NOT NULL,
  round INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  base_sha256 TEXT NOT NULL,
  update_sha256 TEXT NOT NULL,
  dtype TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  path TEXT NOT NULL,
  examples INTEGER NOT NULL,
  train_loss REAL,
  pipeline TEXT NOT NULL,
  dp_unit TEXT,
  dp_noise_multiplier REAL,
  dp_clip_norm REAL,
  dp_sampling_rate REAL,
  dp_steps INTEGER,
  dp_delta REAL,
  epsilon_spent REAL,
  epsilon_max REAL,
  charge_id INTEGER NOT NULL,
  count_charge_id INTEGER NOT NULL,
  PRIMARY KEY(federation, round));
CREATE TABLE IF NOT EXISTS evaluations(
  round INTEGER NOT NULL,
  model_sha256 TEXT NOT NULL,
  loss REAL NOT NULL,
  accuracy REAL NOT NULL,
  count INTEGER NOT NULL,
  at_ms INTEGER NOT NULL,
  PRIMARY KEY(round, model_sha256));
)sql");
  if (!s.ok()) return s;
  s = (*db)->ExecScript(absl::StrCat("CREATE TABLE IF NOT EXISTS privacy_ledger", kPrivacyLedgerColumns, ";"));
  if (!s.ok()) return s;
  // node.db from before evaluation releases: the table's CHECK does not
  // know the kind. SQLite cannot alter a CHECK, so the table is copied into
  // the new definition in one transaction (ids, and so the order, kept).
  absl::StatusOr<std::vector<SqlRow>> definition =
      (*db)->Query("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'privacy_ledger'");
  if (!definition.ok()) return definition.status();
  if (!definition->empty() && AsText((*definition)[0][0]).find("'evaluation'") == std::string::npos) {
    s = (*db)->ExecScript(
        absl::StrCat("BEGIN IMMEDIATE; ALTER TABLE privacy_ledger RENAME TO privacy_ledger_before_evaluation; "
                     "CREATE TABLE privacy_ledger",
                     kPrivacyLedgerColumns, "; ",
                     "INSERT INTO privacy_ledger SELECT * FROM privacy_ledger_before_evaluation; "
                     "DROP TABLE privacy_ledger_before_evaluation; COMMIT;"));
    if (!s.ok()) return s;
  }
  if (signer) {
    const std::string dir = std::filesystem::path(path).parent_path().string();
    s = OpenLedger(
        **db, *signer, now_ms,
        {path, {dir + "/models", dir + "/updates"}, ledger_lost, "fedrad-node run --ledger-lost \"<what happened>\""});
  } else {
    s = CreateLedgerTable(**db);
  }
  if (!s.ok()) return s;
  return std::unique_ptr<NodeStore>(new NodeStore(std::move(*db), signer));
}

template <class Entry>
absl::StatusOr<LedgerEntry> NodeStore::Log(const Entry& entry, int64_t now_ms) {
  if (!signer_) return absl::FailedPreconditionError("node.db was opened for reading: no kit key to sign with");
  return AppendLedgerEntry(*db_, *signer_, Entry::kKind, ledger::Encode(entry), now_ms);
}

absl::Status NodeStore::CheckContinuity(const std::string& path) {
  absl::MutexLock lock(&mu_);
  return CheckLedgerContinuity(*db_, path);
}

absl::Status NodeStore::RecordConfig(const ledger::Config& facts, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> last = db_->Query(
      "SELECT body FROM ledger WHERE kind = ?1 ORDER BY seq DESC LIMIT 1", {std::string(ledger::Config::kKind)});
  if (!last.ok()) return last.status();
  if (!last->empty() && AsText((*last)[0][0]) == ledger::Encode(facts)) return absl::OkStatus();
  return Log(facts, now_ms).status();
}

absl::StatusOr<std::optional<ledger::Config>> NodeStore::LastConfig() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> last = db_->Query(
      "SELECT seq, body FROM ledger WHERE kind = ?1 ORDER BY seq DESC LIMIT 1", {std::string(ledger::Config::kKind)});
  if (!last.ok()) return last.status();
  if (last->empty()) return std::optional<ledger::Config>();
  LedgerEntry e;
  e.seq = AsInt((*last)[0][0]);
  e.kind = ledger::Config::kKind;
  e.body = AsText((*last)[0][1]);
  absl::StatusOr<ledger::Config> config = ledger::Decode<ledger::Config>(e);
  if (!config.ok()) return absl::DataLossError(absl::StrCat("node.db's ledger: ", config.status().message()));
  return std::optional<ledger::Config>(*std::move(config));
}

absl::Status NodeStore::RecordRoundJoined(const std::string& federation, int round, int attempt,
                                          const std::string& model_sha256, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return Log(ledger::RoundJoined{federation, round, attempt, model_sha256}, now_ms).status();
}

absl::Status NodeStore::RecordModelReceived(const std::string& sha256, int round, uint64_t bytes, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Database::Transaction> tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  absl::Status s =
      db_->Execute("INSERT OR IGNORE INTO models_received(sha256, received_at_ms) VALUES(?1, ?2)", {sha256, now_ms});
  if (!s.ok()) return s;
  s = Log(ledger::ModelReceived{sha256, round, static_cast<int64_t>(bytes)}, now_ms).status();
  if (!s.ok()) return s;
  return tx->Commit();
}

absl::Status NodeStore::RecordModelRefused(const std::string& sha256, int round, const std::string& reason,
                                           int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return Log(ledger::ModelRefused{sha256, round, reason}, now_ms).status();
}

absl::Status NodeStore::RecordCoordinatorCertificate(const std::string& certificate_pem, const std::string& subject,
                                                     int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return Log(ledger::CoordinatorCertificate{certificate_pem, subject, crypto::Sha256Hex(certificate_pem)}, now_ms)
      .status();
}

absl::Status NodeStore::RecordModelVerified(const std::string& federation, int published_round,
                                            const std::string& sha256, const std::string& signature_hex,
                                            const std::string& certificate_sha256, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return Log(ledger::ModelVerified{federation, published_round, sha256, signature_hex, certificate_sha256}, now_ms)
      .status();
}

absl::Status NodeStore::RecordDataAccess(const std::string& purpose, int round, int64_t images, int64_t patients,
                                         const std::string& sop_uids_sha256, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  // In a transaction: a local command may append while the node runs.
  absl::StatusOr<Database::Transaction> tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  absl::Status s = Log(ledger::DataAccess{purpose, round, images, patients, sop_uids_sha256}, now_ms).status();
  if (!s.ok()) return s;
  return tx->Commit();
}

absl::StatusOr<LedgerEntry> NodeStore::RecordUpdateSending(int round, int attempt, const std::string& base_sha256,
                                                           const std::string& update_sha256, uint64_t bytes,
                                                           const std::string& dtype, int64_t examples,
                                                           double train_loss, int resent_from_attempt, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Database::Transaction> tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  absl::Status s = db_->Execute(
      "INSERT OR REPLACE INTO updates_sent(round, attempt, base_sha256, update_sha256, "
      "num_examples, train_loss, sent_at_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
      {int64_t{round}, int64_t{attempt}, base_sha256, update_sha256, examples, train_loss, now_ms});
  if (!s.ok()) return s;
  ledger::UpdateSent sent{round, attempt, base_sha256, update_sha256, static_cast<int64_t>(bytes), dtype, examples};
  if (resent_from_attempt > 0) sent.resent_from_attempt = resent_from_attempt;
  absl::StatusOr<LedgerEntry> e = Log(sent, now_ms);
  if (!e.ok()) return e.status();
  s = tx->Commit();
  if (!s.ok()) return s;
  return e;
}

namespace {

constexpr char kKeptColumns[] =
    "federation, round, attempt, base_sha256, update_sha256, dtype, bytes, path, examples, train_loss, pipeline, "
    "dp_unit, dp_noise_multiplier, dp_clip_norm, dp_sampling_rate, dp_steps, dp_delta, epsilon_spent, epsilon_max, "
    "charge_id, count_charge_id";

KeptUpdate KeptFromRow(const SqlRow& r) {
  KeptUpdate k;
  k.federation = AsText(r[0]);
  k.round = static_cast<int>(AsInt(r[1]));
  k.attempt = static_cast<int>(AsInt(r[2]));
  k.base_sha256 = AsText(r[3]);
  k.update_sha256 = AsText(r[4]);
  k.dtype = AsText(r[5]);
  k.bytes = static_cast<uint64_t>(AsInt(r[6]));
  k.path = AsText(r[7]);
  k.examples = AsInt(r[8]);
  if (!std::holds_alternative<std::nullptr_t>(r[9])) k.train_loss = AsDouble(r[9]);
  k.pipeline = AsText(r[10]);
  if (!std::holds_alternative<std::nullptr_t>(r[11])) {
    k.privacy = KeptUpdate::Privacy{AsText(r[11]), AsDouble(r[12]), AsDouble(r[13]), AsDouble(r[14]),
                                    AsInt(r[15]),  AsDouble(r[16]), AsDouble(r[17]), AsDouble(r[18])};
  }
  k.charge_id = AsInt(r[19]);
  k.count_charge_id = AsInt(r[20]);
  return k;
}

}  // namespace

absl::Status NodeStore::KeepUpdate(const KeptUpdate& k) {
  absl::MutexLock lock(&mu_);
  const auto or_null = [&](auto value) { return k.privacy ? SqlValue(value) : SqlValue(nullptr); };
  const KeptUpdate::Privacy p = k.privacy.value_or(KeptUpdate::Privacy{});
  return db_->Execute(
      absl::StrCat("INSERT OR REPLACE INTO kept_updates(", kKeptColumns,
                   ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, "
                   "?20, ?21)"),
      {k.federation,
       int64_t{k.round},
       int64_t{k.attempt},
       k.base_sha256,
       k.update_sha256,
       k.dtype,
       static_cast<int64_t>(k.bytes),
       k.path,
       k.examples,
       k.train_loss ? SqlValue(*k.train_loss) : SqlValue(nullptr),
       k.pipeline,
       or_null(p.unit),
       or_null(p.noise_multiplier),
       or_null(p.clip_norm),
       or_null(p.sampling_rate),
       or_null(p.steps),
       or_null(p.delta),
       or_null(p.epsilon_spent),
       or_null(p.epsilon_max),
       k.charge_id,
       k.count_charge_id});
}

absl::StatusOr<std::optional<KeptUpdate>> NodeStore::KeptUpdateOf(const std::string& federation, int round) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows =
      db_->Query(absl::StrCat("SELECT ", kKeptColumns, " FROM kept_updates WHERE federation = ?1 AND round = ?2"),
                 {federation, int64_t{round}});
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return std::optional<KeptUpdate>();
  return std::optional<KeptUpdate>(KeptFromRow((*rows)[0]));
}

absl::StatusOr<std::vector<KeptUpdate>> NodeStore::KeptUpdates() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows =
      db_->Query(absl::StrCat("SELECT ", kKeptColumns, " FROM kept_updates ORDER BY federation, round"));
  if (!rows.ok()) return rows.status();
  std::vector<KeptUpdate> out;
  for (const SqlRow& r : *rows) out.push_back(KeptFromRow(r));
  return out;
}

absl::Status NodeStore::ForgetKeptUpdate(const std::string& federation, int round) {
  absl::MutexLock lock(&mu_);
  return db_->Execute("DELETE FROM kept_updates WHERE federation = ?1 AND round = ?2", {federation, int64_t{round}});
}

absl::StatusOr<std::optional<std::string>> NodeStore::UpdateOutcome(int round, int attempt) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows = db_->Query(
      "SELECT outcome FROM updates_sent WHERE round = ?1 AND attempt = ?2", {int64_t{round}, int64_t{attempt}});
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return std::optional<std::string>();
  return std::optional<std::string>(AsText((*rows)[0][0]));
}

absl::Status NodeStore::RecordUpdateOutcome(int round, int attempt, const std::string& outcome, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Database::Transaction> tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  absl::Status s = db_->Execute("UPDATE updates_sent SET outcome = ?3 WHERE round = ?1 AND attempt = ?2",
                                {int64_t{round}, int64_t{attempt}, outcome});
  if (!s.ok()) return s;
  s = Log(ledger::UpdateOutcome{round, attempt, outcome}, now_ms).status();
  if (!s.ok()) return s;
  return tx->Commit();
}

absl::Status NodeStore::RecordBudgetRefusal(int round, int attempt, double epsilon_spent, double epsilon_max,
                                            double delta, const std::string& detail, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return Log(ledger::BudgetRefused{round, attempt, epsilon_spent, epsilon_max, delta, detail}, now_ms).status();
}

absl::Status NodeStore::RecordPolicyRefusal(const std::string& task, int round, int attempt, const std::string& detail,
                                            int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return Log(ledger::PolicyRefused{task, round, attempt, detail}, now_ms).status();
}

absl::StatusOr<LedgerEntry> NodeStore::RecordEvaluation(int round, const std::string& model_sha256, double loss,
                                                        double accuracy, int64_t count, bool suppressed,
                                                        const std::string& released, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Database::Transaction> tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  absl::Status s = db_->Execute(
      "INSERT OR REPLACE INTO evaluations(round, model_sha256, loss, accuracy, count, at_ms) "
      "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
      {int64_t{round}, model_sha256, loss, accuracy, count, now_ms});
  if (!s.ok()) return s;
  // What left, as it left: the release (no exact count).
  ledger::EvaluationSent sent{round, model_sha256, suppressed};
  if (!released.empty()) sent.release = ledger::JsonObject{released};
  absl::StatusOr<LedgerEntry> e = Log(sent, now_ms);
  if (!e.ok()) return e.status();
  s = tx->Commit();
  if (!s.ok()) return s;
  return e;
}

absl::Status NodeStore::ChargePrivacy(std::vector<PrivacyCharge*> charges) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Database::Transaction> tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  for (PrivacyCharge* c : charges) {
    absl::Status s = db_->Execute(
        "INSERT INTO privacy_ledger(kind, federation, round, attempt, unit, units, noise_multiplier, clip_norm, "
        "sampling_rate, steps, delta, epsilon_after, rdp_order, released, status, at_ms) "
        "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        {std::string(ChargeKindName(c->kind)), c->federation, int64_t{c->round}, int64_t{c->attempt}, c->unit, c->units,
         c->noise_multiplier, c->clip_norm, c->sampling_rate, c->steps, c->delta, c->epsilon_after, c->order,
         c->released, c->status, c->at_ms});
    if (!s.ok()) return s;
    c->id = db_->LastInsertRowId();
    ledger::DpCharge body{std::string(ChargeKindName(c->kind)),
                          c->federation,
                          c->round,
                          c->attempt,
                          c->unit,
                          c->units,
                          c->noise_multiplier,
                          c->clip_norm,
                          c->sampling_rate,
                          c->steps,
                          c->delta,
                          c->epsilon_after,
                          c->order};
    if (c->kind == ChargeKind::kCount) body.released = c->released;
    absl::StatusOr<LedgerEntry> e = Log(body, c->at_ms);
    if (!e.ok()) return e.status();
  }
  return tx->Commit();
}

absl::Status NodeStore::SetChargeStatus(int64_t id, const std::string& status) {
  absl::MutexLock lock(&mu_);
  return db_->Execute("UPDATE privacy_ledger SET status = ?2 WHERE id = ?1", {id, status});
}

absl::StatusOr<std::vector<LedgerEntry>> NodeStore::AuditLedger() {
  absl::MutexLock lock(&mu_);
  return ReadLedger(*db_);
}

absl::StatusOr<std::vector<PrivacyCharge>> NodeStore::PrivacyLedger() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows = db_->Query(
      "SELECT id, kind, federation, round, attempt, unit, units, noise_multiplier, clip_norm, sampling_rate, "
      "steps, delta, epsilon_after, rdp_order, released, status, at_ms FROM privacy_ledger ORDER BY id");
  if (!rows.ok()) return rows.status();
  std::vector<PrivacyCharge> out;
  for (const SqlRow& r : *rows) {
    PrivacyCharge c;
    c.id = AsInt(r[0]);
    std::optional<ChargeKind> kind = ParseChargeKind(AsText(r[1]));
    if (!kind) {
      return absl::DataLossError(
          absl::StrCat("node.db's privacy ledger has a charge (id ", c.id, ") of unknown kind '", AsText(r[1]), "'"));
    }
    c.kind = *kind;
    c.federation = AsText(r[2]);
    c.round = static_cast<int>(AsInt(r[3]));
    c.attempt = static_cast<int>(AsInt(r[4]));
    c.unit = AsText(r[5]);
    c.units = AsInt(r[6]);
    c.noise_multiplier = AsDouble(r[7]);
    c.clip_norm = AsDouble(r[8]);
    c.sampling_rate = AsDouble(r[9]);
    c.steps = AsInt(r[10]);
    c.delta = AsDouble(r[11]);
    c.epsilon_after = AsDouble(r[12]);
    c.order = AsDouble(r[13]);
    c.released = AsDouble(r[14]);
    c.status = AsText(r[15]);
    c.at_ms = AsInt(r[16]);
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace fedrad::node
