#ifndef FEDRAD_NODE_PREPROCESS_H_
#define FEDRAD_NODE_PREPROCESS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "node/dicom_reader.h"

namespace fedrad {
class ConfigReader;
}

namespace fedrad::node {

// How modality values become the model's input, applied in this order:
// window -> resize (pad or crop to a square) -> denoise -> CLAHE -> normalize.
struct PreprocessSettings {
  // "explicit" (window_center/width), a CT preset (see WindowPreset), or
  // "file" (the file's own VOI, falling back to window_center/width).
  std::string window = "explicit";
  double window_center = 40;
  double window_width = 400;
  int output_size = 64;
  // "pad": keep the aspect ratio and pad with black; "crop": keep the aspect
  // ratio and cut the centre square.
  std::string resize = "pad";
  std::string denoise = "none";  // "none", "median", "gaussian"
  int denoise_size = 3;          // odd kernel size
  bool clahe = false;
  double clahe_clip = 2.0;
  int clahe_tiles = 8;
  // "none" keeps [0, 1]; "zscore" makes each image mean 0, std 1; "fixed"
  // subtracts normalize_mean and divides by normalize_std.
  std::string normalize = "none";
  double normalize_mean = 0.5;
  double normalize_std = 0.25;
  bool color_to_gray = true;
};

// Reads [preprocess] from a node config (output_size comes from the plan).
PreprocessSettings ReadPreprocessSettings(ConfigReader& config);

// Center and width of a named CT window ("lung", "mediastinum", "bone",
// "brain", "soft-tissue", "liver"); NotFound for other names.
absl::StatusOr<std::pair<double, double>> WindowPreset(const std::string& name);

// Returns output_size * output_size floats, row-major.
std::vector<float> PreprocessFrame(const ModalityFrame& frame, const DicomImageFile& file,
                                   const PreprocessSettings& settings);

// A label mask (rows * columns class indices, row-major) through the same
// geometry as PreprocessFrame gives its image: scaled by nearest neighbour
// (classes never blend), padded with background (0) or cropped alike.
// Returns output_size * output_size classes.
std::vector<uint8_t> PreprocessMask(const std::vector<uint8_t>& mask, int rows, int columns,
                                    const PreprocessSettings& settings);

// The first steps of PreprocessFrame alone: the frame windowed to [0, 1] at
// its own resolution (rows * columns floats), as heatmaps are drawn on it.
std::vector<float> WindowFrame(const ModalityFrame& frame, const DicomImageFile& file,
                               const PreprocessSettings& settings);

// Where a rows x columns frame lands in the model's square input: source
// pixel (x, y) is shown at (x * scale + offset_x, y * scale + offset_y), the
// scaled frame being width x height ("crop" gives negative offsets).
struct InputPlacement {
  double scale = 1;
  int width = 0, height = 0;
  int offset_x = 0, offset_y = 0;
};
InputPlacement PlaceInput(int rows, int columns, const PreprocessSettings& settings);

// A canonical description of every setting that changes the output, and its
// SHA-256: stored with models and cached tensors so inputs prepared
// differently are never mixed.
// Reading [preprocess], applying the steps and describing them all go
// through one table of steps (preprocess.cc).
std::string DescribePipeline(const PreprocessSettings& settings);
// The step one part of a description belongs to ("window=lung(-600,1500)"
// is "window", "gray" is "color").
std::string PipelineStepName(std::string_view part);
std::string PipelineSha256(const PreprocessSettings& settings);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_PREPROCESS_H_
