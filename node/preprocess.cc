#include "node/preprocess.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/config.h"
#include "crypto/sha256.h"

namespace fedrad::node {
namespace {

const std::map<std::string, std::pair<double, double>>& Presets() {
  static const auto* presets = new std::map<std::string, std::pair<double, double>>{
      {"lung", {-600, 1500}}, {"mediastinum", {50, 350}}, {"bone", {400, 1800}},
      {"brain", {40, 80}},    {"soft-tissue", {40, 400}}, {"liver", {60, 160}},
  };
  return *presets;
}

std::pair<double, double> WindowFor(const DicomImageFile& file, const PreprocessSettings& s) {
  if (s.window == "file" && file.window_center && file.window_width) {
    return {*file.window_center, *file.window_width};
  }
  if (absl::StatusOr<std::pair<double, double>> p = WindowPreset(s.window); p.ok()) return *p;
  return {s.window_center, s.window_width};
}

// w = clamp((v - low) / width, 0, 1), vectorised by the compiler;
// MONOCHROME1 shows 1 - w. Subtracting first keeps the window's edges exact.
void WindowInto(const ModalityFrame& frame, const DicomImageFile& file, const PreprocessSettings& s, float* out) {
  const auto [center, width] = WindowFor(file, s);
  const float low = static_cast<float>(center - width / 2);
  const float gain = static_cast<float>(1.0 / width);
  const float* in = frame.values.data();
  const size_t n = static_cast<size_t>(frame.rows) * frame.columns;
  if (file.invert) {
    for (size_t i = 0; i < n; ++i) out[i] = 1.0f - std::min(1.0f, std::max(0.0f, (in[i] - low) * gain));
  } else {
    for (size_t i = 0; i < n; ++i) out[i] = std::min(1.0f, std::max(0.0f, (in[i] - low) * gain));
  }
}

// The pipeline's steps, in the order they are applied: each reads its
// settings from [preprocess], describes itself for the cache key and the
// model's metadata (nothing when it is off), and transforms the model's
// square input. The window and resize steps make that square from the frame
// (PreprocessFrame), and the colour step happens when a file is decoded, so
// they transform nothing here. Reading, applying and describing a step all
// live in its row: a new step is one row.
struct Step {
  const char* name;        // as a description names it
  const char* spelled[3];  // whole descriptions of it other than name=..., name(...)
  void (*read)(ConfigReader& c, PreprocessSettings* s);
  std::string (*describe)(const PreprocessSettings& s);         // "" when off
  void (*apply)(cv::Mat& square, const PreprocessSettings& s);  // null: not a step on the square
};

void Median(cv::Mat& square, int size) {
  // OpenCV's median for kernels above 5 needs 8-bit input; 16-bit keeps
  // the precision the float image has after windowing.
  if (size <= 5) {
    cv::medianBlur(square, square, size);
    return;
  }
  cv::Mat u16;
  square.convertTo(u16, CV_16U, 65535.0);
  cv::Mat u8;
  u16.convertTo(u8, CV_8U, 1.0 / 257);
  cv::medianBlur(u8, u8, size);
  u8.convertTo(square, CV_32F, 1.0 / 255);
}

const std::vector<Step>& Steps() {
  static const std::vector<Step>* const steps = new std::vector<Step>{
      {"window",
       {nullptr},
       [](ConfigReader& c, PreprocessSettings* s) {
         s->window = c.GetString("preprocess.window", "explicit");
         if (s->window != "explicit" && s->window != "file" && !WindowPreset(s->window).ok()) {
           std::string names;
           for (const auto& [name, cw] : Presets()) absl::StrAppend(&names, ", ", name);
           c.Fail("preprocess.window", absl::StrCat("is '", s->window, "'; use explicit, file", names));
         }
         s->window_center = c.GetDouble("preprocess.window_center", 40, -100000, 100000);
         s->window_width = c.GetDouble("preprocess.window_width", 400, 1, 200000);
       },
       [](const PreprocessSettings& s) {
         return absl::StrFormat("window=%s(%g,%g)", s.window, s.window_center, s.window_width);
       },
       nullptr},
      {"resize",
       {nullptr},
       [](ConfigReader& c, PreprocessSettings* s) {
         s->resize = c.GetString("preprocess.resize", "pad");
         if (s->resize != "pad" && s->resize != "crop") c.Fail("preprocess.resize", "must be \"pad\" or \"crop\"");
       },
       [](const PreprocessSettings& s) { return absl::StrFormat("resize=%s(%d)", s.resize, s.output_size); },
       nullptr},
      {"denoise",
       {nullptr},
       [](ConfigReader& c, PreprocessSettings* s) {
         s->denoise = c.GetString("preprocess.denoise", "none");
         if (s->denoise != "none" && s->denoise != "median" && s->denoise != "gaussian") {
           c.Fail("preprocess.denoise", "must be \"none\", \"median\" or \"gaussian\"");
         }
         s->denoise_size = static_cast<int>(c.GetInt("preprocess.denoise_size", 3, 3, 15));
         if (s->denoise_size % 2 == 0) c.Fail("preprocess.denoise_size", "must be odd");
       },
       [](const PreprocessSettings& s) {
         return s.denoise == "none" ? std::string() : absl::StrFormat("denoise=%s(%d)", s.denoise, s.denoise_size);
       },
       [](cv::Mat& square, const PreprocessSettings& s) {
         if (s.denoise == "median") Median(square, s.denoise_size);
         if (s.denoise == "gaussian") cv::GaussianBlur(square, square, cv::Size(s.denoise_size, s.denoise_size), 0);
       }},
      {"clahe",
       {nullptr},
       [](ConfigReader& c, PreprocessSettings* s) {
         s->clahe = c.GetBool("preprocess.clahe", false);
         s->clahe_clip = c.GetDouble("preprocess.clahe_clip", 2.0, 0.1, 100);
         s->clahe_tiles = static_cast<int>(c.GetInt("preprocess.clahe_tiles", 8, 1, 64));
       },
       [](const PreprocessSettings& s) {
         return s.clahe ? absl::StrFormat("clahe(%g,%d)", s.clahe_clip, s.clahe_tiles) : std::string();
       },
       [](cv::Mat& square, const PreprocessSettings& s) {
         if (!s.clahe) return;
         cv::Mat u16;
         square.convertTo(u16, CV_16U, 65535.0);
         cv::Ptr<cv::CLAHE> clahe = cv::createCLAHE(s.clahe_clip, cv::Size(s.clahe_tiles, s.clahe_tiles));
         clahe->apply(u16, u16);
         u16.convertTo(square, CV_32F, 1.0 / 65535.0);
       }},
      {"normalize",
       {nullptr},
       [](ConfigReader& c, PreprocessSettings* s) {
         s->normalize = c.GetString("preprocess.normalize", "none");
         if (s->normalize != "none" && s->normalize != "zscore" && s->normalize != "fixed") {
           c.Fail("preprocess.normalize", "must be \"none\", \"zscore\" or \"fixed\"");
         }
         s->normalize_mean = c.GetDouble("preprocess.normalize_mean", 0.5, -1e6, 1e6);
         s->normalize_std = c.GetDouble("preprocess.normalize_std", 0.25, 1e-9, 1e6);
       },
       [](const PreprocessSettings& s) {
         if (s.normalize == "zscore") return std::string("normalize=zscore");
         if (s.normalize == "fixed") {
           return absl::StrFormat("normalize=fixed(%g,%g)", s.normalize_mean, s.normalize_std);
         }
         return std::string();
       },
       [](cv::Mat& square, const PreprocessSettings& s) {
         if (s.normalize == "zscore") {
           cv::Scalar mean, stddev;
           cv::meanStdDev(square, mean, stddev);
           square = (square - mean[0]) / std::max(stddev[0], 1e-6);
         } else if (s.normalize == "fixed") {
           square = (square - s.normalize_mean) / s.normalize_std;
         }
       }},
      {"color",
       {"gray", "mono-only", nullptr},
       [](ConfigReader& c, PreprocessSettings* s) { s->color_to_gray = c.GetBool("preprocess.color_to_gray", true); },
       [](const PreprocessSettings& s) { return std::string(s.color_to_gray ? "gray" : "mono-only"); },
       nullptr},
  };
  return *steps;
}

}  // namespace

absl::StatusOr<std::pair<double, double>> WindowPreset(const std::string& name) {
  auto it = Presets().find(name);
  if (it == Presets().end()) return absl::NotFoundError(absl::StrCat("no window preset '", name, "'"));
  return it->second;
}

PreprocessSettings ReadPreprocessSettings(ConfigReader& c) {
  PreprocessSettings s;
  for (const Step& step : Steps()) step.read(c, &s);
  return s;
}

InputPlacement PlaceInput(int rows, int columns, const PreprocessSettings& s) {
  const int size = s.output_size;
  const int longest = std::max(rows, columns);
  const int shortest = std::min(rows, columns);
  InputPlacement p;
  p.scale = static_cast<double>(size) / (s.resize == "crop" ? shortest : longest);
  p.width = std::max(1, static_cast<int>(std::lround(columns * p.scale)));
  p.height = std::max(1, static_cast<int>(std::lround(rows * p.scale)));
  // "crop" cuts the centre square out of the scaled image; "pad" centres it.
  p.offset_x = (size - p.width) / 2;
  p.offset_y = (size - p.height) / 2;
  if (s.resize == "crop") {
    p.offset_x = (size - std::min(size, p.width)) / 2 - std::max(0, (p.width - size) / 2);
    p.offset_y = (size - std::min(size, p.height)) / 2 - std::max(0, (p.height - size) / 2);
  }
  return p;
}

std::vector<float> WindowFrame(const ModalityFrame& frame, const DicomImageFile& file, const PreprocessSettings& s) {
  std::vector<float> out(static_cast<size_t>(frame.rows) * frame.columns);
  WindowInto(frame, file, s, out.data());
  return out;
}

std::vector<float> PreprocessFrame(const ModalityFrame& frame, const DicomImageFile& file,
                                   const PreprocessSettings& s) {
  // Per-thread scratch: a full-resolution image would otherwise be a fresh
  // megabyte allocation (and its page faults) for every frame.
  thread_local cv::Mat windowed;
  windowed.create(frame.rows, frame.columns, CV_32F);
  WindowInto(frame, file, s, windowed.ptr<float>(0));

  const int size = s.output_size;
  const InputPlacement p = PlaceInput(frame.rows, frame.columns, s);
  thread_local cv::Mat resized;
  cv::resize(windowed, resized, cv::Size(p.width, p.height), 0, 0, p.scale < 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
  cv::Mat square = cv::Mat::zeros(size, size, CV_32F);
  // The part of the scaled image inside the square, and where it lands.
  const cv::Rect inside = cv::Rect(p.offset_x, p.offset_y, p.width, p.height) & cv::Rect(0, 0, size, size);
  resized(inside - cv::Point(p.offset_x, p.offset_y)).copyTo(square(inside));

  for (const Step& step : Steps()) {
    if (step.apply != nullptr) step.apply(square, s);
  }
  return std::vector<float>(square.begin<float>(), square.end<float>());
}

std::vector<uint8_t> PreprocessMask(const std::vector<uint8_t>& mask, int rows, int columns,
                                    const PreprocessSettings& s) {
  const int size = s.output_size;
  const InputPlacement p = PlaceInput(rows, columns, s);
  const cv::Mat source(rows, columns, CV_8U, const_cast<uint8_t*>(mask.data()));
  cv::Mat resized;
  cv::resize(source, resized, cv::Size(p.width, p.height), 0, 0, cv::INTER_NEAREST);
  cv::Mat square = cv::Mat::zeros(size, size, CV_8U);
  const cv::Rect inside = cv::Rect(p.offset_x, p.offset_y, p.width, p.height) & cv::Rect(0, 0, size, size);
  resized(inside - cv::Point(p.offset_x, p.offset_y)).copyTo(square(inside));
  return std::vector<uint8_t>(square.begin<uint8_t>(), square.end<uint8_t>());
}

std::string DescribePipeline(const PreprocessSettings& s) {
  std::vector<std::string> parts;
  for (const Step& step : Steps()) {
    if (std::string part = step.describe(s); !part.empty()) parts.push_back(std::move(part));
  }
  return absl::StrJoin(parts, "|");
}

std::string PipelineStepName(std::string_view part) {
  for (const Step& step : Steps()) {
    for (const char* spelled : step.spelled) {
      if (spelled == nullptr) break;
      if (part == spelled) return step.name;
    }
    const std::string_view name(step.name);
    if (part.substr(0, name.size()) == name &&
        (part.size() == name.size() || part[name.size()] == '=' || part[name.size()] == '(')) {
      return step.name;
    }
  }
  return std::string(part.substr(0, part.find_first_of("=(")));
}

std::string PipelineSha256(const PreprocessSettings& s) { return crypto::Sha256Hex(DescribePipeline(s)); }

}  // namespace fedrad::node
