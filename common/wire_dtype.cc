#include "common/wire_dtype.h"

#include <cmath>
#include <cstring>

namespace fedrad {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace

std::string WireDtypeName(WireDtype d) {
  switch (d) {
    case WireDtype::kBFloat16:
      return "bfloat16";
    case WireDtype::kFloat16:
      return "float16";
    default:
      return "float32";
  }
}

std::optional<WireDtype> ParseWireDtype(const std::string& name) {
  if (name == "float32") return WireDtype::kFloat32;
  if (name == "bfloat16") return WireDtype::kBFloat16;
  if (name == "float16") return WireDtype::kFloat16;
  return std::nullopt;
}

uint16_t FloatToBFloat16(float f) {
  const uint32_t u = Bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  // Adding 0x7fff plus the lowest kept bit rounds to nearest, ties to even;
  // a carry into the exponent is the correct rounding (up to infinity).
  const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

float BFloat16ToFloat(uint16_t h) { return FromBits(static_cast<uint32_t>(h) << 16); }

uint16_t FloatToFloat16(float f) {
  const uint32_t u = Bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504: infinity
  if (abs < 0x38800000u) {
    // Below float16's smallest normal (2^-14): a subnormal, in units of
    // 2^-24, rounded to nearest even (0 below 2^-25).
    if (abs < 0x33000000u) return sign;
    const uint32_t exponent = abs >> 23;  // 102 .. 112
    const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exponent;  // 14 .. 24
    uint32_t value = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (value & 1u))) ++value;
    return static_cast<uint16_t>(sign | value);
  }
  // Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits.
  const uint32_t rebased = abs - (112u << 23);
  const uint32_t rounded = rebased + 0xfffu + ((rebased >> 13) & 1u);
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

float Float16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return FromBits(sign | 0x7f800000u | (mantissa << 13));  // inf, NaN
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float32.
    const float v = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return FromBits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

std::optional<size_t> EncodeValues(const float* in, size_t n, WireDtype d, char* out) {
  if (d == WireDtype::kFloat32) {
    std::memcpy(out, in, n * sizeof(float));
    return std::nullopt;
  }
  // Infinity in both 16-bit formats: every exponent bit set, no mantissa.
  const uint16_t infinity = d == WireDtype::kBFloat16 ? 0x7f80u : 0x7c00u;
  std::optional<size_t> overflow;
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = d == WireDtype::kBFloat16 ? FloatToBFloat16(in[i]) : FloatToFloat16(in[i]);
    if (!overflow && (h & 0x7fffu) == infinity && std::isfinite(in[i])) overflow = i;
    std::memcpy(out + 2 * i, &h, 2);
  }
  return overflow;
}

void DecodeValues(const char* in, size_t n, WireDtype d, float* out) {
  if (d == WireDtype::kFloat32) {
    std::memcpy(out, in, n * sizeof(float));
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    out[i] = d == WireDtype::kBFloat16 ? BFloat16ToFloat(h) : Float16ToFloat(h);
  }
}

}  // namespace fedrad
