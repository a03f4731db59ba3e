#include "common/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace fedrad {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& text) {
    dir_ = std::filesystem::temp_directory_path() / ("fedrad_config_test_" + std::to_string(::getpid()) + "_" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    std::string path = (dir_ / "x.toml").string();
    std::ofstream(path) << text;
    return path;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(ConfigTest, ReadsTypedFieldsAndResolvesPaths) {
  auto c = ConfigReader::Open(Write("a = \"x\"\n[t]\nn = 3\nf = 0.5\nb = true\np = \"sub/f\"\n"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->GetString("a"), "x");
  EXPECT_EQ((*c)->GetInt("t.n", std::nullopt, 0, 10), 3);
  EXPECT_DOUBLE_EQ((*c)->GetDouble("t.f", std::nullopt, 0, 1), 0.5);
  EXPECT_TRUE((*c)->GetBool("t.b", std::nullopt));
  EXPECT_EQ((*c)->GetPath("t.p"), (dir_ / "sub/f").string());
  EXPECT_EQ((*c)->GetInt("t.missing", 7, 0, 10), 7);
  EXPECT_TRUE((*c)->Finish().ok());
}

TEST_F(ConfigTest, WrongTypeNamesFileLineAndField) {
  auto c = ConfigReader::Open(Write("[t]\n\nn = \"three\"\n"));
  ASSERT_TRUE(c.ok());
  (*c)->GetInt("t.n", 1, 0, 10);
  absl::Status s = (*c)->Finish();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("x.toml:3"), std::string::npos) << s;
  EXPECT_NE(s.message().find("'t.n'"), std::string::npos) << s;
  EXPECT_NE(s.message().find("integer"), std::string::npos) << s;
}

TEST_F(ConfigTest, UnknownFieldIsAnError) {
  auto c = ConfigReader::Open(Write("[t]\nn = 1\nepochz = 2\n"));
  ASSERT_TRUE(c.ok());
  (*c)->GetInt("t.n", 1, 0, 10);
  absl::Status s = (*c)->Finish();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("unknown field 't.epochz'"), std::string::npos) << s;
  EXPECT_NE(s.message().find("x.toml:3"), std::string::npos) << s;
}

TEST_F(ConfigTest, MissingRequiredAndOutOfRange) {
  auto c = ConfigReader::Open(Write("n = 50\n"));
  ASSERT_TRUE(c.ok());
  (*c)->GetInt("n", std::nullopt, 0, 10);
  absl::Status s = (*c)->Finish();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("between 0 and 10"), std::string::npos) << s;

  auto d = ConfigReader::Open(Write(""));
  ASSERT_TRUE(d.ok());
  (*d)->GetString("name");
  EXPECT_NE((*d)->Finish().message().find("'name' is required"), std::string::npos);
}

TEST_F(ConfigTest, MissingFileAndBadSyntax) {
  auto missing = ConfigReader::Open("/nonexistent/dir/node.toml");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/dir/node.toml"), std::string::npos);
  auto bad = ConfigReader::Open(Write("a = [1,\n"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("not valid TOML"), std::string::npos);
}

TEST(HostPortTest, APortIsOneTo65535AndAHostIsNamed) {
  EXPECT_EQ(HostPortProblem("127.0.0.1:50051"), std::nullopt);
  EXPECT_EQ(HostPortProblem("coordinator.example.org:1"), std::nullopt);
  EXPECT_EQ(HostPortProblem("[::1]:65535"), std::nullopt);
  for (const char* bad : {"127.0.0.1", ":50051", "host:", "host:0", "host:65536", "host:99999", "host:+80", "host:80a",
                          "host:000000080", "::1:50051"}) {
    EXPECT_NE(HostPortProblem(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(*HostPortProblem("host:99999"), "has port '99999'; a port is a number from 1 to 65535");
}

}  // namespace
}  // namespace fedrad
