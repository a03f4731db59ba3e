#ifndef FEDRAD_COORDINATOR_SERIAL_WORKER_H_
#define FEDRAD_COORDINATOR_SERIAL_WORKER_H_

// One thread that runs posted work in order: where the coordinator does
// what waits on disk (fsync'd SQLite commits, ledger signatures, re-reading
// spooled updates) instead of on gRPC's reactor threads, which must never
// block (every other upload's chunks wait behind a blocked reactor).

#include <deque>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace fedrad::coordinator {

class SerialWorker {
 public:
  SerialWorker();
  // Runs what is still queued, then ends the thread.
  ~SerialWorker();
  SerialWorker(const SerialWorker&) = delete;
  SerialWorker& operator=(const SerialWorker&) = delete;

  // Runs `work` after everything posted before it. Never blocks.
  void Post(std::function<void()> work);
  // Returns once everything posted before the call has run (tests, shutdown).
  void Drain();

 private:
  void Loop();
  bool Idle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queue_.empty() && !running_; }
  bool HasWorkOrStops() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stop_; }

  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;  // a job is being run
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_SERIAL_WORKER_H_
