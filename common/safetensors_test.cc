#include "common/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "crypto/sha256.h"

namespace fedrad {
namespace {

ModelParameters Sample() {
  ModelParameters p;
  p.manifest.tensors = {{"conv.weight", {2, 1, 3, 3}}, {"conv.bias", {2}}, {"fc.weight", {3, 2}}};
  p.values.resize(static_cast<size_t>(p.manifest.total_elements()));
  for (size_t i = 0; i < p.values.size(); ++i) p.values[i] = static_cast<float>(i) * 0.25f - 3.0f;
  return p;
}

std::string Encode(const ModelParameters& p, const SafetensorsMetadata& md) {
  return EncodeSafetensorsHeader(p.manifest, md) +
         std::string(reinterpret_cast<const char*>(p.values.data()), p.values.size() * 4);
}

TEST(SafetensorsTest, RoundTripKeepsManifestOrderValuesAndMetadata) {
  ModelParameters p = Sample();
  std::string bytes = Encode(p, {{"architecture", "ctnet"}, {"round", "3"}});
  EXPECT_EQ((8 +
             [&] {
               uint64_t n;
               std::memcpy(&n, bytes.data(), 8);
               return n;
             }()) %
                8,
            0u);
  auto f = DecodeSafetensors(bytes, "mem");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->parameters.manifest, p.manifest);  // order from offsets, not JSON key order
  EXPECT_EQ(f->parameters.values, p.values);
  EXPECT_EQ(f->metadata.at("round"), "3");
}

TEST(SafetensorsTest, EncodingIsDeterministic) {
  ModelParameters p = Sample();
  EXPECT_EQ(crypto::Sha256Hex(Encode(p, {{"a", "b"}})), crypto::Sha256Hex(Encode(p, {{"a", "b"}})));
}

TEST(SafetensorsTest, FileRoundTrip) {
  std::string path =
      std::filesystem::temp_directory_path() / ("fedrad_st_" + std::to_string(::getpid()) + ".safetensors");
  ModelParameters p = Sample();
  ASSERT_TRUE(WriteSafetensorsFile(path, p, {}).ok());
  auto f = ReadSafetensorsFile(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->parameters.values, p.values);
  std::filesystem::remove(path);
}

TEST(SafetensorsTest, RejectsHostileFiles) {
  ModelParameters p = Sample();
  std::string good = Encode(p, {});
  EXPECT_FALSE(DecodeSafetensors("", "x").ok());
  EXPECT_FALSE(DecodeSafetensors(good.substr(0, good.size() - 4), "x").ok());  // truncated body
  std::string huge_len = good;
  uint64_t n = uint64_t{1} << 62;
  std::memcpy(huge_len.data(), &n, 8);
  EXPECT_FALSE(DecodeSafetensors(huge_len, "x").ok());
  std::string not_json = good;
  not_json[8] = '[';
  EXPECT_FALSE(DecodeSafetensors(not_json, "x").ok());

  auto with_header = [](const std::string& json, size_t body) {
    std::string out(8, '\0');
    uint64_t len = json.size();
    std::memcpy(out.data(), &len, 8);
    return out + json + std::string(body, '\0');
  };
  EXPECT_FALSE(
      DecodeSafetensors(with_header(R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", 4), "x").ok());
  EXPECT_FALSE(
      DecodeSafetensors(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4), "x").ok());
  EXPECT_FALSE(
      DecodeSafetensors(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "x").ok());
  EXPECT_FALSE(
      DecodeSafetensors(with_header(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "x").ok());
  auto bad = DecodeSafetensors(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8), "upd.bin");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("upd.bin"), std::string::npos);
  EXPECT_TRUE(DecodeSafetensors(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4), "x").ok());
}

// A header nested deeper than any safetensors file is (a dtype 100,000
// levels deep: 264 KB that once overflowed the stack of predict and of a
// node receiving a model) and one declaring more tensors than any network
// has are refused with the reason, whole or in pieces, before they become
// values.
TEST(SafetensorsTest, RefusesHeadersNestedTooDeepOrWithTooManyTensors) {
  auto with_header = [](const std::string& json) {
    std::string out(8, '\0');
    uint64_t len = json.size();
    std::memcpy(out.data(), &len, 8);
    return out + json;
  };
  const std::string deep = with_header(R"({"a":{"dtype":)" + std::string(100000, '[') + std::string(100000, ']') +
                                       R"(,"shape":[0],"data_offsets":[0,0]}})");
  absl::StatusOr<SafetensorsFile> whole = DecodeSafetensors(deep, "deep.safetensors");
  ASSERT_FALSE(whole.ok());
  EXPECT_NE(whole.status().message().find("deep.safetensors: not a valid safetensors file: header is nested more "
                                          "than 3 levels deep"),
            std::string::npos)
      << whole.status();
  SafetensorsReceiver r(deep.size(), "download");
  const absl::Status pieces = r.Add(deep);
  EXPECT_NE(pieces.message().find("nested more than 3 levels"), std::string::npos) << pieces;

  std::string many = "{";
  for (int i = 0; i <= 65536; ++i) {
    many += absl::StrCat(i ? "," : "", "\"t", i, R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})");
  }
  many += "}";
  absl::StatusOr<SafetensorsFile> crowded = DecodeSafetensors(with_header(many), "x");
  ASSERT_FALSE(crowded.ok());
  EXPECT_NE(crowded.status().message().find("declares 65537 tensors, more than 65536"), std::string::npos)
      << crowded.status();
  // The limits leave every real header alone: three levels and 65,536 tensors.
  many.resize(many.rfind(",\"t65536\""));
  EXPECT_TRUE(DecodeSafetensors(with_header(many + "}"), "x").ok());
}

// A file received in pieces of every size decodes as the whole file does
// (a float split across pieces included), reuses the vector it is given,
// and keeps the header as sent; short, long or bad files are refused.
TEST(SafetensorsTest, AFileReceivedInPiecesDecodesAsAWholeOne) {
  const ModelParameters p = Sample();
  const std::string bytes = Encode(p, {{"round", "7"}});
  for (size_t piece : {size_t{1}, size_t{3}, size_t{7}, size_t{64}, bytes.size()}) {
    std::vector<float> reuse(p.values.size(), 99.0f);
    const float* memory = reuse.data();
    SafetensorsReceiver r(bytes.size(), "piece", std::move(reuse));
    for (size_t at = 0; at < bytes.size(); at += piece) {
      ASSERT_TRUE(r.Add(std::string_view(bytes).substr(at, piece)).ok()) << piece << " at " << at;
    }
    const std::string_view header = r.header();
    absl::StatusOr<SafetensorsFile> f = r.Finish();
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(f->parameters.manifest, p.manifest);
    EXPECT_EQ(f->parameters.values, p.values) << piece;
    EXPECT_EQ(f->parameters.values.data(), memory);
    EXPECT_EQ(f->metadata.at("round"), "7");
    EXPECT_EQ(std::string(header) + std::string(bytes.substr(header.size())), bytes);
  }
  {
    SafetensorsReceiver r(bytes.size(), "short");
    ASSERT_TRUE(r.Add(std::string_view(bytes).substr(0, bytes.size() - 4)).ok());
    absl::StatusOr<SafetensorsFile> f = r.Finish();
    ASSERT_FALSE(f.ok());
    EXPECT_NE(f.status().message().find("ended after"), std::string::npos) << f.status();
  }
  {
    SafetensorsReceiver r(bytes.size() - 4, "long");
    EXPECT_FALSE(r.Add(bytes).ok());
  }
  {
    std::string bad = bytes;
    bad[8] = '[';  // the JSON header is no object
    SafetensorsReceiver r(bad.size(), "bad");
    EXPECT_FALSE(r.Add(bad).ok());
  }
}

}  // namespace
}  // namespace fedrad

namespace fedrad {
namespace {

// A model as the coordinator streams it: chunks in order within one total,
// hashed; anything else is refused as a malformed stream.
TEST(ModelStreamTest, ChunksInOrderMakeTheFileAndAnythingElseIsRefused) {
  ModelParameters p;
  p.manifest.tensors = {{"w", {6}}};
  p.values = {1, 2, 3, 4, 5, 6};
  const std::string file = EncodeSafetensorsHeader(p.manifest, {{"round", "2"}}) +
                           std::string(reinterpret_cast<const char*>(p.values.data()), 24);
  const std::string sha = crypto::Sha256Hex(file);
  auto send = [&](ModelStream& s, size_t at, size_t n, uint64_t total) {
    return s.Add(total, at, {std::string_view(file).substr(at, n)});
  };
  {
    ModelStream s(1 << 20, "m");
    for (size_t at = 0; at < file.size(); at += 10) ASSERT_TRUE(send(s, at, 10, file.size()).ok()) << at;
    std::string header;
    absl::StatusOr<SafetensorsFile> f = s.Finish(sha, &header);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(f->parameters.values, p.values);
    EXPECT_EQ(header + file.substr(header.size()), file);
    EXPECT_EQ(s.received(), file.size());
  }
  {
    ModelStream s(1 << 20, "m");
    ASSERT_TRUE(send(s, 0, 10, file.size()).ok());
    EXPECT_EQ(send(s, 20, 10, file.size()).code(), absl::StatusCode::kDataLoss);  // a gap
  }
  {
    ModelStream s(1 << 20, "m");
    ASSERT_TRUE(send(s, 0, 10, file.size()).ok());
    EXPECT_EQ(send(s, 10, 10, file.size() + 1).code(), absl::StatusCode::kDataLoss);  // the total changes
  }
  {
    ModelStream s(file.size() - 1, "m");
    EXPECT_EQ(send(s, 0, 10, file.size()).code(), absl::StatusCode::kDataLoss);  // larger than the model can be
  }
  {
    ModelStream s(1 << 20, "m");
    EXPECT_EQ(s.Add(8, 0, {std::string_view(file).substr(0, 10)}).code(), absl::StatusCode::kDataLoss);
    EXPECT_EQ(s.Add(~uint64_t{0}, 0, {}).code(), absl::StatusCode::kDataLoss);
  }
  {
    ModelStream s(1 << 20, "m");
    std::string header;
    EXPECT_NE(s.Finish(sha, &header).status().message().find("an empty model"), std::string::npos);
  }
  {
    ModelStream s(1 << 20, "m");
    ASSERT_TRUE(send(s, 0, file.size(), file.size()).ok());
    std::string header;
    EXPECT_NE(s.Finish(std::string(64, '0'), &header).status().message().find("does not match its SHA-256"),
              std::string::npos);
  }
}

}  // namespace
}  // namespace fedrad
