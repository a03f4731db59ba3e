#ifndef FEDRAD_COORDINATOR_STREAM_GATE_H_
#define FEDRAD_COORDINATOR_STREAM_GATE_H_

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace fedrad::coordinator {

// Admission of streams that move a model's worth of bytes (downloads,
// uploads): at most `limit` run at once, the rest wait in arrival order
// without being read or written, so the coordinator's memory (its own chunk
// buffers, and gRPC's and TLS's buffers behind them) does not grow with the
// number of nodes. A site has at most one stream of each kind admitted or
// waiting; another is refused.
class StreamGate {
 public:
  explicit StreamGate(int limit) : limit_(limit) {}
  enum class Entry { kAdmitted, kWaiting, kDuplicate };
  // kWaiting: `admit` runs (on another stream's thread) when a slot frees.
  // `key` identifies the waiter for Withdraw.
  Entry Enter(const std::string& site, const void* key, std::function<void()> admit) {
    absl::MutexLock lock(&mu_);
    if (!sites_.insert(site).second) return Entry::kDuplicate;
    if (active_ < limit_) {
      ++active_;
      peak_ = std::max(peak_, active_);
      return Entry::kAdmitted;
    }
    ++waited_;
    waiting_.push_back({key, std::move(admit)});
    return Entry::kWaiting;
  }
  // For the log at shutdown: the most streams admitted at once, and how many
  // had to wait for a slot.
  std::string Use() {
    absl::MutexLock lock(&mu_);
    return absl::StrCat("at most ", peak_, " at once (limit ", limit_, "), ", waited_, " waited for a slot");
  }
  // A waiting stream gave up (cancelled). False: it was admitted meanwhile.
  bool Withdraw(const void* key) {
    absl::MutexLock lock(&mu_);
    auto it = std::find_if(waiting_.begin(), waiting_.end(), [&](const Waiter& w) { return w.key == key; });
    if (it == waiting_.end()) return false;
    waiting_.erase(it);
    return true;
  }
  // Once per Enter that did not answer kDuplicate: frees the site, and the
  // slot if it held one, which the next waiting stream takes over.
  void Leave(const std::string& site, bool admitted) {
    std::function<void()> next;
    {
      absl::MutexLock lock(&mu_);
      sites_.erase(site);
      if (!admitted) return;
      if (waiting_.empty()) {
        --active_;
        return;
      }
      next = std::move(waiting_.front().admit);
      waiting_.pop_front();
    }
    next();
  }

 private:
  struct Waiter {
    const void* key;
    std::function<void()> admit;
  };
  const int limit_;
  absl::Mutex mu_;
  int active_ ABSL_GUARDED_BY(mu_) = 0;
  int peak_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t waited_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<Waiter> waiting_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> sites_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_STREAM_GATE_H_
