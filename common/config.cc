#include "common/config.h"

#include <toml++/toml.h>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/files.h"

namespace fedrad {

struct ConfigReader::Doc {
  toml::table root;
};

namespace {

const char* TypeName(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a number";
    case toml::node_type::boolean:
      return "a boolean";
    default:
      return "a date/time";
  }
}

// Every leaf path in the document, arrays of values counted as one leaf.
void CollectLeaves(const toml::node& node, const std::string& prefix,
                   std::vector<std::pair<std::string, const toml::node*>>* out) {
  if (const toml::table* t = node.as_table()) {
    for (const auto& [k, v] : *t) {
      const std::string name(k.str());
      CollectLeaves(v, prefix.empty() ? name : absl::StrCat(prefix, ".", name), out);
    }
    return;
  }
  if (const toml::array* a = node.as_array(); a && a->is_array_of_tables() && !a->empty()) {
    for (size_t i = 0; i < a->size(); ++i) {
      CollectLeaves(*a->get(i), absl::StrCat(prefix, "[", i, "]"), out);
    }
    return;
  }
  out->push_back({prefix, &node});
}

}  // namespace

std::optional<std::string> HostPortProblem(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return std::string("must be host:port");
  const std::string host = address.substr(0, colon), port = address.substr(colon + 1);
  if (host.find(':') != std::string::npos && (host.front() != '[' || host.back() != ']')) {
    return std::string("must be host:port, with an IPv6 host in brackets ([::1]:50051)");
  }
  int value = 0;
  bool digits = !port.empty() && port.size() <= 5;
  for (char c : port) {
    digits = digits && c >= '0' && c <= '9';
    if (digits) value = value * 10 + (c - '0');
  }
  if (!digits || value < 1 || value > 65535) {
    return absl::StrCat("has port '", port, "'; a port is a number from 1 to 65535");
  }
  return std::nullopt;
}

std::string ResolvePath(const std::string& base_dir, const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  return (std::filesystem::path(base_dir) / path).lexically_normal().string();
}

ConfigReader::ConfigReader(std::string path, std::unique_ptr<Doc> doc) : path_(std::move(path)), doc_(std::move(doc)) {
  std::filesystem::path p(path_);
  dir_ = p.has_parent_path() ? p.parent_path().string() : ".";
}

ConfigReader::~ConfigReader() = default;

absl::StatusOr<std::unique_ptr<ConfigReader>> ConfigReader::Open(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path, 16 << 20);
  if (!text.ok()) {
    return absl::Status(text.status().code(), absl::StrCat("config file: ", text.status().message()));
  }
  auto doc = std::make_unique<Doc>();
  try {
    doc->root = toml::parse(*text, path);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", e.source().begin.line, ":", e.source().begin.column,
                                                   ": not valid TOML: ", std::string(e.description())));
  }
  return std::unique_ptr<ConfigReader>(new ConfigReader(path, std::move(doc)));
}

std::string ConfigReader::Where(const std::string& key) const {
  auto n = std::as_const(doc_->root).at_path(key);
  if (n) {
    const toml::source_region& src = n.node()->source();
    if (src.begin.line > 0) return absl::StrCat(path_, ":", src.begin.line);
  }
  return path_;
}

void ConfigReader::Fail(const std::string& key, const std::string& problem) {
  if (!error_.ok()) return;
  error_ = absl::InvalidArgumentError(absl::StrCat(Where(key), ": field '", key, "' ", problem));
}

bool ConfigReader::Has(const std::string& key) const {
  return static_cast<bool>(std::as_const(doc_->root).at_path(key));
}

template <typename T>
std::optional<T> ConfigReader::Get(const std::string& key, const char* type_name) {
  known_.insert(key);
  auto n = std::as_const(doc_->root).at_path(key);
  if (!n) return std::nullopt;
  std::optional<T> v = n.value_exact<T>();
  if (!v) {
    Fail(key, absl::StrCat("must be ", type_name, ", not ", TypeName(*n.node())));
  }
  return v;
}

std::string ConfigReader::GetString(const std::string& key, std::optional<std::string> fallback) {
  const bool present = Has(key);
  std::optional<std::string> v = Get<std::string>(key, "a string");
  if (v) return *v;
  if (!present && !fallback) Fail(key, "is required");
  return fallback.value_or("");
}

int64_t ConfigReader::GetInt(const std::string& key, std::optional<int64_t> fallback, int64_t min, int64_t max) {
  const bool present = Has(key);
  std::optional<int64_t> v = Get<int64_t>(key, "an integer");
  if (!v) {
    if (!present && !fallback) Fail(key, "is required");
    return fallback.value_or(min);
  }
  if (*v < min || *v > max) {
    Fail(key, absl::StrCat("is ", *v, "; it must be between ", min, " and ", max));
    return fallback.value_or(min);
  }
  return *v;
}

double ConfigReader::GetDouble(const std::string& key, std::optional<double> fallback, double min, double max) {
  known_.insert(key);
  auto n = std::as_const(doc_->root).at_path(key);
  if (!n) {
    if (!fallback) Fail(key, "is required");
    return fallback.value_or(min);
  }
  std::optional<double> v;
  if (auto d = n.value_exact<double>()) v = *d;
  if (auto i = n.value_exact<int64_t>()) v = static_cast<double>(*i);
  if (!v) {
    Fail(key, absl::StrCat("must be a number, not ", TypeName(*n.node())));
    return fallback.value_or(min);
  }
  if (!(*v >= min && *v <= max)) {
    Fail(key, absl::StrCat("is ", *v, "; it must be between ", min, " and ", max));
    return fallback.value_or(min);
  }
  return *v;
}

bool ConfigReader::GetBool(const std::string& key, std::optional<bool> fallback) {
  const bool present = Has(key);
  std::optional<bool> v = Get<bool>(key, "true or false");
  if (v) return *v;
  if (!present && !fallback) Fail(key, "is required");
  return fallback.value_or(false);
}

std::vector<std::string> ConfigReader::GetStringArray(const std::string& key,
                                                      std::optional<std::vector<std::string>> fallback) {
  known_.insert(key);
  auto n = std::as_const(doc_->root).at_path(key);
  if (!n) {
    if (!fallback) Fail(key, "is required");
    return fallback.value_or(std::vector<std::string>{});
  }
  const toml::array* a = n.as_array();
  if (a == nullptr) {
    Fail(key, absl::StrCat("must be an array of strings, not ", TypeName(*n.node())));
    return {};
  }
  std::vector<std::string> out;
  for (const toml::node& e : *a) {
    std::optional<std::string> s = e.value_exact<std::string>();
    if (!s) {
      Fail(key, absl::StrCat("must hold only strings, not ", TypeName(e)));
      return {};
    }
    out.push_back(*s);
  }
  return out;
}

std::string ConfigReader::GetPath(const std::string& key, std::optional<std::string> fallback) {
  std::string v = GetString(key, std::move(fallback));
  return v.empty() ? v : ResolvePath(dir_, v);
}

size_t ConfigReader::TableArraySize(const std::string& key) {
  auto n = std::as_const(doc_->root).at_path(key);
  if (!n) return 0;
  const toml::array* a = n.as_array();
  if (a == nullptr || !a->is_array_of_tables()) {
    known_.insert(key);
    Fail(key, absl::StrCat("must be an array of tables ([[", key, "]])"));
    return 0;
  }
  return a->size();
}

absl::Status ConfigReader::Finish() {
  if (!error_.ok()) return error_;
  std::vector<std::pair<std::string, const toml::node*>> leaves;
  CollectLeaves(doc_->root, "", &leaves);
  for (const auto& [key, node] : leaves) {
    if (key.empty() || known_.count(key)) continue;
    // An empty table ("[section]" with nothing in it) is harmless only if its
    // name is a known section prefix.
    if (node->is_table()) {
      bool prefix = false;
      for (const std::string& k : known_) prefix |= k.rfind(key + ".", 0) == 0;
      if (prefix) continue;
    }
    return absl::InvalidArgumentError(absl::StrCat(Where(key), ": unknown field '", key, "'"));
  }
  return absl::OkStatus();
}

}  // namespace fedrad
