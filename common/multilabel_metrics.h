#ifndef FEDRAD_COMMON_MULTILABEL_METRICS_H_
#define FEDRAD_COMMON_MULTILABEL_METRICS_H_

// The figures of a multilabel model ([model] task = "multilabel"): every
// label is its own binary decision (the image shows the finding or not,
// predicted at a sigmoid of kMultilabelThreshold or more), scored label by
// label and averaged two ways, as scikit-learn's average="macro" (the mean
// of each label's figure) and average="micro" (every image-label decision
// pooled into one binary task).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics.h"

namespace fedrad {

inline constexpr double kMultilabelThreshold = 0.5;

struct MultilabelMetrics {
  int64_t count = 0;  // images
  // Each label as a binary task, class 1 "shows it": its 2x2 confusion
  // matrix, sensitivity, specificity, precision, recall and F1 per class,
  // and the ROC AUC of its sigmoid (unset without both kinds of image).
  std::vector<Metrics> per_label;
  // Every (image, label) decision pooled: the sum of the labels' matrices,
  // the AUC over all pairs, the calibration of max(p, 1 - p) over all
  // decisions. Its count is images x labels.
  Metrics micro;
  // Means over the labels where the figure is defined.
  std::optional<double> macro_roc_auc;
  std::optional<double> macro_sensitivity;
  std::optional<double> macro_specificity;
  double macro_f1 = 0;  // of the positive class, over every label
  // The share of images with every label right; only exact scores give it
  // (a release of per-label counts does not determine it).
  std::optional<double> exact_match;

  // Every figure by name: "micro_accuracy", "micro_sensitivity",
  // "micro_specificity", "micro_roc_auc", "macro_roc_auc",
  // "macro_sensitivity", "macro_specificity", "macro_f1", "exact_match",
  // "ece", and per label "sensitivity[c]", "specificity[c]", "f1[c]",
  // "roc_auc[c]"; undefined ones left out.
  std::map<std::string, double> Scalars() const;
};

// The counts a release determines: `cells` holds labels x [true][predicted]
// 2x2 matrices (labels * 4 values, [0][0] no finding predicted none, [1][1]
// the finding predicted). The AUCs stay unset and the ECE 0.
MultilabelMetrics MultilabelFromCounts(int labels, const std::vector<int64_t>& cells);

// The per-label 2x2 matrices of `m`, as MultilabelFromCounts takes them.
std::vector<int64_t> MultilabelCells(const MultilabelMetrics& m);

// Sets the macro figures from per_label (after their AUCs are set).
void SetMacroFigures(MultilabelMetrics* m);

// Errors: no images, fewer than two labels, targets other than 0/1, a
// probability row of the wrong size or a probability outside [0, 1].
absl::StatusOr<MultilabelMetrics> ComputeMultilabelMetrics(const Scores& scores);

// A table for the terminal: the averages with their intervals (those in
// `ci`), then each label's support, sensitivity, specificity, F1 and AUC by
// name (`names`; numbered when empty).
std::string FormatMultilabelMetrics(const MultilabelMetrics& m, const std::map<std::string, Interval>& ci,
                                    const std::vector<std::string>& names);

// The same as JSON: {"count", "task": "multilabel", "metrics": {name:
// {"value", "ci95"}}, "per_label": [{"name", "support", "sensitivity", ...}]}.
std::string MultilabelMetricsJson(const MultilabelMetrics& m, const std::map<std::string, Interval>& ci,
                                  const std::vector<std::string>& names);

// Labels the model never changes its mind on although both kinds of image
// occur (every image predicted to show it, or none): a sentence naming them,
// as SingleClassWarning says it of a classifier. `share` below 1 is for noisy
// counts: a label counts when one prediction holds at least that share and
// each kind of image more than 1 - share.
std::optional<std::string> ConstantLabelWarning(const MultilabelMetrics& m, const std::vector<std::string>& names,
                                                double share = 1.0);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_MULTILABEL_METRICS_H_
