#include "common/evaluation_release.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "crypto/secure_noise.h"

namespace fedrad {
namespace {

// Bin b holds values in (b/B, (b+1)/B]; 0 goes to the first bin.
int Bin(double v) { return std::clamp(static_cast<int>(std::ceil(v * kReleaseBins)) - 1, 0, kReleaseBins - 1); }

// The whole vector's L2 sensitivity after each block is scaled to its weight.
double JointSensitivity(bool segmentation) {
  return std::sqrt(kConfusionWeight * kConfusionWeight + kLossWeight * kLossWeight +
                   kConfidenceWeight * kConfidenceWeight + kScoresWeight * kScoresWeight +
                   (segmentation ? kDiceSumWeight * kDiceSumWeight + kDiceWeight * kDiceWeight : 0.0));
}

double Clamped(double v) { return std::max(0.0, v); }

// ROC AUC from a score class's histograms (negatives, positives; B bins
// each): P(score of a positive > score of a negative), ties in a bin one
// half. Unset with less than one unit of either kind (noise, not a class).
std::optional<double> HistogramAuc(const double* neg, const double* pos) {
  double negatives = 0, positives = 0, wins = 0;
  for (int b = 0; b < kReleaseBins; ++b) {
    wins += Clamped(pos[b]) * (negatives + 0.5 * Clamped(neg[b]));
    negatives += Clamped(neg[b]);
    positives += Clamped(pos[b]);
  }
  if (negatives < 1 || positives < 1) return std::nullopt;
  return wins / (positives * negatives);
}

// Calibration from the confidence histogram, bin centres as the confidence.
double ReleasedCalibration(const EvaluationStatistics& s);
ReleasedFigures MultilabelFiguresFromRelease(const EvaluationStatistics& s);

void AddNoise(std::vector<double>* v, double stddev, crypto::SecureRandom& rng) {
  std::vector<double> noise(v->size());
  rng.Gaussian(noise.data(), noise.size(), stddev);
  for (size_t i = 0; i < v->size(); ++i) (*v)[i] += noise[i];
}

}  // namespace

EvaluationStatistics EvaluationStatistics::Empty(int k, bool segmentation, bool multilabel) {
  EvaluationStatistics s;
  s.num_classes = k;
  s.multilabel = multilabel;
  s.confusion.assign(s.confusion_cells(), 0.0);
  s.confidence.assign(2 * kReleaseBins, 0.0);
  s.scores.assign(static_cast<size_t>(s.score_classes()) * 2 * kReleaseBins, 0.0);
  if (segmentation) s.dice.assign(kReleaseBins, 0.0);
  return s;
}

absl::Status EvaluationStatistics::CheckShape() const {
  if (num_classes < 2 || num_classes > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("a release of ", num_classes, " classes"));
  }
  if (confusion.size() != confusion_cells() || confidence.size() != 2 * kReleaseBins ||
      scores.size() != static_cast<size_t>(score_classes()) * 2 * kReleaseBins) {
    return absl::InvalidArgumentError(
        absl::StrCat("the release's blocks have ", confusion.size(), ", ", confidence.size(), " and ", scores.size(),
                     " values; ", num_classes, multilabel ? " labels need " : " classes need ", confusion_cells(), ", ",
                     2 * kReleaseBins, " and ", score_classes() * 2 * kReleaseBins));
  }
  if (multilabel && !dice.empty()) return absl::InvalidArgumentError("a multilabel release carries Dice");
  auto finite = [](const std::vector<double>& v) {
    return std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
  };
  if (!dice.empty() && dice.size() != kReleaseBins) {
    return absl::InvalidArgumentError(
        absl::StrCat("the release's Dice histogram has ", dice.size(), " bins, not ", kReleaseBins));
  }
  if (!std::isfinite(loss_sum) || !std::isfinite(dice_sum) || !finite(confusion) || !finite(confidence) ||
      !finite(scores) || !finite(dice)) {
    return absl::InvalidArgumentError("the release holds a value that is not finite");
  }
  return absl::OkStatus();
}

absl::StatusOr<EvaluationStatistics> CollectStatistics(const Scores& scores, const std::vector<double>& losses,
                                                       const std::vector<std::string>& units) {
  const int k = scores.num_classes;
  if (k < 2) return absl::InvalidArgumentError("a release needs at least two classes");
  if (losses.size() != scores.size() || units.size() != scores.size() ||
      scores.probabilities.size() != scores.size() * static_cast<size_t>(k)) {
    return absl::InvalidArgumentError(absl::StrCat(scores.size(), " images with ", losses.size(), " losses, ",
                                                   units.size(), " units and ", scores.probabilities.size(),
                                                   " probabilities"));
  }
  std::map<std::string, int> images;
  for (const std::string& u : units) ++images[u];
  EvaluationStatistics s = EvaluationStatistics::Empty(k);
  const int a_classes = EvaluationStatistics::ScoreClasses(k);
  for (size_t i = 0; i < scores.size(); ++i) {
    const int t = scores.labels[i];
    if (t < 0 || t >= k) return absl::InvalidArgumentError(absl::StrCat("image ", i, " has label ", t));
    const float* p = scores.row(i);
    for (int c = 0; c < k; ++c) {
      if (!std::isfinite(p[c])) return absl::InvalidArgumentError(absl::StrCat("image ", i, " has a NaN score"));
    }
    const double w = 1.0 / images[units[i]];  // a unit's images share one unit of weight
    const int predicted = scores.Predicted(i);
    s.confusion[static_cast<size_t>(t) * k + predicted] += w;
    // A non-finite loss is clipped like a large one: bounded either way.
    const double loss = std::isfinite(losses[i]) ? std::clamp(losses[i], 0.0, kLossClip) : kLossClip;
    s.loss_sum += w * loss;
    s.confidence[(t == predicted ? kReleaseBins : 0) + Bin(p[predicted])] += w;
    for (int a = 0; a < a_classes; ++a) {
      const int c = k == 2 ? 1 : a;
      s.scores[(static_cast<size_t>(a) * 2 + (t == c ? 1 : 0)) * kReleaseBins + Bin(p[c])] += w;
    }
  }
  return s;
}

absl::StatusOr<EvaluationStatistics> CollectSegmentationStatistics(const Scores& pixels,
                                                                   const std::vector<double>& losses,
                                                                   const std::vector<double>& dice,
                                                                   const std::vector<std::string>& units) {
  if (dice.empty() || units.size() != dice.size() || pixels.size() % dice.size() != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(pixels.size(), " pixels for ", dice.size(), " images and ", units.size(), " units"));
  }
  const size_t per_image = pixels.size() / dice.size();
  // Each pixel row belongs to its image's unit: the unit's rows share one
  // unit of weight, as its images do.
  std::vector<std::string> pixel_units;
  pixel_units.reserve(pixels.size());
  for (const std::string& u : units) pixel_units.insert(pixel_units.end(), per_image, u);
  absl::StatusOr<EvaluationStatistics> s = CollectStatistics(pixels, losses, pixel_units);
  if (!s.ok()) return s;
  std::map<std::string, int> images;
  for (const std::string& u : units) ++images[u];
  s->dice.assign(kReleaseBins, 0.0);
  for (size_t i = 0; i < dice.size(); ++i) {
    const double w = 1.0 / images[units[i]];
    const double d = std::isfinite(dice[i]) ? std::clamp(dice[i], 0.0, 1.0) : 0.0;
    s->dice_sum += w * d;
    s->dice[Bin(d)] += w;
  }
  return s;
}

absl::StatusOr<EvaluationStatistics> CollectMultilabelStatistics(const Scores& scores,
                                                                 const std::vector<double>& losses,
                                                                 const std::vector<std::string>& units) {
  const int k = scores.num_classes;
  if (k < 2) return absl::InvalidArgumentError("a release needs at least two labels");
  if (losses.size() != scores.size() || units.size() != scores.size() ||
      scores.targets.size() != scores.size() * static_cast<size_t>(k) ||
      scores.probabilities.size() != scores.targets.size()) {
    return absl::InvalidArgumentError(absl::StrCat(scores.size(), " images with ", losses.size(), " losses, ",
                                                   units.size(), " units, ", scores.targets.size(), " targets and ",
                                                   scores.probabilities.size(), " probabilities"));
  }
  std::map<std::string, int> images;
  for (const std::string& u : units) ++images[u];
  EvaluationStatistics s = EvaluationStatistics::Empty(k, /*segmentation=*/false, /*multilabel=*/true);
  for (size_t i = 0; i < scores.size(); ++i) {
    const double w = 1.0 / images[units[i]];  // a unit's images share one unit of weight
    const float* p = scores.row(i);
    const uint8_t* t = scores.target_row(i);
    for (int c = 0; c < k; ++c) {
      if (!std::isfinite(p[c])) return absl::InvalidArgumentError(absl::StrCat("image ", i, " has a NaN score"));
      if (t[c] > 1) return absl::InvalidArgumentError(absl::StrCat("image ", i, " has target ", int{t[c]}));
      const int predicted = p[c] >= kMultilabelThreshold ? 1 : 0;
      s.confusion[static_cast<size_t>(c) * 4 + t[c] * 2 + predicted] += w;
      s.scores[(static_cast<size_t>(c) * 2 + t[c]) * kReleaseBins + Bin(p[c])] += w;
      // Each decision at 1/L of the image's weight: the block's sensitivity stays 1.
      s.confidence[(t[c] == predicted ? kReleaseBins : 0) + Bin(predicted ? p[c] : 1 - p[c])] += w / k;
    }
    const double loss = std::isfinite(losses[i]) ? std::clamp(losses[i], 0.0, kLossClip) : kLossClip;
    s.loss_sum += w * loss;
  }
  return s;
}

ReleaseNoise NoiseFor(double sigma, int num_classes, bool segmentation, bool multilabel) {
  // Block b's noise: σ Δ (the joint sensitivity) in scaled units, times
  // sensitivity_b / weight_b back in the block's own units.
  const double base = sigma * JointSensitivity(segmentation);
  const double labels = static_cast<double>(num_classes);
  ReleaseNoise n;
  n.confusion = base * (multilabel ? std::sqrt(labels) : 1.0) / kConfusionWeight;
  n.loss_sum = base * kLossClip / kLossWeight;
  n.confidence = base * 1.0 / kConfidenceWeight;
  n.scores = base *
             std::sqrt(multilabel ? labels : static_cast<double>(EvaluationStatistics::ScoreClasses(num_classes))) /
             kScoresWeight;
  if (segmentation) {
    n.dice_sum = base / kDiceSumWeight;
    n.dice = base / kDiceWeight;
  }
  return n;
}

void AddReleaseNoise(double sigma, crypto::SecureRandom& rng, EvaluationStatistics* s) {
  const ReleaseNoise n = NoiseFor(sigma, s->num_classes, s->segmentation(), s->multilabel);
  AddNoise(&s->confusion, n.confusion, rng);
  double loss_noise = 0;
  rng.Gaussian(&loss_noise, 1, n.loss_sum);
  s->loss_sum += loss_noise;
  AddNoise(&s->confidence, n.confidence, rng);
  AddNoise(&s->scores, n.scores, rng);
  if (s->segmentation()) {
    double dice_noise = 0;
    rng.Gaussian(&dice_noise, 1, n.dice_sum);
    s->dice_sum += dice_noise;
    AddNoise(&s->dice, n.dice, rng);
  }
}

absl::Status AddInto(const EvaluationStatistics& other, EvaluationStatistics* sum) {
  if (other.num_classes != sum->num_classes || other.multilabel != sum->multilabel ||
      other.confusion.size() != sum->confusion.size() || other.confidence.size() != sum->confidence.size() ||
      other.scores.size() != sum->scores.size() || other.dice.size() != sum->dice.size()) {
    return absl::InvalidArgumentError("releases of different shapes do not pool");
  }
  for (size_t i = 0; i < sum->confusion.size(); ++i) sum->confusion[i] += other.confusion[i];
  for (size_t i = 0; i < sum->confidence.size(); ++i) sum->confidence[i] += other.confidence[i];
  for (size_t i = 0; i < sum->scores.size(); ++i) sum->scores[i] += other.scores[i];
  sum->loss_sum += other.loss_sum;
  for (size_t i = 0; i < sum->dice.size(); ++i) sum->dice[i] += other.dice[i];
  sum->dice_sum += other.dice_sum;
  return absl::OkStatus();
}

ReleasedFigures FiguresFromRelease(const EvaluationStatistics& s) {
  if (s.multilabel) return MultilabelFiguresFromRelease(s);
  const int k = s.num_classes;
  ReleasedFigures out;
  std::vector<std::vector<int64_t>> confusion(k, std::vector<int64_t>(k, 0));
  double total = 0;
  for (int t = 0; t < k; ++t) {
    for (int p = 0; p < k; ++p) {
      const double v = Clamped(s.confusion[static_cast<size_t>(t) * k + p]);
      confusion[t][p] = static_cast<int64_t>(std::llround(v));
      total += v;
    }
  }
  out.metrics = MetricsFromConfusion(std::move(confusion));
  out.loss = total > 0 ? std::clamp(s.loss_sum / total, 0.0, kLossClip) : 0;
  out.mean_dice = MeanDice(s);
  double auc_sum = 0;
  int aucs = 0;
  for (int a = 0; a < EvaluationStatistics::ScoreClasses(k); ++a) {
    const double* neg = s.scores.data() + static_cast<size_t>(a) * 2 * kReleaseBins;
    if (std::optional<double> auc = HistogramAuc(neg, neg + kReleaseBins)) {
      auc_sum += *auc;
      ++aucs;
    }
  }
  if (aucs > 0) out.metrics.roc_auc = auc_sum / aucs;
  out.metrics.ece = ReleasedCalibration(s);
  return out;
}

namespace {

ReleasedFigures MultilabelFiguresFromRelease(const EvaluationStatistics& s) {
  const int k = s.num_classes;
  ReleasedFigures out;
  std::vector<int64_t> cells(s.confusion.size());
  for (size_t i = 0; i < cells.size(); ++i) cells[i] = static_cast<int64_t>(std::llround(Clamped(s.confusion[i])));
  MultilabelMetrics m = MultilabelFromCounts(k, cells);
  // Each label's histograms, and all of them pooled for the micro AUC.
  std::vector<double> pooled(2 * kReleaseBins, 0.0);
  for (int c = 0; c < k; ++c) {
    const double* neg = s.scores.data() + static_cast<size_t>(c) * 2 * kReleaseBins;
    m.per_label[c].roc_auc = HistogramAuc(neg, neg + kReleaseBins);
    for (int i = 0; i < 2 * kReleaseBins; ++i) pooled[i] += Clamped(neg[i]);
  }
  m.micro.roc_auc = HistogramAuc(pooled.data(), pooled.data() + kReleaseBins);
  m.micro.ece = ReleasedCalibration(s);
  SetMacroFigures(&m);
  // Each label's matrix counts every unit once: the units are the whole
  // block's weight over the labels (its noise averaged over them).
  double weight = 0;
  for (double v : s.confusion) weight += Clamped(v);
  const double units = weight / k;
  out.metrics = m.micro;
  out.metrics.count = static_cast<int64_t>(std::llround(units));
  out.metrics.roc_auc = m.macro_roc_auc;
  out.loss = units > 0 ? std::clamp(s.loss_sum / units, 0.0, kLossClip) : 0;
  out.multilabel = std::move(m);
  return out;
}

double ReleasedCalibration(const EvaluationStatistics& s) {
  double ece = 0;
  double binned = 0;
  for (int b = 0; b < kReleaseBins; ++b) binned += Clamped(s.confidence[b]) + Clamped(s.confidence[kReleaseBins + b]);
  if (binned > 0) {
    for (int b = 0; b < kReleaseBins; ++b) {
      const double right = Clamped(s.confidence[kReleaseBins + b]), n = Clamped(s.confidence[b]) + right;
      if (n <= 0) continue;
      const double centre = (b + 0.5) / kReleaseBins;
      ece += n / binned * std::fabs(right / n - centre);
    }
  }
  return ece;
}

}  // namespace

std::optional<double> MeanDice(const EvaluationStatistics& s) {
  if (!s.segmentation()) return std::nullopt;
  double total = 0;
  for (double v : s.confusion) total += Clamped(v);
  return total >= 1 ? std::clamp(s.dice_sum / total, 0.0, 1.0) : 0.0;
}

}  // namespace fedrad
