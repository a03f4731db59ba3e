#ifndef FEDRAD_COMMON_METRICS_H_
#define FEDRAD_COMMON_METRICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedrad {

// A model's outputs on labelled examples: the true class of each example and
// its class probabilities (row-major, num_classes per example).
// Multilabel: `targets` holds each example's 0/1 per label (num_classes of
// them, row-major), `probabilities` each label's own sigmoid, and `labels`
// is empty.
struct Scores {
  int num_classes = 0;
  std::vector<int> labels;
  std::vector<float> probabilities;
  std::vector<uint8_t> targets;

  bool multilabel() const { return !targets.empty(); }
  size_t size() const { return multilabel() ? targets.size() / static_cast<size_t>(num_classes) : labels.size(); }
  const uint8_t* target_row(size_t i) const { return targets.data() + i * static_cast<size_t>(num_classes); }
  const float* row(size_t i) const { return probabilities.data() + i * static_cast<size_t>(num_classes); }
  // The predicted class: the most probable, the lowest index on a tie.
  int Predicted(size_t i) const;
};

struct ClassMetrics {
  int64_t support = 0;    // examples of this class
  int64_t predicted = 0;  // examples predicted as this class
  // 0 when undefined (nothing predicted as / nothing of this class), as
  // scikit-learn reports with zero_division=0.
  double precision = 0;
  double recall = 0;
  double f1 = 0;
};

// Number of equal-width confidence bins for the expected calibration error.
inline constexpr int kCalibrationBins = 15;

struct Metrics {
  int64_t count = 0;
  double accuracy = 0;
  // Mean recall over the classes that occur (scikit-learn's definition).
  double balanced_accuracy = 0;
  std::vector<ClassMetrics> per_class;
  // Binary tasks, class 1 positive: recall of class 1 and of class 0. Unset
  // when the class does not occur.
  std::optional<double> sensitivity;
  std::optional<double> specificity;
  // Binary: the AUC of P(class 1). Multi-class: the mean one-vs-rest AUC over
  // the classes that occur and do not make up every example. Ties count one
  // half (Mann-Whitney). Unset when no class qualifies.
  std::optional<double> roc_auc;
  // confusion[true][predicted].
  std::vector<std::vector<int64_t>> confusion;
  // Expected calibration error of the top-class confidence over
  // kCalibrationBins bins (i/B, (i+1)/B] (Guo et al. 2017).
  double ece = 0;

  // Mean F1 over the classes.
  double MacroF1() const;

  // Every scalar figure by name ("accuracy", "roc_auc", "recall[1]", ...);
  // undefined ones are left out (a class's recall without examples of it,
  // its precision when nothing was predicted as it).
  std::map<std::string, double> Scalars() const;
};

// The figures a confusion matrix (confusion[true][predicted]) determines:
// count, accuracy, balanced accuracy, per-class figures, sensitivity and
// specificity. roc_auc and ece need the probabilities and stay unset / 0.
// The coordinator pools the sites' matrices with it.
Metrics MetricsFromConfusion(std::vector<std::vector<int64_t>> confusion);

// Errors: no examples, num_classes < 2, a label outside [0, num_classes),
// a probability row of the wrong size, or a non-finite probability.
absl::StatusOr<Metrics> ComputeMetrics(const Scores& scores);

// The area under the ROC curve of `score` for `positive[i]` examples
// against the rest, with ties counting one half; unset without both kinds.
std::optional<double> RocAuc(const std::vector<float>& score, const std::vector<bool>& positive);

// Expected calibration error of confidences against whether each was right,
// over kCalibrationBins equal-width bins (Guo et al. 2017); 0 without any.
double ExpectedCalibrationError(const std::vector<double>& confidence, const std::vector<bool>& correct);

// Example i's loss from its scores: the cross-entropy -log p[label], or
// multilabel the binary cross-entropy averaged over the labels (what the
// trainer minimises); probabilities floored at 1e-12.
double ExampleLoss(const Scores& scores, size_t i);

struct Interval {
  double low = 0;
  double high = 0;
};

// Percentile bootstrap: `resamples` resamples of the examples with
// replacement (std::mt19937_64 seeded with `seed`), the metrics of each, and
// for every scalar the 2.5th and 97.5th percentiles of the resamples where it
// is defined. Multilabel scores: MultilabelMetrics' scalars.
absl::StatusOr<std::map<std::string, Interval>> BootstrapIntervals(const Scores& scores, int resamples = 1000,
                                                                   uint64_t seed = 1);

// The bootstrap above for any figures of checked scores: `scalars` of each
// resample (labels, targets and probabilities resampled by example).
std::map<std::string, Interval> BootstrapScalars(
    const Scores& scores, int resamples, uint64_t seed,
    const std::function<std::map<std::string, double>(const Scores&)>& scalars);

// A table for the terminal: the overall figures with their intervals (those
// in `ci`), per-class figures, and the confusion matrix.
std::string FormatMetrics(const Metrics& m, const std::map<std::string, Interval>& ci);

// When several classes occur but every example is predicted as one class:
// a sentence saying so (the model holds the class prior, not the task; its
// accuracy is that class's share and its balanced accuracy 1 / classes).
// FormatMetrics ends with it; train-local and the node's round log print it.
// `share` below 1 is for counts that carry noise (the coordinator's view of
// the sites' DP releases, where a class never predicted still shows a few
// counts): then one class holding at least that share of the predictions
// counts, and a class occurs if it is the truth of more than 1 - share.
std::optional<std::string> SingleClassWarning(const Metrics& m, double share = 1.0);
// Figures by name with their intervals (those in `ci`) as a JSON object
// {name: {"value", "ci95": [low, high]}}.
std::string ScalarsJson(const std::map<std::string, double>& scalars, const std::map<std::string, Interval>& ci);
// The same figures as a JSON object: {"count", "metrics": {name: {"value",
// "ci95": [low, high]}}, "per_class": [...], "confusion": [[...]]}.
std::string MetricsJson(const Metrics& m, const std::map<std::string, Interval>& ci);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_METRICS_H_
