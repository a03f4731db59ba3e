#ifndef FEDRAD_COMMON_PROTO_FRAMING_H_
#define FEDRAD_COMMON_PROTO_FRAMING_H_

// Protobuf's wire format for the few messages whose bytes fedrad frames
// itself, so that a model chunk or an update chunk travels from (or into)
// its own memory without a copy into a message and another into its
// serialization: varints, varint fields and the prefix of a
// length-delimited field (https://protobuf.dev/programming-guides/encoding/).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace fedrad {

void AppendVarint(uint64_t v, std::string* out);
// Field `field` as a varint (wire type 0).
void AppendVarintField(int field, uint64_t v, std::string* out);
// The tag and length of a length-delimited field (wire type 2) of `bytes`
// bytes; its bytes follow.
void AppendLengthPrefix(int field, uint64_t bytes, std::string* out);

// A message's fields as a reader sees them over its pieces (gRPC's slices):
// varint fields by number, and the one length-delimited field `bytes_field`
// as views into the pieces (no copy). Unknown fields are skipped; a
// truncated or malformed message, a second `bytes_field` or a varint field
// given twice is an error naming `what`.
struct FramedMessage {
  std::vector<std::pair<int, uint64_t>> varints;  // (field, value), in order
  std::vector<std::string_view> bytes;            // the pieces of `bytes_field`'s value
  uint64_t bytes_size = 0;
  bool has_bytes = false;
  // The value of varint field `field`, or 0 (protobuf's default) when absent.
  uint64_t Varint(int field) const;
};
absl::StatusOr<FramedMessage> ParseFramedMessage(const std::vector<std::string_view>& pieces, int bytes_field,
                                                 std::string_view what);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_PROTO_FRAMING_H_
