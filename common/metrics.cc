#include "common/metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/multilabel_metrics.h"

namespace fedrad {
namespace {

absl::Status CheckScores(const Scores& s) {
  if (s.num_classes < 2) return absl::InvalidArgumentError("metrics need at least two classes");
  if (s.labels.empty()) return absl::InvalidArgumentError("no examples to score");
  if (s.probabilities.size() != s.labels.size() * static_cast<size_t>(s.num_classes)) {
    return absl::InvalidArgumentError(absl::StrCat(s.probabilities.size(), " probabilities for ", s.labels.size(),
                                                   " examples of ", s.num_classes, " classes"));
  }
  for (size_t i = 0; i < s.labels.size(); ++i) {
    if (s.labels[i] < 0 || s.labels[i] >= s.num_classes) {
      return absl::InvalidArgumentError(
          absl::StrCat("example ", i, " has label ", s.labels[i], " outside 0..", s.num_classes - 1));
    }
  }
  for (size_t i = 0; i < s.probabilities.size(); ++i) {
    if (!std::isfinite(s.probabilities[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("example ", i / static_cast<size_t>(s.num_classes), " has a non-finite probability"));
    }
  }
  return absl::OkStatus();
}

// The metrics of scores already checked.
Metrics Compute(const Scores& s) {
  const int k = s.num_classes;
  const size_t n = s.size();
  std::vector<std::vector<int64_t>> confusion(k, std::vector<int64_t>(k, 0));
  std::vector<double> confidence(n);
  std::vector<bool> correct(n);
  for (size_t i = 0; i < n; ++i) {
    const int t = s.labels[i];
    const int p = s.Predicted(i);
    ++confusion[t][p];
    confidence[i] = s.row(i)[p];
    correct[i] = t == p;
  }
  Metrics m = MetricsFromConfusion(std::move(confusion));
  // One-vs-rest AUCs (for two classes, class 1's is the AUC).
  std::vector<float> score(n);
  std::vector<bool> positive(n);
  double auc_sum = 0;
  int aucs = 0;
  for (int c = (k == 2 ? 1 : 0); c < k; ++c) {
    for (size_t i = 0; i < n; ++i) {
      score[i] = s.row(i)[c];
      positive[i] = s.labels[i] == c;
    }
    std::optional<double> auc = RocAuc(score, positive);
    if (auc) {
      auc_sum += *auc;
      ++aucs;
    }
  }
  if (aucs > 0) m.roc_auc = auc_sum / aucs;
  m.ece = ExpectedCalibrationError(confidence, correct);
  return m;
}

// The q-quantile of sorted values, interpolating linearly between order
// statistics (NumPy's default).
double Quantile(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

}  // namespace

double ExpectedCalibrationError(const std::vector<double>& confidence, const std::vector<bool>& correct) {
  std::vector<double> bin_confidence(kCalibrationBins, 0), bin_correct(kCalibrationBins, 0);
  std::vector<int64_t> bin_count(kCalibrationBins, 0);
  for (size_t i = 0; i < confidence.size(); ++i) {
    // Bin i holds confidences in (i/B, (i+1)/B]; 0 goes to the first bin.
    const int bin =
        std::clamp(static_cast<int>(std::ceil(confidence[i] * kCalibrationBins)) - 1, 0, kCalibrationBins - 1);
    bin_confidence[bin] += confidence[i];
    bin_correct[bin] += correct[i] ? 1 : 0;
    ++bin_count[bin];
  }
  double ece = 0;
  for (int b = 0; b < kCalibrationBins; ++b) {
    if (bin_count[b] == 0) continue;
    const double count = static_cast<double>(bin_count[b]);
    ece +=
        count / static_cast<double>(confidence.size()) * std::fabs(bin_correct[b] / count - bin_confidence[b] / count);
  }
  return ece;
}

double ExampleLoss(const Scores& scores, size_t i) {
  auto log_of = [](double p) { return std::log(std::max(1e-12, p)); };
  const float* p = scores.row(i);
  if (!scores.multilabel()) return -log_of(p[scores.labels[i]]);
  const uint8_t* t = scores.target_row(i);
  double sum = 0;
  for (int c = 0; c < scores.num_classes; ++c) sum -= t[c] ? log_of(p[c]) : log_of(1.0 - p[c]);
  return sum / scores.num_classes;
}

int Scores::Predicted(size_t i) const {
  const float* p = row(i);
  return static_cast<int>(std::max_element(p, p + num_classes) - p);
}

std::optional<double> RocAuc(const std::vector<float>& score, const std::vector<bool>& positive) {
  const size_t n = score.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return score[a] < score[b]; });
  // Mann-Whitney: the sum of the positives' ranks, tied scores sharing their
  // mean rank.
  double positive_rank_sum = 0;
  double positives = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && score[order[j]] == score[order[i]]) ++j;
    const double mean_rank = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2;
    for (size_t t = i; t < j; ++t) {
      if (positive[order[t]]) {
        positive_rank_sum += mean_rank;
        positives += 1;
      }
    }
    i = j;
  }
  const double negatives = static_cast<double>(n) - positives;
  if (positives == 0 || negatives == 0) return std::nullopt;
  return (positive_rank_sum - positives * (positives + 1) / 2) / (positives * negatives);
}

std::map<std::string, double> Metrics::Scalars() const {
  std::map<std::string, double> out;
  out["accuracy"] = accuracy;
  out["balanced_accuracy"] = balanced_accuracy;
  out["ece"] = ece;
  if (sensitivity) out["sensitivity"] = *sensitivity;
  if (specificity) out["specificity"] = *specificity;
  if (roc_auc) out["roc_auc"] = *roc_auc;
  for (size_t c = 0; c < per_class.size(); ++c) {
    const ClassMetrics& m = per_class[c];
    if (m.predicted > 0) out[absl::StrCat("precision[", c, "]")] = m.precision;
    if (m.support > 0) out[absl::StrCat("recall[", c, "]")] = m.recall;
    if (m.predicted > 0 || m.support > 0) out[absl::StrCat("f1[", c, "]")] = m.f1;
  }
  return out;
}

double Metrics::MacroF1() const {
  if (per_class.empty()) return 0;
  double sum = 0;
  for (const ClassMetrics& c : per_class) sum += c.f1;
  return sum / static_cast<double>(per_class.size());
}

Metrics MetricsFromConfusion(std::vector<std::vector<int64_t>> confusion) {
  const int k = static_cast<int>(confusion.size());
  Metrics m;
  m.per_class.assign(k, ClassMetrics{});
  int64_t correct = 0;
  for (int t = 0; t < k; ++t) {
    for (int p = 0; p < k; ++p) {
      m.count += confusion[t][p];
      m.per_class[t].support += confusion[t][p];
      m.per_class[p].predicted += confusion[t][p];
    }
    correct += confusion[t][t];
  }
  m.confusion = std::move(confusion);
  if (m.count == 0) return m;
  m.accuracy = static_cast<double>(correct) / static_cast<double>(m.count);
  double recall_sum = 0;
  int present = 0;
  for (int c = 0; c < k; ++c) {
    ClassMetrics& cm = m.per_class[c];
    const double tp = static_cast<double>(m.confusion[c][c]);
    cm.precision = cm.predicted > 0 ? tp / static_cast<double>(cm.predicted) : 0;
    cm.recall = cm.support > 0 ? tp / static_cast<double>(cm.support) : 0;
    cm.f1 = cm.precision + cm.recall > 0 ? 2 * cm.precision * cm.recall / (cm.precision + cm.recall) : 0;
    if (cm.support > 0) {
      recall_sum += cm.recall;
      ++present;
    }
  }
  m.balanced_accuracy = recall_sum / present;
  if (k == 2) {
    if (m.per_class[1].support > 0) m.sensitivity = m.per_class[1].recall;
    if (m.per_class[0].support > 0) m.specificity = m.per_class[0].recall;
  }
  return m;
}

absl::StatusOr<Metrics> ComputeMetrics(const Scores& scores) {
  absl::Status s = CheckScores(scores);
  if (!s.ok()) return s;
  return Compute(scores);
}

absl::StatusOr<std::map<std::string, Interval>> BootstrapIntervals(const Scores& scores, int resamples, uint64_t seed) {
  if (resamples < 2) return absl::InvalidArgumentError("a bootstrap needs at least two resamples");
  if (scores.multilabel()) {
    absl::StatusOr<MultilabelMetrics> checked = ComputeMultilabelMetrics(scores);
    if (!checked.ok()) return checked.status();
    return BootstrapScalars(scores, resamples, seed,
                            [](const Scores& r) { return ComputeMultilabelMetrics(r)->Scalars(); });
  }
  absl::Status s = CheckScores(scores);
  if (!s.ok()) return s;
  return BootstrapScalars(scores, resamples, seed, [](const Scores& r) { return Compute(r).Scalars(); });
}

std::map<std::string, Interval> BootstrapScalars(
    const Scores& scores, int resamples, uint64_t seed,
    const std::function<std::map<std::string, double>(const Scores&)>& scalars) {
  const size_t n = scores.size();
  const size_t k = static_cast<size_t>(scores.num_classes);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, n - 1);
  Scores r;
  r.num_classes = scores.num_classes;
  if (scores.multilabel()) {
    r.targets.resize(n * k);
  } else {
    r.labels.resize(n);
  }
  r.probabilities.resize(n * k);
  std::map<std::string, std::vector<double>> samples;
  for (int b = 0; b < resamples; ++b) {
    for (size_t i = 0; i < n; ++i) {
      const size_t j = pick(rng);
      if (scores.multilabel()) {
        std::copy(scores.target_row(j), scores.target_row(j) + k,
                  r.targets.begin() + static_cast<std::ptrdiff_t>(i * k));
      } else {
        r.labels[i] = scores.labels[j];
      }
      std::copy(scores.row(j), scores.row(j) + k, r.probabilities.begin() + static_cast<std::ptrdiff_t>(i * k));
    }
    for (const auto& [name, value] : scalars(r)) samples[name].push_back(value);
  }
  std::map<std::string, Interval> out;
  for (auto& [name, values] : samples) {
    std::sort(values.begin(), values.end());
    out[name] = Interval{Quantile(values, 0.025), Quantile(values, 0.975)};
  }
  return out;
}

std::string FormatMetrics(const Metrics& m, const std::map<std::string, Interval>& ci) {
  std::string out = absl::StrFormat("%-20s %8s   %s\n", "metric", "value", "95% CI (bootstrap)");
  const std::map<std::string, double> scalars = m.Scalars();
  const std::pair<const char*, const char*> overall[] = {
      {"accuracy", "accuracy"},       {"balanced_accuracy", "balanced accuracy"},
      {"sensitivity", "sensitivity"}, {"specificity", "specificity"},
      {"roc_auc", "ROC AUC"},         {"ece", "calibration (ECE)"}};
  for (const auto& [key, label] : overall) {
    auto v = scalars.find(key);
    if (v == scalars.end()) continue;
    auto i = ci.find(key);
    absl::StrAppendFormat(&out, "%-20s %8.4f   %s\n", label, v->second,
                          i == ci.end() ? "" : absl::StrFormat("[%.4f, %.4f]", i->second.low, i->second.high));
  }
  absl::StrAppendFormat(&out, "\n%-6s %8s %10s %8s %8s\n", "class", "support", "precision", "recall", "F1");
  for (size_t c = 0; c < m.per_class.size(); ++c) {
    const ClassMetrics& k = m.per_class[c];
    absl::StrAppendFormat(&out, "%-6d %8d %10.4f %8.4f %8.4f\n", c, k.support, k.precision, k.recall, k.f1);
  }
  out += "\nconfusion matrix (rows: true class, columns: predicted)\n";
  for (const std::vector<int64_t>& row : m.confusion) {
    for (int64_t v : row) absl::StrAppendFormat(&out, " %8d", v);
    out += "\n";
  }
  if (std::optional<std::string> warning = SingleClassWarning(m)) absl::StrAppend(&out, "\nwarning: ", *warning, "\n");
  return out;
}

std::optional<std::string> SingleClassWarning(const Metrics& m, double share) {
  if (m.count <= 0) return std::nullopt;
  const double n = static_cast<double>(m.count);
  int occurring = 0, predicted = 0, only = -1;
  int64_t only_column = 0;
  for (size_t t = 0; t < m.confusion.size(); ++t) {
    int64_t row = 0, column = 0;
    for (size_t p = 0; p < m.confusion.size(); ++p) {
      row += m.confusion[t][p];
      column += m.confusion[p][t];
    }
    occurring += share >= 1 ? row > 0 : static_cast<double>(row) > (1 - share) * n;
    if (share >= 1 ? column > 0 : static_cast<double>(column) >= share * n) {
      ++predicted;
      only = static_cast<int>(t);
      only_column = column;
    }
  }
  if (occurring < 2 || predicted != 1) return std::nullopt;
  if (share >= 1) {
    return absl::StrFormat(
        "every one of the %d images is predicted as class %d although %d classes occur: the model has learned the "
        "class prior, not the task (balanced accuracy %.4f); train longer, with a larger learning rate, or with less "
        "noise",
        m.count, only, occurring, m.balanced_accuracy);
  }
  return absl::StrFormat(
      "%.1f%% of about %d images are predicted as class %d although %d classes occur: the model holds the class "
      "prior, not the task (balanced accuracy %.3f)",
      100.0 * static_cast<double>(only_column) / n, m.count, only, occurring, m.balanced_accuracy);
}

std::string ScalarsJson(const std::map<std::string, double>& scalars, const std::map<std::string, Interval>& ci) {
  nlohmann::json figures = nlohmann::json::object();
  for (const auto& [name, value] : scalars) {
    nlohmann::json f{{"value", value}};
    auto i = ci.find(name);
    if (i != ci.end()) f["ci95"] = {i->second.low, i->second.high};
    figures[name] = f;
  }
  return figures.dump();
}

std::string MetricsJson(const Metrics& m, const std::map<std::string, Interval>& ci) {
  nlohmann::json j;
  j["count"] = m.count;
  j["metrics"] = nlohmann::json::parse(ScalarsJson(m.Scalars(), ci));
  nlohmann::json classes = nlohmann::json::array();
  for (const ClassMetrics& k : m.per_class) {
    classes.push_back({{"support", k.support},
                       {"predicted", k.predicted},
                       {"precision", k.precision},
                       {"recall", k.recall},
                       {"f1", k.f1}});
  }
  j["per_class"] = classes;
  j["confusion"] = m.confusion;
  return j.dump(2);
}

}  // namespace fedrad
