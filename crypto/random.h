#ifndef FEDRAD_CRYPTO_RANDOM_H_
#define FEDRAD_CRYPTO_RANDOM_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace fedrad::crypto {

// `n` bytes from OpenSSL's CSPRNG (seeded by the OS). Fails only if the
// generator cannot be seeded.
absl::StatusOr<std::string> SecureRandomBytes(size_t n);

// A uniformly random 64-bit value from the CSPRNG.
absl::StatusOr<uint64_t> SecureRandomU64();

}  // namespace fedrad::crypto

#endif  // FEDRAD_CRYPTO_RANDOM_H_
