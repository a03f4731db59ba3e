#include "node/preprocess.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace fedrad::node {

std::vector<float> PreprocessFrame(const ModalityFrame& frame, const DicomImageFile& file,
                                   const PreprocessSettings& settings) {
  double center = settings.window_center;
  double width = settings.window_width;
  if (settings.use_file_window && file.window_center && file.window_width) {
    center = *file.window_center;
    width = *file.window_width;
  }
  const double low = center - width / 2;
  cv::Mat windowed(frame.rows, frame.columns, CV_32F);
  for (int r = 0; r < frame.rows; ++r) {
    float* out = windowed.ptr<float>(r);
    const float* in = frame.values.data() + static_cast<size_t>(r) * frame.columns;
    for (int c = 0; c < frame.columns; ++c) {
      const float w = static_cast<float>(std::clamp((in[c] - low) / width, 0.0, 1.0));
      out[c] = file.invert ? 1.0f - w : w;
    }
  }
  const int size = settings.output_size;
  const double scale = static_cast<double>(size) / std::max(frame.rows, frame.columns);
  const int w = std::max(1, static_cast<int>(std::lround(frame.columns * scale)));
  const int h = std::max(1, static_cast<int>(std::lround(frame.rows * scale)));
  cv::Mat resized;
  cv::resize(windowed, resized, cv::Size(w, h), 0, 0, scale < 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
  cv::Mat canvas = cv::Mat::zeros(size, size, CV_32F);
  resized.copyTo(canvas(cv::Rect((size - w) / 2, (size - h) / 2, w, h)));
  return std::vector<float>(canvas.begin<float>(), canvas.end<float>());
}

std::string DescribePipeline(const PreprocessSettings& s) {
  return absl::StrCat("window(", s.use_file_window ? "file-or-" : "", s.window_center, ",",
                      s.window_width, ")|clamp01|resize-pad(", s.output_size, ")");
}

}  // namespace fedrad::node
