#include "crypto/secure_noise.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace fedrad::crypto {
namespace {

TEST(SecureRandomTest, GaussianHasTheRequestedMomentsAndTails) {
  auto rng = SecureRandom::ForTesting(11);
  const size_t n = 400000;
  std::vector<double> x(n);
  rng->Gaussian(x.data(), n, 2.5);
  double mean = 0, m2 = 0, m4 = 0;
  size_t beyond2 = 0;
  for (double v : x) mean += v;
  mean /= n;
  for (double v : x) {
    m2 += (v - mean) * (v - mean);
    m4 += std::pow(v - mean, 4);
    beyond2 += std::fabs(v) > 2 * 2.5;
  }
  m2 /= n;
  m4 /= n;
  // Standard errors: mean 2.5/sqrt(n) = 0.004; variance about 0.014.
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(m2, 6.25, 0.07);
  EXPECT_NEAR(m4 / (m2 * m2), 3.0, 0.05);                        // Gaussian kurtosis
  EXPECT_NEAR(static_cast<double>(beyond2) / n, 0.0455, 0.002);  // P(|Z| > 2)
}

// Noise drawn on several threads is the one thread's stream exactly, value
// for value and bit for bit, from any position (here an odd word into the
// keystream, so the threads' shares start mid-block), and the generator goes
// on from the same place afterwards. A share off by one word would repeat
// or skip keystream: noise values correlated or shifted.
TEST(SecureRandomTest, ThreadsDrawExactlyTheOneThreadStream) {
  auto one = SecureRandom::ForTesting(7), many = SecureRandom::ForTesting(7);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(one->Uniform(), many->Uniform());
  for (size_t n : {size_t{200003}, size_t{70001}, size_t{5}}) {
    std::vector<double> a(n), b(n);
    one->Gaussian(a.data(), n, 1.5, /*threads=*/1);
    many->Gaussian(b.data(), n, 1.5, /*threads=*/3);
    EXPECT_EQ(std::memcmp(a.data(), b.data(), n * sizeof(double)), 0) << n;
    for (int k = 0; k < 5; ++k) EXPECT_EQ(one->Uniform(), many->Uniform()) << n;
  }
  // Reserve + GaussianAt in pieces, in any order, give the same values too.
  std::vector<double> a(100001), b(100001);
  one->Gaussian(a.data(), a.size(), 2.0, 1);
  const uint64_t first = many->Reserve(b.size());
  many->GaussianAt(first, 50001, b.size(), 2.0, b.data());
  many->GaussianAt(first, 0, 50001, 2.0, b.data());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(double)), 0);
  EXPECT_EQ(one->Uniform(), many->Uniform());
  // Distinct values: no share repeats another's words.
  std::vector<double> c(300000);
  many->Gaussian(c.data(), c.size(), 1.0, 4);
  std::sort(c.begin(), c.end());
  EXPECT_EQ(std::adjacent_find(c.begin(), c.end()), c.end());
}

TEST(SecureRandomTest, OsSeededGeneratorsDiffer) {
  auto a = SecureRandom::Create();
  auto b = SecureRandom::Create();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE((*a)->Uniform(), (*b)->Uniform());
  auto t1 = SecureRandom::ForTesting(5), t2 = SecureRandom::ForTesting(5);
  EXPECT_EQ(t1->Uniform(), t2->Uniform());
}

TEST(SecureRandomTest, UniformAndBernoulli) {
  auto rng = SecureRandom::ForTesting(3);
  double sum = 0;
  int hits = 0;
  for (int i = 0; i < 100000; ++i) {
    const double u = rng->Uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    hits += rng->Bernoulli(0.2);
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.005);
  EXPECT_NEAR(hits / 100000.0, 0.2, 0.005);
}

}  // namespace
}  // namespace fedrad::crypto
