#ifndef FEDRAD_COMMON_SAFETENSORS_H_
#define FEDRAD_COMMON_SAFETENSORS_H_

#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tensor.h"

namespace fedrad {

// safetensors files (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length, a JSON header, then the raw little-endian
// tensors. We write float32 tensors contiguously in manifest order, so the
// file body is exactly the flattened wire format and Python users can load it
// with the `safetensors` package.

using SafetensorsMetadata = std::map<std::string, std::string>;

// The length prefix and JSON header for `manifest` (padded with spaces to a
// multiple of 8 bytes). The file is this header followed by the raw values.
std::string EncodeSafetensorsHeader(const Manifest& manifest,
                                    const SafetensorsMetadata& metadata);

struct SafetensorsFile {
  ModelParameters parameters;  // manifest in the order of the data offsets
  SafetensorsMetadata metadata;
};

// Parses and checks a whole file held in memory. Every field is checked:
// header length within the file, valid JSON, F32 only, shapes matching the
// offsets, offsets contiguous from 0 and covering the body exactly.
// `what` names the source in errors.
absl::StatusOr<SafetensorsFile> DecodeSafetensors(std::string_view bytes,
                                                  absl::string_view what);

// Writes `parameters` durably (temp file, fsync, rename) to `path`.
absl::Status WriteSafetensorsFile(const std::string& path, const ModelParameters& parameters,
                                  const SafetensorsMetadata& metadata);

absl::StatusOr<SafetensorsFile> ReadSafetensorsFile(const std::string& path);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_SAFETENSORS_H_
