#include "common/ledger_entries.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/json_depth.h"

namespace fedrad::ledger {
namespace {

using nlohmann::json;

// True for the structs that list their Fields (entries and their parts).
struct AnyField {
  template <class U>
  void operator()(const char*, U&) const {}
};
template <class T, class = void>
struct HasFields : std::false_type {};
template <class T>
struct HasFields<T, std::void_t<decltype(std::declval<T&>().Fields(AnyField{}))>> : std::true_type {};

template <class T>
struct Tag {
  using type = T;
};

// ----- writing -----

template <class T>
json ToJson(const T& entry);

struct Writer {
  json& out;
  void operator()(const char* key, const int64_t& v) { out[key] = v; }
  void operator()(const char* key, const double& v) { out[key] = v; }
  void operator()(const char* key, const bool& v) { out[key] = v; }
  void operator()(const char* key, const std::string& v) { out[key] = v; }
  void operator()(const char* key, const JsonObject& v) {
    json parsed = json::parse(v.text, nullptr, false);
    out[key] = parsed.is_object() ? std::move(parsed) : json::object();
  }
  template <class T>
  void operator()(const char* key, const std::optional<T>& v) {
    if (v) (*this)(key, *v);
  }
  template <class T>
  void operator()(const char* key, const std::vector<T>& v) {
    json list = json::array();
    for (const T& e : v) list.push_back(ToJson(e));
    out[key] = std::move(list);
  }
  template <class T, std::enable_if_t<HasFields<T>::value, int> = 0>
  void operator()(const char* key, const T& v) {
    out[key] = ToJson(v);
  }
};

template <class T>
json ToJson(const T& entry) {
  json out = json::object();
  // Fields lists members by non-const reference; the writer only reads them.
  const_cast<T&>(entry).Fields(Writer{out});
  return out;
}

// ----- reading -----

// The largest list a body may hold (an aggregate's inputs: one per site).
constexpr size_t kMaxListSize = 1000000;

template <class T>
void FromJson(const json& in, const std::string& prefix, std::string* error, T* out);

struct Reader {
  const json& in;
  const std::string& prefix;  // "privacy." inside a nested object
  std::string* error;         // the first problem; nothing is read after it

  const json* Find(const char* key) {
    if (!error->empty()) return nullptr;
    auto it = in.find(key);
    if (it == in.end()) {
      Fail(key, "is missing");
      return nullptr;
    }
    return &*it;
  }
  void Fail(const char* key, const char* problem) {
    if (error->empty()) *error = absl::StrCat("field '", prefix, key, "' ", problem);
  }

  void operator()(const char* key, int64_t& v) {
    const json* j = Find(key);
    if (j == nullptr) return;
    if (!j->is_number_integer() ||
        (j->is_number_unsigned() && j->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))) {
      Fail(key, "is not an integer");
      return;
    }
    v = j->get<int64_t>();
  }
  void operator()(const char* key, double& v) {
    const json* j = Find(key);
    if (j == nullptr) return;
    if (!j->is_number()) return Fail(key, "is not a number");
    v = j->get<double>();
  }
  void operator()(const char* key, bool& v) {
    const json* j = Find(key);
    if (j == nullptr) return;
    if (!j->is_boolean()) return Fail(key, "is not true or false");
    v = j->get<bool>();
  }
  void operator()(const char* key, std::string& v) {
    const json* j = Find(key);
    if (j == nullptr) return;
    if (!j->is_string()) return Fail(key, "is not a string");
    v = j->get<std::string>();
  }
  void operator()(const char* key, JsonObject& v) {
    const json* j = Find(key);
    if (j == nullptr) return;
    if (!j->is_object()) return Fail(key, "is not an object");
    v.text = j->dump(-1, ' ', false, json::error_handler_t::replace);
  }
  template <class T>
  void operator()(const char* key, std::optional<T>& v) {
    if (!error->empty()) return;
    auto it = in.find(key);
    if (it == in.end() || it->is_null()) {
      v.reset();
      return;
    }
    T value{};
    (*this)(key, value);
    if (error->empty()) v = std::move(value);
  }
  template <class T>
  void operator()(const char* key, std::vector<T>& v) {
    const json* j = Find(key);
    if (j == nullptr) return;
    if (!j->is_array()) return Fail(key, "is not a list");
    if (j->size() > kMaxListSize) return Fail(key, "is too long a list");
    v.clear();
    for (size_t i = 0; i < j->size() && error->empty(); ++i) {
      const json& e = (*j)[i];
      const std::string at = absl::StrCat(prefix, key, "[", i, "]");
      if (!e.is_object()) {
        *error = absl::StrCat("field '", at, "' is not an object");
        return;
      }
      T item{};
      FromJson(e, at + ".", error, &item);
      v.push_back(std::move(item));
    }
  }
  template <class T, std::enable_if_t<HasFields<T>::value, int> = 0>
  void operator()(const char* key, T& v) {
    const json* j = Find(key);
    if (j == nullptr) return;
    if (!j->is_object()) return Fail(key, "is not an object");
    FromJson(*j, absl::StrCat(prefix, key, "."), error, &v);
  }
};

template <class T>
void FromJson(const json& in, const std::string& prefix, std::string* error, T* out) {
  out->Fields(Reader{in, prefix, error});
}

template <size_t... I>
absl::StatusOr<Body> DecodeAs(const std::string& kind, const json& j, std::index_sequence<I...>) {
  absl::StatusOr<Body> out = absl::InvalidArgumentError(absl::StrCat("unknown kind '", absl::CEscape(kind), "'"));
  auto attempt = [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (kind != T::kKind) return false;
    T value{};
    std::string error;
    FromJson(j, "", &error, &value);
    if (!error.empty()) {
      out = absl::InvalidArgumentError(absl::StrCat("the body of a '", kind, "' entry: ", error));
    } else {
      out = Body(std::move(value));
    }
    return true;
  };
  (attempt(Tag<std::variant_alternative_t<I, Body>>{}) || ...);
  return out;
}

}  // namespace

template <class T>
std::string Encode(const T& entry) {
  return ToJson(entry).dump(-1, ' ', false, json::error_handler_t::replace);
}

absl::StatusOr<Body> DecodeBody(const std::string& kind, const std::string& body) {
  const std::string what = absl::StrCat("the body of a '", absl::CEscape(kind), "' entry");
  if (body.size() > kMaxBodyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has ", body.size(), " bytes, more than ", kMaxBodyBytes));
  }
  if (JsonDepth(body, kMaxBodyDepth) < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is nested more than ", kMaxBodyDepth, " levels deep"));
  }
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(what, " is not JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(what, " is not a JSON object"));
  return DecodeAs(kind, j, std::make_index_sequence<std::variant_size_v<Body>>{});
}

template <class T>
absl::StatusOr<T> Decode(const LedgerEntry& entry) {
  if (entry.kind != T::kKind) {
    return absl::InvalidArgumentError(
        absl::StrCat("entry ", entry.seq, " is a '", absl::CEscape(entry.kind), "', not a '", T::kKind, "'"));
  }
  absl::StatusOr<Body> body = DecodeBody(entry.kind, entry.body);
  if (!body.ok()) return body.status();
  return std::get<T>(std::move(*body));
}

std::string EncodeBody(const Body& body) {
  return std::visit([](const auto& e) { return Encode(e); }, body);
}

namespace {

// The position of T among Body's alternatives.
template <class T, size_t... I>
constexpr size_t IndexInBody(std::index_sequence<I...>) {
  size_t at = 0;
  ((std::is_same_v<T, std::variant_alternative_t<I, Body>> ? (at = I, true) : false) || ...);
  return at;
}

}  // namespace

EntryWriter WriterOf(const Body& body) {
  // Body lists the kinds for both first, then the node's, then from
  // ModelPublished on the coordinator's (ledger_entries.h).
  constexpr size_t kFirstNode = 2;
  constexpr size_t kFirstCoordinator =
      IndexInBody<ModelPublished>(std::make_index_sequence<std::variant_size_v<Body>>{});
  static_assert(std::is_same_v<std::variant_alternative_t<0, Body>, WriterCertificate> &&
                std::is_same_v<std::variant_alternative_t<1, Body>, LedgerRestarted> &&
                std::is_same_v<std::variant_alternative_t<kFirstNode, Body>, Config>);
  if (body.index() < kFirstNode) return EntryWriter::kEither;
  return body.index() < kFirstCoordinator ? EntryWriter::kNode : EntryWriter::kCoordinator;
}

const char* KindOf(const Body& body) {
  return std::visit([](const auto& e) -> const char* { return std::decay_t<decltype(e)>::kKind; }, body);
}

// Every alternative of Body (the header declares the templates).
#define FEDRAD_LEDGER_ENTRY(T)                    \
  template std::string Encode<T>(const T& entry); \
  template absl::StatusOr<T> Decode<T>(const LedgerEntry& entry);
FEDRAD_LEDGER_ENTRY(WriterCertificate)
FEDRAD_LEDGER_ENTRY(LedgerRestarted)
FEDRAD_LEDGER_ENTRY(Config)
FEDRAD_LEDGER_ENTRY(RoundJoined)
FEDRAD_LEDGER_ENTRY(ModelReceived)
FEDRAD_LEDGER_ENTRY(ModelRefused)
FEDRAD_LEDGER_ENTRY(CoordinatorCertificate)
FEDRAD_LEDGER_ENTRY(ModelVerified)
FEDRAD_LEDGER_ENTRY(DataAccess)
FEDRAD_LEDGER_ENTRY(UpdateSent)
FEDRAD_LEDGER_ENTRY(UpdateOutcome)
FEDRAD_LEDGER_ENTRY(BudgetRefused)
FEDRAD_LEDGER_ENTRY(PolicyRefused)
FEDRAD_LEDGER_ENTRY(EvaluationSent)
FEDRAD_LEDGER_ENTRY(DpCharge)
FEDRAD_LEDGER_ENTRY(ModelPublished)
FEDRAD_LEDGER_ENTRY(RoundOpened)
FEDRAD_LEDGER_ENTRY(RoundResumed)
FEDRAD_LEDGER_ENTRY(RoundClosed)
FEDRAD_LEDGER_ENTRY(Aggregate)
FEDRAD_LEDGER_ENTRY(UpdateAccepted)
FEDRAD_LEDGER_ENTRY(UpdateRejected)
FEDRAD_LEDGER_ENTRY(UpdateDeclined)
FEDRAD_LEDGER_ENTRY(EvaluationReceived)
FEDRAD_LEDGER_ENTRY(ReportRefused)
#undef FEDRAD_LEDGER_ENTRY
static_assert(std::variant_size_v<Body> == 25, "every kind of Body is instantiated above");

}  // namespace fedrad::ledger
