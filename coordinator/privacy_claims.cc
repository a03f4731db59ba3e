#include "coordinator/privacy_claims.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace fedrad::coordinator {

absl::Status PrivacyClaims::Check(const std::string& site, const SitePrivacy& r,
                                  const std::string& update_sha256) const {
  absl::MutexLock lock(&mu_);
  auto it = sites_.find(site);
  PrivacyAccountant bound = it == sites_.end() ? PrivacyAccountant() : it->second.composed;
  const int earlier = it == sites_.end() ? 0 : it->second.updates;
  const bool again = it != sites_.end() && it->second.composed_updates.count(update_sha256);
  if (!again) bound.Compose(r.noise_multiplier, r.sampling_rate, r.steps);
  const double least = bound.GetEpsilon(r.delta).epsilon;
  if (r.epsilon_spent < least * (1 - kTolerance)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the privacy report claims epsilon %.6g, but %s give at least %.6g at delta %g (the same accountant as the "
        "nodes')",
        r.epsilon_spent,
        again ? absl::StrFormat("the mechanisms of its %d accepted update(s), this one among them", earlier)
              : absl::StrFormat(
                    "sigma %g, q %g and %d steps for this update%s", r.noise_multiplier, r.sampling_rate, r.steps,
                    earlier > 0 ? absl::StrFormat(" and those of its %d earlier accepted update(s)", earlier) : ""),
        least, r.delta));
  }
  if (it != sites_.end() && it->second.last_delta == r.delta &&
      r.epsilon_spent < it->second.last_epsilon * (1 - kTolerance)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the privacy report claims epsilon %.6g, below the %.6g this site claimed before: a site's epsilon never "
        "goes down",
        r.epsilon_spent, it->second.last_epsilon));
  }
  return absl::OkStatus();
}

absl::Status PrivacyClaims::CheckDecline(const std::string& site, double epsilon) const {
  absl::MutexLock lock(&mu_);
  auto it = sites_.find(site);
  if (it == sites_.end()) return absl::OkStatus();
  const Site& s = it->second;
  const double least = std::max(s.last_epsilon, s.updates > 0 ? s.composed.GetEpsilon(s.last_delta).epsilon : 0.0);
  if (epsilon < least * (1 - kTolerance)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the decline claims epsilon %.6g, below the %.6g this site's earlier reports give: a site's epsilon never "
        "goes down",
        epsilon, least));
  }
  return absl::OkStatus();
}

void PrivacyClaims::RecordUpdate(const std::string& site, const SitePrivacy& r, const std::string& update_sha256) {
  absl::MutexLock lock(&mu_);
  Site& s = sites_[site];
  if (s.composed_updates.insert(update_sha256).second) {
    s.composed.Compose(r.noise_multiplier, r.sampling_rate, r.steps);
    ++s.updates;
  }
  RecordClaim(s, r);
}

void PrivacyClaims::RecordDecline(const std::string& site, const SitePrivacy& r) {
  absl::MutexLock lock(&mu_);
  RecordClaim(sites_[site], r);
}

void PrivacyClaims::RecordClaim(Site& s, const SitePrivacy& r) {
  // A decline carries no delta: it is at the site's last one.
  const double delta = r.delta > 0 ? r.delta : s.last_delta;
  if (delta != s.last_delta) {
    s.last_delta = delta;
    s.last_epsilon = 0;
  }
  s.last_epsilon = std::max(s.last_epsilon, r.epsilon_spent);
}

double PrivacyClaims::LowerBound(const std::string& site, double delta) const {
  absl::MutexLock lock(&mu_);
  auto it = sites_.find(site);
  if (it == sites_.end() || it->second.updates == 0) return 0;
  return it->second.composed.GetEpsilon(delta).epsilon;
}

}  // namespace fedrad::coordinator
