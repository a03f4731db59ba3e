#include "common/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

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
  EXPECT_EQ((8 + [&] { uint64_t n; std::memcpy(&n, bytes.data(), 8); return n; }()) % 8, 0u);
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
  std::string path = std::filesystem::temp_directory_path() /
                     ("fedrad_st_" + std::to_string(::getpid()) + ".safetensors");
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
  EXPECT_FALSE(DecodeSafetensors(with_header(R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", 4), "x").ok());
  EXPECT_FALSE(DecodeSafetensors(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4), "x").ok());
  EXPECT_FALSE(DecodeSafetensors(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "x").ok());
  EXPECT_FALSE(DecodeSafetensors(with_header(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "x").ok());
  auto bad = DecodeSafetensors(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8), "upd.bin");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("upd.bin"), std::string::npos);
  EXPECT_TRUE(DecodeSafetensors(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4), "x").ok());
}

}  // namespace
}  // namespace fedrad
