#include "common/proto_framing.h"

#include <gtest/gtest.h>

#include <set>

namespace fedrad {
namespace {

// A message as ModelChunk frames it: total_bytes = 1, offset = 2, data = 3,
// with an unknown field of each wire type between.
std::string Message(const std::string& data) {
  std::string m;
  AppendVarintField(1, 300, &m);
  AppendVarint((9 << 3) | 5, &m);
  m += std::string(4, 'x');
  AppendVarintField(2, uint64_t{1} << 40, &m);
  AppendVarint((10 << 3) | 1, &m);
  m += std::string(8, 'y');
  AppendLengthPrefix(11, 2, &m);
  m += "zz";
  AppendLengthPrefix(3, data.size(), &m);
  return m + data;
}

std::string Joined(const std::vector<std::string_view>& pieces) {
  std::string out;
  for (std::string_view p : pieces) out += p;
  return out;
}

TEST(ProtoFramingTest, FieldsAreReadAcrossPiecesOfAnySize) {
  std::string data(1000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  const std::string m = Message(data);
  for (size_t piece : {size_t{1}, size_t{2}, size_t{5}, size_t{64}, m.size()}) {
    std::vector<std::string_view> pieces;
    for (size_t at = 0; at < m.size(); at += piece) pieces.push_back(std::string_view(m).substr(at, piece));
    absl::StatusOr<FramedMessage> f = ParseFramedMessage(pieces, 3, "chunk");
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(f->Varint(1), 300u);
    EXPECT_EQ(f->Varint(2), uint64_t{1} << 40);
    EXPECT_EQ(f->Varint(4), 0u);
    ASSERT_TRUE(f->has_bytes);
    EXPECT_EQ(f->bytes_size, data.size());
    EXPECT_EQ(Joined(f->bytes), data) << piece;
  }
}

TEST(ProtoFramingTest, MalformedMessagesAreRefused) {
  const std::string m = Message("abcdef");
  // Cut between fields, a message is only shorter; cut inside one, it is refused.
  const std::set<size_t> between = {3, 8, 15, 24, 28};
  for (size_t cut = 1; cut < m.size(); ++cut) {
    absl::StatusOr<FramedMessage> f = ParseFramedMessage({std::string_view(m).substr(0, cut)}, 3, "cut");
    EXPECT_EQ(f.ok(), between.count(cut) == 1) << cut;
    if (f.ok()) EXPECT_FALSE(f->has_bytes);
  }
  std::string twice = m;
  AppendVarintField(1, 5, &twice);
  absl::StatusOr<FramedMessage> f = ParseFramedMessage({twice}, 3, "twice");
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("twice: field 1 is given twice"), std::string::npos) << f.status();
  std::string data_twice = m;
  AppendLengthPrefix(3, 1, &data_twice);
  data_twice += "q";
  EXPECT_FALSE(ParseFramedMessage({data_twice}, 3, "data twice").ok());
  std::string group;
  AppendVarint((1 << 3) | 3, &group);  // a start-group tag
  EXPECT_FALSE(ParseFramedMessage({group}, 3, "group").ok());
  std::string zero;
  AppendVarintField(0, 1, &zero);
  EXPECT_FALSE(ParseFramedMessage({zero}, 3, "zero").ok());
  const std::string long_varint(11, '\xff');
  EXPECT_FALSE(ParseFramedMessage({std::string(1, '\x08') + long_varint}, 3, "varint").ok());
  // An empty message has every field at its default.
  absl::StatusOr<FramedMessage> empty = ParseFramedMessage({}, 3, "empty");
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->has_bytes);
}

}  // namespace
}  // namespace fedrad
