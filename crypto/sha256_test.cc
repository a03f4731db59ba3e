#include "crypto/sha256.h"

#include <gtest/gtest.h>

namespace fedrad::crypto {
namespace {

// FIPS 180-2 appendix B test vectors.
TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256Test, IncrementalEqualsOneShot) {
  std::string data(100000, 'x');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31);
  Sha256 h;
  h.Update(data.substr(0, 777));
  h.Update(data.substr(777));
  EXPECT_EQ(h.FinishHex(), Sha256Hex(data));
}

TEST(Sha256Test, RecognisesHexDigests) {
  EXPECT_TRUE(IsSha256Hex(Sha256Hex("a")));
  EXPECT_FALSE(IsSha256Hex("ABC"));
  EXPECT_FALSE(IsSha256Hex(std::string(64, 'g')));
}

TEST(Sha256Test, HexDecodeUndoesHexEncodeAndRefusesAnythingElse) {
  std::string bytes(256, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i);
  EXPECT_EQ(HexDecode(HexEncode(bytes)), bytes);
  EXPECT_EQ(HexDecode(""), std::string());
  EXPECT_FALSE(HexDecode("abc").has_value());  // odd
  EXPECT_FALSE(HexDecode("AB").has_value());   // not as HexEncode writes
  EXPECT_FALSE(HexDecode("0g").has_value());
  EXPECT_FALSE(HexDecode(std::string("0\0", 2)).has_value());
}

TEST(Sha256Test, UidFromKeyIsTheDigestsFirst128BitsInDecimal) {
  // SHA-256("abc") begins ba7816bf8f01cfea414140de5dae2223 = this number.
  EXPECT_EQ(UidFromKey("abc"), "2.25.247859944228867399418143717509236138531");
  EXPECT_EQ(UidFromKey("abc"), UidFromKey("abc"));
  EXPECT_NE(UidFromKey("abc"), UidFromKey("abd"));
  EXPECT_LE(UidFromKey("x").size(), 64u);  // DICOM's UI limit
}

}  // namespace
}  // namespace fedrad::crypto
