#ifndef FEDRAD_COMMON_LEDGER_ENTRIES_H_
#define FEDRAD_COMMON_LEDGER_ENTRIES_H_

// The audit ledgers' entries (common/ledger.h), one struct per kind: its
// name a constant (kKind), its fields listed once (Fields), so the same
// list writes the body (Encode, in node/node_store.cc and
// coordinator/state_store.cc) and reads it back checked (DecodeBody, in
// `fedrad audit verify` and `audit report`). A body read back is hostile
// input: a site writes its own ledger with its own key. DecodeBody bounds
// its size and nesting before parsing and names the first field that is
// missing or of the wrong type; an unknown kind is an error too.
//
// Fields are int64_t, double, bool, std::string, JsonObject (a nested JSON
// object kept as text, checked to be one), a struct with Fields, a
// std::vector of such structs, or std::optional of any of these (absent
// from the body when empty). Fields a body has beyond these are ignored, so
// a later version may add some.

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "common/ledger.h"

namespace fedrad::ledger {

// A JSON object held as its text (an evaluation release, for example).
struct JsonObject {
  std::string text;
};

// Bodies above this size, or nested deeper than this, are not read.
inline constexpr size_t kMaxBodyBytes = size_t{1} << 20;
inline constexpr int kMaxBodyDepth = 16;

// ----- both ledgers -----

struct WriterCertificate {
  static constexpr char kKind[] = "writer_certificate";
  std::string certificate;  // PEM
  std::string subject;
  template <class V>
  void Fields(V&& v) {
    v("certificate", certificate);
    v("subject", subject);
  }
};

// A ledger that starts over where an earlier one was lost, in the
// operator's words (--ledger-lost): what that ledger recorded (a node's
// privacy spent, a coordinator's rounds) is not in this one. Written right
// after the first writer_certificate; the audit names it as a gap.
struct LedgerRestarted {
  static constexpr char kKind[] = "ledger_restarted";
  std::string reason;                  // the operator's account
  std::string previous_first_sha256;   // the lost ledger's first entry, "unknown" without a marker
  int64_t previous_started_at_ms = 0;  // when it started, 0 if unknown
  std::string evidence;                // what showed that one existed (its marker, files)
  template <class V>
  void Fields(V&& v) {
    v("reason", reason);
    v("previous_first_sha256", previous_first_sha256);
    v("previous_started_at_ms", previous_started_at_ms);
    v("evidence", evidence);
  }
};

// ----- the node's ledger (node/node_store.h) -----

struct ConfigPrivacy {
  bool enabled = false;
  std::string unit;
  double clip_norm = 0;
  double delta = 0;
  double epsilon_max = 0;
  std::optional<double> noise_multiplier;
  std::optional<double> target_epsilon;
  template <class V>
  void Fields(V&& v) {
    v("enabled", enabled);
    v("unit", unit);
    v("clip_norm", clip_norm);
    v("delta", delta);
    v("epsilon_max", epsilon_max);
    v("noise_multiplier", noise_multiplier);
    v("target_epsilon", target_epsilon);
  }
};

// node.toml as the node started with it (a new entry when it changes).
struct Config {
  static constexpr char kKind[] = "config";
  std::string file;
  std::string file_sha256;  // or "unreadable"
  std::string coordinator;
  std::string site;
  std::string dicom_dir;
  std::string labels;
  std::string trainer;
  double validation_fraction = 0;
  int64_t split_seed = 0;
  std::string preprocess;  // DescribePipeline
  ConfigPrivacy privacy;
  template <class V>
  void Fields(V&& v) {
    v("file", file);
    v("file_sha256", file_sha256);
    v("coordinator", coordinator);
    v("site", site);
    v("dicom_dir", dicom_dir);
    v("labels", labels);
    v("trainer", trainer);
    v("validation_fraction", validation_fraction);
    v("split_seed", split_seed);
    v("preprocess", preprocess);
    v("privacy", privacy);
  }
};

struct RoundJoined {
  static constexpr char kKind[] = "round_joined";
  std::string federation;
  int64_t round = 0;
  int64_t attempt = 0;
  std::string model_sha256;  // the base model
  template <class V>
  void Fields(V&& v) {
    v("federation", federation);
    v("round", round);
    v("attempt", attempt);
    v("model_sha256", model_sha256);
  }
};

struct ModelReceived {
  static constexpr char kKind[] = "model_received";
  std::string sha256;
  int64_t round = 0;
  int64_t bytes = 0;
  template <class V>
  void Fields(V&& v) {
    v("sha256", sha256);
    v("round", round);
    v("bytes", bytes);
  }
};

struct ModelRefused {
  static constexpr char kKind[] = "model_refused";
  std::string sha256;
  int64_t round = 0;
  std::string reason;
  template <class V>
  void Fields(V&& v) {
    v("sha256", sha256);
    v("round", round);
    v("reason", reason);
  }
};

// The certificate the coordinator presented over TLS.
struct CoordinatorCertificate {
  static constexpr char kKind[] = "coordinator_certificate";
  std::string certificate;  // PEM
  std::string subject;
  std::string sha256;  // of the PEM text
  template <class V>
  void Fields(V&& v) {
    v("certificate", certificate);
    v("subject", subject);
    v("sha256", sha256);
  }
};

// A model publication (common/model_publication.h) the node verified.
struct ModelVerified {
  static constexpr char kKind[] = "model_verified";
  std::string federation;
  int64_t round = 0;  // the round it was published as
  std::string sha256;
  std::string signature;  // hex
  std::string coordinator_certificate_sha256;
  template <class V>
  void Fields(V&& v) {
    v("federation", federation);
    v("round", round);
    v("sha256", sha256);
    v("signature", signature);
    v("coordinator_certificate_sha256", coordinator_certificate_sha256);
  }
};

struct DataAccess {
  static constexpr char kKind[] = "data_access";
  std::string purpose;  // "train", "evaluate", "predict", ...
  int64_t round = 0;
  int64_t images = 0;
  int64_t patients = 0;
  std::string sop_instance_uids_sha256;
  template <class V>
  void Fields(V&& v) {
    v("purpose", purpose);
    v("round", round);
    v("images", images);
    v("patients", patients);
    v("sop_instance_uids_sha256", sop_instance_uids_sha256);
  }
};

struct UpdateSent {
  static constexpr char kKind[] = "update_sent";
  int64_t round = 0;
  int64_t attempt = 0;
  std::string base_model_sha256;
  std::string update_sha256;
  int64_t bytes = 0;
  std::string dtype;
  int64_t num_examples = 0;
  std::optional<int64_t> resent_from_attempt;  // a kept update sent again
  template <class V>
  void Fields(V&& v) {
    v("round", round);
    v("attempt", attempt);
    v("base_model_sha256", base_model_sha256);
    v("update_sha256", update_sha256);
    v("bytes", bytes);
    v("dtype", dtype);
    v("num_examples", num_examples);
    v("resent_from_attempt", resent_from_attempt);
  }
};

struct UpdateOutcome {
  static constexpr char kKind[] = "update_outcome";
  int64_t round = 0;
  int64_t attempt = 0;
  std::string outcome;  // "accepted", "rejected: ...", ...
  template <class V>
  void Fields(V&& v) {
    v("round", round);
    v("attempt", attempt);
    v("outcome", outcome);
  }
};

struct BudgetRefused {
  static constexpr char kKind[] = "budget_refused";
  int64_t round = 0;
  int64_t attempt = 0;
  double epsilon_spent = 0;
  double epsilon_max = 0;
  double delta = 0;
  std::string detail;
  template <class V>
  void Fields(V&& v) {
    v("round", round);
    v("attempt", attempt);
    v("epsilon_spent", epsilon_spent);
    v("epsilon_max", epsilon_max);
    v("delta", delta);
    v("detail", detail);
  }
};

struct PolicyRefused {
  static constexpr char kKind[] = "policy_refused";
  std::string task;
  int64_t round = 0;
  int64_t attempt = 0;
  std::string detail;
  template <class V>
  void Fields(V&& v) {
    v("task", task);
    v("round", round);
    v("attempt", attempt);
    v("detail", detail);
  }
};

struct EvaluationSent {
  static constexpr char kKind[] = "evaluation_sent";
  int64_t round = 0;
  std::string model_sha256;
  bool suppressed = false;
  std::optional<JsonObject> release;  // what left, as it left (common/evaluation_release.h)
  template <class V>
  void Fields(V&& v) {
    v("round", round);
    v("model_sha256", model_sha256);
    v("suppressed", suppressed);
    v("release", release);
  }
};

// A privacy charge (node/privacy_budget.h), as committed.
struct DpCharge {
  static constexpr char kKind[] = "dp_charge";
  std::string charge;  // ChargeKindName
  std::string federation;
  int64_t round = 0;
  int64_t attempt = 0;
  std::string unit;
  int64_t units = 0;
  double noise_multiplier = 0;
  double clip_norm = 0;
  double sampling_rate = 0;
  int64_t steps = 0;
  double delta = 0;
  double epsilon_after = 0;
  double rdp_order = 0;
  std::optional<double> released;  // count releases
  template <class V>
  void Fields(V&& v) {
    v("charge", charge);
    v("federation", federation);
    v("round", round);
    v("attempt", attempt);
    v("unit", unit);
    v("units", units);
    v("noise_multiplier", noise_multiplier);
    v("clip_norm", clip_norm);
    v("sampling_rate", sampling_rate);
    v("steps", steps);
    v("delta", delta);
    v("epsilon_after", epsilon_after);
    v("rdp_order", rdp_order);
    v("released", released);
  }
};

// ----- the coordinator's ledger (coordinator/state_store.h) -----

struct ModelPublished {
  static constexpr char kKind[] = "model_published";
  int64_t round = 0;  // 0: the initial model
  std::string sha256;
  template <class V>
  void Fields(V&& v) {
    v("round", round);
    v("sha256", sha256);
  }
};

struct RoundOpened {
  static constexpr char kKind[] = "round_opened";
  int64_t round = 0;
  int64_t attempt = 0;
  std::string base_model_sha256;
  int64_t selected = 0;
  template <class V>
  void Fields(V&& v) {
    v("round", round);
    v("attempt", attempt);
    v("base_model_sha256", base_model_sha256);
    v("selected", selected);
  }
};

struct RoundResumed {
  static constexpr char kKind[] = "round_resumed";
  int64_t round = 0;
  int64_t attempt = 0;
  int64_t selected_connected = 0;
  template <class V>
  void Fields(V&& v) {
    v("round", round);
    v("attempt", attempt);
    v("selected_connected", selected_connected);
  }
};

struct RoundClosed {
  static constexpr char kKind[] = "round_closed";
  int64_t round = 0;
  int64_t attempt = 0;
  std::string status;  // "applied", "failed", "abandoned"
  std::optional<int64_t> answered;
  std::optional<std::string> note;
  template <class V>
  void Fields(V&& v) {
    v("round", round);
    v("attempt", attempt);
    v("status", status);
    v("answered", answered);
    v("note", note);
  }
};

struct AggregateInput {
  std::string site;
  std::string update_sha256;
  template <class V>
  void Fields(V&& v) {
    v("site", site);
    v("update_sha256", update_sha256);
  }
};

struct Aggregate {
  static constexpr char kKind[] = "aggregate";
  int64_t round = 0;
  int64_t attempt = 0;
  std::string strategy;
  std::string sha256;  // the model it made
  std::vector<AggregateInput> updates;
  template <class V>
  void Fields(V&& v) {
    v("round", round);
    v("attempt", attempt);
    v("strategy", strategy);
    v("sha256", sha256);
    v("updates", updates);
  }
};

// What the coordinator did with a site's answer to a training task; the
// three kinds share these fields.
struct SiteAnswer {
  int64_t round = 0;
  int64_t attempt = 0;
  std::string site;
  std::optional<std::string> update_sha256;  // not for a decline
  std::optional<int64_t> num_examples;       // accepted
  std::optional<std::string> reason;         // rejected, declined
  std::optional<int64_t> node_ledger_seq;    // the site's ledger head it reported
  std::optional<std::string> node_ledger_sha256;
  std::optional<double> epsilon_spent;  // as the site reported it (DP)
  std::optional<double> epsilon_max;
  std::optional<double> delta;
  std::optional<double> noise_multiplier;
  template <class V>
  void Fields(V&& v) {
    v("round", round);
    v("attempt", attempt);
    v("site", site);
    v("update_sha256", update_sha256);
    v("num_examples", num_examples);
    v("reason", reason);
    v("node_ledger_seq", node_ledger_seq);
    v("node_ledger_sha256", node_ledger_sha256);
    v("epsilon_spent", epsilon_spent);
    v("epsilon_max", epsilon_max);
    v("delta", delta);
    v("noise_multiplier", noise_multiplier);
  }
};
struct UpdateAccepted : SiteAnswer {
  static constexpr char kKind[] = "update_accepted";
};
struct UpdateRejected : SiteAnswer {
  static constexpr char kKind[] = "update_rejected";
};
struct UpdateDeclined : SiteAnswer {
  static constexpr char kKind[] = "update_declined";
};

struct EvaluationReceived {
  static constexpr char kKind[] = "evaluation_received";
  int64_t round = 0;
  std::string site;
  std::string model_sha256;
  int64_t count = 0;  // the released (noisy) count
  bool suppressed = false;
  std::optional<double> noise_multiplier;
  std::optional<int64_t> node_ledger_seq;
  std::optional<std::string> node_ledger_sha256;
  template <class V>
  void Fields(V&& v) {
    v("round", round);
    v("site", site);
    v("model_sha256", model_sha256);
    v("count", count);
    v("suppressed", suppressed);
    v("noise_multiplier", noise_multiplier);
    v("node_ledger_seq", node_ledger_seq);
    v("node_ledger_sha256", node_ledger_sha256);
  }
};

struct ReportRefused {
  static constexpr char kKind[] = "report_refused";
  std::string what;  // "evaluation", "decline"
  std::string site;
  int64_t round = 0;
  std::string reason;
  template <class V>
  void Fields(V&& v) {
    v("what", what);
    v("site", site);
    v("round", round);
    v("reason", reason);
  }
};

// Any entry's body, by its kind.
using Body =
    std::variant<WriterCertificate, LedgerRestarted, Config, RoundJoined, ModelReceived, ModelRefused,
                 CoordinatorCertificate, ModelVerified, DataAccess, UpdateSent, UpdateOutcome, BudgetRefused,
                 PolicyRefused, EvaluationSent, DpCharge, ModelPublished, RoundOpened, RoundResumed, RoundClosed,
                 Aggregate, UpdateAccepted, UpdateRejected, UpdateDeclined, EvaluationReceived, ReportRefused>;

// The body's JSON text. Defined for every alternative of Body.
template <class T>
std::string Encode(const T& entry);

// The entry's body as its kind says, checked; InvalidArgument naming the
// kind and the field otherwise (an unknown kind, a body too large or too
// deep, not an object, a field missing or of the wrong type).
absl::StatusOr<Body> DecodeBody(const std::string& kind, const std::string& body);

// The same, for an entry expected to be of kind T::kKind.
template <class T>
absl::StatusOr<T> Decode(const LedgerEntry& entry);

// Which ledger an entry belongs in: writer certificates and restarts in
// either, the others in the node's or the coordinator's alone.
enum class EntryWriter { kEither, kNode, kCoordinator };
EntryWriter WriterOf(const Body& body);

// The kind of a Body, and its JSON text.
const char* KindOf(const Body& body);
std::string EncodeBody(const Body& body);

}  // namespace fedrad::ledger

#endif  // FEDRAD_COMMON_LEDGER_ENTRIES_H_
