// libFuzzer target for model files: the bytes of a .safetensors file as a
// model on disk is read (DecodeSafetensors: predict, evaluate, train-local)
// and as the coordinator's model arrives at a node in chunks
// (SafetensorsReceiver), cut where the first byte says. Both must agree:
// the same file, or both a refusal.
#include <cstdint>
#include <string>
#include <string_view>

#include "common/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t piece = 1 + data[0];
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  absl::StatusOr<fedrad::SafetensorsFile> whole = fedrad::DecodeSafetensors(bytes, "fuzz.safetensors");
  fedrad::SafetensorsReceiver receiver(bytes.size(), "fuzz download");
  absl::Status added;
  for (size_t at = 0; at < bytes.size() && added.ok(); at += piece) added = receiver.Add(bytes.substr(at, piece));
  absl::StatusOr<fedrad::SafetensorsFile> pieces =
      added.ok() ? receiver.Finish() : absl::StatusOr<fedrad::SafetensorsFile>(added);
  if (whole.ok() != pieces.ok()) __builtin_trap();
  if (whole.ok()) {
    if (!(whole->parameters.manifest == pieces->parameters.manifest)) __builtin_trap();
    if (whole->parameters.values.size() != pieces->parameters.values.size()) __builtin_trap();
    if (whole->metadata != pieces->metadata) __builtin_trap();
    if (static_cast<int64_t>(whole->parameters.values.size()) != whole->parameters.manifest.total_elements()) {
      __builtin_trap();
    }
  }
  return 0;
}
