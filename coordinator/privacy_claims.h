#ifndef FEDRAD_COORDINATOR_PRIVACY_CLAIMS_H_
#define FEDRAD_COORDINATOR_PRIVACY_CLAIMS_H_

#include <map>
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

  // OK if `report`, the next claim of `site`, is possible after what the
  // site reported before; otherwise InvalidArgument saying why, with both
  // figures.
  absl::Status Check(const std::string& site, const SitePrivacy& report) const;
  // The same for a decline, which names no mechanism: its ε must not be
  // below the site's earlier claims or their bound.
  absl::Status CheckDecline(const std::string& site, double epsilon) const;
  // Counts `report` as an update the site sent (its mechanism is composed
  // into the site's bound) or, for a decline (delta 0: the site's last),
  // only its claimed ε. Call it for accepted updates and declines only: a
  // rejected report proves nothing.
  void Record(const std::string& site, const SitePrivacy& report, bool update);
  // The bound so far of `site` at `delta` (0 before any update).
  double LowerBound(const std::string& site, double delta) const;

 private:
  struct Site {
    PrivacyAccountant composed;
    int updates = 0;
    double last_epsilon = 0;
    double last_delta = 0;
  };
  mutable absl::Mutex mu_;
  std::map<std::string, Site> sites_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_PRIVACY_CLAIMS_H_
