#ifndef FEDRAD_COMMON_SYSTEM_MEMORY_H_
#define FEDRAD_COMMON_SYSTEM_MEMORY_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"

namespace fedrad {

// Bytes this process could still take without the machine swapping or the
// kernel killing it: MemAvailable (/proc/meminfo), lowered to what the
// cgroup allows (memory.max less memory.current, cgroup v2) where a limit is
// set. nullopt where neither can be read.
std::optional<uint64_t> AvailableMemoryBytes();

// OK if `need` bytes fit in `available` (nullopt: unknown, so OK); else
// ResourceExhausted: "<what> needs about 40.0 GiB at its peak (<why>); this
// machine has 20.3 GiB available".
absl::Status CheckMemoryFits(const std::string& what, uint64_t need, const std::string& why,
                             std::optional<uint64_t> available);

// "1.5 GiB", "300.0 MiB".
std::string HumanBytes(uint64_t bytes);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_SYSTEM_MEMORY_H_
