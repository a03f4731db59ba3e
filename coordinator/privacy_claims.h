#ifndef FEDRAD_COORDINATOR_PRIVACY_CLAIMS_H_
#define FEDRAD_COORDINATOR_PRIVACY_CLAIMS_H_

#include <map>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/privacy_accountant.h"
#include "coordinator/state_store.h"

namespace fedrad::coordinator {

// What sites claim about their privacy, checked before it is believed.
//
// The coordinator cannot read a site's ledger, but every DP report names the
// mechanism the site ran for that update (σ, q, steps). Composing those of
// the site's accepted updates and the new one with the same accountant the
// nodes use gives a lower bound on what the site has spent: its ledger holds
// at least those charges (and more: count releases, attempts whose update
// never arrived). A claimed ε below that bound, or below the site's own
// previous claim at the same δ, cannot come from an honest node and is
// refused. The bound is post-processing of what the site sent; it costs the
// site nothing. Thread-safe.
class PrivacyClaims {
 public:
  // Relative slack for the same accountant run in another order on another
  // machine; far below any difference a wrong report makes.
  static constexpr double kTolerance = 1e-6;

  // OK if `report`, the next claim of `site` with the update of SHA-256
  // `update_sha256`, is possible after what the site reported before;
  // otherwise InvalidArgument saying why, with both figures. An update the
  // site sent before (a kept update sent again to a resumed or retried
  // attempt) is the same release: its mechanism is not composed twice.
  absl::Status Check(const std::string& site, const SitePrivacy& report, const std::string& update_sha256) const;
  // The same for a decline, which names no mechanism: its ε must not be
  // below the site's earlier claims or their bound.
  absl::Status CheckDecline(const std::string& site, double epsilon) const;
  // Counts `report` as the update `update_sha256` the site sent (its
  // mechanism is composed into the site's bound, once per update). Call it
  // for accepted updates only: a rejected report proves nothing.
  void RecordUpdate(const std::string& site, const SitePrivacy& report, const std::string& update_sha256);
  // Counts a decline's claimed ε (delta 0: at the site's last delta).
  void RecordDecline(const std::string& site, const SitePrivacy& report);
  // The bound so far of `site` at `delta` (0 before any update).
  double LowerBound(const std::string& site, double delta) const;

 private:
  struct Site {
    PrivacyAccountant composed;
    int updates = 0;
    std::set<std::string> composed_updates;  // their SHA-256s
    double last_epsilon = 0;
    double last_delta = 0;
  };
  // The claimed ε, at the report's delta (or the last one).
  static void RecordClaim(Site& s, const SitePrivacy& report);
  mutable absl::Mutex mu_;
  std::map<std::string, Site> sites_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_PRIVACY_CLAIMS_H_
