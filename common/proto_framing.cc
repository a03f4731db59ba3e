#include "common/proto_framing.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace fedrad {

void AppendVarint(uint64_t v, std::string* out) {
  do {
    const uint8_t low = v & 0x7f;
    v >>= 7;
    out->push_back(static_cast<char>(v ? (low | 0x80) : low));
  } while (v != 0);
}

void AppendVarintField(int field, uint64_t v, std::string* out) {
  AppendVarint(static_cast<uint64_t>(field) << 3, out);
  AppendVarint(v, out);
}

void AppendLengthPrefix(int field, uint64_t bytes, std::string* out) {
  AppendVarint((static_cast<uint64_t>(field) << 3) | 2, out);
  AppendVarint(bytes, out);
}

uint64_t FramedMessage::Varint(int field) const {
  for (const auto& [f, v] : varints) {
    if (f == field) return v;
  }
  return 0;
}

namespace {

// Reads bytes across the pieces, in order.
class PieceReader {
 public:
  explicit PieceReader(const std::vector<std::string_view>& pieces) : pieces_(pieces) { Skip(); }
  bool done() const { return piece_ == pieces_.size(); }
  bool Byte(uint8_t* b) {
    if (done()) return false;
    *b = static_cast<uint8_t>(pieces_[piece_][at_]);
    ++at_;
    Skip();
    return true;
  }
  bool Varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = 0;
      if (!Byte(&b)) return false;
      *v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;  // more than ten bytes
  }
  // The next `n` bytes as views into the pieces (empty `out` to skip them).
  bool Take(uint64_t n, std::vector<std::string_view>* out) {
    while (n > 0) {
      if (done()) return false;
      const size_t k = static_cast<size_t>(std::min<uint64_t>(n, pieces_[piece_].size() - at_));
      if (out) out->push_back(pieces_[piece_].substr(at_, k));
      at_ += k;
      n -= k;
      Skip();
    }
    return true;
  }

 private:
  void Skip() {
    while (piece_ < pieces_.size() && at_ == pieces_[piece_].size()) {
      ++piece_;
      at_ = 0;
    }
  }
  const std::vector<std::string_view>& pieces_;
  size_t piece_ = 0;
  size_t at_ = 0;
};

}  // namespace

absl::StatusOr<FramedMessage> ParseFramedMessage(const std::vector<std::string_view>& pieces, int bytes_field,
                                                 std::string_view what) {
  FramedMessage m;
  PieceReader r(pieces);
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(absl::string_view(what.data(), what.size()), ": ", why));
  };
  while (!r.done()) {
    uint64_t tag = 0;
    if (!r.Varint(&tag)) return bad("a field's tag is cut off");
    const int field = static_cast<int>(std::min<uint64_t>(tag >> 3, 1 << 29));
    if (field == 0) return bad("a field numbered 0");
    switch (tag & 7) {
      case 0: {
        uint64_t v = 0;
        if (!r.Varint(&v)) return bad("a varint is cut off");
        if (std::any_of(m.varints.begin(), m.varints.end(), [&](const auto& fv) { return fv.first == field; })) {
          return bad(absl::StrCat("field ", field, " is given twice"));
        }
        m.varints.emplace_back(field, v);
        break;
      }
      case 1:
        if (!r.Take(8, nullptr)) return bad("a fixed64 is cut off");
        break;
      case 5:
        if (!r.Take(4, nullptr)) return bad("a fixed32 is cut off");
        break;
      case 2: {
        uint64_t n = 0;
        if (!r.Varint(&n)) return bad("a length is cut off");
        if (field == bytes_field) {
          if (m.has_bytes) return bad(absl::StrCat("field ", field, " is given twice"));
          m.has_bytes = true;
          m.bytes_size = n;
          if (!r.Take(n, &m.bytes)) return bad("the data is cut off");
        } else if (!r.Take(n, nullptr)) {
          return bad("a field is cut off");
        }
        break;
      }
      default:
        return bad(absl::StrCat("wire type ", tag & 7, " is not used by these messages"));
    }
  }
  return m;
}

}  // namespace fedrad
