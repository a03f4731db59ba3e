#include "coordinator/serial_worker.h"

#include <utility>

namespace fedrad::coordinator {

SerialWorker::SerialWorker() : thread_([this] { Loop(); }) {}

SerialWorker::~SerialWorker() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void SerialWorker::Post(std::function<void()> work) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(work));
}

void SerialWorker::Drain() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(this, &SerialWorker::Idle));
}

void SerialWorker::Loop() {
  absl::MutexLock lock(&mu_);
  while (true) {
    mu_.Await(absl::Condition(this, &SerialWorker::HasWorkOrStops));
    if (queue_.empty()) return;  // stopping, and nothing left
    std::function<void()> work = std::move(queue_.front());
    queue_.pop_front();
    running_ = true;
    mu_.Unlock();
    work();
    mu_.Lock();
    running_ = false;
  }
}

}  // namespace fedrad::coordinator
