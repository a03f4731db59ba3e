#include "node/preprocess.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <set>

#include "absl/strings/str_split.h"

namespace fedrad::node {
namespace {

ModalityFrame Frame(int rows, int cols, std::vector<float> values) {
  ModalityFrame f;
  f.rows = rows;
  f.columns = cols;
  f.values = std::move(values);
  return f;
}

TEST(PreprocessTest, WindowsToUnitRangeAndPadsToSquare) {
  ModalityFrame frame = Frame(2, 4, {-1000, -160, 40, 240, 1000, 40, 40, 40});
  DicomImageFile file;
  PreprocessSettings s;  // window 40/400 -> [-160, 240]
  s.output_size = 4;
  std::vector<float> out = PreprocessFrame(frame, file, s);
  ASSERT_EQ(out.size(), 16u);
  // A 2x4 image scaled 1x into 4x4 sits in rows 1-2; rows 0 and 3 are padding.
  for (int c = 0; c < 4; ++c) {
    EXPECT_FLOAT_EQ(out[c], 0.0f);
    EXPECT_FLOAT_EQ(out[12 + c], 0.0f);
  }
  EXPECT_FLOAT_EQ(out[4 + 0], 0.0f);  // -1000 clamps to 0
  EXPECT_FLOAT_EQ(out[4 + 1], 0.0f);  // window bottom
  EXPECT_FLOAT_EQ(out[4 + 2], 0.5f);  // centre
  EXPECT_FLOAT_EQ(out[4 + 3], 1.0f);  // window top
  EXPECT_FLOAT_EQ(out[8 + 0], 1.0f);  // 1000 clamps to 1
}

TEST(PreprocessTest, CropKeepsTheCentreSquare) {
  // 2 rows x 6 columns, columns valued 0..5 in a window that maps v -> v/5.
  std::vector<float> v;
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 6; ++c) v.push_back(static_cast<float>(c));
  PreprocessSettings s;
  s.window_center = 2.5;
  s.window_width = 5;
  s.output_size = 2;
  s.resize = "crop";
  std::vector<float> out = PreprocessFrame(Frame(2, 6, v), DicomImageFile{}, s);
  ASSERT_EQ(out.size(), 4u);
  // The centre columns 2 and 3 survive: 0.4 and 0.6.
  EXPECT_NEAR(out[0], 0.4f, 1e-6);
  EXPECT_NEAR(out[1], 0.6f, 1e-6);
}

TEST(PreprocessTest, PresetsAndFileWindow) {
  EXPECT_EQ(WindowPreset("lung")->first, -600);
  EXPECT_EQ(WindowPreset("lung")->second, 1500);
  EXPECT_FALSE(WindowPreset("spleen").ok());
  ModalityFrame one = Frame(1, 1, {-600});
  PreprocessSettings s;
  s.output_size = 1;
  s.window = "lung";
  EXPECT_FLOAT_EQ(PreprocessFrame(one, DicomImageFile{}, s)[0], 0.5f);
  DicomImageFile with_voi;
  with_voi.window_center = -600;
  with_voi.window_width = 10;
  s.window = "file";
  EXPECT_FLOAT_EQ(PreprocessFrame(one, with_voi, s)[0], 0.5f);
  // Without a VOI in the file, the explicit window applies: -600 < 40-200.
  EXPECT_FLOAT_EQ(PreprocessFrame(one, DicomImageFile{}, s)[0], 0.0f);
}

TEST(PreprocessTest, DenoiseClaheAndNormalization) {
  // A flat 0.5 image with one bright speck.
  std::vector<float> v(16 * 16, 40.0f);
  v[8 * 16 + 8] = 240.0f;
  ModalityFrame f = Frame(16, 16, v);
  PreprocessSettings s;
  s.output_size = 16;
  EXPECT_FLOAT_EQ(PreprocessFrame(f, DicomImageFile{}, s)[8 * 16 + 8], 1.0f);
  s.denoise = "median";
  EXPECT_FLOAT_EQ(PreprocessFrame(f, DicomImageFile{}, s)[8 * 16 + 8], 0.5f);  // speck removed
  s.denoise = "gaussian";
  const float blurred = PreprocessFrame(f, DicomImageFile{}, s)[8 * 16 + 8];
  EXPECT_GT(blurred, 0.5f);
  EXPECT_LT(blurred, 1.0f);

  s.denoise = "none";
  s.normalize = "zscore";
  std::vector<float> z = PreprocessFrame(f, DicomImageFile{}, s);
  const double mean = std::accumulate(z.begin(), z.end(), 0.0) / z.size();
  double var = 0;
  for (float x : z) var += (x - mean) * (x - mean);
  EXPECT_NEAR(mean, 0.0, 1e-5);
  EXPECT_NEAR(var / z.size(), 1.0, 1e-3);
  s.normalize = "fixed";
  EXPECT_NEAR(PreprocessFrame(f, DicomImageFile{}, s)[0], (0.5 - 0.5) / 0.25, 1e-6);

  // CLAHE spreads a low-contrast gradient over more of the range.
  std::vector<float> g(32 * 32);
  for (int i = 0; i < 32 * 32; ++i) g[i] = 30.0f + static_cast<float>(i % 32) * 0.6f;
  PreprocessSettings c;
  c.output_size = 32;
  std::vector<float> plain = PreprocessFrame(Frame(32, 32, g), DicomImageFile{}, c);
  c.clahe = true;
  std::vector<float> eq = PreprocessFrame(Frame(32, 32, g), DicomImageFile{}, c);
  auto range = [](const std::vector<float>& x) {
    return *std::max_element(x.begin(), x.end()) - *std::min_element(x.begin(), x.end());
  };
  EXPECT_GT(range(eq), 2 * range(plain));
}

TEST(PreprocessTest, PipelineHashChangesWithEverySetting) {
  PreprocessSettings base;
  std::set<std::string> hashes{PipelineSha256(base)};
  auto add = [&](PreprocessSettings s) { EXPECT_TRUE(hashes.insert(PipelineSha256(s)).second) << DescribePipeline(s); };
  PreprocessSettings s = base;
  s.window = "lung";
  add(s);
  s = base;
  s.window_center = 41;
  add(s);
  s = base;
  s.output_size = 65;
  add(s);
  s = base;
  s.resize = "crop";
  add(s);
  s = base;
  s.denoise = "median";
  add(s);
  s = base;
  s.clahe = true;
  add(s);
  s = base;
  s.normalize = "zscore";
  add(s);
  s = base;
  s.color_to_gray = false;
  add(s);
  EXPECT_EQ(PipelineSha256(base), PipelineSha256(PreprocessSettings{}));
}

// The description is the cache key and what models record: the table of
// steps writes it as it always was, and names each of its parts.
TEST(PreprocessTest, TheDescriptionNamesEveryStepInOrder) {
  PreprocessSettings s;
  EXPECT_EQ(DescribePipeline(s), "window=explicit(40,400)|resize=pad(64)|gray");
  s.window = "lung";
  s.denoise = "median";
  s.denoise_size = 5;
  s.clahe = true;
  s.normalize = "fixed";
  s.color_to_gray = false;
  const std::string all = DescribePipeline(s);
  EXPECT_EQ(all, "window=lung(40,400)|resize=pad(64)|denoise=median(5)|clahe(2,8)|normalize=fixed(0.5,0.25)|mono-only");
  std::vector<std::string> names;
  for (absl::string_view part : absl::StrSplit(all, '|'))
    names.push_back(PipelineStepName(std::string_view(part.data(), part.size())));
  EXPECT_EQ(names, (std::vector<std::string>{"window", "resize", "denoise", "clahe", "normalize", "color"}));
  EXPECT_EQ(PipelineStepName("gray"), "color");
}

}  // namespace
}  // namespace fedrad::node
