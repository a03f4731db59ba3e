#include "node/node_store.h"

namespace fedrad::node {

absl::StatusOr<std::unique_ptr<NodeStore>> NodeStore::Open(const std::string& path) {
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
  return std::unique_ptr<NodeStore>(new NodeStore(std::move(*db)));
}

absl::Status NodeStore::RecordModelReceived(const std::string& sha256, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return db_->Execute(
      "INSERT OR IGNORE INTO models_received(sha256, received_at_ms) VALUES(?1, ?2)",
      {sha256, now_ms});
}

absl::Status NodeStore::RecordUpdateSending(int round, int attempt, const std::string& base_sha256,
                                            const std::string& update_sha256, int64_t examples,
                                            double train_loss, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return db_->Execute(
      "INSERT OR REPLACE INTO updates_sent(round, attempt, base_sha256, update_sha256, "
      "num_examples, train_loss, sent_at_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
      {int64_t{round}, int64_t{attempt}, base_sha256, update_sha256, examples, train_loss, now_ms});
}

absl::Status NodeStore::RecordUpdateOutcome(int round, int attempt, const std::string& outcome) {
  absl::MutexLock lock(&mu_);
  return db_->Execute("UPDATE updates_sent SET outcome = ?3 WHERE round = ?1 AND attempt = ?2",
                      {int64_t{round}, int64_t{attempt}, outcome});
}

absl::Status NodeStore::RecordEvaluation(int round, const std::string& model_sha256, double loss,
                                         double accuracy, int64_t count, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return db_->Execute(
      "INSERT OR REPLACE INTO evaluations(round, model_sha256, loss, accuracy, count, at_ms) "
      "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
      {int64_t{round}, model_sha256, loss, accuracy, count, now_ms});
}

}  // namespace fedrad::node
