// `fedrad dp`: the printed figures are honest (rounded up, so a printed σ
// always meets its target) and --json gives them at full precision.
#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "tests/harness.h"

namespace fedrad::testing {
namespace {

// Runs `fedrad dp ...` and returns its output; fails the test on a non-zero exit.
std::string Dp(const std::string& dir, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {FedradBin(), "dp"};
  argv.insert(argv.end(), args.begin(), args.end());
  static int calls = 0;
  const std::string log = dir + "/dp-" + std::to_string(++calls) + ".log";  // RunCommand appends
  EXPECT_EQ(RunCommand(argv, log), 0) << ReadText(log);
  return ReadText(log);
}

// The number after `key = ` in `text`.
double After(const std::string& text, const std::string& key) {
  const size_t at = text.find(key + " = ");
  EXPECT_NE(at, std::string::npos) << text;
  return at == std::string::npos ? 0 : std::stod(text.substr(at + key.size() + 3));
}

TEST(DpCliTest, PrintedFiguresAreRoundedUpAndJsonIsExact) {
  const std::string dir = MakeWorkspace();
  const std::vector<std::string> mechanism = {"--rate", "0.04", "--steps", "2250", "--delta", "1e-5"};
  std::vector<std::string> args = {"epsilon", "--noise", "1.5"};
  args.insert(args.end(), mechanism.begin(), mechanism.end());
  const double printed = After(Dp(dir, args), "epsilon");
  args.push_back("--json");
  const nlohmann::json exact = nlohmann::json::parse(Dp(dir, args));
  const double epsilon = exact.at("epsilon").get<double>();
  EXPECT_GE(printed, epsilon);
  EXPECT_LT(printed - epsilon, 1e-5 * epsilon);
  EXPECT_EQ(exact.at("noise_multiplier").get<double>(), 1.5);

  // The printed σ for a target spends at most the target when run.
  std::vector<std::string> noise = {"noise", "--epsilon", "3", "--rate", "0.0341", "--steps", "1170"};
  const double sigma = After(Dp(dir, noise), "noise multiplier");
  noise.push_back("--json");
  const nlohmann::json found = nlohmann::json::parse(Dp(dir, noise));
  EXPECT_GE(sigma, found.at("noise_multiplier").get<double>());
  EXPECT_LE(found.at("epsilon").get<double>(), 3.0);
  const nlohmann::json check = nlohmann::json::parse(
      Dp(dir, {"epsilon", "--noise", std::to_string(sigma), "--rate", "0.0341", "--steps", "1170", "--json"}));
  EXPECT_LE(check.at("epsilon").get<double>(), 3.0);
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing
