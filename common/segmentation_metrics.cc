#include "common/segmentation_metrics.h"

#include <algorithm>
#include <cmath>
#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"

namespace fedrad {
namespace {

// Boundary pixels of class c: in the mask, with a 4-neighbour outside it (or
// outside the image).
std::vector<std::pair<int, int>> Boundary(const uint8_t* m, int rows, int columns, int c) {
  std::vector<std::pair<int, int>> out;
  auto in = [&](int r, int col) {
    return r >= 0 && r < rows && col >= 0 && col < columns && m[r * columns + col] == c;
  };
  for (int r = 0; r < rows; ++r) {
    for (int col = 0; col < columns; ++col) {
      if (in(r, col) && (!in(r - 1, col) || !in(r + 1, col) || !in(r, col - 1) || !in(r, col + 1))) {
        out.emplace_back(r, col);
      }
    }
  }
  return out;
}

// The p-th percentile (linear interpolation, as numpy's default) of `v`.
double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const double at = p / 100 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(at));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (at - static_cast<double>(lo));
}

// Each point of `from`'s distance (mm) to the nearest point of `to`.
std::vector<double> Distances(const std::vector<std::pair<int, int>>& from, const std::vector<std::pair<int, int>>& to,
                              double sr, double sc) {
  std::vector<double> out;
  out.reserve(from.size());
  for (const auto& [r, c] : from) {
    double best = INFINITY;
    for (const auto& [r2, c2] : to) best = std::min(best, std::hypot((r - r2) * sr, (c - c2) * sc));
    out.push_back(best);
  }
  return out;
}

double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

constexpr const char* kNames[] = {"dice", "iou", "sensitivity", "precision", "hd95_mm"};

std::optional<double> Get(const MaskMetrics& m, const std::string& name) {
  if (name == "dice") return m.dice;
  if (name == "iou") return m.iou;
  if (name == "sensitivity") return m.sensitivity;
  if (name == "precision") return m.precision;
  return m.hd95_mm;
}

// Per figure, the mean over `patients` (indices into `per_patient`) of the
// patients' values where defined.
std::map<std::string, double> MeanOver(const std::vector<std::map<std::string, double>>& per_patient,
                                       const std::vector<size_t>& patients) {
  std::map<std::string, std::vector<double>> values;
  for (size_t p : patients) {
    for (const auto& [name, v] : per_patient[p]) values[name].push_back(v);
  }
  std::map<std::string, double> out;
  for (const auto& [name, v] : values) out[name] = Mean(v);
  return out;
}

}  // namespace

MaskMetrics ComputeMaskMetrics(const uint8_t* predicted, const uint8_t* truth, int rows, int columns, int num_classes,
                               double row_spacing_mm, double column_spacing_mm) {
  const size_t n = static_cast<size_t>(rows) * columns;
  std::vector<double> dice, iou, sensitivity, precision, hd95;
  for (int c = 1; c < num_classes; ++c) {
    int64_t tp = 0, p = 0, t = 0;
    for (size_t i = 0; i < n; ++i) {
      tp += predicted[i] == c && truth[i] == c;
      p += predicted[i] == c;
      t += truth[i] == c;
    }
    if (p == 0 && t == 0) continue;  // not there, not found: no figure of this class
    dice.push_back(2.0 * static_cast<double>(tp) / static_cast<double>(p + t));
    iou.push_back(static_cast<double>(tp) / static_cast<double>(p + t - tp));
    if (t > 0) sensitivity.push_back(static_cast<double>(tp) / static_cast<double>(t));
    if (p > 0) precision.push_back(static_cast<double>(tp) / static_cast<double>(p));
    if (p > 0 && t > 0) {
      const auto bp = Boundary(predicted, rows, columns, c), bt = Boundary(truth, rows, columns, c);
      hd95.push_back(std::max(Percentile(Distances(bp, bt, row_spacing_mm, column_spacing_mm), 95),
                              Percentile(Distances(bt, bp, row_spacing_mm, column_spacing_mm), 95)));
    }
  }
  MaskMetrics m;
  if (!dice.empty()) {
    m.dice = Mean(dice);
    m.iou = Mean(iou);
  }
  if (!sensitivity.empty()) m.sensitivity = Mean(sensitivity);
  if (!precision.empty()) m.precision = Mean(precision);
  if (!hd95.empty()) m.hd95_mm = Mean(hd95);
  return m;
}

absl::StatusOr<SegmentationSummary> SummarizeSegmentation(const std::vector<MaskMetrics>& images,
                                                          const std::vector<std::string>& patients, int resamples,
                                                          uint64_t seed) {
  if (images.empty() || images.size() != patients.size()) {
    return absl::InvalidArgumentError(absl::StrCat(images.size(), " images' figures for ", patients.size(),
                                                   " patients; a summary needs at least one image"));
  }
  if (resamples < 2) return absl::InvalidArgumentError("a bootstrap needs at least two resamples");
  // Each patient's mean of each figure over its images where defined.
  std::map<std::string, std::vector<size_t>> by_patient;
  for (size_t i = 0; i < patients.size(); ++i) by_patient[patients[i]].push_back(i);
  std::vector<std::map<std::string, double>> per_patient;
  for (const auto& [patient, indices] : by_patient) {
    std::map<std::string, double> figures;
    for (const char* name : kNames) {
      std::vector<double> v;
      for (size_t i : indices) {
        if (std::optional<double> x = Get(images[i], name)) v.push_back(*x);
      }
      if (!v.empty()) figures[name] = Mean(v);
    }
    per_patient.push_back(std::move(figures));
  }
  SegmentationSummary s;
  s.images = static_cast<int64_t>(images.size());
  s.patients = static_cast<int64_t>(per_patient.size());
  std::vector<size_t> all(per_patient.size());
  for (size_t p = 0; p < all.size(); ++p) all[p] = p;
  s.per_patient = MeanOver(per_patient, all);
  for (const char* name : kNames) {
    std::vector<double> v;
    for (const MaskMetrics& m : images) {
      if (std::optional<double> x = Get(m, name)) v.push_back(*x);
    }
    if (!v.empty()) s.per_image[name] = Mean(v);
  }
  // Dice over the images that show a lesion (sensitivity defined): an
  // empty image predicted empty scores 1, which the overall figures count.
  {
    std::vector<double> v;
    for (const MaskMetrics& m : images) {
      if (m.sensitivity) v.push_back(m.dice);
    }
    if (!v.empty()) s.per_image["dice_lesion_images"] = Mean(v);
  }
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, per_patient.size() - 1);
  std::map<std::string, std::vector<double>> samples;
  std::vector<size_t> drawn(per_patient.size());
  for (int b = 0; b < resamples; ++b) {
    for (size_t& d : drawn) d = pick(rng);
    for (const auto& [name, v] : MeanOver(per_patient, drawn)) samples[name].push_back(v);
  }
  for (auto& [name, v] : samples) s.ci[name] = Interval{Percentile(v, 2.5), Percentile(v, 97.5)};
  return s;
}

std::string FormatSegmentationSummary(const SegmentationSummary& s) {
  std::string out = absl::StrFormat("%-20s %12s %12s   %s\n", "metric", "per patient", "per image",
                                    "95% CI per patient (bootstrap over patients)");
  const std::pair<const char*, const char*> rows[] = {{"dice", "Dice"},
                                                      {"iou", "IoU"},
                                                      {"sensitivity", "sensitivity"},
                                                      {"precision", "precision"},
                                                      {"hd95_mm", "HD95 (mm)"}};
  for (const auto& [key, label] : rows) {
    auto p = s.per_patient.find(key);
    if (p == s.per_patient.end()) continue;
    auto i = s.per_image.find(key);
    auto ci = s.ci.find(key);
    absl::StrAppendFormat(&out, "%-20s %12.4f %12s   %s\n", label, p->second,
                          i == s.per_image.end() ? "-" : absl::StrFormat("%.4f", i->second),
                          ci == s.ci.end() ? "" : absl::StrFormat("[%.4f, %.4f]", ci->second.low, ci->second.high));
  }
  if (auto d = s.per_image.find("dice_lesion_images"); d != s.per_image.end()) {
    absl::StrAppendFormat(&out, "%-20s %12s %12.4f\n", "Dice, lesion images", "-", d->second);
  }
  absl::StrAppendFormat(&out, "(%d images of %d patients; an image without lesion predicted empty scores Dice 1)\n",
                        s.images, s.patients);
  return out;
}

std::string SegmentationSummaryJson(const SegmentationSummary& s) {
  nlohmann::json j;
  j["images"] = s.images;
  j["patients"] = s.patients;
  nlohmann::json metrics = nlohmann::json::object();
  for (const auto& [name, v] : s.per_image) {
    if (!s.per_patient.count(name)) metrics[name] = {{"per_image", v}};
  }
  for (const auto& [name, v] : s.per_patient) {
    nlohmann::json m{{"per_patient", v}};
    if (auto i = s.per_image.find(name); i != s.per_image.end()) m["per_image"] = i->second;
    if (auto ci = s.ci.find(name); ci != s.ci.end()) m["ci95"] = {ci->second.low, ci->second.high};
    metrics[name] = std::move(m);
  }
  j["metrics"] = std::move(metrics);
  return j.dump();
}

}  // namespace fedrad
