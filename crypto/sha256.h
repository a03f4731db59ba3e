#ifndef FEDRAD_CRYPTO_SHA256_H_
#define FEDRAD_CRYPTO_SHA256_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace fedrad::crypto {

// Incremental SHA-256. Not thread-safe; one hasher per stream of bytes.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t size);
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  // Returns the digest as 64 lowercase hex characters. The hasher is spent
  // afterwards; further Update() calls start nothing new.
  std::string FinishHex();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string Sha256Hex(std::string_view data);

// Hashes a file in fixed-size blocks (memory stays O(1) in the file size).
absl::StatusOr<std::string> Sha256File(const std::string& path);

// True if `s` looks like a SHA-256 hex digest (64 lowercase hex characters).
bool IsSha256Hex(std::string_view s);

std::string HexEncode(std::string_view bytes);
// The bytes of `hex` as HexEncode writes it (an even number of lowercase hex
// digits); nullopt for anything else.
std::optional<std::string> HexDecode(std::string_view hex);

// A DICOM UID under the 2.25 root (ISO/IEC 9834-8: a UUID as one decimal
// number) from the first 128 bits of SHA-256(key): the same key always gives
// the same UID, different keys practically never the same one.
std::string UidFromKey(const std::string& key);

}  // namespace fedrad::crypto

#endif  // FEDRAD_CRYPTO_SHA256_H_
