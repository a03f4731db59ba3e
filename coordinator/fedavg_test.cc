#include "coordinator/fedavg.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <future>
#include <random>
#include <thread>

namespace fedrad::coordinator {
namespace {

class UpdateSumTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/fedavg_test_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Streams `values` into contribution `id` in chunks of `chunk` values,
  // spooling each before folding it, as the service does; stops after
  // `stop_after` values.
  void Stream(UpdateSum& sum, uint64_t id, double weight, const std::vector<float>& values, size_t chunk,
              size_t stop_after = SIZE_MAX) {
    const std::string path = dir_ + "/" + std::to_string(id) + ".bin";
    ASSERT_TRUE(sum.Begin(id, weight, path).ok());
    FILE* f = std::fopen(path.c_str(), "wb");
    for (size_t off = 0; off < values.size() && off < stop_after; off += chunk) {
      const size_t n = std::min(chunk, values.size() - off);
      std::fwrite(values.data() + off, sizeof(float), n, f);
      std::fflush(f);
      ASSERT_TRUE(sum.Add(id, off, values.data() + off, n).ok());
    }
    std::fclose(f);
  }

  // The mean deltas of a sealed sum.
  static std::vector<float> Means(const UpdateSum& sum) {
    EXPECT_GT(sum.accepted(), 0);
    std::vector<float> out(sum.size());
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(sum.Mean(i));
    return out;
  }

  std::string dir_;
};

TEST_F(UpdateSumTest, WeightsByExampleCount) {
  // Site A (30 examples) delta [1, 0, -1]; site B (10 examples) delta
  // [-3, 4, 1]: (30·[1, 0, -1] + 10·[-3, 4, 1]) / 40 = [0, 1, -0.5].
  UpdateSum sum(3);
  Stream(sum, 1, 30, {1, 0, -1}, 3);
  Stream(sum, 2, 10, {-3, 4, 1}, 2);  // in two chunks, as they arrive off the wire
  ASSERT_TRUE(sum.Accept(1).ok());
  ASSERT_TRUE(sum.Accept(2).ok());
  ASSERT_TRUE(sum.Seal().ok());
  EXPECT_EQ(sum.accepted(), 2);
  EXPECT_DOUBLE_EQ(sum.total_weight(), 40);
  EXPECT_EQ(Means(sum), (std::vector<float>{0, 1, -0.5f}));
}

TEST(CappedWeightsTest, NoWeightPassesTheRatioTimesTheLowerMedian) {
  // The review's case: a site claiming 2^40 examples next to honest ones.
  const double huge = std::ldexp(1.0, 40);
  EXPECT_EQ(CappedWeights({100, huge}, 10), (std::vector<double>{100, 1000}));  // lower median of two: 100
  EXPECT_EQ(CappedWeights({100, 120, huge}, 10), (std::vector<double>{100, 120, 1200}));
  EXPECT_EQ(CappedWeights({100, 120, 90}, 10), (std::vector<double>{100, 120, 90})) << "honest sites untouched";
  EXPECT_EQ(CappedWeights({100, huge}, 0), (std::vector<double>{100, huge})) << "0: no cap";
  EXPECT_EQ(CappedWeights({huge}, 10), (std::vector<double>{huge})) << "alone, a weight means nothing";
}

// Capping after the fact gives the sum a fresh fold with the capped weights
// would have.
TEST_F(UpdateSumTest, ReweightingASealedSumEqualsFoldingWithTheNewWeights) {
  UpdateSum reference(3);
  Stream(reference, 1, 30, {1, 0, -1}, 3);
  Stream(reference, 2, 300, {-3, 4, 1}, 3);
  ASSERT_TRUE(reference.Accept(1).ok() && reference.Accept(2).ok() && reference.Seal().ok());
  UpdateSum sum(3);
  Stream(sum, 1, 30, {1, 0, -1}, 3);
  Stream(sum, 2, 1e12, {-3, 4, 1}, 2);
  ASSERT_TRUE(sum.Accept(1).ok() && sum.Accept(2).ok());
  EXPECT_FALSE(sum.Reweight({{2, 300}}).ok()) << "only once sealed";
  ASSERT_TRUE(sum.Seal().ok());
  ASSERT_TRUE(sum.Reweight({{2, 300}}).ok());
  EXPECT_DOUBLE_EQ(sum.total_weight(), 330);
  EXPECT_EQ(Means(sum), Means(reference));
  EXPECT_FALSE(sum.Reweight({{1, 0}}).ok());
}

// A rejected update is taken back without a trace in the mean, even one with
// large values and a large weight (subtracting it again would leave
// residue of about 1e-10 here, a tenth of a percent of these means).
TEST_F(UpdateSumTest, UpdateRejectedPartWayLeavesNoTrace) {
  std::mt19937 rng(5);
  std::normal_distribution<float> small(0, 1e-4f);
  const size_t n = 5000;
  std::vector<float> a(n), b(n), hostile(n, 0);
  for (size_t i = 0; i < n; ++i) a[i] = small(rng), b[i] = small(rng);
  for (size_t i = 0; i < n; i += 7) hostile[i] = (i % 2 ? 1000.0f : -1000.0f);

  UpdateSum reference(n);
  Stream(reference, 1, 3, a, 512);
  Stream(reference, 2, 5, b, 512);
  ASSERT_TRUE(reference.Accept(1).ok() && reference.Accept(2).ok() && reference.Seal().ok());

  UpdateSum sum(n);
  Stream(sum, 1, 3, a, 512);
  Stream(sum, 7, 1000, hostile, 512, /*stop_after=*/3000);  // interleaved, then broken off
  Stream(sum, 2, 5, b, 512);
  ASSERT_TRUE(sum.Accept(1).ok() && sum.Accept(2).ok());
  EXPECT_FALSE(sum.Accept(7).ok()) << "an incomplete update cannot count";
  ASSERT_TRUE(sum.Withdraw(7).ok());
  ASSERT_TRUE(sum.Withdraw(7).ok()) << "taking back twice is harmless";
  ASSERT_TRUE(sum.Seal().ok());
  EXPECT_EQ(sum.accepted(), 2);
  EXPECT_DOUBLE_EQ(sum.total_weight(), 8);
  EXPECT_EQ(Means(sum), Means(reference));
}

// Taking a rejected upload out re-reads every other spooled update; the
// other uploads' chunks keep being folded meanwhile, and the sum ends as if
// the rejected one had never come. The re-read here blocks on a FIFO (the
// spool of update 1) until the test writes it, so the chunk of update 2 is
// folded while the withdrawal is certainly in the middle of its pass.
TEST_F(UpdateSumTest, ChunksKeepFlowingWhileAnotherUploadIsWithdrawn) {
  const std::vector<float> a = {1, 2, 3, 4}, b = {10, 20, 30, 40}, c = {-7, 7, -7, 7};
  UpdateSum reference(4);
  Stream(reference, 1, 1, a, 4);
  Stream(reference, 2, 2, b, 4);
  ASSERT_TRUE(reference.Accept(1).ok() && reference.Accept(2).ok() && reference.Seal().ok());

  UpdateSum sum(4);
  const std::string fifo = dir_ + "/1.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  ASSERT_TRUE(sum.Begin(1, 1, fifo).ok());
  ASSERT_TRUE(sum.Add(1, 0, a.data(), 4).ok());  // its bytes reach the spool below
  Stream(sum, 2, 2, b, 2, /*stop_after=*/2);     // half of update 2 so far
  Stream(sum, 3, 1, c, 4);                       // to be rejected
  absl::Status withdrawn = absl::UnknownError("not run");
  std::thread withdraw([&] { withdrawn = sum.Withdraw(3); });
  // The withdrawal has opened the FIFO for reading once a writer can open it.
  int writer = -1;
  for (int i = 0; i < 20000 && writer < 0; ++i) {
    writer = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
    if (writer < 0) std::this_thread::yield();
  }
  ASSERT_GE(writer, 0) << "the withdrawal never read the other spooled updates";
  // Now it waits for update 1's bytes: update 2's second half goes on.
  {
    FILE* f = std::fopen((dir_ + "/2.bin").c_str(), "ab");
    std::fwrite(b.data() + 2, sizeof(float), 2, f);
    std::fclose(f);
  }
  std::future<absl::Status> added = std::async(std::launch::async, [&] { return sum.Add(2, 2, b.data() + 2, 2); });
  const bool flowed = added.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  EXPECT_TRUE(flowed) << "a chunk of another upload waited for the withdrawal's pass over the spool";
  ASSERT_EQ(::write(writer, a.data(), a.size() * sizeof(float)), static_cast<ssize_t>(a.size() * sizeof(float)));
  ::close(writer);
  withdraw.join();
  ASSERT_TRUE(withdrawn.ok()) << withdrawn;
  ASSERT_TRUE(added.get().ok());
  ASSERT_TRUE(sum.Accept(1).ok() && sum.Accept(2).ok());
  EXPECT_FALSE(sum.Accept(3).ok()) << "a withdrawn update cannot count";
  ASSERT_TRUE(sum.Seal().ok());
  EXPECT_EQ(Means(sum), Means(reference)) << "caught up on what arrived during the pass, and nothing of update 3";
}

// The coordinator overwrites a site's spool file in place every round, so an
// upload in progress may sit in front of the previous round's values: taking
// another update out must re-read only what this upload has written.
TEST_F(UpdateSumTest, StaleSpoolTailIsNeverRead) {
  const size_t n = 4096, half = 2048;
  std::vector<float> a(n, 0.25f), b(n), hostile(n, 500.0f);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<float>(i % 13) * 1e-3f;
  UpdateSum reference(n);
  Stream(reference, 1, 2, a, 512);
  Stream(reference, 2, 3, b, 512);
  ASSERT_TRUE(reference.Accept(1).ok() && reference.Accept(2).ok() && reference.Seal().ok());

  const std::string path = dir_ + "/site-b.bin";
  {
    const std::vector<float> last_round(n, 1e6f);
    FILE* f = std::fopen(path.c_str(), "wb");
    std::fwrite(last_round.data(), sizeof(float), n, f);
    std::fclose(f);
  }
  UpdateSum sum(n);
  Stream(sum, 1, 2, a, 512);
  ASSERT_TRUE(sum.Begin(2, 3, path).ok());
  FILE* f = std::fopen(path.c_str(), "r+b");  // as the service opens it: no truncation
  ASSERT_NE(f, nullptr);
  std::fwrite(b.data(), sizeof(float), half, f);
  std::fflush(f);
  ASSERT_TRUE(sum.Add(2, 0, b.data(), half).ok());
  Stream(sum, 7, 1, hostile, 512, /*stop_after=*/1024);
  ASSERT_TRUE(sum.Withdraw(7).ok());  // re-folds 1 whole and 2's first half from their files
  std::fwrite(b.data() + half, sizeof(float), n - half, f);
  std::fclose(f);
  ASSERT_TRUE(sum.Add(2, half, b.data() + half, n - half).ok());
  ASSERT_TRUE(sum.Accept(1).ok() && sum.Accept(2).ok() && sum.Seal().ok());
  EXPECT_EQ(Means(sum), Means(reference));
}

TEST_F(UpdateSumTest, ClosingTakesBackUnfinishedUploadsAndRefusesMore) {
  UpdateSum sum(4);
  Stream(sum, 1, 1, {1, 2, 3, 4}, 4);
  Stream(sum, 2, 1, {50, 60, 70, 80}, 2, /*stop_after=*/2);  // still uploading
  ASSERT_TRUE(sum.Accept(1).ok());
  ASSERT_TRUE(sum.Seal().ok());
  const float late[] = {70, 80};
  EXPECT_FALSE(sum.Add(2, 2, late, 2).ok());
  EXPECT_FALSE(sum.Accept(2).ok());
  EXPECT_FALSE(sum.Begin(3, 1, dir_ + "/3.bin").ok());
  EXPECT_EQ(Means(sum), (std::vector<float>{1, 2, 3, 4}));
}

TEST_F(UpdateSumTest, RefusesOutOfOrderChunksAndUnknownUpdates) {
  UpdateSum sum(4);
  ASSERT_TRUE(sum.Begin(1, 1, dir_ + "/1.bin").ok());
  EXPECT_FALSE(sum.Begin(1, 1, dir_ + "/1.bin").ok());
  EXPECT_FALSE(sum.Begin(2, 0, dir_ + "/2.bin").ok()) << "weight must be positive";
  const float v[] = {1, 2, 3, 4, 5};
  EXPECT_FALSE(sum.Add(1, 2, v, 2).ok()) << "a gap";
  EXPECT_FALSE(sum.Add(1, 0, v, 5).ok()) << "past the end";
  EXPECT_FALSE(sum.Add(9, 0, v, 1).ok()) << "never began";
  ASSERT_TRUE(sum.Seal().ok());
  EXPECT_EQ(sum.accepted(), 0) << "an update that never completed does not count";
}

TEST_F(UpdateSumTest, SpooledFileMustHaveTheModelsSize) {
  const std::string path = dir_ + "/file.bin";
  const float v[] = {2, 4};
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(v, sizeof(float), 2, f);
  std::fclose(f);
  UpdateSum ok(2);
  ASSERT_TRUE(ok.AddFile(path, 5).ok());
  ASSERT_TRUE(ok.Seal().ok());
  EXPECT_EQ(Means(ok), (std::vector<float>{2, 4}));
  EXPECT_FALSE(ok.AddFile(path, 5).ok()) << "sealed";
  UpdateSum wrong(3);
  EXPECT_FALSE(wrong.AddFile(path, 5).ok());
  EXPECT_EQ(wrong.accepted(), 0);
}

}  // namespace
}  // namespace fedrad::coordinator
