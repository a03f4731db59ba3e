#include "coordinator/strategy.h"

#include "common/system_memory.h"
#include "coordinator/strategy_registry.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace fedrad::coordinator {
namespace {

class StrategyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // One folder per process: ctest runs these tests in parallel processes.
    dir_ = ::testing::TempDir() + "/strategy_test_" + std::to_string(::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  UpdateRef Update(const std::string& site, const std::vector<float>& delta, double weight = 1) {
    const std::string path = dir_ + "/" + site + "-" + std::to_string(++n_) + ".bin";
    FILE* f = std::fopen(path.c_str(), "wb");
    std::fwrite(delta.data(), sizeof(float), delta.size(), f);
    std::fclose(f);
    return {site, path, weight};
  }

  std::vector<float> Run(Strategy& s, std::vector<float> global, const std::vector<UpdateRef>& updates) {
    absl::StatusOr<AggregateResult> r = s.Aggregate(1, RoundUpdates{updates, nullptr}, &global);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok() || !r->changed) return {};
    return global;
  }

  std::unique_ptr<Strategy> Make(const std::string& name, StrategySettings s = {}) {
    s.name = name;
    absl::StatusOr<std::unique_ptr<Strategy>> made = CreateStrategy(s, 2);
    EXPECT_TRUE(made.ok()) << made.status();
    return std::move(*made);
  }

  std::string dir_;
  int n_ = 0;
};

TEST_F(StrategyTest, FedAvgIsTheExampleWeightedMean) {
  auto s = Make("fedavg");
  // (1·[1, 2] + 3·[3, 6]) / 4 = [2.5, 5], added to [1, -1].
  std::vector<float> next = Run(*s, {1, -1}, {Update("a", {1, 2}, 1), Update("b", {3, 6}, 3)});
  ASSERT_EQ(next.size(), 2u);
  EXPECT_FLOAT_EQ(next[0], 3.5f);
  EXPECT_FLOAT_EQ(next[1], 4.0f);
  StrategySettings half;
  half.server_learning_rate = 0.5;
  next = Run(*Make("fedavg", half), {0, 0}, {Update("a", {1, 2}, 1), Update("b", {3, 6}, 3)});
  EXPECT_FLOAT_EQ(next[0], 1.25f);
}

TEST_F(StrategyTest, FedAvgMAccumulatesServerMomentumAndRestoresIt) {
  auto s = Make("fedavgm");  // beta 0.9, eta 1
  std::vector<float> x = Run(*s, {0, 0}, {Update("a", {1, -2})});
  EXPECT_FLOAT_EQ(x[0], 1.0f);  // v = delta
  const std::vector<float> saved = s->SaveState();
  x = Run(*s, x, {Update("a", {1, -2})});
  EXPECT_FLOAT_EQ(x[0], 1.0f + 1.9f);  // v = 0.9 delta + delta
  EXPECT_FLOAT_EQ(x[1], -2.0f - 3.8f);
  // A restarted coordinator restores the state and takes the same step.
  auto restarted = Make("fedavgm");
  ASSERT_TRUE(restarted->RestoreState(saved).ok());
  std::vector<float> again = Run(*restarted, {1, -2}, {Update("a", {1, -2})});
  EXPECT_EQ(again, x);
  EXPECT_FALSE(restarted->RestoreState({1, 2, 3}).ok());
}

TEST_F(StrategyTest, AdaptiveServerOptimizersFollowReddiEtAl) {
  // One step from zero with delta 2, beta1 0.9, beta2 0.99, tau 1e-3 and
  // v_{-1} = tau²: m = 0.2, then x = m / (sqrt(v) + tau) with
  //   adam:    v = 0.99e-6 + 0.01·4       -> 0.9950126236765859
  //   yogi:    v = 1e-6 + 0.01·4 (v < d²)  -> 0.9950124999218753
  //   adagrad: v = 1e-6 + 4                -> 0.09995001249999921
  EXPECT_NEAR(Run(*Make("fedadam"), {0, 0}, {Update("a", {2, 2})})[0], 0.9950126236765859, 1e-6);
  EXPECT_NEAR(Run(*Make("fedyogi"), {0, 0}, {Update("a", {2, 2})})[0], 0.9950124999218753, 1e-6);
  EXPECT_NEAR(Run(*Make("fedadagrad"), {0, 0}, {Update("a", {2, 2})})[0], 0.09995001249999921, 1e-7);
}

TEST_F(StrategyTest, FedProxSendsMuToNodesAndAveragesLikeFedAvg) {
  StrategySettings s;
  s.proximal_mu = 0.25;
  auto prox = Make("fedprox", s);
  EXPECT_DOUBLE_EQ(prox->ConfigureTraining(1, TrainingSettings{}).proximal_mu, 0.25);
  EXPECT_DOUBLE_EQ(Make("fedavg")->ConfigureTraining(1, TrainingSettings{}).proximal_mu, 0);
  EXPECT_FLOAT_EQ(Run(*prox, {0, 0}, {Update("a", {1, 1}, 1), Update("b", {3, 3}, 1)})[0], 2.0f);
}

TEST_F(StrategyTest, MedianAndTrimmedMeanIgnoreAnOutlier) {
  EXPECT_FLOAT_EQ(Run(*Make("median"), {0, 0}, {Update("a", {1, 0}), Update("b", {10, 0}), Update("c", {3, 0})})[0],
                  3.0f);
  EXPECT_FLOAT_EQ(Run(*Make("median"), {0, 0},
                      {Update("a", {1, 0}), Update("b", {10, 0}), Update("c", {3, 0}), Update("d", {4, 0})})[0],
                  3.5f);
  StrategySettings s;
  s.trim_fraction = 0.2;  // floor(0.2 · 5) = 1 dropped at each end
  EXPECT_FLOAT_EQ(Run(*Make("trimmed-mean", s), {0, 0},
                      {Update("a", {1, 0}), Update("b", {2, 0}), Update("c", {100, 0}), Update("d", {3, 0}),
                       Update("e", {4, 0})})[0],
                  3.0f);
}

TEST_F(StrategyTest, KrumPicksTheUpdateClosestToItsNeighbours) {
  // f = 1, n = 5: each score sums the n - f - 2 = 2 smallest squared distances.
  //   0: 0.01 + 0.0225 = 0.0325   0.1: 0.01 + 0.04 = 0.05   -0.15: 0.0225 + 0.0625 = 0.085
  //   0.3: 0.04 + 0.09 = 0.13     100: far
  std::vector<UpdateRef> u = {Update("a", {0, 0}), Update("b", {0.1f, 0}), Update("c", {-0.15f, 0}),
                              Update("d", {0.3f, 0}), Update("e", {100, 0})};
  std::vector<float> x = {0, 0};
  absl::StatusOr<AggregateResult> r = Make("krum")->Aggregate(1, RoundUpdates{u, nullptr}, &x);
  ASSERT_TRUE(r.ok() && r->changed);
  EXPECT_FLOAT_EQ(x[0], 0.0f);
  EXPECT_NE(r->note.find("selected a of 5"), std::string::npos) << r->note;
  // Multi-Krum: the n - f = 4 best, averaged: (0 + 0.1 - 0.15 + 0.3) / 4.
  EXPECT_FLOAT_EQ(Run(*Make("multi-krum"), {0, 0}, u)[0], 0.0625f);
  StrategySettings two;
  two.multi_krum_select = 2;
  EXPECT_FLOAT_EQ(Run(*Make("multi-krum", two), {0, 0}, u)[0], 0.05f);
  // Too few updates for f = 1: the model is kept, and the note says why.
  x = {7, 7};
  r = Make("krum")->Aggregate(1, RoundUpdates{{u[0], u[1], u[2], u[3]}, nullptr}, &x);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->changed);
  EXPECT_EQ(x, (std::vector<float>{7, 7}));
  EXPECT_NE(r->note.find("needs at least 5 updates; got 4"), std::string::npos) << r->note;
}

// The server folds FedAvg-family updates as they arrive; the strategy gives
// the same model from that sum as from the spooled files.
TEST_F(StrategyTest, FedAvgFamilyGivesTheSameModelFromTheStreamedSum) {
  const std::vector<UpdateRef> u = {Update("a", {1, 2}, 2), Update("b", {3, -6}, 6)};
  UpdateSum streamed(2);
  uint64_t id = 0;
  for (const UpdateRef& ref : u) {
    ASSERT_TRUE(streamed.Begin(++id, ref.weight, ref.path).ok());
    std::vector<float> values(2);
    FILE* f = std::fopen(ref.path.c_str(), "rb");
    ASSERT_EQ(std::fread(values.data(), sizeof(float), 2, f), 2u);
    std::fclose(f);
    ASSERT_TRUE(streamed.Add(id, 0, values.data(), 2).ok());
    ASSERT_TRUE(streamed.Accept(id).ok());
  }
  ASSERT_TRUE(streamed.Seal().ok());
  for (const std::string name : {"fedavg", "fedavgm", "fedprox", "fedadagrad", "fedadam", "fedyogi"}) {
    auto from_files = Make(name);
    auto from_sum = Make(name);
    EXPECT_TRUE(from_sum->FoldsUpdatesAsTheyArrive()) << name;
    std::vector<float> a = {0.5f, -0.5f}, b = a;
    ASSERT_TRUE(from_files->Aggregate(1, RoundUpdates{u, nullptr}, &a).ok());
    ASSERT_TRUE(from_sum->Aggregate(1, RoundUpdates{u, &streamed}, &b).ok());
    EXPECT_EQ(a, b) << name;
  }
  for (const std::string name : {"median", "trimmed-mean", "krum", "multi-krum"}) {
    EXPECT_FALSE(Make(name)->FoldsUpdatesAsTheyArrive()) << name << " needs every update";
  }
}

TEST_F(StrategyTest, SlicesCoverEveryValueOnceAndShortFilesAreErrors) {
  std::vector<UpdateRef> u = {Update("a", {1, 2, 3, 4, 5}), Update("b", {10, 20, 30, 40, 50})};
  std::vector<float> seen(5, 0);
  ASSERT_TRUE(ForEachSlice(u, 5, 2, [&](size_t offset, const std::vector<std::vector<float>>& s) {
                for (size_t j = 0; j < s[0].size(); ++j) seen[offset + j] += s[0][j] + s[1][j];
              }).ok());
  EXPECT_EQ(seen, (std::vector<float>{11, 22, 33, 44, 55}));
  EXPECT_EQ(ForEachSlice(u, 6, 2, [](size_t, const std::vector<std::vector<float>>&) {}).code(),
            absl::StatusCode::kDataLoss);
}

TEST(StrategyRegistryTest, EveryStrategyIsMadeByItsNameAndNoOtherName) {
  std::vector<std::string> names;
  for (const StrategyEntry& e : Registry()) {
    names.push_back(e.name);
    absl::StatusOr<std::unique_ptr<Strategy>> s = CreateStrategy(StrategySettings{.name = e.name}, 2);
    ASSERT_TRUE(s.ok()) << e.name << ": " << s.status();
    EXPECT_EQ((*s)->name(), e.name);
    EXPECT_EQ(FindStrategy(e.name), &e);
    EXPECT_GT(std::string(e.summary).size(), 10u) << e.name;
  }
  EXPECT_EQ(names, (std::vector<std::string>{"fedavg", "fedavgm", "fedprox", "fedadagrad", "fedadam", "fedyogi",
                                             "median", "trimmed-mean", "krum", "multi-krum"}));
  absl::StatusOr<std::unique_ptr<Strategy>> unknown = CreateStrategy(StrategySettings{.name = "fedsgd"}, 2);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("known: fedavg, fedavgm"), std::string::npos) << unknown.status();
}

// Each entry's state_vectors is what its strategy saves, so the memory a
// plan asks of the coordinator is counted from what the strategies hold.
TEST(StrategyRegistryTest, TheMemoryNeedCountsWhatEachStrategyHolds) {
  const size_t n = 1000;
  for (const StrategyEntry& e : Registry()) {
    absl::StatusOr<std::unique_ptr<Strategy>> s = CreateStrategy(StrategySettings{.name = e.name}, n);
    ASSERT_TRUE(s.ok()) << e.name;
    EXPECT_EQ((*s)->SaveState().size(), n * static_cast<size_t>(e.state_vectors)) << e.name;
    absl::StatusOr<MemoryNeed> need = CoordinatorMemoryNeed(StrategySettings{.name = e.name}, n);
    ASSERT_TRUE(need.ok()) << e.name;
    const uint64_t sum = (*s)->FoldsUpdatesAsTheyArrive() ? 2 * 8 * n : 0;
    EXPECT_EQ(need->bytes, 4 * n + sum + 2 * 4 * n * e.state_vectors + (uint64_t{128} << 20)) << e.name;
  }
  // The largest flat model a plan allows, 2^31 values: 4 + 16 + 16 bytes a
  // value under fedadam, 72 GiB and 128 MiB, named part by part.
  absl::StatusOr<MemoryNeed> adam = CoordinatorMemoryNeed(StrategySettings{.name = "fedadam"}, size_t{1} << 31);
  ASSERT_TRUE(adam.ok());
  EXPECT_EQ(adam->bytes, (uint64_t{72} << 30) + (uint64_t{128} << 20));
  EXPECT_EQ(adam->parts,
            "the model 8.0 GiB, its running sum 16.0 GiB twice while refolding, fedadam's state 16.0 GiB twice while "
            "saved, the process 128.0 MiB");
  const absl::Status refused = CheckMemoryFits("federation 'x'", adam->bytes, adam->parts, uint64_t{20} << 30);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.message().find("federation 'x' needs about 72.1 GiB at its peak (the model 8.0 GiB"),
            std::string::npos)
      << refused;
  EXPECT_NE(refused.message().find("); this machine has 20.0 GiB available"), std::string::npos) << refused;
  EXPECT_TRUE(CheckMemoryFits("x", adam->bytes, adam->parts, adam->bytes).ok());
  EXPECT_TRUE(CheckMemoryFits("x", adam->bytes, adam->parts, std::nullopt).ok());
}

class StrategyPlanTest : public ::testing::Test {
 protected:
  absl::StatusOr<FederationPlan> Plan(int min_nodes, const std::string& strategy) {
    std::string text =
        "[federation]\nname = \"d\"\nmin_nodes = " + std::to_string(min_nodes) + "\n[strategy]\n" + strategy;
    for (const char* site : {"a", "b", "c", "d", "e"}) text += std::string("[[site]]\nname = \"") + site + "\"\n";
    const std::string path = ::testing::TempDir() + "/strategy_plan_" + std::to_string(::getpid()) + ".toml";
    std::ofstream(path) << text;
    return LoadPlan(path, CheckPlanStrategy);
  }
};

TEST_F(StrategyPlanTest, AnUnknownNameIsRefusedWithTheKnownOnes) {
  auto unknown = Plan(2, "name = \"fedsgd\"\n");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("field 'strategy.name' is 'fedsgd'; known: fedavg, fedavgm"),
            std::string::npos)
      << unknown.status();
  EXPECT_TRUE(Plan(2, "name = \"fedadam\"\n").ok());
}

// A robust strategy the plan's quorum cannot feed is refused before anyone
// trains (it would keep the model while every DP site pays for the round).
TEST_F(StrategyPlanTest, RobustStrategiesNeedTheUpdatesTheyWorkWith) {
  auto krum3 = Plan(3, "name = \"krum\"\n");  // f = 1 needs 5
  ASSERT_FALSE(krum3.ok());
  EXPECT_NE(krum3.status().message().find("needs at least 2f + 3 = 5 updates"), std::string::npos) << krum3.status();
  EXPECT_TRUE(Plan(5, "name = \"krum\"\n").ok());
  EXPECT_TRUE(Plan(3, "name = \"krum\"\nbyzantine = 0\n").ok());
  auto multi3 = Plan(3, "name = \"multi-krum\"\n");
  ASSERT_FALSE(multi3.ok());
  EXPECT_NE(multi3.status().message().find("2f + 3"), std::string::npos) << multi3.status();
  auto select = Plan(5, "name = \"multi-krum\"\nmulti_krum_select = 5\n");
  ASSERT_FALSE(select.ok());
  EXPECT_NE(select.status().message().find("multi_krum_select"), std::string::npos);
  EXPECT_TRUE(Plan(5, "name = \"multi-krum\"\nmulti_krum_select = 4\n").ok());
  auto median = Plan(2, "name = \"median\"\n");
  ASSERT_FALSE(median.ok());
  EXPECT_NE(median.status().message().find("fewer than 3"), std::string::npos);
  EXPECT_TRUE(Plan(3, "name = \"median\"\n").ok());
  auto trimmed = Plan(4, "name = \"trimmed-mean\"\ntrim_fraction = 0.2\n");  // floor(0.8) = 0
  ASSERT_FALSE(trimmed.ok());
  EXPECT_NE(trimmed.status().message().find("may trim nothing"), std::string::npos) << trimmed.status();
  EXPECT_TRUE(Plan(5, "name = \"trimmed-mean\"\ntrim_fraction = 0.2\n").ok());
  EXPECT_TRUE(Plan(2, "name = \"fedavg\"\n").ok());
}

}  // namespace
}  // namespace fedrad::coordinator
