#include "tools/partition.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "common/files.h"
#include "tools/synth.h"

namespace fedrad::tools {
namespace {

namespace fs = std::filesystem;

class PartitionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("fedrad_partition_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    SynthOptions o;  // 40 patients x 3 slices, one site
    o.sites = 1;
    o.patients_per_site = 40;
    o.images_per_patient = 3;
    o.image_size = 32;
    o.out_dir = (dir_ / "src").string();
    ASSERT_TRUE(WriteSyntheticCohort(o).ok());
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  PartitionOptions Options(const std::string& mode, uint64_t seed, const std::string& out) {
    PartitionOptions p;
    p.data_dir = (dir_ / "src/hospital-a").string();
    p.sites = 4;
    p.mode = mode;
    p.alpha = 0.3;
    p.seed = seed;
    p.out_dir = (dir_ / out).string();
    return p;
  }
  static fs::path dir_;
};
fs::path PartitionTest::dir_;

// Relative paths listed in a site's labels.csv.
std::set<std::string> Listed(const fs::path& site) {
  std::set<std::string> out;
  std::string text = *ReadFile((site / "labels.csv").string());
  size_t at = text.find('\n') + 1;
  while (at < text.size()) {
    const size_t end = text.find('\n', at);
    out.insert(text.substr(at, text.find(',', at) - at));
    at = end + 1;
  }
  return out;
}

TEST_F(PartitionTest, EveryImageLandsOnceAndPatientsStayWhole) {
  auto r = Partition(Options("iid", 1, "iid"));
  ASSERT_TRUE(r.ok()) << r.status();
  std::set<std::string> all;
  std::map<std::string, std::string> patient_site;
  for (const std::string& site : r->sites) {
    for (const std::string& path : Listed(dir_ / "iid" / site)) {
      EXPECT_TRUE(all.insert(path).second) << path << " assigned twice";
      EXPECT_TRUE(fs::exists(dir_ / "iid" / site / path));
      const std::string patient = path.substr(0, path.find('/'));  // synth: one folder per patient
      auto [it, fresh] = patient_site.emplace(patient, site);
      EXPECT_EQ(it->second, site) << patient << " split across sites";
    }
  }
  EXPECT_EQ(all.size(), 120u);
  for (int n : r->patients) EXPECT_EQ(n, 10);  // IID deals patients evenly
  EXPECT_NE(FormatHistogram(*r).find("hospital-d"), std::string::npos);
}

TEST_F(PartitionTest, DirichletIsDeterministicAndSkewed) {
  auto a = Partition(Options("dirichlet", 7, "d1"));
  auto b = Partition(Options("dirichlet", 7, "d2"));
  auto c = Partition(Options("dirichlet", 8, "d3"));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->histogram, b->histogram);
  for (const std::string& site : a->sites) EXPECT_EQ(Listed(dir_ / "d1" / site), Listed(dir_ / "d2" / site));
  EXPECT_NE(a->histogram, c->histogram);
  // With alpha = 0.3 the class shares differ a lot between sites.
  double spread = 0;
  for (const auto& h : a->histogram) {
    const double n0 = h.count(0) ? h.at(0) : 0, n1 = h.count(1) ? h.at(1) : 0;
    if (n0 + n1 > 0) spread = std::max(spread, std::abs(n0 / (n0 + n1) - 0.5));
  }
  EXPECT_GT(spread, 0.2);
}

TEST_F(PartitionTest, RejectsBadOptions) {
  PartitionOptions p = Options("zipf", 1, "x");
  EXPECT_FALSE(Partition(p).ok());
  p = Options("dirichlet", 1, "x");
  p.alpha = 0;
  EXPECT_FALSE(Partition(p).ok());
  p = Options("iid", 1, "x");
  p.data_dir = (dir_ / "nowhere").string();
  EXPECT_FALSE(Partition(p).ok());
}

}  // namespace
}  // namespace fedrad::tools
