#include "coordinator/update_intake.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "crypto/sha256.h"

namespace fedrad::coordinator {
namespace {

class UpdateIntakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/update_intake_test_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static std::string Bytes(const std::vector<float>& v, WireDtype d = WireDtype::kFloat32) {
    std::string out(v.size() * BytesPerValue(d), '\0');
    EncodeValues(v.data(), v.size(), d, out.data());
    return out;
  }
  UploadSpec Spec(uint64_t id, const std::string& bytes, WireDtype d = WireDtype::kFloat32, double max_norm = 1e6) {
    return UploadSpec{id,      dir_ + "/" + std::to_string(id) + ".bin", bytes.size(), d, crypto::Sha256Hex(bytes),
                      max_norm};
  }
  std::vector<float> Spooled(uint64_t id, size_t n) {
    std::vector<float> v(n);
    FILE* f = std::fopen((dir_ + "/" + std::to_string(id) + ".bin").c_str(), "rb");
    EXPECT_NE(f, nullptr);
    if (f == nullptr) return {};
    EXPECT_EQ(std::fread(v.data(), sizeof(float), n, f), n);
    std::fclose(f);
    return v;
  }

  std::string dir_;
};

TEST_F(UpdateIntakeTest, ChunksAreSpooledAsFloat32FoldedAndCountedOnceAccepted) {
  UpdateIntake intake(4, /*folds=*/true);
  const std::vector<float> a = {1, -2, 0.5, 4}, b = {3, 2, 1.5, 0};
  const std::string wa = Bytes(a, WireDtype::kBFloat16), wb = Bytes(b);
  ASSERT_TRUE(intake.Admit(1, 1, Spec(1, wa, WireDtype::kBFloat16).spool_path).ok());
  ASSERT_TRUE(intake.Admit(2, 3, Spec(2, wb).spool_path).ok());
  auto ua = intake.Open(Spec(1, wa, WireDtype::kBFloat16));
  auto ub = intake.Open(Spec(2, wb));
  ASSERT_TRUE(ua.ok() && ub.ok());
  ASSERT_TRUE((*ua)->Take(std::string_view(wa).substr(0, 4)).ok());  // two bfloat16 values
  ASSERT_TRUE((*ub)->Take(wb).ok());
  ASSERT_TRUE((*ua)->Take(std::string_view(wa).substr(4)).ok());
  EXPECT_EQ((*ua)->received(), wa.size());
  ASSERT_TRUE((*ua)->Complete().ok());
  ASSERT_TRUE((*ub)->Complete().ok());
  EXPECT_EQ(Spooled(1, 4), a) << "these values are exact in bfloat16";
  EXPECT_EQ(Spooled(2, 4), b);
  ASSERT_TRUE(intake.Accept(1).ok() && intake.Accept(2).ok());
  absl::StatusOr<const UpdateSum*> sum = intake.Seal({});
  ASSERT_TRUE(sum.ok() && *sum != nullptr);
  EXPECT_EQ((*sum)->accepted(), 2);
  for (size_t i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ((*sum)->Mean(i), (a[i] + 3 * b[i]) / 4) << i;
}

TEST_F(UpdateIntakeTest, EveryBadChunkIsItsOwnReason) {
  UpdateIntake intake(4, /*folds=*/true);
  auto reason = [&](uint64_t id, const std::vector<float>& v, const std::string& sent, double max_norm = 1e6,
                    std::string claimed = "") {
    UploadSpec spec = Spec(id, Bytes(v), WireDtype::kFloat32, max_norm);
    if (!claimed.empty()) spec.update_sha256 = claimed;
    EXPECT_TRUE(intake.Admit(id, 1, spec.spool_path).ok());
    auto up = intake.Open(spec);
    EXPECT_TRUE(up.ok());
    absl::Status s = (*up)->Take(sent);
    if (s.ok()) s = (*up)->Complete();
    EXPECT_TRUE(intake.Withdraw(id).ok());
    return s;
  };
  const std::vector<float> ok = {1, 2, 3, 4};
  std::vector<float> nan = ok;
  nan[2] = std::nanf("");
  absl::Status s = reason(1, ok, Bytes(ok).substr(0, 6));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("malformed chunk of 6 bytes"), std::string::npos) << s;
  s = reason(2, nan, Bytes(nan));
  EXPECT_NE(s.message().find("non-finite value at parameter 2"), std::string::npos) << s;
  s = reason(3, ok, Bytes(ok), /*max_norm=*/5);  // |ok| = sqrt(30)
  EXPECT_NE(s.message().find("max_update_norm 5"), std::string::npos) << s;
  s = reason(4, ok, Bytes(ok), 1e6, std::string(64, 'a'));
  EXPECT_NE(s.message().find("do not match its SHA-256"), std::string::npos) << s;
  s = reason(5, ok, Bytes(ok) + Bytes(ok));
  EXPECT_NE(s.message().find("within the manifest's size"), std::string::npos) << s;
  // Short: the stream broke, which is not the site's answer.
  UploadSpec spec = Spec(6, Bytes(ok));
  ASSERT_TRUE(intake.Admit(6, 1, spec.spool_path).ok());
  auto up = intake.Open(spec);
  ASSERT_TRUE(up.ok());
  ASSERT_TRUE((*up)->Take(Bytes(ok).substr(0, 8)).ok());
  EXPECT_EQ((*up)->Complete().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(intake.Withdraw(6).ok());
  // Nothing of them counts.
  absl::StatusOr<const UpdateSum*> sum = intake.Seal({});
  ASSERT_TRUE(sum.ok());
  EXPECT_EQ((*sum)->accepted(), 0);
}

TEST_F(UpdateIntakeTest, ASpoolThatCannotBeWrittenIsTheCoordinatorsFailure) {
  UpdateIntake intake(4, /*folds=*/false);
  UploadSpec spec = Spec(1, Bytes({1, 2, 3, 4}));
  spec.spool_path = dir_ + "/no-such-dir/1.bin";
  auto up = intake.Open(spec);
  ASSERT_FALSE(up.ok());
  EXPECT_EQ(up.status().code(), absl::StatusCode::kInternal) << up.status();
  absl::StatusOr<const UpdateSum*> sum = intake.Seal({});
  ASSERT_TRUE(sum.ok());
  EXPECT_EQ(*sum, nullptr) << "a strategy that reads the files gets no sum";
}

}  // namespace
}  // namespace fedrad::coordinator
