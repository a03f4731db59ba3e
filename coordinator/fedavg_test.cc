#include "coordinator/fedavg.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

namespace fedrad::coordinator {
namespace {

TEST(FedAvgTest, WeightsByExampleCount) {
  // global = [1, 2, 3]; site A (30 examples) delta [1, 0, -1]; site B (10
  // examples) delta [-3, 4, 1].  mean delta = (30*A + 10*B) / 40
  //   = [(30 - 30)/40, 40/40, (-30 + 10)/40] = [0, 1, -0.5]
  FedAvgAccumulator acc(3);
  const float a[] = {1, 0, -1};
  const float b[] = {-3, 4, 1};
  acc.AddChunk(0, a, 3, 30);
  acc.FinishUpdate(30);
  acc.AddChunk(0, b, 2, 10);  // in two chunks, as they arrive off the wire
  acc.AddChunk(2, b + 2, 1, 10);
  acc.FinishUpdate(10);
  // (30·[1, 0, -1] + 10·[-3, 4, 1]) / 40 = [0, 1, -0.5]
  auto out = std::move(acc).TakeMeanDelta();
  ASSERT_TRUE(out.ok());
  EXPECT_FLOAT_EQ((*out)[0], 0.0f);
  EXPECT_FLOAT_EQ((*out)[1], 1.0f);
  EXPECT_FLOAT_EQ((*out)[2], -0.5f);
}

TEST(FedAvgTest, NoUpdatesMeansNoModel) {
  FedAvgAccumulator acc(2);
  EXPECT_FALSE(std::move(acc).TakeMeanDelta().ok());
}

TEST(FedAvgTest, SpooledFileMustHaveTheModelsSize) {
  std::string path = std::filesystem::temp_directory_path() / ("fedavg_" + std::to_string(::getpid()));
  const float v[] = {2, 4};
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(v, sizeof(float), 2, f);
  std::fclose(f);
  FedAvgAccumulator ok(2);
  ASSERT_TRUE(ok.AddUpdateFile(path, 5).ok());
  EXPECT_FLOAT_EQ((*std::move(ok).TakeMeanDelta())[1], 4.0f);
  FedAvgAccumulator wrong(3);
  EXPECT_FALSE(wrong.AddUpdateFile(path, 5).ok());
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace fedrad::coordinator
