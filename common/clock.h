#ifndef FEDRAD_COMMON_CLOCK_H_
#define FEDRAD_COMMON_CLOCK_H_

// Time as the round driver, the node runtime and the stall watch see it:
// the real clock in the programs, a FakeClock in unit tests, so deadlines,
// pauses and retries are tested in milliseconds instead of waited out.

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fedrad {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
  // With `mu` held: waits until `cv` is signalled or `deadline` passes on
  // this clock. May return early (callers loop on their own condition).
  virtual void WaitUntil(absl::CondVar* cv, absl::Mutex* mu, absl::Time deadline) const = 0;
  int64_t NowMs() const { return absl::ToUnixMillis(Now()); }

  // The system's clock (absl::Now), shared.
  static const Clock* Real();
};

// A Unix time in milliseconds as the audit shows it: "2026-12-02 19:15:29 UTC".
std::string UtcTime(int64_t unix_ms);

// Time that moves only when a test says so. Waiters whose deadline passes
// wake up at once (no real time passes).
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1800000000)) : now_(start) {}
  absl::Time Now() const override;
  void WaitUntil(absl::CondVar* cv, absl::Mutex* mu, absl::Time deadline) const override;
  // Moves time on by `d` and wakes every waiter.
  void Advance(absl::Duration d);
  // The earliest deadline a thread now waits for that has not passed, if
  // any: a test waits for the code under test to be waiting before it moves
  // time on.
  std::optional<absl::Time> NextDeadline() const;

 private:
  struct Waiter {
    absl::CondVar* cv;
    absl::Mutex* mu;
    absl::Time deadline;
  };
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  mutable uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  mutable std::map<uint64_t, Waiter> waiting_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedrad

#endif  // FEDRAD_COMMON_CLOCK_H_
