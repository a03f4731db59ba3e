#include "coordinator/state_store.h"

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/ledger_entries.h"
#include "crypto/sha256.h"

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
-- Each selected site's nonce of an attempt, so that a restarted coordinator
-- can resume the attempt and take the updates the sites already paid for.
CREATE TABLE IF NOT EXISTS round_nonces(
  round INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  site TEXT NOT NULL,
  nonce_hex TEXT NOT NULL,
  PRIMARY KEY(round, attempt, site));
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
CREATE TABLE IF NOT EXISTS evaluation_figures(
  round INTEGER NOT NULL,
  site TEXT NOT NULL,
  suppressed INTEGER NOT NULL,
  confusion TEXT NOT NULL,
  roc_auc REAL,
  ece REAL,
  PRIMARY KEY(round, site));
-- Each site's evaluation release as received (JSON: the noisy statistics);
-- evaluations and evaluation_figures hold what post-processing made of it.
CREATE TABLE IF NOT EXISTS evaluation_releases(
  round INTEGER NOT NULL,
  site TEXT NOT NULL,
  noise_multiplier REAL NOT NULL,
  release TEXT NOT NULL,
  PRIMARY KEY(round, site));
CREATE TABLE IF NOT EXISTS round_evaluations(
  round INTEGER PRIMARY KEY,
  model_sha256 TEXT NOT NULL,
  sites INTEGER NOT NULL,
  reporting_sites INTEGER NOT NULL,
  suppressed_count INTEGER NOT NULL,
  count INTEGER NOT NULL,
  loss REAL,
  accuracy REAL,
  balanced_accuracy REAL,
  macro_f1 REAL,
  sensitivity REAL,
  specificity REAL,
  roc_auc REAL,
  ece REAL,
  confusion TEXT NOT NULL,
  recorded_at_ms INTEGER NOT NULL);
-- Multilabel plans: round_evaluations holds the micro figures (every
-- image-label decision pooled; its confusion the pooled 2x2 matrix, its
-- count the patients) with the macro AUC and macro F1, and this table each
-- label's, from the sites' pooled per-label matrices (roc_auc: the
-- count-weighted mean of the sites' AUCs of the label).
CREATE TABLE IF NOT EXISTS round_label_evaluations(
  round INTEGER NOT NULL,
  label INTEGER NOT NULL,
  name TEXT NOT NULL,
  showing INTEGER NOT NULL,
  sensitivity REAL,
  specificity REAL,
  f1 REAL,
  roc_auc REAL,
  confusion TEXT NOT NULL,
  PRIMARY KEY(round, label));
)sql";

std::string JoinCounts(const std::vector<int64_t>& v) { return absl::StrJoin(v, ","); }

std::vector<int64_t> SplitCounts(const std::string& s) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    int64_t n = 0;
    if (absl::SimpleAtoi(part, &n)) out.push_back(n);
  }
  return out;
}

SqlValue Optional(const std::optional<double>& v) { return v ? SqlValue(*v) : SqlValue(nullptr); }

std::optional<double> OptionalDouble(const SqlValue& v) {
  if (std::holds_alternative<std::nullptr_t>(v)) return std::nullopt;
  return AsDouble(v);
}

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& path,
                                                             const std::optional<LedgerSigner>& signer, int64_t now_ms,
                                                             const std::string& ledger_lost) {
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path);
  if (!db.ok()) return db.status();
  absl::Status s = (*db)->ExecScript(kSchema);
  if (!s.ok()) return s;
  if (signer) {
    const std::string dir = std::filesystem::path(path).parent_path().string();
    s = OpenLedger(
        **db, *signer, now_ms,
        {path, {dir + "/models"}, ledger_lost, "fedrad-coordinator serve --ledger-lost \"<what happened>\""});
  } else {
    s = CreateLedgerTable(**db);
  }
  if (!s.ok()) return s;
  return std::unique_ptr<StateStore>(new StateStore(std::move(*db), signer));
}

template <class Entry>
absl::Status StateStore::Log(const Entry& entry, int64_t now_ms) {
  if (!signer_) return absl::OkStatus();
  return AppendLedgerEntry(*db_, *signer_, Entry::kKind, ledger::Encode(entry), now_ms).status();
}

absl::StatusOr<std::optional<ModelVersion>> StateStore::LatestModel() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows = db_->Query("SELECT round, sha256 FROM models ORDER BY round DESC LIMIT 1");
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return std::optional<ModelVersion>();
  return std::optional<ModelVersion>(ModelVersion{static_cast<int>(AsInt((*rows)[0][0])), AsText((*rows)[0][1])});
}

absl::Status StateStore::AddInitialModel(const std::string& sha256, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Database::Transaction> tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  absl::Status s = db_->Execute("INSERT INTO models(round, sha256, created_at_ms) VALUES(0, ?1, ?2)", {sha256, now_ms});
  if (s.ok()) s = Log(ledger::ModelPublished{0, sha256}, now_ms);
  if (!s.ok()) return s;
  return tx->Commit();
}

absl::StatusOr<bool> StateStore::HasModel(const std::string& sha256) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows = db_->Query("SELECT 1 FROM models WHERE sha256 = ?1", {sha256});
  if (!rows.ok()) return rows.status();
  return !rows->empty();
}

absl::StatusOr<std::vector<ModelVersion>> StateStore::ModelsBefore(int round) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows =
      db_->Query("SELECT round, sha256 FROM models WHERE round < ?1 ORDER BY round", {int64_t{round}});
  if (!rows.ok()) return rows.status();
  std::vector<ModelVersion> out;
  for (const SqlRow& r : *rows) out.push_back({static_cast<int>(AsInt(r[0])), AsText(r[1])});
  return out;
}

absl::StatusOr<std::optional<StateStore::OpenAttempt>> StateStore::LatestOpenAttempt() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows = db_->Query(
      "SELECT round, attempt, base_sha256 FROM rounds WHERE status = 'open' ORDER BY round DESC, attempt DESC LIMIT 1");
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return std::optional<OpenAttempt>();
  OpenAttempt a;
  a.round = static_cast<int>(AsInt((*rows)[0][0]));
  a.attempt = static_cast<int>(AsInt((*rows)[0][1]));
  a.base_sha256 = AsText((*rows)[0][2]);
  absl::StatusOr<std::vector<SqlRow>> nonces =
      db_->Query("SELECT site, nonce_hex FROM round_nonces WHERE round = ?1 AND attempt = ?2",
                 {int64_t{a.round}, int64_t{a.attempt}});
  if (!nonces.ok()) return nonces.status();
  for (const SqlRow& r : *nonces) {
    std::optional<std::string> nonce = crypto::HexDecode(AsText(r[1]));
    if (!nonce) {
      return absl::DataLossError(absl::StrCat("state.db: the nonce of site '", AsText(r[0]), "' in round ", a.round,
                                              " attempt ", a.attempt, " is not hex"));
    }
    a.nonces[AsText(r[0])] = std::move(*nonce);
  }
  return std::optional<OpenAttempt>(std::move(a));
}

absl::StatusOr<int> StateStore::AbandonOpenRounds(int64_t now_ms, std::optional<std::pair<int, int>> except) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Database::Transaction> tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  const int64_t keep_round = except ? except->first : -1, keep_attempt = except ? except->second : -1;
  absl::StatusOr<std::vector<SqlRow>> rows = db_->Query(
      "SELECT round, attempt FROM rounds WHERE status = 'open' AND NOT (round = ?1 AND attempt = ?2) "
      "ORDER BY round, attempt",
      {keep_round, keep_attempt});
  if (!rows.ok()) return rows.status();
  const char* note = "coordinator restarted while the round was open";
  absl::Status s = db_->Execute(
      "UPDATE rounds SET status = 'abandoned', closed_at_ms = ?1, note = ?2 WHERE status = 'open' AND "
      "NOT (round = ?3 AND attempt = ?4)",
      {now_ms, std::string(note), keep_round, keep_attempt});
  for (const SqlRow& r : *rows) {
    if (!s.ok()) break;
    s = Log(ledger::RoundClosed{AsInt(r[0]), AsInt(r[1]), "abandoned", std::nullopt, note}, now_ms);
  }
  if (!s.ok()) return s;
  s = tx->Commit();
  if (!s.ok()) return s;
  return static_cast<int>(rows->size());
}

absl::Status StateStore::ResumeRound(int round, int attempt, int connected, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return Log(ledger::RoundResumed{round, attempt, connected}, now_ms);
}

absl::StatusOr<int> StateStore::NextAttempt(int round) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows =
      db_->Query("SELECT COALESCE(MAX(attempt), 0) + 1 FROM rounds WHERE round = ?1", {int64_t{round}});
  if (!rows.ok()) return rows.status();
  return static_cast<int>(AsInt((*rows)[0][0]));
}

absl::Status StateStore::OpenRound(int round, int attempt, const std::string& base_sha256,
                                   const std::map<std::string, std::string>& nonces, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Database::Transaction> tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  const int selected = static_cast<int>(nonces.size());
  absl::Status s = db_->Execute(
      "INSERT INTO rounds(round, attempt, status, base_sha256, selected, started_at_ms) "
      "VALUES(?1, ?2, 'open', ?3, ?4, ?5)",
      {int64_t{round}, int64_t{attempt}, base_sha256, int64_t{selected}, now_ms});
  for (const auto& [site, nonce] : nonces) {
    if (!s.ok()) break;
    s = db_->Execute("INSERT INTO round_nonces(round, attempt, site, nonce_hex) VALUES(?1, ?2, ?3, ?4)",
                     {int64_t{round}, int64_t{attempt}, site, crypto::HexEncode(nonce)});
  }
  if (s.ok()) {
    s = Log(ledger::RoundOpened{round, attempt, base_sha256, selected}, now_ms);
  }
  if (!s.ok()) return s;
  return tx->Commit();
}

absl::Status StateStore::ApplyRound(int round, int attempt, const std::string& model_sha256, int answered,
                                    const std::string& strategy, const std::vector<Contribution>& contributions,
                                    int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Database::Transaction> tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  absl::Status s = db_->Execute("INSERT INTO models(round, sha256, created_at_ms) VALUES(?1, ?2, ?3)",
                                {int64_t{round}, model_sha256, now_ms});
  if (s.ok()) {
    s = db_->Execute(
        "UPDATE rounds SET status = 'applied', answered = ?3, closed_at_ms = ?4, model_sha256 = ?5 "
        "WHERE round = ?1 AND attempt = ?2 AND status = 'open'",
        {int64_t{round}, int64_t{attempt}, int64_t{answered}, now_ms, model_sha256});
  }
  if (s.ok()) {
    ledger::Aggregate aggregate{round, attempt, strategy, model_sha256};
    for (const Contribution& c : contributions) aggregate.updates.push_back({c.site, c.update_sha256});
    s = Log(aggregate, now_ms);
  }
  if (s.ok()) s = Log(ledger::ModelPublished{round, model_sha256}, now_ms);
  if (s.ok()) s = Log(ledger::RoundClosed{round, attempt, "applied", answered}, now_ms);
  if (!s.ok()) return s;
  return tx->Commit();
}

absl::Status StateStore::FailRound(int round, int attempt, int answered, const std::string& note, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Database::Transaction> tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  absl::Status s = db_->Execute(
      "UPDATE rounds SET status = 'failed', answered = ?3, closed_at_ms = ?4, note = ?5 "
      "WHERE round = ?1 AND attempt = ?2 AND status = 'open'",
      {int64_t{round}, int64_t{attempt}, int64_t{answered}, now_ms, note});
  if (s.ok()) {
    s = Log(ledger::RoundClosed{round, attempt, "failed", answered, note}, now_ms);
  }
  if (!s.ok()) return s;
  return tx->Commit();
}

absl::Status StateStore::RecordSubmission(int round, int attempt, const SubmissionRecord& r, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  std::vector<SqlValue> dp(8, nullptr);
  if (r.privacy) {
    const SitePrivacy& p = *r.privacy;
    dp = {p.unit, p.noise_multiplier, p.clip_norm, p.sampling_rate, p.steps, p.delta, p.epsilon_spent, p.epsilon_max};
  }
  std::vector<SqlValue> values = {int64_t{round}, int64_t{attempt}, r.site,   r.update_sha256, r.num_examples,
                                  r.train_loss,   r.status(),       r.reason, now_ms};
  values.insert(values.end(), dp.begin(), dp.end());
  absl::StatusOr<Database::Transaction> tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  absl::Status s = db_->Execute(
      "INSERT OR REPLACE INTO submissions(round, attempt, site, update_sha256, num_examples, "
      "train_loss, status, reason, received_at_ms, dp_unit, dp_noise_multiplier, dp_clip_norm, "
      "dp_sampling_rate, dp_steps, dp_delta, epsilon_spent, epsilon_max) "
      "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
      values);
  if (!s.ok()) return s;
  ledger::SiteAnswer body;
  body.round = round;
  body.attempt = attempt;
  body.site = r.site;
  if (!r.declined) body.update_sha256 = r.update_sha256;
  if (r.accepted) body.num_examples = r.num_examples;
  if (!r.accepted) body.reason = r.reason;
  if (r.node_ledger_seq > 0) {
    body.node_ledger_seq = r.node_ledger_seq;
    body.node_ledger_sha256 = r.node_ledger_sha256;
  }
  if (r.privacy) {
    body.epsilon_spent = r.privacy->epsilon_spent;
    body.epsilon_max = r.privacy->epsilon_max;
    if (!r.declined) {
      body.delta = r.privacy->delta;
      body.noise_multiplier = r.privacy->noise_multiplier;
    }
  }
  s = r.declined   ? Log(ledger::UpdateDeclined{body}, now_ms)
      : r.accepted ? Log(ledger::UpdateAccepted{body}, now_ms)
                   : Log(ledger::UpdateRejected{body}, now_ms);
  if (!s.ok()) return s;
  return tx->Commit();
}

absl::StatusOr<std::vector<StateStore::PrivacyAnswer>> StateStore::PrivacyHistory() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows = db_->Query(
      "SELECT site, status, dp_unit, dp_noise_multiplier, dp_clip_norm, dp_sampling_rate, dp_steps, dp_delta, "
      "epsilon_spent, epsilon_max, COALESCE(reason, ''), COALESCE(update_sha256, '') FROM submissions WHERE "
      "epsilon_spent IS NOT NULL AND "
      "status != 'rejected' ORDER BY round, attempt, received_at_ms");
  if (!rows.ok()) return rows.status();
  std::vector<PrivacyAnswer> out;
  for (const SqlRow& r : *rows) {
    PrivacyAnswer a;
    a.site = AsText(r[0]);
    // A site that refused a round's model is asked again next round; any
    // other decline ends its part in the federation.
    a.answer.declined = AsText(r[1]) == "declined" && !absl::StartsWith(AsText(r[10]), "MODEL_REFUSED:");
    a.answer.privacy = SitePrivacy{AsText(r[2]), AsDouble(r[3]), AsDouble(r[4]), AsDouble(r[5]),
                                   AsInt(r[6]),  AsDouble(r[7]), AsDouble(r[8]), AsDouble(r[9])};
    a.update_sha256 = AsText(r[11]);
    out.push_back(std::move(a));
  }
  return out;
}

absl::StatusOr<std::map<std::string, StateStore::LatestPrivacy>> StateStore::LatestPrivacyBySite() {
  absl::StatusOr<std::vector<PrivacyAnswer>> history = PrivacyHistory();
  if (!history.ok()) return history.status();
  std::map<std::string, LatestPrivacy> out;
  for (PrivacyAnswer& a : *history) out[a.site] = std::move(a.answer);
  return out;
}

absl::Status StateStore::RecordEvaluation(int round, const std::string& model_sha256, const SiteEvaluation& e,
                                          int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Database::Transaction> tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  absl::Status s = db_->Execute(
      "INSERT OR REPLACE INTO evaluations(round, site, model_sha256, loss, accuracy, count, "
      "received_at_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
      {int64_t{round}, e.site, model_sha256, e.loss, e.accuracy, e.count, now_ms});
  if (!s.ok()) return s;
  s = db_->Execute(
      "INSERT OR REPLACE INTO evaluation_figures(round, site, suppressed, confusion, roc_auc, ece) "
      "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
      {int64_t{round}, e.site, int64_t{e.suppressed}, JoinCounts(e.confusion), Optional(e.roc_auc),
       e.suppressed ? SqlValue(nullptr) : SqlValue(e.ece)});
  if (!s.ok()) return s;
  ledger::EvaluationReceived body{round, e.site, model_sha256, e.count, e.suppressed};
  if (e.release) {
    nlohmann::json release = {{"noise_multiplier", e.noise_multiplier}, {"multilabel", e.release->multilabel},
                              {"confusion", e.release->confusion},      {"loss_sum", e.release->loss_sum},
                              {"confidence", e.release->confidence},    {"scores", e.release->scores}};
    if (e.release->segmentation()) {
      release["dice_sum"] = e.release->dice_sum;
      release["dice"] = e.release->dice;
    }
    s = db_->Execute(
        "INSERT OR REPLACE INTO evaluation_releases(round, site, noise_multiplier, release) VALUES(?1, ?2, ?3, ?4)",
        {int64_t{round}, e.site, e.noise_multiplier, release.dump()});
    if (!s.ok()) return s;
    body.noise_multiplier = e.noise_multiplier;
  }
  if (e.node_ledger_seq > 0) {
    body.node_ledger_seq = e.node_ledger_seq;
    body.node_ledger_sha256 = e.node_ledger_sha256;
  }
  s = Log(body, now_ms);
  if (!s.ok()) return s;
  return tx->Commit();
}

absl::Status StateStore::RecordRoundEvaluation(const RoundEvaluation& e, int64_t now_ms,
                                               const std::vector<std::string>& label_names) {
  absl::MutexLock lock(&mu_);
  const Metrics& m = e.metrics;
  // Every figure is kept as a column for the privacy officer's SQL; the
  // confusion matrix alone determines all but loss, AUC and ECE.
  const bool any = m.count > 0;
  auto figure = [any](double v) { return any ? SqlValue(v) : SqlValue(nullptr); };
  std::vector<int64_t> confusion;
  for (const std::vector<int64_t>& row : m.confusion) confusion.insert(confusion.end(), row.begin(), row.end());
  absl::StatusOr<Database::Transaction> tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  absl::Status s = db_->Execute(
      "INSERT OR REPLACE INTO round_evaluations(round, model_sha256, sites, reporting_sites, suppressed_count, "
      "count, loss, accuracy, balanced_accuracy, macro_f1, sensitivity, specificity, roc_auc, ece, confusion, "
      "recorded_at_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
      {int64_t{e.round}, e.model_sha256, int64_t{e.sites}, int64_t{e.reporting_sites}, e.suppressed_count, m.count,
       figure(e.loss), figure(m.accuracy), figure(m.balanced_accuracy),
       figure(e.multilabel ? e.multilabel->macro_f1 : m.MacroF1()), Optional(m.sensitivity), Optional(m.specificity),
       Optional(m.roc_auc), figure(m.ece), JoinCounts(confusion), now_ms});
  if (!s.ok()) return s;
  if (e.multilabel) {
    const std::vector<int64_t> cells = MultilabelCells(*e.multilabel);
    for (size_t c = 0; c < e.multilabel->per_label.size(); ++c) {
      const Metrics& l = e.multilabel->per_label[c];
      const std::vector<int64_t> own(cells.begin() + static_cast<std::ptrdiff_t>(4 * c),
                                     cells.begin() + static_cast<std::ptrdiff_t>(4 * c + 4));
      s = db_->Execute(
          "INSERT OR REPLACE INTO round_label_evaluations(round, label, name, showing, sensitivity, specificity, f1, "
          "roc_auc, confusion) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
          {int64_t{e.round}, static_cast<int64_t>(c),
           c < label_names.size() ? label_names[c] : absl::StrCat("label ", c),
           l.per_class.size() == 2 ? l.per_class[1].support : int64_t{0}, Optional(l.sensitivity),
           Optional(l.specificity), l.per_class.size() == 2 ? SqlValue(l.per_class[1].f1) : SqlValue(nullptr),
           Optional(l.roc_auc), JoinCounts(own)});
      if (!s.ok()) return s;
    }
  }
  return tx->Commit();
}

absl::StatusOr<std::optional<RoundEvaluation>> StateStore::GetRoundEvaluation(int round) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows = db_->Query(
      "SELECT model_sha256, sites, reporting_sites, suppressed_count, loss, roc_auc, ece, confusion "
      "FROM round_evaluations WHERE round = ?1",
      {int64_t{round}});
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return std::nullopt;
  const SqlRow& r = rows->front();
  RoundEvaluation e;
  e.round = round;
  e.model_sha256 = AsText(r[0]);
  e.sites = static_cast<int>(AsInt(r[1]));
  e.reporting_sites = static_cast<int>(AsInt(r[2]));
  e.suppressed_count = AsInt(r[3]);
  e.loss = OptionalDouble(r[4]).value_or(0);
  // The exact figures come again from the matrix (k x k cells).
  const std::vector<int64_t> cells = SplitCounts(AsText(r[7]));
  size_t k = 0;
  while ((k + 1) * (k + 1) <= cells.size()) ++k;
  if (k * k != cells.size()) {
    return absl::DataLossError(absl::StrCat("round ", round, "'s confusion matrix has ", cells.size(), " cells"));
  }
  std::vector<std::vector<int64_t>> confusion(k, std::vector<int64_t>(k));
  for (size_t i = 0; i < cells.size(); ++i) confusion[i / k][i % k] = cells[i];
  e.metrics = MetricsFromConfusion(std::move(confusion));
  e.metrics.roc_auc = OptionalDouble(r[5]);
  e.metrics.ece = OptionalDouble(r[6]).value_or(0);
  return e;
}

absl::StatusOr<std::vector<SiteEvaluation>> StateStore::Evaluations(int round) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<SqlRow>> rows = db_->Query(
      "SELECT e.site, e.loss, e.accuracy, e.count, f.suppressed, f.confusion, f.roc_auc, f.ece, r.release "
      "FROM evaluations e LEFT JOIN evaluation_figures f ON f.round = e.round AND f.site = e.site "
      "LEFT JOIN evaluation_releases r ON r.round = e.round AND r.site = e.site "
      "WHERE e.round = ?1 ORDER BY e.site",
      {int64_t{round}});
  if (!rows.ok()) return rows.status();
  std::vector<SiteEvaluation> out;
  for (const SqlRow& r : *rows) {
    SiteEvaluation e{AsText(r[0]), AsDouble(r[1]), AsDouble(r[2]), AsInt(r[3])};
    // Rows from before evaluation_figures have figures and no suppression.
    if (!std::holds_alternative<std::nullptr_t>(r[4])) {
      e.suppressed = AsInt(r[4]) != 0;
      e.confusion = SplitCounts(AsText(r[5]));
      e.roc_auc = OptionalDouble(r[6]);
      e.ece = OptionalDouble(r[7]).value_or(0);
    }
    // A segmentation release's mean Dice is post-processing of the release
    // as recorded (this store wrote it; it was checked when received).
    if (!std::holds_alternative<std::nullptr_t>(r[8])) {
      const nlohmann::json release = nlohmann::json::parse(AsText(r[8]), nullptr, /*allow_exceptions=*/false);
      auto numbers = [&](const char* key) {
        return release.contains(key) && release[key].is_array() &&
               std::all_of(release[key].begin(), release[key].end(),
                           [](const nlohmann::json& v) { return v.is_number(); });
      };
      if (release.is_object() && numbers("dice") && numbers("confusion")) {
        EvaluationStatistics st;
        st.confusion = release["confusion"].get<std::vector<double>>();
        st.dice = release["dice"].get<std::vector<double>>();
        st.dice_sum = release.value("dice_sum", 0.0);
        e.mean_dice = MeanDice(st);
      }
    }
    out.push_back(std::move(e));
  }
  return out;
}

absl::Status StateStore::RecordRefusal(const std::string& what, const std::string& site, int round,
                                       const std::string& reason, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return Log(ledger::ReportRefused{what, site, round, reason}, now_ms);
}

absl::Status StateStore::TouchNode(const std::string& site, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  return db_->Execute(
      "INSERT INTO nodes(site, first_seen_ms, last_seen_ms) VALUES(?1, ?2, ?2) "
      "ON CONFLICT(site) DO UPDATE SET last_seen_ms = ?2",
      {site, now_ms});
}

}  // namespace fedrad::coordinator
