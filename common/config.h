#ifndef FEDRAD_COMMON_CONFIG_H_
#define FEDRAD_COMMON_CONFIG_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fedrad {

// Strict reader for one TOML config file. Callers ask for each field they
// know by its dotted path ("training.local_epochs", "site[0].name"); a field
// of the wrong type or out of range, a missing required field, and — checked
// by Finish() — any field nobody asked for, are errors that name the file,
// the line and the field. The first error wins; getters return the default
// (or a zero value) after an error so callers can read everything and check
// once at the end.
class ConfigReader {
 public:
  static absl::StatusOr<std::unique_ptr<ConfigReader>> Open(const std::string& path);
  ~ConfigReader();

  const std::string& path() const { return path_; }

  // Required when `fallback` is nullopt.
  std::string GetString(const std::string& key, std::optional<std::string> fallback = std::nullopt);
  int64_t GetInt(const std::string& key, std::optional<int64_t> fallback, int64_t min, int64_t max);
  double GetDouble(const std::string& key, std::optional<double> fallback, double min, double max);
  bool GetBool(const std::string& key, std::optional<bool> fallback);
  std::vector<std::string> GetStringArray(const std::string& key, std::optional<std::vector<std::string>> fallback);
  // A path field, resolved against the folder holding the config file.
  std::string GetPath(const std::string& key, std::optional<std::string> fallback = std::nullopt);
  // Number of tables in an array of tables ([[site]]); 0 if absent.
  size_t TableArraySize(const std::string& key);
  bool Has(const std::string& key) const;

  // Accepts `key` without reading it (a field this caller has no use for,
  // so that Finish() does not call it unknown).
  void Ignore(const std::string& key) { known_.insert(key); }

  // Records an error found by the caller about `key` (for cross-field checks).
  void Fail(const std::string& key, const std::string& problem);

  // OK if every read succeeded and the file holds no unknown field.
  absl::Status Finish();

 private:
  struct Doc;
  ConfigReader(std::string path, std::unique_ptr<Doc> doc);
  std::string Where(const std::string& key) const;
  template <typename T>
  std::optional<T> Get(const std::string& key, const char* type_name);

  std::string path_;
  std::string dir_;
  std::unique_ptr<Doc> doc_;
  std::set<std::string> known_;
  absl::Status error_;
};

// Why `address` is not host:port (a host, then a port of 1 to 65535 in
// decimal; an IPv6 host in brackets), or nullopt when it is. gRPC would
// take port 99999 modulo 65536 and dial another port without a word.
std::optional<std::string> HostPortProblem(const std::string& address);

// Joins `path` to `base_dir` unless it is absolute.
std::string ResolvePath(const std::string& base_dir, const std::string& path);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_CONFIG_H_
