#include "common/multilabel_metrics.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace fedrad {
namespace {

std::string LabelName(const std::vector<std::string>& names, size_t c) {
  return c < names.size() ? names[c] : absl::StrCat("label ", c);
}

// The mean of the defined values; unset when none is.
std::optional<double> MeanOf(const std::vector<std::optional<double>>& values) {
  double sum = 0;
  int n = 0;
  for (const std::optional<double>& v : values) {
    if (!v) continue;
    sum += *v;
    ++n;
  }
  return n > 0 ? std::optional<double>(sum / n) : std::nullopt;
}

}  // namespace

std::map<std::string, double> MultilabelMetrics::Scalars() const {
  std::map<std::string, double> out;
  out["micro_accuracy"] = micro.accuracy;
  out["ece"] = micro.ece;
  out["macro_f1"] = macro_f1;
  if (micro.sensitivity) out["micro_sensitivity"] = *micro.sensitivity;
  if (micro.specificity) out["micro_specificity"] = *micro.specificity;
  if (micro.roc_auc) out["micro_roc_auc"] = *micro.roc_auc;
  if (macro_roc_auc) out["macro_roc_auc"] = *macro_roc_auc;
  if (macro_sensitivity) out["macro_sensitivity"] = *macro_sensitivity;
  if (macro_specificity) out["macro_specificity"] = *macro_specificity;
  if (exact_match) out["exact_match"] = *exact_match;
  for (size_t c = 0; c < per_label.size(); ++c) {
    const Metrics& l = per_label[c];
    if (l.sensitivity) out[absl::StrCat("sensitivity[", c, "]")] = *l.sensitivity;
    if (l.specificity) out[absl::StrCat("specificity[", c, "]")] = *l.specificity;
    if (l.roc_auc) out[absl::StrCat("roc_auc[", c, "]")] = *l.roc_auc;
    if (l.per_class.size() == 2) out[absl::StrCat("f1[", c, "]")] = l.per_class[1].f1;
  }
  return out;
}

MultilabelMetrics MultilabelFromCounts(int labels, const std::vector<int64_t>& cells) {
  MultilabelMetrics m;
  std::vector<std::vector<int64_t>> pooled(2, std::vector<int64_t>(2, 0));
  for (int c = 0; c < labels; ++c) {
    std::vector<std::vector<int64_t>> matrix(2, std::vector<int64_t>(2, 0));
    for (size_t i = 0; i < 4; ++i) {
      const size_t at = static_cast<size_t>(c) * 4 + i;
      const int64_t v = at < cells.size() ? cells[at] : 0;
      matrix[i / 2][i % 2] = v;
      pooled[i / 2][i % 2] += v;
    }
    m.per_label.push_back(MetricsFromConfusion(std::move(matrix)));
  }
  m.count = labels > 0 ? m.per_label.front().count : 0;
  m.micro = MetricsFromConfusion(std::move(pooled));
  SetMacroFigures(&m);
  return m;
}

std::vector<int64_t> MultilabelCells(const MultilabelMetrics& m) {
  std::vector<int64_t> cells;
  for (const Metrics& l : m.per_label) {
    for (int t = 0; t < 2; ++t) {
      for (int p = 0; p < 2; ++p) cells.push_back(l.confusion.size() == 2 ? l.confusion[t][p] : 0);
    }
  }
  return cells;
}

void SetMacroFigures(MultilabelMetrics* m) {
  std::vector<std::optional<double>> auc, sensitivity, specificity;
  double f1 = 0;
  for (const Metrics& l : m->per_label) {
    auc.push_back(l.roc_auc);
    sensitivity.push_back(l.sensitivity);
    specificity.push_back(l.specificity);
    f1 += l.per_class.size() == 2 ? l.per_class[1].f1 : 0;
  }
  m->macro_roc_auc = MeanOf(auc);
  m->macro_sensitivity = MeanOf(sensitivity);
  m->macro_specificity = MeanOf(specificity);
  m->macro_f1 = m->per_label.empty() ? 0 : f1 / static_cast<double>(m->per_label.size());
}

absl::StatusOr<MultilabelMetrics> ComputeMultilabelMetrics(const Scores& s) {
  const int k = s.num_classes;
  if (k < 2) return absl::InvalidArgumentError("multilabel metrics need at least two labels");
  const size_t n = s.size();
  if (n == 0) return absl::InvalidArgumentError("no examples to score");
  if (s.targets.size() != n * static_cast<size_t>(k) || s.probabilities.size() != s.targets.size()) {
    return absl::InvalidArgumentError(absl::StrCat(s.probabilities.size(), " probabilities and ", s.targets.size(),
                                                   " targets for ", n, " examples of ", k, " labels"));
  }
  for (size_t i = 0; i < s.targets.size(); ++i) {
    if (s.targets[i] > 1) {
      return absl::InvalidArgumentError(absl::StrCat("example ", i / k, " has target ", int{s.targets[i]},
                                                     " for label ", i % k, "; targets are 0 or 1"));
    }
    if (!(s.probabilities[i] >= 0 && s.probabilities[i] <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("example ", i / k, " has a probability outside [0, 1] for label ", i % k));
    }
  }
  std::vector<int64_t> cells(static_cast<size_t>(k) * 4, 0);
  std::vector<double> confidence(n * k);
  std::vector<bool> correct(n * k);
  int64_t exact = 0;
  for (size_t i = 0; i < n; ++i) {
    bool all_right = true;
    for (int c = 0; c < k; ++c) {
      const size_t at = i * k + c;
      const double p = s.probabilities[at];
      const int truth = s.targets[at];
      const int predicted = p >= kMultilabelThreshold ? 1 : 0;
      ++cells[static_cast<size_t>(c) * 4 + truth * 2 + predicted];
      confidence[at] = predicted ? p : 1 - p;
      correct[at] = truth == predicted;
      all_right = all_right && correct[at];
    }
    exact += all_right ? 1 : 0;
  }
  MultilabelMetrics m = MultilabelFromCounts(k, cells);
  std::vector<float> score(n);
  std::vector<bool> positive(n);
  for (int c = 0; c < k; ++c) {
    for (size_t i = 0; i < n; ++i) {
      score[i] = s.probabilities[i * k + c];
      positive[i] = s.targets[i * k + c] == 1;
    }
    m.per_label[c].roc_auc = RocAuc(score, positive);
  }
  std::vector<bool> decision_positive(s.targets.begin(), s.targets.end());
  m.micro.roc_auc = RocAuc(s.probabilities, decision_positive);
  m.micro.ece = ExpectedCalibrationError(confidence, correct);
  m.exact_match = static_cast<double>(exact) / static_cast<double>(n);
  SetMacroFigures(&m);
  return m;
}

std::string FormatMultilabelMetrics(const MultilabelMetrics& m, const std::map<std::string, Interval>& ci,
                                    const std::vector<std::string>& names) {
  std::string out = absl::StrFormat("%d images, %d labels; a label is predicted at a sigmoid of %.2f or more\n\n",
                                    m.count, m.per_label.size(), kMultilabelThreshold);
  absl::StrAppendFormat(&out, "%-26s %8s   %s\n", "metric", "value", "95% CI (bootstrap)");
  const std::map<std::string, double> scalars = m.Scalars();
  const std::pair<const char*, const char*> overall[] = {{"macro_roc_auc", "ROC AUC (macro)"},
                                                         {"micro_roc_auc", "ROC AUC (micro)"},
                                                         {"macro_sensitivity", "sensitivity (macro)"},
                                                         {"micro_sensitivity", "sensitivity (micro)"},
                                                         {"macro_specificity", "specificity (macro)"},
                                                         {"micro_specificity", "specificity (micro)"},
                                                         {"macro_f1", "F1 (macro)"},
                                                         {"micro_accuracy", "accuracy (micro)"},
                                                         {"exact_match", "every label right"},
                                                         {"ece", "calibration (ECE)"}};
  for (const auto& [key, label] : overall) {
    auto v = scalars.find(key);
    if (v == scalars.end()) continue;
    auto i = ci.find(key);
    absl::StrAppendFormat(&out, "%-26s %8.4f   %s\n", label, v->second,
                          i == ci.end() ? "" : absl::StrFormat("[%.4f, %.4f]", i->second.low, i->second.high));
  }
  absl::StrAppendFormat(&out, "\n%-20s %8s %8s %12s %12s %8s %8s\n", "label", "images", "showing", "sensitivity",
                        "specificity", "F1", "AUC");
  auto figure = [](const std::optional<double>& v) { return v ? absl::StrFormat("%.4f", *v) : std::string("-"); };
  for (size_t c = 0; c < m.per_label.size(); ++c) {
    const Metrics& l = m.per_label[c];
    const int64_t showing = l.per_class.size() == 2 ? l.per_class[1].support : 0;
    absl::StrAppendFormat(&out, "%-20s %8d %8d %12s %12s %8.4f %8s\n", LabelName(names, c), l.count, showing,
                          figure(l.sensitivity), figure(l.specificity), l.per_class.size() == 2 ? l.per_class[1].f1 : 0,
                          figure(l.roc_auc));
  }
  if (std::optional<std::string> warning = ConstantLabelWarning(m, names)) {
    absl::StrAppend(&out, "\nwarning: ", *warning, "\n");
  }
  return out;
}

std::string MultilabelMetricsJson(const MultilabelMetrics& m, const std::map<std::string, Interval>& ci,
                                  const std::vector<std::string>& names) {
  nlohmann::json j;
  j["count"] = m.count;
  j["task"] = "multilabel";
  j["threshold"] = kMultilabelThreshold;
  j["metrics"] = nlohmann::json::parse(ScalarsJson(m.Scalars(), ci));
  nlohmann::json labels = nlohmann::json::array();
  for (size_t c = 0; c < m.per_label.size(); ++c) {
    const Metrics& l = m.per_label[c];
    nlohmann::json e{{"name", LabelName(names, c)}, {"confusion", l.confusion}};
    if (l.per_class.size() == 2) {
      e["support"] = l.per_class[1].support;
      e["predicted"] = l.per_class[1].predicted;
      e["precision"] = l.per_class[1].precision;
      e["f1"] = l.per_class[1].f1;
    }
    if (l.sensitivity) e["sensitivity"] = *l.sensitivity;
    if (l.specificity) e["specificity"] = *l.specificity;
    if (l.roc_auc) e["roc_auc"] = *l.roc_auc;
    labels.push_back(e);
  }
  j["per_label"] = labels;
  return j.dump(2);
}

std::optional<std::string> ConstantLabelWarning(const MultilabelMetrics& m, const std::vector<std::string>& names,
                                                double share) {
  std::vector<std::string> constant;
  for (size_t c = 0; c < m.per_label.size(); ++c) {
    const Metrics& l = m.per_label[c];
    if (l.count <= 0 || l.per_class.size() != 2) continue;
    const double n = static_cast<double>(l.count);
    auto occurs = [&](int64_t support) {
      return share >= 1 ? support > 0 : static_cast<double>(support) > (1 - share) * n;
    };
    auto held = [&](int64_t predicted) {
      return share >= 1 ? predicted == l.count : static_cast<double>(predicted) >= share * n;
    };
    if (!occurs(l.per_class[0].support) || !occurs(l.per_class[1].support)) continue;
    if (held(l.per_class[0].predicted)) constant.push_back(absl::StrCat(LabelName(names, c), " (never predicted)"));
    if (held(l.per_class[1].predicted)) constant.push_back(absl::StrCat(LabelName(names, c), " (always predicted)"));
  }
  if (constant.empty()) return std::nullopt;
  return absl::StrCat(share >= 1 ? "" : "from noisy counts: ", "the model gives the same answer for every image on ",
                      constant.size(), " of ", m.per_label.size(),
                      " labels although both kinds of image occur: ", absl::StrJoin(constant, ", "),
                      "; it holds those labels' prior, not the finding (train longer, with a larger learning rate, or "
                      "with less noise)");
}

}  // namespace fedrad
