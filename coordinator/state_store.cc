#include "coordinator/state_store.h"

#include "absl/strings/str_cat.h"

namespace fedrad::coordinator {
namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS models(
  round INTEGER PRIMARY KEY,
  sha256 TEXT NOT NULL UNIQUE,
  created_at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rounds(
  round INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  status TEXT NOT NULL CHECK(status IN ('open', 'applied', 'failed', 'abandoned')),
  base_sha256 TEXT NOT NULL,
  selected INTEGER NOT NULL,
  answered INTEGER NOT NULL DEFAULT 0,
  started_at_ms INTEGER NOT NULL,
  closed_at_ms INTEGER,
  model_sha256 TEXT,
  note TEXT,
  PRIMARY KEY(round, attempt));
CREATE UNIQUE INDEX IF NOT EXISTS rounds_applied_once ON rounds(round) WHERE status = 'applied';
CREATE TABLE IF NOT EXISTS nodes(
  site TEXT PRIMARY KEY,
  first_seen_ms INTEGER NOT NULL,
  last_seen_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS submissions(
  round INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  site TEXT NOT NULL,
  update_sha256 TEXT,
  num_examples INTEGER,
  train_loss REAL,
  status TEXT NOT NULL CHECK(status IN ('accepted', 'rejected', 'declined')),
  reason TEXT,
  received_at_ms INTEGER NOT NULL,
  -- What the site's accountant reported (NULL: the update was not DP).
  dp_unit TEXT,
  dp_noise_multiplier REAL,
  dp_clip_norm REAL,
  dp_sampling_rate REAL,
  dp_steps INTEGER,
  dp_delta REAL,
  epsilon_spent REAL,
  epsilon_max REAL,
  PRIMARY KEY(round, attempt, site));
CREATE TABLE IF NOT EXISTS evaluations(
  round INTEGER NOT NULL,
  site TEXT NOT NULL,
  model_sha256 TEXT NOT NULL,
  loss REAL NOT NULL,
  accuracy REAL NOT NULL,
  count INTEGER NOT NULL,
  received_at_ms INTEGER NOT NULL,
  PRIMARY KEY(round, site));
)sql";

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& path) {
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path);
  if (!db.ok()) return db.status();
  absl::Status s = (*db)->ExecScript(kSchema);
  if (!s.ok()) return s;
  return std::unique_ptr<StateStore>(new StateStore(std::move(*db)));
}

absl::StatusOr<std::optional<ModelVersion>> StateStore::LatestModel() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows =
      db_->Query("SELECT round, sha256 FROM models ORDER BY round DESC LIMIT 1");
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return std::optional<ModelVersion>();
  return std::optional<ModelVersion>(
      ModelVersion{static_cast<int>(AsInt((*rows)[0][0])), AsText((*rows)[0][1])});
}

absl::Status StateStore::AddInitialModel(const std::string& sha256, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return db_->Execute("INSERT INTO models(round, sha256, created_at_ms) VALUES(0, ?1, ?2)",
                      {sha256, now_ms});
}

absl::StatusOr<bool> StateStore::HasModel(const std::string& sha256) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows =
      db_->Query("SELECT 1 FROM models WHERE sha256 = ?1", {sha256});
  if (!rows.ok()) return rows.status();
  return !rows->empty();
}

absl::StatusOr<int> StateStore::AbandonOpenRounds(int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows =
      db_->Query("SELECT COUNT(*) FROM rounds WHERE status = 'open'");
  if (!rows.ok()) return rows.status();
  absl::Status s = db_->Execute(
      "UPDATE rounds SET status = 'abandoned', closed_at_ms = ?1, "
      "note = 'coordinator restarted while the round was open' WHERE status = 'open'",
      {now_ms});
  if (!s.ok()) return s;
  return static_cast<int>(AsInt((*rows)[0][0]));
}

absl::StatusOr<int> StateStore::NextAttempt(int round) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows =
      db_->Query("SELECT COALESCE(MAX(attempt), 0) + 1 FROM rounds WHERE round = ?1", {int64_t{round}});
  if (!rows.ok()) return rows.status();
  return static_cast<int>(AsInt((*rows)[0][0]));
}

absl::Status StateStore::OpenRound(int round, int attempt, const std::string& base_sha256,
                                   int selected, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return db_->Execute(
      "INSERT INTO rounds(round, attempt, status, base_sha256, selected, started_at_ms) "
      "VALUES(?1, ?2, 'open', ?3, ?4, ?5)",
      {int64_t{round}, int64_t{attempt}, base_sha256, int64_t{selected}, now_ms});
}

absl::Status StateStore::ApplyRound(int round, int attempt, const std::string& model_sha256,
                                    int answered, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Database::Transaction> tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  absl::Status s = db_->Execute(
      "INSERT INTO models(round, sha256, created_at_ms) VALUES(?1, ?2, ?3)",
      {int64_t{round}, model_sha256, now_ms});
  if (s.ok()) {
    s = db_->Execute(
        "UPDATE rounds SET status = 'applied', answered = ?3, closed_at_ms = ?4, model_sha256 = ?5 "
        "WHERE round = ?1 AND attempt = ?2 AND status = 'open'",
        {int64_t{round}, int64_t{attempt}, int64_t{answered}, now_ms, model_sha256});
  }
  if (!s.ok()) return s;
  return tx->Commit();
}

absl::Status StateStore::FailRound(int round, int attempt, int answered, const std::string& note,
                                   int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return db_->Execute(
      "UPDATE rounds SET status = 'failed', answered = ?3, closed_at_ms = ?4, note = ?5 "
      "WHERE round = ?1 AND attempt = ?2 AND status = 'open'",
      {int64_t{round}, int64_t{attempt}, int64_t{answered}, now_ms, note});
}

absl::Status StateStore::RecordSubmission(int round, int attempt, const SubmissionRecord& r,
                                          int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  std::vector<SqlValue> dp(8, nullptr);
  if (r.privacy) {
    const SitePrivacy& p = *r.privacy;
    dp = {p.unit, p.noise_multiplier, p.clip_norm, p.sampling_rate, p.steps, p.delta, p.epsilon_spent,
          p.epsilon_max};
  }
  std::vector<SqlValue> values = {int64_t{round}, int64_t{attempt}, r.site, r.update_sha256, r.num_examples,
                                  r.train_loss, r.status(), r.reason, now_ms};
  values.insert(values.end(), dp.begin(), dp.end());
  return db_->Execute(
      "INSERT OR REPLACE INTO submissions(round, attempt, site, update_sha256, num_examples, "
      "train_loss, status, reason, received_at_ms, dp_unit, dp_noise_multiplier, dp_clip_norm, "
      "dp_sampling_rate, dp_steps, dp_delta, epsilon_spent, epsilon_max) "
      "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
      values);
}

absl::StatusOr<std::map<std::string, StateStore::LatestPrivacy>> StateStore::LatestPrivacyBySite() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows = db_->Query(
      "SELECT site, status, dp_unit, dp_noise_multiplier, dp_clip_norm, dp_sampling_rate, dp_steps, dp_delta, "
      "epsilon_spent, epsilon_max FROM submissions WHERE epsilon_spent IS NOT NULL AND status != 'rejected' "
      "ORDER BY round, attempt, received_at_ms");
  if (!rows.ok()) return rows.status();
  std::map<std::string, LatestPrivacy> out;
  for (const SqlRow& r : *rows) {
    LatestPrivacy& p = out[AsText(r[0])];
    p.declined = AsText(r[1]) == "declined";
    p.privacy = SitePrivacy{AsText(r[2]),   AsDouble(r[3]), AsDouble(r[4]), AsDouble(r[5]),
                            AsInt(r[6]),    AsDouble(r[7]), AsDouble(r[8]), AsDouble(r[9])};
  }
  return out;
}

absl::Status StateStore::RecordEvaluation(int round, const std::string& model_sha256,
                                          const SiteEvaluation& e, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return db_->Execute(
      "INSERT OR REPLACE INTO evaluations(round, site, model_sha256, loss, accuracy, count, "
      "received_at_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
      {int64_t{round}, e.site, model_sha256, e.loss, e.accuracy, e.count, now_ms});
}

absl::StatusOr<std::vector<SiteEvaluation>> StateStore::Evaluations(int round) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows = db_->Query(
      "SELECT site, loss, accuracy, count FROM evaluations WHERE round = ?1 ORDER BY site",
      {int64_t{round}});
  if (!rows.ok()) return rows.status();
  std::vector<SiteEvaluation> out;
  for (const SqlRow& r : *rows) {
    out.push_back({AsText(r[0]), AsDouble(r[1]), AsDouble(r[2]), AsInt(r[3])});
  }
  return out;
}

absl::Status StateStore::TouchNode(const std::string& site, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return db_->Execute(
      "INSERT INTO nodes(site, first_seen_ms, last_seen_ms) VALUES(?1, ?2, ?2) "
      "ON CONFLICT(site) DO UPDATE SET last_seen_ms = ?2",
      {site, now_ms});
}

}  // namespace fedrad::coordinator
