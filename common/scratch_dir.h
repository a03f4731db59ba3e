#ifndef FEDRAD_COMMON_SCRATCH_DIR_H_
#define FEDRAD_COMMON_SCRATCH_DIR_H_

// For tests only (it uses googletest).

#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

#include <gtest/gtest.h>

namespace fedrad {

// A fresh, empty folder for a test: <tmp>/fedrad_<name>_<pid> (ctest runs
// test programs side by side; the pid keeps them apart). Removed when the
// object goes away, unless the test failed: its files are then left to look at.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_(std::filesystem::temp_directory_path() / ("fedrad_" + name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!::testing::Test::HasFailure()) std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  const std::filesystem::path path_;
};

}  // namespace fedrad

#endif  // FEDRAD_COMMON_SCRATCH_DIR_H_
