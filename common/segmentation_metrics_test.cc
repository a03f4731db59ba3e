#include "common/segmentation_metrics.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace fedrad {
namespace {

std::vector<uint8_t> Square(int size, int r0, int c0, int side, uint8_t c = 1) {
  std::vector<uint8_t> m(static_cast<size_t>(size) * size, 0);
  for (int r = r0; r < r0 + side; ++r) {
    for (int col = c0; col < c0 + side; ++col) m[r * size + col] = c;
  }
  return m;
}

// A 4x4 square and the same shifted one column: 12 of 16 pixels shared.
// Boundary to boundary, half the distances are 0 and half one pixel, so
// both directed 95th percentiles are one pixel: 0.8 mm.
TEST(SegmentationMetricsTest, ShiftedSquare) {
  const std::vector<uint8_t> truth = Square(10, 2, 2, 4), predicted = Square(10, 2, 3, 4);
  const MaskMetrics m = ComputeMaskMetrics(predicted.data(), truth.data(), 10, 10, 2, 0.8, 0.8);
  EXPECT_DOUBLE_EQ(m.dice, 24.0 / 32);
  EXPECT_DOUBLE_EQ(m.iou, 12.0 / 20);
  EXPECT_DOUBLE_EQ(*m.sensitivity, 12.0 / 16);
  EXPECT_DOUBLE_EQ(*m.precision, 12.0 / 16);
  ASSERT_TRUE(m.hd95_mm.has_value());
  EXPECT_NEAR(*m.hd95_mm, 0.8, 1e-12);
}

// A stray false positive 9 pixels away: the directed distances from the
// prediction are {0, 9}, whose 95th percentile (linear, as numpy) is 8.55;
// from the truth {0}. HD95 = 8.55 pixels, in mm by the column spacing.
TEST(SegmentationMetricsTest, Hd95InterpolatesThePercentile) {
  std::vector<uint8_t> truth(10, 0), predicted(10, 0);
  truth[0] = predicted[0] = predicted[9] = 1;
  const MaskMetrics m = ComputeMaskMetrics(predicted.data(), truth.data(), 1, 10, 2, 3.0, 0.5);
  EXPECT_DOUBLE_EQ(m.dice, 2.0 / 3);
  EXPECT_DOUBLE_EQ(m.iou, 0.5);
  EXPECT_DOUBLE_EQ(*m.sensitivity, 1.0);
  EXPECT_DOUBLE_EQ(*m.precision, 0.5);
  EXPECT_NEAR(*m.hd95_mm, 8.55 * 0.5, 1e-12);
}

TEST(SegmentationMetricsTest, EmptyMasks) {
  const std::vector<uint8_t> none(16, 0), some = Square(4, 1, 1, 2);
  const MaskMetrics both = ComputeMaskMetrics(none.data(), none.data(), 4, 4, 2, 1, 1);
  EXPECT_EQ(both.dice, 1);
  EXPECT_EQ(both.iou, 1);
  EXPECT_FALSE(both.sensitivity || both.precision || both.hd95_mm);
  const MaskMetrics missed = ComputeMaskMetrics(none.data(), some.data(), 4, 4, 2, 1, 1);
  EXPECT_EQ(missed.dice, 0);
  EXPECT_EQ(*missed.sensitivity, 0);
  EXPECT_FALSE(missed.precision || missed.hd95_mm);
  const MaskMetrics invented = ComputeMaskMetrics(some.data(), none.data(), 4, 4, 2, 1, 1);
  EXPECT_EQ(invented.dice, 0);
  EXPECT_EQ(*invented.precision, 0);
  EXPECT_FALSE(invented.sensitivity);
  // Two foreground classes: each present one's figure, averaged.
  const std::vector<uint8_t> two = Square(4, 0, 0, 2, 2);
  const MaskMetrics classes = ComputeMaskMetrics(two.data(), two.data(), 4, 4, 3, 1, 1);
  EXPECT_EQ(classes.dice, 1);
  EXPECT_EQ(*classes.hd95_mm, 0);
}

// Per patient: each patient's images' mean, then the mean over patients;
// per image: over images. The bootstrap resamples patients.
TEST(SegmentationMetricsTest, SummaryWeighsPatientsEqually) {
  std::vector<MaskMetrics> images(3);
  images[0].dice = 1.0;
  images[1].dice = 0.5;
  images[2].dice = 0.25;
  images[2].hd95_mm = 4.0;
  absl::StatusOr<SegmentationSummary> s = SummarizeSegmentation(images, {"a", "a", "b"}, 500, 3);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->images, 3);
  EXPECT_EQ(s->patients, 2);
  EXPECT_DOUBLE_EQ(s->per_patient.at("dice"), (0.75 + 0.25) / 2);
  EXPECT_DOUBLE_EQ(s->per_image.at("dice"), 1.75 / 3);
  EXPECT_DOUBLE_EQ(s->per_patient.at("hd95_mm"), 4.0);  // only where defined
  EXPECT_FALSE(s->per_patient.count("sensitivity"));
  EXPECT_FALSE(s->per_image.count("dice_lesion_images")) << "no image has a sensitivity here";
  images[1].sensitivity = 0.5;  // image 1 shows a lesion
  EXPECT_DOUBLE_EQ(SummarizeSegmentation(images, {"a", "a", "b"}, 10)->per_image.at("dice_lesion_images"), 0.5);
  EXPECT_GE(s->ci.at("dice").low, 0.25);
  EXPECT_LE(s->ci.at("dice").high, 0.75);
  EXPECT_LT(s->ci.at("dice").low, s->ci.at("dice").high);
  const nlohmann::json j = nlohmann::json::parse(SegmentationSummaryJson(*s));
  EXPECT_DOUBLE_EQ(j["metrics"]["dice"]["per_patient"].get<double>(), 0.5);
  EXPECT_EQ(j["metrics"]["dice"]["ci95"].size(), 2u);
  EXPECT_NE(FormatSegmentationSummary(*s).find("HD95 (mm)"), std::string::npos);
  EXPECT_FALSE(SummarizeSegmentation({}, {}).ok());
}

}  // namespace
}  // namespace fedrad
