#include "common/protocol.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "crypto/sha256.h"

namespace fedrad::protocol {
namespace {

bool InRange(double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; }

}  // namespace

absl::Status CheckLedgerHead(uint64_t seq, const std::string& sha256) {
  if (seq > (uint64_t{1} << 53) || (seq > 0) != crypto::IsSha256Hex(sha256) || (seq == 0 && !sha256.empty())) {
    return absl::InvalidArgumentError("the node's ledger head (ledger_seq, ledger_sha256) is malformed");
  }
  return absl::OkStatus();
}

absl::Status CheckPrivacyReport(const PrivacyReport& r) {
  if (r.unit != "patient" && r.unit != "image") {
    return absl::InvalidArgumentError("privacy.unit must be \"patient\" or \"image\"");
  }
  if (!InRange(r.noise_multiplier, 0, 1e6) || !InRange(r.clip_norm, 0, 1e6) || r.clip_norm == 0 ||
      !InRange(r.sampling_rate, 0, 1) || r.sampling_rate == 0 || r.steps < 1 || r.steps > (int64_t{1} << 32) ||
      !InRange(r.delta, 0, 1) || r.delta == 0 || r.delta == 1 || !InRange(r.epsilon_spent, 0, 1e6) ||
      !InRange(r.epsilon_max, 0, 1e6) || r.epsilon_max == 0) {
    return absl::InvalidArgumentError("the update's privacy report has a value out of range");
  }
  if (r.epsilon_spent > r.epsilon_max * (1 + 1e-9)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the update's privacy report says epsilon %.4f, past the site's own epsilon_max %.4g",
                        r.epsilon_spent, r.epsilon_max));
  }
  return absl::OkStatus();
}

absl::Status CheckUpdateClaim(const UpdateClaim& c) {
  if (!crypto::IsSha256Hex(c.update_sha256)) return absl::InvalidArgumentError("update_sha256 is not a SHA-256");
  if (absl::Status head = CheckLedgerHead(c.ledger_seq, c.ledger_sha256); !head.ok()) return head;
  if (c.num_examples < 1 || c.num_examples > kMaxExamplesPerUpdate) {
    return absl::InvalidArgumentError(absl::StrCat("num_examples ", c.num_examples, " is out of range"));
  }
  if (c.train_loss && !std::isfinite(*c.train_loss)) return absl::InvalidArgumentError("train_loss is not finite");
  if (c.pipeline.size() > 1024 ||
      !std::all_of(c.pipeline.begin(), c.pipeline.end(), [](char ch) { return ch >= 0x20 && ch < 0x7f; })) {
    return absl::InvalidArgumentError("the preprocessing pipeline is not a short printable description");
  }
  if (c.privacy) return CheckPrivacyReport(*c.privacy);
  return absl::OkStatus();
}

}  // namespace fedrad::protocol
