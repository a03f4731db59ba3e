#include "common/wire_dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace fedrad {
namespace {

TEST(WireDtypeTest, Float16KnownValues) {
  // IEEE 754 binary16 bit patterns.
  EXPECT_EQ(FloatToFloat16(1.0f), 0x3c00);
  EXPECT_EQ(FloatToFloat16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToFloat16(65504.0f), 0x7bff);               // largest finite
  EXPECT_EQ(FloatToFloat16(65519.0f), 0x7bff);               // below the midpoint to 65536
  EXPECT_EQ(FloatToFloat16(65520.0f), 0x7c00);               // the midpoint rounds to even: infinity
  EXPECT_EQ(FloatToFloat16(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(FloatToFloat16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToFloat16(std::ldexp(1.0f, -25)), 0x0000);  // half of it: tie to even (0)
  EXPECT_EQ(FloatToFloat16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(FloatToFloat16(std::ldexp(3.0f, -25)), 0x0002);         // 1.5 units: tie to even (2)
  EXPECT_EQ(FloatToFloat16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie: stays even
  EXPECT_EQ(FloatToFloat16(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie: up to even
  EXPECT_EQ(FloatToFloat16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToFloat16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_TRUE(std::isnan(Float16ToFloat(FloatToFloat16(std::nanf("")))));
  EXPECT_EQ(Float16ToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(Float16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(Float16ToFloat(0xfc00), -std::numeric_limits<float>::infinity());
}

TEST(WireDtypeTest, BFloat16KnownValues) {
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBFloat16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);                // tie: stays even
  EXPECT_EQ(FloatToBFloat16(1.0f + std::ldexp(3.0f, -8)), 0x3f82);                // tie: up to even
  EXPECT_EQ(FloatToBFloat16(std::numeric_limits<float>::max()), 0x7f80);          // rounds up to infinity
  EXPECT_EQ(FloatToBFloat16(1e-7f) & 0x7f80, FloatToBFloat16(1.1e-7f) & 0x7f80);  // float32's range
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(std::nanf("")))));
  EXPECT_EQ(BFloat16ToFloat(0x3f80), 1.0f);
}

// Every 16-bit value decodes and encodes back to itself (NaNs stay NaN).
TEST(WireDtypeTest, EveryHalfValueRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = Float16ToFloat(static_cast<uint16_t>(h));
    const float b = BFloat16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(Float16ToFloat(FloatToFloat16(f))));
    } else {
      ASSERT_EQ(FloatToFloat16(f), h) << std::hex << h;
    }
    if (std::isnan(b)) {
      EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(b))));
    } else {
      ASSERT_EQ(FloatToBFloat16(b), h) << std::hex << h;
    }
  }
}

TEST(WireDtypeTest, EncodeDecodeBuffersAndNames) {
  const std::vector<float> v = {0.5f, -3.25f, 1e-3f};
  for (WireDtype d : {WireDtype::kFloat32, WireDtype::kBFloat16, WireDtype::kFloat16}) {
    std::string bytes(v.size() * BytesPerValue(d), '\0');
    EncodeValues(v.data(), v.size(), d, bytes.data());
    std::vector<float> back(v.size());
    DecodeValues(bytes.data(), v.size(), d, back.data());
    for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(back[i], v[i], std::fabs(v[i]) * 4e-3) << WireDtypeName(d);
    EXPECT_EQ(ParseWireDtype(WireDtypeName(d)), d);
  }
  EXPECT_FALSE(ParseWireDtype("fp8").has_value());
}

TEST(WireDtypeTest, EncodingNamesTheFirstValueThatDoesNotFit) {
  const std::vector<float> v = {1.0f, 70000.0f, std::numeric_limits<float>::infinity(), 3e38f};
  std::string bytes(v.size() * 2, '\0');
  EXPECT_EQ(EncodeValues(v.data(), v.size(), WireDtype::kFloat16, bytes.data()), std::optional<size_t>(1));
  EXPECT_EQ(EncodeValues(v.data(), v.size(), WireDtype::kBFloat16, bytes.data()), std::nullopt)
      << "70000 and 3e38 fit bfloat16; the infinity was infinite already";
  const float big = std::numeric_limits<float>::max();  // rounds past bfloat16's largest
  EXPECT_EQ(EncodeValues(&big, 1, WireDtype::kBFloat16, bytes.data()), std::optional<size_t>(0));
  std::string wide(v.size() * 4, '\0');
  EXPECT_EQ(EncodeValues(v.data(), v.size(), WireDtype::kFloat32, wide.data()), std::nullopt);
}

}  // namespace
}  // namespace fedrad
