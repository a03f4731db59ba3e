#ifndef FEDRAD_COMMON_WIRE_DTYPE_H_
#define FEDRAD_COMMON_WIRE_DTYPE_H_

// How updates travel: float32 as computed, or halved to bfloat16 or float16
// (the plan's [federation] update_dtype). Models are stored and aggregated
// in float32 whatever the wire carries.
//
// bfloat16 keeps float32's range with an 8-bit significand (relative error
// at most 2^-9); float16 has an 11-bit significand but overflows past 65504
// and loses values below about 6e-8, which small weight deltas reach: the
// plan's documentation recommends bfloat16 for updates.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace fedrad {

enum class WireDtype { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// "float32", "bfloat16", "float16".
std::string WireDtypeName(WireDtype d);
std::optional<WireDtype> ParseWireDtype(const std::string& name);

inline size_t BytesPerValue(WireDtype d) { return d == WireDtype::kFloat32 ? 4 : 2; }

// Round to nearest, ties to even; NaN stays NaN, overflow becomes infinity.
uint16_t FloatToBFloat16(float f);
float BFloat16ToFloat(uint16_t h);
uint16_t FloatToFloat16(float f);
float Float16ToFloat(uint16_t h);

// n values to n * BytesPerValue(d) little-endian bytes, and back.
// EncodeValues returns the index of the first finite value that does not
// fit `d` (it became infinity), if any.
std::optional<size_t> EncodeValues(const float* in, size_t n, WireDtype d, char* out);
void DecodeValues(const char* in, size_t n, WireDtype d, float* out);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_WIRE_DTYPE_H_
