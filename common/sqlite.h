#ifndef FEDRAD_COMMON_SQLITE_H_
#define FEDRAD_COMMON_SQLITE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct sqlite3;
struct sqlite3_stmt;

namespace fedrad {

using SqlValue = std::variant<std::nullptr_t, int64_t, double, std::string>;
using SqlRow = std::vector<SqlValue>;

int64_t AsInt(const SqlValue& v);       // 0 for NULL
double AsDouble(const SqlValue& v);     // 0 for NULL; integers widen
std::string AsText(const SqlValue& v);  // "" for NULL

// One SQLite connection in WAL mode with synchronous=FULL: a committed
// transaction survives a process kill or a power cut. Not thread-safe: the
// owner serialises access (the stores above it hold a mutex).
class Database {
 public:
  static absl::StatusOr<std::unique_ptr<Database>> Open(const std::string& path);
  // For reading another party's records (an audit): never creates,
  // changes or converts the file. NotFound if it does not exist.
  static absl::StatusOr<std::unique_ptr<Database>> OpenReadOnly(const std::string& path);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  const std::string& path() const { return path_; }

  // Runs one or more statements without parameters (schema, pragmas).
  absl::Status ExecScript(absl::string_view sql);
  // Runs one statement with positional parameters (?1, ?2, ...).
  absl::Status Execute(absl::string_view sql, const std::vector<SqlValue>& params = {});
  // Runs one query and returns every row.
  absl::StatusOr<std::vector<SqlRow>> Query(absl::string_view sql, const std::vector<SqlValue>& params = {});
  int64_t LastInsertRowId() const;

  // BEGIN IMMEDIATE ... COMMIT. Destroying an uncommitted Transaction rolls
  // it back.
  class Transaction {
   public:
    explicit Transaction(Database* db) : db_(db) {}
    Transaction(Transaction&& o) noexcept : db_(o.db_) { o.db_ = nullptr; }
    ~Transaction();
    absl::Status Commit();

   private:
    Database* db_;
  };
  absl::StatusOr<Transaction> Begin();

 private:
  Database(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}
  static absl::StatusOr<std::unique_ptr<Database>> Connect(const std::string& path, int flags);
  absl::Status Error(absl::string_view action) const;
  absl::StatusOr<sqlite3_stmt*> Prepare(absl::string_view sql, const std::vector<SqlValue>& params);

  std::string path_;
  sqlite3* db_;
};

}  // namespace fedrad

#endif  // FEDRAD_COMMON_SQLITE_H_
