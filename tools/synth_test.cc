#include "tools/synth.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/files.h"
#include "crypto/sha256.h"

namespace fedrad::tools {
namespace {

namespace fs = std::filesystem;

// Hash of every file under `dir`, by relative path.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = *crypto::Sha256File(e.path());
  }
  return out;
}

TEST(SynthTest, SameSeedSameBytesAndEveryImageLabelled) {
  const std::string base = fs::temp_directory_path() / ("fedrad_synth_" + std::to_string(::getpid()));
  SynthOptions o;
  o.sites = 2;
  o.patients_per_site = 3;
  o.images_per_patient = 2;
  o.image_size = 32;
  o.seed = 9;
  o.out_dir = base + "/one";
  ASSERT_TRUE(WriteSyntheticCohort(o).ok());
  o.out_dir = base + "/two";
  ASSERT_TRUE(WriteSyntheticCohort(o).ok());
  o.seed = 10;
  o.out_dir = base + "/three";
  ASSERT_TRUE(WriteSyntheticCohort(o).ok());
  auto one = Snapshot(base + "/one");
  EXPECT_EQ(one, Snapshot(base + "/two"));
  EXPECT_NE(one, Snapshot(base + "/three"));
  // 2 sites x (3 patients x 2 images + labels.csv)
  EXPECT_EQ(one.size(), 14u);
  auto labels = ReadFile(base + "/one/hospital-b/labels.csv");
  ASSERT_TRUE(labels.ok());
  EXPECT_EQ(std::count(labels->begin(), labels->end(), '\n'), 7);
  fs::remove_all(base);
}

TEST(SynthTest, SiteNames) {
  EXPECT_EQ(DefaultSiteName(0), "hospital-a");
  EXPECT_EQ(DefaultSiteName(25), "hospital-z");
  EXPECT_EQ(DefaultSiteName(26), "hospital-aa");
}

}  // namespace
}  // namespace fedrad::tools
