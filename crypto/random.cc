#include "crypto/random.h"

#include <openssl/err.h>
#include <openssl/rand.h>

#include <cstring>

#include "absl/status/status.h"

namespace fedrad::crypto {

absl::StatusOr<std::string> SecureRandomBytes(size_t n) {
  std::string out(n, '\0');
  if (n > 0 && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    return absl::InternalError("OpenSSL RAND_bytes failed: generator not seeded");
  }
  return out;
}

absl::StatusOr<uint64_t> SecureRandomU64() {
  absl::StatusOr<std::string> bytes = SecureRandomBytes(sizeof(uint64_t));
  if (!bytes.ok()) return bytes.status();
  uint64_t v;
  std::memcpy(&v, bytes->data(), sizeof v);
  return v;
}

}  // namespace fedrad::crypto
