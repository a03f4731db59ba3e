// libFuzzer target for the node's file -> tensor path: arbitrary bytes are
// written to a file and go through exactly what training does with a file
// from a PACS export (DCMTK parse and decode, our native fast path, the
// preprocessing pipeline). Any crash, sanitizer report or hang is a bug; a
// status is the expected answer to garbage.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "node/dicom_reader.h"
#include "node/preprocess.h"

namespace {

std::string ScratchPath() {
  static const std::string path = "/dev/shm/fedrad-fuzz-" + std::to_string(::getpid()) + ".dcm";
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = ScratchPath();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  fedrad::node::PreprocessSettings settings;
  settings.output_size = 16;
  settings.denoise = "median";
  settings.clahe = true;
  absl::StatusOr<fedrad::node::DicomImageFile> file = fedrad::node::ReadDicomImage(path);
  if (file.ok()) {
    for (const fedrad::node::ModalityFrame& frame : file->frames) {
      std::vector<float> out = fedrad::node::PreprocessFrame(frame, *file, settings);
      if (out.size() != 16 * 16) __builtin_trap();
    }
  } else {
    // A skipped file is reported with its reason.
    if (fedrad::node::ReasonOf(file.status()).empty()) __builtin_trap();
  }
  return 0;
}
