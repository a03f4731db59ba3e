#ifndef FEDRAD_COMMON_SEGMENTATION_METRICS_H_
#define FEDRAD_COMMON_SEGMENTATION_METRICS_H_

// Segmentation figures: per image from a predicted and a true mask, then per
// patient and overall with percentile-bootstrap intervals over patients.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics.h"

namespace fedrad {

// One image's figures, averaged over the foreground classes 1..K-1 that it
// shows or that were predicted in it. An image with neither (nothing there,
// nothing found) scores Dice and IoU 1 and has no sensitivity, precision or
// HD95. Sensitivity is undefined for a class not in the truth, precision for
// one not predicted; HD95 for a class missing from either mask.
struct MaskMetrics {
  double dice = 1;
  double iou = 1;
  std::optional<double> sensitivity;
  std::optional<double> precision;
  // The 95th-percentile Hausdorff distance in millimetres: the larger of the
  // two directed 95th percentiles of the distances from each mask's
  // boundary pixels to the other's (as MedPy's hd95 computes it).
  std::optional<double> hd95_mm;
};

// `predicted` and `truth`: rows * columns class indices; pixel spacing in mm
// between rows and between columns.
MaskMetrics ComputeMaskMetrics(const uint8_t* predicted, const uint8_t* truth, int rows, int columns, int num_classes,
                               double row_spacing_mm, double column_spacing_mm);

// The per-image figures averaged per patient (each patient's images' mean),
// then over patients; and over images alone.
struct SegmentationSummary {
  int64_t images = 0;
  int64_t patients = 0;
  // Overall figures by name ("dice", "iou", "sensitivity", "precision",
  // "hd95_mm"): the mean over patients of their mean, and over images.
  std::map<std::string, double> per_patient;
  // per_image also holds "dice_lesion_images": the mean Dice of the images
  // whose truth shows foreground.
  std::map<std::string, double> per_image;
  // 95% percentile-bootstrap intervals of the per-patient figures,
  // resampling patients.
  std::map<std::string, Interval> ci;
};

absl::StatusOr<SegmentationSummary> SummarizeSegmentation(const std::vector<MaskMetrics>& images,
                                                          const std::vector<std::string>& patients,
                                                          int resamples = 1000, uint64_t seed = 1);

// For the terminal, and as JSON: {"images", "patients", "metrics": {name:
// {"per_patient", "per_image", "ci95": [low, high]}}}.
std::string FormatSegmentationSummary(const SegmentationSummary& s);
std::string SegmentationSummaryJson(const SegmentationSummary& s);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_SEGMENTATION_METRICS_H_
