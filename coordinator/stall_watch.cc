#include "coordinator/stall_watch.h"

#include <algorithm>

namespace fedrad::coordinator {

StallWatch::StallWatch(absl::Duration idle, const Clock* clock)
    : idle_(idle), clock_(clock), thread_([this] { Run(); }) {}

StallWatch::~StallWatch() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    stop_signal_.SignalAll();
  }
  thread_.join();
}

void StallWatch::Add(Stallable* r) {
  absl::MutexLock lock(&mu_);
  watched_.insert(r);
}

void StallWatch::Remove(Stallable* r) {
  absl::MutexLock lock(&mu_);
  watched_.erase(r);
}

// Cutting off (End, hence Finish) happens under mu_: a stream's OnDone,
// which gRPC runs later on its own thread (never inside Finish), waits in
// Remove until the scan is over, so no stream is deleted under it.
void StallWatch::Run() {
  const absl::Duration tick = std::min(idle_ / 4, absl::Seconds(1));
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    const absl::Time next = clock_->Now() + tick;
    while (!stop_ && clock_->Now() < next) clock_->WaitUntil(&stop_signal_, &mu_, next);
    if (stop_) return;
    const int64_t cutoff = absl::ToUnixMillis(clock_->Now() - idle_);
    for (Stallable* r : watched_) r->CutOffIfIdleSince(cutoff);
  }
}

}  // namespace fedrad::coordinator
