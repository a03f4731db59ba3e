#include "common/local_fault.h"

#include "absl/strings/cord.h"

namespace fedrad {
namespace {
constexpr char kLocalFault[] = "fedrad/local-fault";
}  // namespace

absl::Status MarkLocalFault(absl::Status s) {
  if (!s.ok()) s.SetPayload(kLocalFault, absl::Cord("1"));
  return s;
}

bool IsLocalFault(const absl::Status& s) { return !s.ok() && s.GetPayload(kLocalFault).has_value(); }

}  // namespace fedrad
