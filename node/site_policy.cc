#include "node/site_policy.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fedrad::node {

std::optional<std::string> ArchitectureViolation(const SitePolicy& policy, const std::string& architecture) {
  if (policy.architectures.empty() ||
      std::find(policy.architectures.begin(), policy.architectures.end(), architecture) != policy.architectures.end()) {
    return std::nullopt;
  }
  return absl::StrCat("[policy] architectures: the plan's model '", architecture, "' is not one this site allows (",
                      absl::StrJoin(policy.architectures, ", "), ")");
}

std::optional<std::string> PolicyViolation(const SitePolicy& policy, const TaskAsk& ask) {
  if (std::optional<std::string> v = ArchitectureViolation(policy, ask.architecture)) return v;
  if (policy.max_local_epochs > 0 && ask.local_epochs > policy.max_local_epochs) {
    return absl::StrCat("[policy] max_local_epochs: the task asks ", ask.local_epochs,
                        " local epochs, more than this site's ", policy.max_local_epochs);
  }
  if (policy.min_batch_size > 0 && ask.batch_size < policy.min_batch_size) {
    return absl::StrCat("[policy] min_batch_size: the task asks a batch of ", ask.batch_size,
                        ", smaller than this site's ", policy.min_batch_size);
  }
  return std::nullopt;
}

int EffectiveMinReport(const SitePolicy& policy, int plan_min_report) {
  return std::max(policy.min_report, plan_min_report);
}

}  // namespace fedrad::node
