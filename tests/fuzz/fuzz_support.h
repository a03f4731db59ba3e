#ifndef FEDRAD_TESTS_FUZZ_FUZZ_SUPPORT_H_
#define FEDRAD_TESTS_FUZZ_FUZZ_SUPPORT_H_

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fedrad::fuzz {

// The input written to a file of this process in /dev/shm (the parsers under
// test read paths), named with `suffix`.
inline std::string WriteInput(const uint8_t* data, size_t size, const std::string& suffix) {
  const std::string path = "/dev/shm/fedrad-fuzz-" + std::to_string(::getpid()) + suffix;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) __builtin_trap();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) __builtin_trap();
  std::fclose(f);
  return path;
}

// What a parser answers garbage with: OK, or a refusal whose message says
// what was wrong. A refusal without a message (which would reach an
// operator as a bare error) is a finding.
inline void ExpectOkOrNamed(const absl::Status& s) {
  if (!s.ok() && s.message().empty()) __builtin_trap();
}
template <class T>
void ExpectOkOrNamed(const absl::StatusOr<T>& s) {
  ExpectOkOrNamed(s.status());
}

}  // namespace fedrad::fuzz

#endif  // FEDRAD_TESTS_FUZZ_FUZZ_SUPPORT_H_
