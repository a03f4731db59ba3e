#include "crypto/secure_noise.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace fedrad::crypto {

struct SecureRandom::Impl {
  EVP_CIPHER_CTX* ctx = nullptr;
  std::vector<uint64_t> buffer;
  size_t next = 0;
  ~Impl() { EVP_CIPHER_CTX_free(ctx); }
};

namespace {

std::unique_ptr<SecureRandom::Impl> MakeImpl(const unsigned char key[32]) {
  auto impl = std::make_unique<SecureRandom::Impl>();
  impl->ctx = EVP_CIPHER_CTX_new();
  const unsigned char iv[16] = {0};
  if (impl->ctx == nullptr || EVP_EncryptInit_ex(impl->ctx, EVP_aes_256_ctr(), nullptr, key, iv) != 1) {
    std::abort();  // an OpenSSL without AES-256-CTR is an impossible build
  }
  impl->buffer.resize(4096);
  impl->next = impl->buffer.size();
  return impl;
}

}  // namespace

SecureRandom::SecureRandom(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SecureRandom::~SecureRandom() = default;

absl::StatusOr<std::unique_ptr<SecureRandom>> SecureRandom::Create() {
  unsigned char key[32];
  if (RAND_bytes(key, sizeof key) != 1) {
    return absl::InternalError("OpenSSL RAND_bytes failed: cannot seed the DP noise generator");
  }
  auto out = std::unique_ptr<SecureRandom>(new SecureRandom(MakeImpl(key)));
  OPENSSL_cleanse(key, sizeof key);
  return out;
}

std::unique_ptr<SecureRandom> SecureRandom::ForTesting(uint64_t seed) {
  unsigned char key[32] = {0};
  std::memcpy(key, &seed, sizeof seed);
  return std::unique_ptr<SecureRandom>(new SecureRandom(MakeImpl(key)));
}

void SecureRandom::Refill() {
  // The keystream of AES-CTR over zero bytes is the random output.
  std::vector<uint64_t>& b = impl_->buffer;
  std::memset(b.data(), 0, b.size() * sizeof(uint64_t));
  int len = 0;
  auto* bytes = reinterpret_cast<unsigned char*>(b.data());
  EVP_EncryptUpdate(impl_->ctx, bytes, &len, bytes, static_cast<int>(b.size() * sizeof(uint64_t)));
  impl_->next = 0;
}

double SecureRandom::Uniform() {
  if (impl_->next >= impl_->buffer.size()) Refill();
  return static_cast<double>(impl_->buffer[impl_->next++] >> 11) * 0x1.0p-53;
}

void SecureRandom::Gaussian(double* out, size_t n, double stddev) {
  for (size_t i = 0; i < n; ++i) {
    double sum = 0;
    for (int k = 0; k < 2; ++k) {         // two Box-Muller pairs: four N(0, 1) draws
      const double u1 = 1.0 - Uniform();  // (0, 1]
      const double u2 = Uniform();
      const double r = std::sqrt(-2.0 * std::log(u1));
      sum += r * std::cos(2 * M_PI * u2) + r * std::sin(2 * M_PI * u2);
    }
    out[i] = stddev * sum / 2.0;
  }
}

}  // namespace fedrad::crypto
