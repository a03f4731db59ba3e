#ifndef FEDRAD_CRYPTO_SECURE_NOISE_H_
#define FEDRAD_CRYPTO_SECURE_NOISE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace fedrad::crypto {

// Random numbers for differential privacy.
//
// Uniform bits come from AES-256 in counter mode keyed with 32 bytes from
// OpenSSL's RAND_bytes (the OS entropy pool): an observer of the output
// cannot predict or replay the noise. Gaussian noise follows Opacus's
// "secure mode" (Holohan & Braghin 2021, "Secure Random Sampling in
// Differential Privacy"): each value is the sum of four Box-Muller N(0, 1)
// draws divided by 2, which is again N(0, 1) but no longer carries the
// lattice structure of a single Box-Muller output in its low-order bits
// that a floating-point attack (in the spirit of Mironov 2012) could use to
// tell the noised value from the true one. We chose it over an exact
// discrete Gaussian on a 2^-k grid because it is vectorisable at the
// gradient sizes DP-SGD needs every step.
//
// Not thread-safe (Gaussian's own threads aside); one generator per
// training loop.
class SecureRandom {
 public:
  // Keyed from the OS. Fails only if OpenSSL cannot be seeded.
  static absl::StatusOr<std::unique_ptr<SecureRandom>> Create();
  // Deterministic, for tests only: never use outside tests.
  static std::unique_ptr<SecureRandom> ForTesting(uint64_t seed);
  ~SecureRandom();

  // Uniform in [0, 1) with 53 random bits.
  double Uniform();
  // Fills `out[0..n)` with N(0, stddev²) noise (the secure construction above).
  void Gaussian(double* out, size_t n, double stddev);
  // The same on `threads` threads (0: one per core, at most 16): the values,
  // and where the generator goes on after them, are those of one thread,
  // whatever the count (each thread seeks the keystream to its share).
  void Gaussian(double* out, size_t n, double stddev, int threads);
  // The same draw, computed where the caller likes (its own thread pool):
  // Reserve(n) takes the keystream of n values and returns where it starts;
  // GaussianAt(first, begin, end, ...) writes values begin..end of that
  // draw into out[begin..end). GaussianAt is const and may run on several
  // threads at once, for disjoint ranges; the values are Gaussian(out, n)'s.
  uint64_t Reserve(size_t values);
  void GaussianAt(uint64_t first, size_t begin, size_t end, double stddev, double* out) const;
  // True with probability p.
  bool Bernoulli(double p) { return Uniform() < p; }

  struct Impl;  // the cipher state; opaque

 private:
  explicit SecureRandom(std::unique_ptr<Impl> impl);
  void Refill();
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedrad::crypto

#endif  // FEDRAD_CRYPTO_SECURE_NOISE_H_
