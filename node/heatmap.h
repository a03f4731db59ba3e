#ifndef FEDRAD_NODE_HEATMAP_H_
#define FEDRAD_NODE_HEATMAP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "node/preprocess.h"

namespace fedrad::node {

// 8-bit RGB, pixels interleaved, row-major.
struct RgbImage {
  int rows = 0;
  int columns = 0;
  std::vector<uint8_t> pixels;
};

// Draws a heatmap of the model's input (settings.output_size squared, values
// in [0, 1]) over the frame it was made from (`windowed`: rows x columns in
// [0, 1], WindowFrame), in the frame's own geometry: the map is placed back
// where the pipeline took the input from (PlaceInput), coloured (blue ->
// red) and blended in by its strength, so unremarkable areas keep their grey
// values. Frames are scaled so that the longest side is at least `min_side`
// (small images stay readable, the caption fits) and at most `max_side`.
// `caption` is written in the top-left corner.
RgbImage DrawHeatmap(const std::vector<float>& windowed, int rows, int columns, const std::vector<float>& heatmap,
                     const PreprocessSettings& settings, const std::string& caption, int min_side = 512,
                     int max_side = 1024);

absl::Status WritePng(const RgbImage& image, const std::string& path);

// A predicted mask of the model's input (settings.output_size squared class
// indices) brought back onto the frame it was made from (rows x columns):
// each frame pixel takes the class of the input pixel it landed on
// (PlaceInput, nearest neighbour); where the pipeline cropped, background.
std::vector<uint8_t> MaskToFrame(const std::vector<uint8_t>& input_mask, int rows, int columns,
                                 const PreprocessSettings& settings);

// The outline of each foreground class of `mask` (rows x columns, the
// frame's own grid) drawn over the windowed frame, one colour per class,
// scaled like DrawHeatmap, with `caption` in the top-left corner.
RgbImage DrawMaskContours(const std::vector<float>& windowed, int rows, int columns, const std::vector<uint8_t>& mask,
                          const std::string& caption, int min_side = 512, int max_side = 1024);

// What a DICOM heatmap says of itself and where it belongs.
struct SecondaryCapture {
  std::string source_path;  // the DICOM file the image was made from
  int frame = 0;            // its frame (0-based)
  std::string model_sha256;
  std::string description;  // DerivationDescription: what the image shows
  int instance_number = 1;
};

// Writes `image` as a DICOM Secondary Capture (RGB) into the source's
// patient and study (their attributes copied from the source file), in a
// series of its own for the model and study, with the source image (and
// frame) in its Source Image Sequence, so the site's viewer shows it next to
// the study. UIDs derive from (model, source image, frame): running predict
// again replaces the same instances instead of adding copies.
absl::Status WriteSecondaryCapture(const RgbImage& image, const SecondaryCapture& capture, const std::string& out_path);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_HEATMAP_H_
