#ifndef FEDRAD_COMMON_SAFETENSORS_H_
#define FEDRAD_COMMON_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tensor.h"
#include "crypto/sha256.h"

namespace fedrad {

// safetensors files (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length, a JSON header, then the raw little-endian
// tensors. We write float32 tensors contiguously in manifest order, so the
// file body is exactly the flattened wire format and Python users can load it
// with the `safetensors` package.

using SafetensorsMetadata = std::map<std::string, std::string>;

// The length prefix and JSON header for `manifest` (padded with spaces to a
// multiple of 8 bytes). The file is this header followed by the raw values.
std::string EncodeSafetensorsHeader(const Manifest& manifest, const SafetensorsMetadata& metadata);

struct SafetensorsFile {
  ModelParameters parameters;  // manifest in the order of the data offsets
  SafetensorsMetadata metadata;
};

// Parses and checks a whole file held in memory. Every field is checked:
// header length within the file, valid JSON, F32 only, shapes matching the
// offsets, offsets contiguous from 0 and covering the body exactly.
// `what` names the source in errors.
absl::StatusOr<SafetensorsFile> DecodeSafetensors(std::string_view bytes, absl::string_view what);

// A file as it arrives in pieces (a download): its header is decoded and
// checked as DecodeSafetensors does once it is in, and the body goes straight
// into the values, with no copy of the whole file. `reuse` is a vector whose
// memory the values may take (a previous model's, of the same size).
class SafetensorsReceiver {
 public:
  SafetensorsReceiver(uint64_t file_bytes, std::string what, std::vector<float> reuse = {});
  // The next bytes of the file.
  absl::Status Add(std::string_view bytes);
  // The file, once all of its bytes were added.
  absl::StatusOr<SafetensorsFile> Finish();
  // The length prefix and JSON header as received (empty until complete):
  // with the values' bytes after it, the file as it was sent.
  std::string_view header() const { return file_ ? std::string_view(header_) : std::string_view(); }

 private:
  const uint64_t file_bytes_;
  const std::string what_;
  std::string header_;  // the prefix, then the JSON header
  uint64_t header_len_ = 0;
  uint64_t received_ = 0;
  std::optional<SafetensorsFile> file_;  // once the header is decoded (no values yet)
  std::vector<float> values_;
};

// A model file as the coordinator streams it, in chunks of (the file's
// total size, the chunk's offset, its bytes): the chunks must run in order,
// each within the total, which stays the same and never passes
// `max_bytes`; their bytes are decoded as they come (SafetensorsReceiver)
// and hashed. A malformed stream is DataLoss.
class ModelStream {
 public:
  // `hash`: false only in benchmark-floor builds, which skip the check.
  ModelStream(uint64_t max_bytes, std::string what, std::vector<float> reuse = {}, bool hash = true);
  absl::Status Add(uint64_t total_bytes, uint64_t offset, const std::vector<std::string_view>& pieces);
  // After the last chunk: the file, if all of it came and (with `hash`) its
  // SHA-256 is `sha256`; `header` gets the prefix and JSON header as sent.
  absl::StatusOr<SafetensorsFile> Finish(const std::string& sha256, std::string* header);
  uint64_t received() const { return offset_; }

 private:
  const uint64_t max_bytes_;
  const std::string what_;
  std::vector<float> reuse_;
  const bool hash_;
  std::optional<SafetensorsReceiver> receiver_;
  std::optional<crypto::Sha256> sha_;
  uint64_t offset_ = 0, total_ = 0;
};

// Writes `parameters` durably (temp file, fsync, rename) to `path`.
absl::Status WriteSafetensorsFile(const std::string& path, const ModelParameters& parameters,
                                  const SafetensorsMetadata& metadata);

absl::StatusOr<SafetensorsFile> ReadSafetensorsFile(const std::string& path);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_SAFETENSORS_H_
