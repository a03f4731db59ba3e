#include "common/sqlite.h"

#include <filesystem>

#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "common/local_fault.h"

namespace fedrad {

int64_t AsInt(const SqlValue& v) {
  if (const int64_t* i = std::get_if<int64_t>(&v)) return *i;
  if (const double* d = std::get_if<double>(&v)) return static_cast<int64_t>(*d);
  return 0;
}

double AsDouble(const SqlValue& v) {
  if (const double* d = std::get_if<double>(&v)) return *d;
  if (const int64_t* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  return 0;
}

std::string AsText(const SqlValue& v) {
  if (const std::string* s = std::get_if<std::string>(&v)) return *s;
  if (const int64_t* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  return "";
}

absl::StatusOr<std::unique_ptr<Database>> Database::Connect(const std::string& path, int flags) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, flags | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open database '", path, "': ", msg));
  }
  sqlite3_busy_timeout(db, 10000);
  return std::unique_ptr<Database>(new Database(path, db));
}

absl::StatusOr<std::unique_ptr<Database>> Database::Open(const std::string& path) {
  absl::StatusOr<std::unique_ptr<Database>> out = Connect(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!out.ok()) return out;
  absl::Status s = (*out)->ExecScript("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::unique_ptr<Database>> Database::OpenReadOnly(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat("database '", path, "' does not exist"));
  }
  absl::StatusOr<std::unique_ptr<Database>> out = Connect(path, SQLITE_OPEN_READONLY);
  if (!out.ok()) return out;
  // A file that is not SQLite fails here rather than at the first query.
  absl::StatusOr<std::vector<SqlRow>> probe = (*out)->Query("SELECT count(*) FROM sqlite_master");
  if (!probe.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' is not a readable SQLite database: ", probe.status().message()));
  }
  return out;
}

Database::~Database() { sqlite3_close(db_); }

absl::Status Database::Error(absl::string_view action) const {
  return MarkLocalFault(
      absl::InternalError(absl::StrCat("database '", path_, "': ", action, ": ", sqlite3_errmsg(db_))));
}

absl::Status Database::ExecScript(absl::string_view sql) {
  char* err = nullptr;
  std::string text(sql);
  if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return MarkLocalFault(absl::InternalError(absl::StrCat("database '", path_, "': ", msg)));
  }
  return absl::OkStatus();
}

absl::StatusOr<sqlite3_stmt*> Database::Prepare(absl::string_view sql, const std::vector<SqlValue>& params) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr) != SQLITE_OK) {
    return Error(absl::StrCat("preparing \"", sql, "\""));
  }
  for (size_t i = 0; i < params.size(); ++i) {
    const int idx = static_cast<int>(i) + 1;
    int rc = SQLITE_OK;
    const SqlValue& p = params[i];
    if (std::holds_alternative<std::nullptr_t>(p)) {
      rc = sqlite3_bind_null(stmt, idx);
    } else if (const int64_t* v = std::get_if<int64_t>(&p)) {
      rc = sqlite3_bind_int64(stmt, idx, *v);
    } else if (const double* d = std::get_if<double>(&p)) {
      rc = sqlite3_bind_double(stmt, idx, *d);
    } else {
      const std::string& s = std::get<std::string>(p);
      rc = sqlite3_bind_text(stmt, idx, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    }
    if (rc != SQLITE_OK) {
      absl::Status s = Error(absl::StrCat("binding parameter ", idx));
      sqlite3_finalize(stmt);
      return s;
    }
  }
  return stmt;
}

absl::Status Database::Execute(absl::string_view sql, const std::vector<SqlValue>& params) {
  absl::StatusOr<std::vector<SqlRow>> rows = Query(sql, params);
  return rows.status();
}

absl::StatusOr<std::vector<SqlRow>> Database::Query(absl::string_view sql, const std::vector<SqlValue>& params) {
  absl::StatusOr<sqlite3_stmt*> stmt = Prepare(sql, params);
  if (!stmt.ok()) return stmt.status();
  std::vector<SqlRow> rows;
  int rc;
  while ((rc = sqlite3_step(*stmt)) == SQLITE_ROW) {
    const int n = sqlite3_column_count(*stmt);
    SqlRow row(static_cast<size_t>(n));
    for (int c = 0; c < n; ++c) {
      switch (sqlite3_column_type(*stmt, c)) {
        case SQLITE_INTEGER:
          row[c] = static_cast<int64_t>(sqlite3_column_int64(*stmt, c));
          break;
        case SQLITE_FLOAT:
          row[c] = sqlite3_column_double(*stmt, c);
          break;
        case SQLITE_NULL:
          row[c] = nullptr;
          break;
        default: {
          const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(*stmt, c));
          row[c] = std::string(text ? text : "", static_cast<size_t>(sqlite3_column_bytes(*stmt, c)));
        }
      }
    }
    rows.push_back(std::move(row));
  }
  absl::Status s = rc == SQLITE_DONE ? absl::OkStatus() : Error(absl::StrCat("running \"", sql, "\""));
  sqlite3_finalize(*stmt);
  if (!s.ok()) return s;
  return rows;
}

int64_t Database::LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }

absl::StatusOr<Database::Transaction> Database::Begin() {
  absl::Status s = ExecScript("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  return Transaction(this);
}

Database::Transaction::~Transaction() {
  if (db_ != nullptr) (void)db_->ExecScript("ROLLBACK");
}

absl::Status Database::Transaction::Commit() {
  Database* db = db_;
  db_ = nullptr;
  return db->ExecScript("COMMIT");
}

}  // namespace fedrad
