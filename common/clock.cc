#include "common/clock.h"

#include <vector>

#include "absl/time/clock.h"

namespace fedrad {

std::string UtcTime(int64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixMillis(unix_ms), absl::UTCTimeZone());
}
namespace {

class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
  void WaitUntil(absl::CondVar* cv, absl::Mutex* mu, absl::Time deadline) const override {
    cv->WaitWithDeadline(mu, deadline);
  }
};

}  // namespace

const Clock* Clock::Real() {
  static const RealClock* const clock = new RealClock();
  return clock;
}

absl::Time FakeClock::Now() const {
  absl::MutexLock lock(&mu_);
  return now_;
}

void FakeClock::WaitUntil(absl::CondVar* cv, absl::Mutex* mu, absl::Time deadline) const {
  uint64_t id;
  {
    absl::MutexLock lock(&mu_);
    if (now_ >= deadline) return;
    id = next_id_++;
    waiting_[id] = Waiter{cv, mu, deadline};
  }
  // `mu` is held from the check above until Wait releases it, and Advance
  // takes `mu` before it signals: no wakeup is lost in between.
  cv->Wait(mu);
  absl::MutexLock lock(&mu_);
  waiting_.erase(id);
}

void FakeClock::Advance(absl::Duration d) {
  std::vector<std::pair<absl::CondVar*, absl::Mutex*>> wake;
  {
    absl::MutexLock lock(&mu_);
    now_ += d;
    for (const auto& [id, w] : waiting_) wake.emplace_back(w.cv, w.mu);
  }
  for (auto [cv, mu] : wake) {
    absl::MutexLock lock(mu);
    cv->SignalAll();
  }
}

std::optional<absl::Time> FakeClock::NextDeadline() const {
  absl::MutexLock lock(&mu_);
  std::optional<absl::Time> next;
  for (const auto& [id, w] : waiting_) {
    if (w.deadline > now_ && (!next || w.deadline < *next)) next = w.deadline;
  }
  return next;
}

}  // namespace fedrad
