#include "common/files.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

namespace fedrad {
namespace {

TEST(FilesTest, OpenFileLimitIsRaisedUpToTheHardLimit) {
  rlimit before{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &before), 0);
  if (before.rlim_max == RLIM_INFINITY || before.rlim_max < 64) GTEST_SKIP() << "no finite hard limit to test with";
  // Lower the soft limit, then ask for more: it rises to the hard limit.
  rlimit low = before;
  low.rlim_cur = 64;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  EXPECT_TRUE(RaiseOpenFileLimit(before.rlim_max).ok());
  rlimit after{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &after), 0);
  EXPECT_EQ(after.rlim_cur, before.rlim_max);
  EXPECT_TRUE(RaiseOpenFileLimit(10).ok()) << "already enough";
  // Past the hard limit: an error naming both numbers.
  absl::Status s = RaiseOpenFileLimit(before.rlim_max + 1);
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_NE(s.message().find(std::to_string(before.rlim_max + 1) + " open files"), std::string::npos) << s;
  EXPECT_NE(s.message().find("hard limit is " + std::to_string(before.rlim_max)), std::string::npos) << s;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &before), 0);
}

}  // namespace
}  // namespace fedrad
