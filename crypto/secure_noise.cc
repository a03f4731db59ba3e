#include "crypto/secure_noise.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

namespace fedrad::crypto {

// The keystream is a sequence of 64-bit words (AES block b, counter b from
// an all-zero IV, holds words 2b and 2b + 1). `buffer` holds the words
// [generated - buffer.size(), generated) once filled; the next word drawn is
// number generated - (buffer.size() - next).
struct SecureRandom::Impl {
  unsigned char key[32];
  EVP_CIPHER_CTX* ctx = nullptr;
  std::vector<uint64_t> buffer;
  size_t next = 0;
  uint64_t generated = 0;  // words the cipher context has produced
  ~Impl() {
    EVP_CIPHER_CTX_free(ctx);
    OPENSSL_cleanse(key, sizeof key);
  }
};

namespace {

// A cipher context whose keystream starts at AES block `block`.
EVP_CIPHER_CTX* ContextAt(const unsigned char key[32], uint64_t block) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  unsigned char iv[16] = {0};  // the 128-bit big-endian block counter
  for (int i = 0; i < 8; ++i) iv[15 - i] = static_cast<unsigned char>(block >> (8 * i));
  if (ctx == nullptr || EVP_EncryptInit_ex(ctx, EVP_aes_256_ctr(), nullptr, key, iv) != 1) {
    std::abort();  // an OpenSSL without AES-256-CTR is an impossible build
  }
  return ctx;
}

// Fills `words` with the keystream that follows in `ctx`.
void Keystream(EVP_CIPHER_CTX* ctx, uint64_t* words, size_t n) {
  std::memset(words, 0, n * sizeof(uint64_t));
  int len = 0;
  auto* bytes = reinterpret_cast<unsigned char*>(words);
  EVP_EncryptUpdate(ctx, bytes, &len, bytes, static_cast<int>(n * sizeof(uint64_t)));
}

std::unique_ptr<SecureRandom::Impl> MakeImpl(const unsigned char key[32]) {
  auto impl = std::make_unique<SecureRandom::Impl>();
  std::memcpy(impl->key, key, sizeof impl->key);
  impl->ctx = ContextAt(key, 0);
  impl->buffer.resize(4096);
  impl->next = impl->buffer.size();
  return impl;
}

double UniformOf(uint64_t word) { return static_cast<double>(word >> 11) * 0x1.0p-53; }

// One value of the secure construction from four keystream words: two
// Box-Muller pairs, summed, over 2.
double GaussianOf(const uint64_t* w, double stddev) {
  double sum = 0;
  for (int k = 0; k < 2; ++k) {
    const double u1 = 1.0 - UniformOf(w[2 * k]);  // (0, 1]
    const double u2 = UniformOf(w[2 * k + 1]);
    const double r = std::sqrt(-2.0 * std::log(u1));
    sum += r * std::cos(2 * M_PI * u2) + r * std::sin(2 * M_PI * u2);
  }
  return stddev * sum / 2.0;
}

// Below this many values one thread does it all (starting threads costs
// more than it saves).
constexpr size_t kParallelGaussians = size_t{1} << 16;

}  // namespace

SecureRandom::SecureRandom(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SecureRandom::~SecureRandom() = default;

absl::StatusOr<std::unique_ptr<SecureRandom>> SecureRandom::Create() {
  unsigned char key[32];
  if (RAND_bytes(key, sizeof key) != 1) {
    return absl::InternalError("OpenSSL RAND_bytes failed: cannot seed the DP noise generator");
  }
  auto out = std::unique_ptr<SecureRandom>(new SecureRandom(MakeImpl(key)));
  OPENSSL_cleanse(key, sizeof key);  // the generator keeps its own copy, cleansed when it goes
  return out;
}

std::unique_ptr<SecureRandom> SecureRandom::ForTesting(uint64_t seed) {
  unsigned char key[32] = {0};
  std::memcpy(key, &seed, sizeof seed);
  return std::unique_ptr<SecureRandom>(new SecureRandom(MakeImpl(key)));
}

void SecureRandom::Refill() {
  // The keystream of AES-CTR over zero bytes is the random output.
  Keystream(impl_->ctx, impl_->buffer.data(), impl_->buffer.size());
  impl_->generated += impl_->buffer.size();
  impl_->next = 0;
}

double SecureRandom::Uniform() {
  if (impl_->next >= impl_->buffer.size()) Refill();
  return UniformOf(impl_->buffer[impl_->next++]);
}

void SecureRandom::Gaussian(double* out, size_t n, double stddev) { Gaussian(out, n, stddev, 0); }

void SecureRandom::Gaussian(double* out, size_t n, double stddev, int threads) {
  if (threads <= 0) threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 16u));
  if (threads == 1 || n < kParallelGaussians) {
    uint64_t w[4];
    for (size_t i = 0; i < n; ++i) {
      for (uint64_t& word : w) {
        if (impl_->next >= impl_->buffer.size()) Refill();
        word = impl_->buffer[impl_->next++];
      }
      out[i] = GaussianOf(w, stddev);
    }
    return;
  }
  const uint64_t first = Reserve(n);
  const size_t per_thread = (n + static_cast<size_t>(threads) - 1) / static_cast<size_t>(threads);
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) {
    const size_t begin = std::min(n, per_thread * static_cast<size_t>(t));
    const size_t end = std::min(n, begin + per_thread);
    if (begin < end) pool.emplace_back([=] { GaussianAt(first, begin, end, stddev, out); });
  }
  GaussianAt(first, 0, std::min(n, per_thread), stddev, out);
  for (std::thread& t : pool) t.join();
}

uint64_t SecureRandom::Reserve(size_t values) {
  // Value i of the draw takes keystream words first + 4i .. first + 4i + 3;
  // the generator goes on from the word after the last.
  const uint64_t first = impl_->generated - (impl_->buffer.size() - impl_->next);
  const uint64_t after = first + 4 * static_cast<uint64_t>(values);
  EVP_CIPHER_CTX_free(impl_->ctx);
  impl_->ctx = ContextAt(impl_->key, after / 2);
  impl_->generated = after - after % 2;
  impl_->next = impl_->buffer.size();
  if (after % 2) {
    Refill();
    impl_->next = 1;
  }
  return first;
}

void SecureRandom::GaussianAt(uint64_t first, size_t begin, size_t end, double stddev, double* out) const {
  if (begin >= end) return;
  const uint64_t word = first + 4 * static_cast<uint64_t>(begin);
  // Its own cipher context, sought to the share's first word: no state is
  // shared with other shares or the generator.
  EVP_CIPHER_CTX* ctx = ContextAt(impl_->key, word / 2);
  constexpr size_t kChunk = 4096;  // values per keystream fill: 128 KiB of words
  std::vector<uint64_t> words(4 * kChunk);
  // CTR mode is a byte stream: a share that starts in a block's second
  // word drops the first, and each fill goes on from the byte after the last.
  if (word % 2) Keystream(ctx, words.data(), 1);
  for (size_t i = begin; i < end; i += kChunk) {
    const size_t m = std::min(kChunk, end - i);
    Keystream(ctx, words.data(), 4 * m);
    for (size_t j = 0; j < m; ++j) out[i + j] = GaussianOf(words.data() + 4 * j, stddev);
  }
  EVP_CIPHER_CTX_free(ctx);
}

}  // namespace fedrad::crypto
