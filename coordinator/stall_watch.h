#ifndef FEDRAD_COORDINATOR_STALL_WATCH_H_
#define FEDRAD_COORDINATOR_STALL_WATCH_H_

#include <cstdint>
#include <set>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace fedrad::coordinator {

// A stream that a StallWatch can cut off when it moves no bytes.
class Stallable {
 public:
  virtual ~Stallable() = default;
  // From the StallWatch, under its lock (so the stream is alive): ends the
  // stream if it has moved nothing since `cutoff_ms` (on the watch's clock).
  virtual void CutOffIfIdleSince(int64_t cutoff_ms) = 0;
};

// Streams that stop: an admitted upload that brings nothing (header, bytes
// or its end) for `idle` is cut off and rejected, so that the round closes
// with the others instead of waiting for its deadline, and its slot goes to
// the next upload; a download whose reader takes nothing for `idle` is cut
// off too. One thread looks every quarter of `idle` (at most 1 s), on
// `clock` (a FakeClock in unit tests), which outlives the watch.
class StallWatch {
 public:
  explicit StallWatch(absl::Duration idle, const Clock* clock = Clock::Real());
  ~StallWatch();
  absl::Duration idle() const { return idle_; }
  // The time streams record their activity with.
  int64_t NowMs() const { return clock_->NowMs(); }
  void Add(Stallable* r);
  // From the stream's OnDone, before it is deleted: waits while a scan is
  // under way, so no stream is deleted under it.
  void Remove(Stallable* r);

 private:
  void Run();

  const absl::Duration idle_;
  const Clock* const clock_;
  absl::Mutex mu_;
  absl::CondVar stop_signal_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::set<Stallable*> watched_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: starts once the rest is built
};

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_STALL_WATCH_H_
