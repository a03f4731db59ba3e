#ifndef FEDRAD_COMMON_EVALUATION_RELEASE_H_
#define FEDRAD_COMMON_EVALUATION_RELEASE_H_

// Federated evaluation as a differentially private release.
//
// A site never sends figures computed from its validation cases. It sends
// bounded-sensitivity statistics with Gaussian noise, and every figure
// (accuracy, balanced accuracy, per-class figures, sensitivity,
// specificity, ROC AUC, calibration, loss) is post-processing of them, at
// the site or at the coordinator, which costs nothing more.
//
// Each image is weighted by 1 / (the images of its privacy unit in the
// validation set), so a unit adds at most 1 to the statistics whatever its
// number of images. The L2 sensitivity to adding or removing one unit is
// then, block by block:
//   confusion   [true][predicted] weighted counts        1
//   loss_sum    weighted per-image loss, clipped at kLossClip   kLossClip
//   confidence  [correct][bin of the top probability]    1
//   scores      [score class][positive][bin of P(class)] sqrt(score classes)
// Segmentation is released the same way, its pixels as the rows: each
// image's pixels share the image's weight, so the blocks above are the
// pixel-level figures (a unit still adds at most 1), and two more blocks
// carry each unit's Dice (each image's Dice is in [0, 1]):
//   dice_sum    weighted Dice                            1
//   dice        [bin of the image's Dice]                1
// Multilabel (L labels, each its own binary decision) releases the same
// blocks label by label: a unit's images put their weight once in each
// label's 2x2 matrix and each label's score histograms, so those blocks'
// sensitivity grows to sqrt(L), and the noise per cell with it; the
// calibration block counts each image-label decision at 1/L of its image's
// weight (sensitivity 1) and the loss is the image's mean over labels:
//   confusion   [label][true][predicted] weighted counts  sqrt(L)
//   scores      [label][positive][bin of P(label)]        sqrt(L)
// Block b is scaled by kBlockWeight_b / sensitivity_b before the noise, so
// the whole vector has sensitivity sqrt(sum of the weights squared); the
// Gaussian noise N(0, σ² Δ²) on it makes one release one Gaussian mechanism
// with noise multiplier σ (RDP α / (2σ²)), charged once in the ledger.

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics.h"
#include "common/multilabel_metrics.h"

namespace fedrad {
namespace crypto {
class SecureRandom;
}

inline constexpr int kReleaseBins = 10;   // equal-width bins over [0, 1]
inline constexpr double kLossClip = 2.0;  // nats per image
// Shares of the noise budget: the confusion matrix and the loss get most.
inline constexpr double kConfusionWeight = 1.0;
inline constexpr double kLossWeight = 1.0;
inline constexpr double kConfidenceWeight = 0.5;
inline constexpr double kScoresWeight = 0.5;
inline constexpr double kDiceSumWeight = 1.0;
inline constexpr double kDiceWeight = 0.5;

struct EvaluationStatistics {
  int num_classes = 0;
  std::vector<double> confusion;   // k*k, [true][predicted]
  double loss_sum = 0;             // weighted, each image's loss clipped at kLossClip
  std::vector<double> confidence;  // 2*B, [wrong=0 / right=1][bin of the top probability]
  std::vector<double> scores;      // A*2*B, [score class][negative=0 / positive=1][bin of its probability]
  // Segmentation only (empty for classification): the weighted Dice and its
  // histogram over B bins.
  double dice_sum = 0;
  std::vector<double> dice;
  // Multilabel: num_classes labels; confusion is labels x 2 x 2 and scores
  // labels x 2 x B (see above).
  bool multilabel = false;

  bool segmentation() const { return !dice.empty(); }
  // Binary tasks: class 1's probability only; otherwise every class (one
  // versus the rest).
  static int ScoreClasses(int num_classes) { return num_classes == 2 ? 1 : num_classes; }
  // The score histograms' classes: ScoreClasses, or every label.
  int score_classes() const { return multilabel ? num_classes : ScoreClasses(num_classes); }
  size_t confusion_cells() const {
    const size_t k = static_cast<size_t>(num_classes);
    return multilabel ? 4 * k : k * k;
  }
  // Zeros of the right sizes.
  static EvaluationStatistics Empty(int num_classes, bool segmentation = false, bool multilabel = false);
  // Sizes match num_classes (2..1000) and every value is finite.
  absl::Status CheckShape() const;
};

// The exact statistics of `scores` (one row per image) with each image's
// loss and privacy unit. Stays on the node: only a noised copy leaves.
absl::StatusOr<EvaluationStatistics> CollectStatistics(const Scores& scores, const std::vector<double>& losses,
                                                       const std::vector<std::string>& units);

// Segmentation: `pixels` holds every pixel of every image as a row (labels
// the true classes, probabilities the model's), `losses` each pixel's,
// `units` each image's unit and `dice` each image's Dice; each image has
// pixels.size() / dice.size() pixels. Stays on the node.
absl::StatusOr<EvaluationStatistics> CollectSegmentationStatistics(const Scores& pixels,
                                                                   const std::vector<double>& losses,
                                                                   const std::vector<double>& dice,
                                                                   const std::vector<std::string>& units);

// Multilabel: `scores` holds each image's labels' sigmoids and targets
// (Scores::multilabel), `losses` each image's loss. Stays on the node.
absl::StatusOr<EvaluationStatistics> CollectMultilabelStatistics(const Scores& scores,
                                                                 const std::vector<double>& losses,
                                                                 const std::vector<std::string>& units);

// The noise each block gets at noise multiplier σ: per-coordinate standard
// deviations, in the block's own units.
struct ReleaseNoise {
  double confusion = 0;
  double loss_sum = 0;
  double confidence = 0;
  double scores = 0;
  double dice_sum = 0;
  double dice = 0;
};
ReleaseNoise NoiseFor(double noise_multiplier, int num_classes, bool segmentation = false, bool multilabel = false);

// Adds the release's Gaussian noise (NoiseFor) from `rng` in place.
void AddReleaseNoise(double noise_multiplier, crypto::SecureRandom& rng, EvaluationStatistics* s);

// Adds `other` (another site's release of the same shape) into `sum`:
// pooled statistics, whose noise is the sum of the sites'.
absl::Status AddInto(const EvaluationStatistics& other, EvaluationStatistics* sum);

// The figures of a (noisy) release, by post-processing: counts clamped at
// zero and rounded, the confusion-matrix figures from them, ROC AUC from the
// score histograms (ties within a bin count one half), calibration from the
// confidence histogram (bin centres as the confidence), and the mean
// clipped loss.
struct ReleasedFigures {
  Metrics metrics;  // count, accuracy, per-class figures, confusion; roc_auc and ece
  double loss = 0;  // mean clipped loss per unit of weight
  // Segmentation: the mean over units of their images' mean Dice, in [0, 1].
  std::optional<double> mean_dice;
  // Multilabel: each label's figures (AUC from its histograms), the macro
  // and micro averages (the micro AUC from the labels' pooled histograms).
  // `metrics` then holds the count of units, the micro accuracy, the macro
  // AUC and the calibration, and its confusion matrix is the micro one.
  std::optional<MultilabelMetrics> multilabel;
};
ReleasedFigures FiguresFromRelease(const EvaluationStatistics& s);

// A segmentation release's mean Dice over units: its weighted Dice over the
// units' weight (the confusion block's total, each unit adding 1), clamped
// to [0, 1]; nullopt for a classification release. Needs only the
// confusion and Dice blocks.
std::optional<double> MeanDice(const EvaluationStatistics& s);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_EVALUATION_RELEASE_H_
