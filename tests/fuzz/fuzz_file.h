#ifndef FEDRAD_TESTS_FUZZ_FUZZ_FILE_H_
#define FEDRAD_TESTS_FUZZ_FUZZ_FILE_H_

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

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

}  // namespace fedrad::fuzz

#endif  // FEDRAD_TESTS_FUZZ_FUZZ_FILE_H_
