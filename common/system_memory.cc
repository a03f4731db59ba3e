#include "common/system_memory.h"

#include <algorithm>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace fedrad {
namespace {

// The first line of a small kernel file, or empty.
std::string FirstLine(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::optional<uint64_t> MemAvailable() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view rest(line);
    if (!absl::ConsumePrefix(&rest, "MemAvailable:")) continue;
    rest = absl::StripAsciiWhitespace(rest);
    if (!absl::ConsumeSuffix(&rest, " kB")) return std::nullopt;
    uint64_t kib = 0;
    if (!absl::SimpleAtoi(rest, &kib)) return std::nullopt;
    return kib * 1024;
  }
  return std::nullopt;
}

// What the cgroup still allows, where it sets a limit ("max": none).
std::optional<uint64_t> CgroupRoom() {
  uint64_t max = 0, current = 0;
  if (!absl::SimpleAtoi(FirstLine("/sys/fs/cgroup/memory.max"), &max)) return std::nullopt;
  if (!absl::SimpleAtoi(FirstLine("/sys/fs/cgroup/memory.current"), &current)) return std::nullopt;
  return max > current ? max - current : 0;
}

}  // namespace

std::optional<uint64_t> AvailableMemoryBytes() {
  std::optional<uint64_t> machine = MemAvailable(), cgroup = CgroupRoom();
  if (machine && cgroup) return std::min(*machine, *cgroup);
  return machine ? machine : cgroup;
}

std::string HumanBytes(uint64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024) return absl::StrFormat("%.1f GiB", b / (1024.0 * 1024 * 1024));
  return absl::StrFormat("%.1f MiB", b / (1024.0 * 1024));
}

absl::Status CheckMemoryFits(const std::string& what, uint64_t need, const std::string& why,
                             std::optional<uint64_t> available) {
  if (!available || need <= *available) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(what, " needs about ", HumanBytes(need), " at its peak (", why,
                                                   "); this machine has ", HumanBytes(*available), " available"));
}

}  // namespace fedrad
