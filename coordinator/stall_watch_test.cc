#include "coordinator/stall_watch.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace fedrad::coordinator {
namespace {

// A stream that moved its last byte at `last_ms` and records its cut-off.
class Stream final : public Stallable {
 public:
  void CutOffIfIdleSince(int64_t cutoff_ms) override {
    if (last_ms.load() < cutoff_ms) cut_at_cutoff.store(cutoff_ms);
  }
  std::atomic<int64_t> last_ms{0};
  std::atomic<int64_t> cut_at_cutoff{0};
};

// Moves `clock` on a second at a time, each once the watch waits, and
// returns once it has looked at its streams.
void Tick(FakeClock& clock, int seconds) {
  for (int s = 0; s < seconds; ++s) {
    std::optional<absl::Time> next;
    for (int i = 0; i < 30000 && !(next = clock.NextDeadline()); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_TRUE(next.has_value()) << "the watch never waited on its clock";
    clock.Advance(*next - clock.Now());
    // Waiting again means the scan of that second is done.
    for (int i = 0; i < 30000 && !clock.NextDeadline(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

TEST(StallWatchTest, AStreamIsCutOffOnlyAfterIdleWithoutActivity) {
  FakeClock clock;
  Stream moving, stalled;
  StallWatch watch(absl::Seconds(8), &clock);  // looks every second
  moving.last_ms = stalled.last_ms = watch.NowMs();
  watch.Add(&moving);
  watch.Add(&stalled);
  for (int s = 0; s < 20; ++s) {
    Tick(clock, 1);
    moving.last_ms = watch.NowMs();  // keeps bringing bytes
  }
  EXPECT_EQ(moving.cut_at_cutoff.load(), 0) << "a stream that moves is never cut off";
  ASSERT_NE(stalled.cut_at_cutoff.load(), 0) << "8 s without a byte, 20 s on the clock";
  EXPECT_GT(stalled.cut_at_cutoff.load(), stalled.last_ms.load());
  watch.Remove(&moving);
  watch.Remove(&stalled);
}

TEST(StallWatchTest, NothingIsCutOffBeforeIdlePasses) {
  FakeClock clock;
  Stream stream;
  StallWatch watch(absl::Seconds(8), &clock);
  stream.last_ms = watch.NowMs();
  watch.Add(&stream);
  Tick(clock, 8);  // exactly idle: not yet past it
  EXPECT_EQ(stream.cut_at_cutoff.load(), 0);
  Tick(clock, 1);
  EXPECT_NE(stream.cut_at_cutoff.load(), 0);
  watch.Remove(&stream);
}

}  // namespace
}  // namespace fedrad::coordinator
