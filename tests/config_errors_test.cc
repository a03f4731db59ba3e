// A broken config (missing file, wrong type, unknown key) makes each binary
// exit non-zero at start-up with a message naming the file and the field.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/system_memory.h"
#include "tests/harness.h"

namespace fedrad::testing {
namespace {

class ConfigErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeWorkspace();
    f_ = SetUpFederation(dir_, {.sites = 2});
  }
  void TearDown() override { RemoveWorkspaceIfPassed(dir_); }

  // Runs `argv`, expects a non-zero exit, returns the output.
  std::string Fails(const std::vector<std::string>& argv) {
    const std::string log = dir_ + "/out-" + std::to_string(++n_) + ".log";
    EXPECT_NE(RunCommand(argv, log, std::chrono::seconds(30)), 0);
    return ReadText(log);
  }
  std::string Edited(const std::string& path, const std::string& from, const std::string& to) {
    std::string text = ReadText(path);
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    const std::string out = path + ".broken-" + std::to_string(++n_) + ".toml";
    WriteText(out, text);
    return out;
  }

  std::string dir_;
  MiniFederation f_;
  int n_ = 0;
};

TEST_F(ConfigErrorsTest, NodeConfig) {
  std::string out = Fails({NodeBin(), "run", "--config", dir_ + "/missing/node.toml"});
  EXPECT_NE(out.find(dir_ + "/missing/node.toml"), std::string::npos) << out;

  const std::string good = f_.NodeConfig("site-a");
  std::string wrong_type = Edited(good, "threads = 1", "threads = \"two\"");
  out = Fails({NodeBin(), "run", "--config", wrong_type});
  EXPECT_NE(out.find(wrong_type), std::string::npos) << out;
  EXPECT_NE(out.find("'node.threads' must be an integer, not a string"), std::string::npos) << out;

  std::string unknown = Edited(good, "validation_fraction", "validation_fractoin");
  out = Fails({NodeBin(), "run", "--config", unknown});
  EXPECT_NE(out.find("unknown field 'data.validation_fractoin'"), std::string::npos) << out;
  EXPECT_NE(out.find(unknown + ":"), std::string::npos) << out;

  // gRPC would take port 99999 modulo 65536 and dial 34463 without a word.
  const std::string address = "address = \"127.0.0.1:" + std::to_string(f_.port) + "\"";
  std::string bad_port = Edited(good, address, "address = \"127.0.0.1:99999\"");
  out = Fails({NodeBin(), "run", "--config", bad_port});
  EXPECT_NE(out.find("'coordinator.address' has port '99999'; a port is a number from 1 to 65535"), std::string::npos)
      << out;

  std::string missing_key = Edited(good, "key = \"site.key\"", "key = \"nope.key\"");
  out = Fails({NodeBin(), "run", "--config", missing_key});
  EXPECT_NE(out.find("field 'tls.key'"), std::string::npos) << out;
  EXPECT_NE(out.find("nope.key"), std::string::npos) << out;

  // [privacy] is checked before anything runs, by every subcommand that reads it.
  std::string both = Edited(good, "# noise_multiplier = 1.1", "noise_multiplier = 1.1");
  out = Fails({NodeBin(), "run", "--config", both});
  EXPECT_NE(out.find("field 'privacy.target_epsilon' must not be set together with noise_multiplier; choose one"),
            std::string::npos)
      << out;
  out = Fails({NodeBin(), "privacy", "--config", both});
  EXPECT_NE(out.find(both + ":"), std::string::npos) << out;
  std::string bad_unit = Edited(good, "unit = \"patient\"", "unit = \"study\"");
  out = Fails({NodeBin(), "train-local", "--config", bad_unit});
  EXPECT_NE(out.find("'privacy.unit'"), std::string::npos) << out;
  std::string over = Edited(good, "target_epsilon = 2.7", "target_epsilon = 5.0");
  out = Fails({NodeBin(), "run", "--config", over});
  EXPECT_NE(out.find("target_epsilon"), std::string::npos) << out;
  EXPECT_NE(out.find("larger than epsilon_max"), std::string::npos) << out;
}

TEST_F(ConfigErrorsTest, CoordinatorConfigAndPlan) {
  const std::string good = f_.CoordinatorConfig();
  std::string out = Fails({CoordinatorBin(), "serve", "--config", dir_ + "/nowhere.toml"});
  EXPECT_NE(out.find(dir_ + "/nowhere.toml"), std::string::npos) << out;

  std::string unknown = Edited(good, "linger_s", "lingre_s");
  out = Fails({CoordinatorBin(), "serve", "--config", unknown});
  EXPECT_NE(out.find("unknown field 'lingre_s'"), std::string::npos) << out;

  std::string wrong_type = Edited(good, "linger_s = 5", "linger_s = [5]");
  out = Fails({CoordinatorBin(), "serve", "--config", wrong_type});
  EXPECT_NE(out.find("'linger_s' must be a number, not an array"), std::string::npos) << out;

  // The plan it points to is checked as strictly.
  const std::string plan = dir_ + "/kits/coordinator/federation.toml";
  ReplaceInFile(plan, "rounds = 2", "rounds = \"two\"");
  out = Fails({CoordinatorBin(), "serve", "--config", good});
  EXPECT_NE(out.find(plan), std::string::npos) << out;
  EXPECT_NE(out.find("'federation.rounds' must be an integer"), std::string::npos) << out;
}

// The largest model a plan allows (a flat one of 2^31 values, under
// fedadam) once ended the coordinator in std::bad_alloc; it is refused at
// start with what it would need and what the machine has, and touches no
// state (issue 18, defect 6).
TEST_F(ConfigErrorsTest, APlanLargerThanTheMachineIsRefusedBeforeAllocating) {
  if (std::optional<uint64_t> room = AvailableMemoryBytes(); room && *room > (uint64_t{73} << 30)) {
    GTEST_SKIP() << "this machine could hold the plan: " << HumanBytes(*room) << " available";
  }
  const std::string plan = dir_ + "/kits/coordinator/federation.toml";
  ReplaceInFile(plan, "architecture = \"ctnet\"", "architecture = \"flat\"\nparameters = 2147483648");
  std::string text = ReadText(plan);
  text += "\n[strategy]\nname = \"fedadam\"\n";
  WriteText(plan, text);
  const std::string out = Fails({CoordinatorBin(), "serve", "--config", f_.CoordinatorConfig()});
  EXPECT_NE(out.find("federation 'it' with a model of 2147483648 values and strategy 'fedadam' needs about 72.1 GiB "
                     "at its peak (the model 8.0 GiB, its running sum 16.0 GiB twice while refolding, fedadam's "
                     "state 16.0 GiB twice while saved, the process 128.0 MiB); this machine has "),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("bad_alloc"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(f_.StateDb()));
}

TEST_F(ConfigErrorsTest, BrokenConfigTouchesNothing) {
  // A refused config creates no state: no database, no models.
  std::string unknown = Edited(f_.CoordinatorConfig(), "linger_s", "lingre_s");
  Fails({CoordinatorBin(), "serve", "--config", unknown});
  EXPECT_FALSE(std::filesystem::exists(f_.StateDb()));
  std::string bad_node = Edited(f_.NodeConfig("site-b"), "threads = 1", "threads = -3");
  std::string out = Fails({NodeBin(), "run", "--config", bad_node});
  EXPECT_NE(out.find("'node.threads' is -3"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(f_.NodeDb("site-b")));
}

}  // namespace
}  // namespace fedrad::testing
