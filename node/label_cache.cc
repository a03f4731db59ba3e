#include "node/label_cache.h"

#include <cstring>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/json_depth.h"
#include "crypto/sha256.h"

namespace fedrad::node {
namespace {

// Entry: magic (version and kind: 'S' SEG, 'R' RTSTRUCT), u32 length of a
// JSON header, the header, then a binary payload: a SEG's frames bit-packed
// one after another, an RTSTRUCT's contour points as float64 x, y, z.
// Strings (UIDs, labels) are hex in the JSON: DICOM strings are bytes in the
// file's character set, which JSON's UTF-8 cannot carry unchanged.
constexpr char kSegMagic[5] = {'F', 'L', 'C', '1', 'S'};
constexpr char kRtMagic[5] = {'F', 'L', 'C', '1', 'R'};
constexpr uint64_t kMaxEntryBytes = uint64_t{2} << 30;

std::string Hex(const std::string& s) { return crypto::HexEncode(s); }

// The entry's header and payload when `bytes` begins with `magic`.
std::optional<std::pair<nlohmann::json, std::string_view>> Split(const std::string& bytes, const char (&magic)[5]) {
  if (bytes.size() < 9 || std::memcmp(bytes.data(), magic, 5) != 0) return std::nullopt;
  uint32_t n;
  std::memcpy(&n, bytes.data() + 5, 4);
  if (n > bytes.size() - 9) return std::nullopt;
  const std::string_view header = std::string_view(bytes).substr(9, n);
  if (JsonDepth(header, 3) < 0) return std::nullopt;  // an object of lists of lists
  nlohmann::json j = nlohmann::json::parse(header, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return std::make_pair(std::move(j), std::string_view(bytes).substr(9 + n));
}

std::string Join(const char (&magic)[5], const nlohmann::json& header, const std::string& payload) {
  const std::string h = header.dump();
  std::string out(magic, 5);
  const uint32_t n = static_cast<uint32_t>(h.size());
  out.append(reinterpret_cast<const char*>(&n), 4);
  return out + h + payload;
}

std::string Unhex(const nlohmann::json& v) {
  std::optional<std::string> s = crypto::HexDecode(v.get<std::string>());
  if (!s) throw std::invalid_argument("not hex");
  return *s;
}

std::string EncodeSeg(const SegObject& seg) {
  nlohmann::json j;
  j["sop"] = Hex(seg.sop_instance_uid);
  j["study"] = Hex(seg.study_instance_uid);
  j["rows"] = seg.rows;
  j["columns"] = seg.columns;
  j["fractional"] = seg.fractional;
  j["segments"] = nlohmann::json::array();
  for (const auto& [number, label] : seg.segments) j["segments"].push_back({number, Hex(label)});
  j["frames"] = nlohmann::json::array();
  std::string payload;
  for (const SegFrame& f : seg.frames) {
    j["frames"].push_back({Hex(f.source_sop_instance_uid), f.source_frame, f.segment});
    std::string packed((f.mask.size() + 7) / 8, '\0');
    for (size_t i = 0; i < f.mask.size(); ++i) {
      if (f.mask[i]) packed[i / 8] = static_cast<char>(packed[i / 8] | (1 << (i % 8)));
    }
    payload += packed;
  }
  j["references"] = nlohmann::json::array();
  for (const std::string& uid : seg.referenced_instances) j["references"].push_back(Hex(uid));
  return Join(kSegMagic, j, payload);
}

std::optional<SegObject> DecodeSeg(const std::string& bytes) {
  auto split = Split(bytes, kSegMagic);
  if (!split) return std::nullopt;
  const auto& [j, payload] = *split;
  try {
    SegObject seg;
    seg.sop_instance_uid = Unhex(j.at("sop"));
    seg.study_instance_uid = Unhex(j.at("study"));
    seg.rows = j.at("rows").get<int>();
    seg.columns = j.at("columns").get<int>();
    seg.fractional = j.at("fractional").get<bool>();
    if (seg.rows < 0 || seg.columns < 0 || seg.rows > 65535 || seg.columns > 65535) return std::nullopt;
    for (const auto& s : j.at("segments")) seg.segments[s.at(0).get<int>()] = Unhex(s.at(1));
    const size_t pixels = static_cast<size_t>(seg.rows) * seg.columns, packed = (pixels + 7) / 8;
    if (payload.size() != j.at("frames").size() * packed) return std::nullopt;
    size_t at = 0;
    for (const auto& f : j.at("frames")) {
      SegFrame frame;
      frame.source_sop_instance_uid = Unhex(f.at(0));
      frame.source_frame = f.at(1).get<int>();
      frame.segment = f.at(2).get<int>();
      frame.mask.resize(pixels);
      for (size_t i = 0; i < pixels; ++i) frame.mask[i] = (payload[at + i / 8] >> (i % 8)) & 1;
      at += packed;
      seg.frames.push_back(std::move(frame));
    }
    for (const auto& uid : j.at("references")) seg.referenced_instances.insert(Unhex(uid));
    return seg;
  } catch (const std::exception&) {  // a field missing or of another type, or not hex
    return std::nullopt;
  }
}

std::string EncodeRt(const RtStructObject& rt) {
  nlohmann::json j;
  j["rois"] = nlohmann::json::array();
  for (const auto& [number, name] : rt.rois) j["rois"].push_back({number, Hex(name)});
  j["contours"] = nlohmann::json::array();
  std::string payload;
  for (const RtContour& c : rt.contours) {
    j["contours"].push_back({c.roi, Hex(c.image_sop_instance_uid), c.points.size()});
    for (const std::array<double, 3>& p : c.points) payload.append(reinterpret_cast<const char*>(p.data()), 24);
  }
  j["skipped"] = rt.skipped_contours;
  j["references"] = nlohmann::json::array();
  for (const std::string& uid : rt.referenced_instances) j["references"].push_back(Hex(uid));
  return Join(kRtMagic, j, payload);
}

std::optional<RtStructObject> DecodeRt(const std::string& bytes) {
  auto split = Split(bytes, kRtMagic);
  if (!split) return std::nullopt;
  const auto& [j, payload] = *split;
  try {
    RtStructObject rt;
    for (const auto& r : j.at("rois")) rt.rois[r.at(0).get<int>()] = Unhex(r.at(1));
    size_t at = 0;
    for (const auto& c : j.at("contours")) {
      RtContour contour;
      contour.roi = c.at(0).get<int>();
      contour.image_sop_instance_uid = Unhex(c.at(1));
      const size_t n = c.at(2).get<size_t>();
      if (n > (payload.size() - at) / 24) return std::nullopt;
      contour.points.resize(n);
      for (std::array<double, 3>& p : contour.points) {
        std::memcpy(p.data(), payload.data() + at, 24);
        at += 24;
      }
      rt.contours.push_back(std::move(contour));
    }
    if (at != payload.size()) return std::nullopt;
    rt.skipped_contours = j.at("skipped").get<int>();
    for (const auto& uid : j.at("references")) rt.referenced_instances.insert(Unhex(uid));
    return rt;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// Reads `path` through the entry named by its content: decode(entry) on a
// hit, else read(path), stored with encode() when it succeeds.
template <typename T, typename Read, typename Encode, typename Decode>
absl::StatusOr<T> Cached(const std::string& path, const std::string& cache_dir, bool* from_cache, Read read,
                         Encode encode, Decode decode) {
  if (from_cache != nullptr) *from_cache = false;
  if (cache_dir.empty()) return read(path);
  absl::StatusOr<std::string> sha = crypto::Sha256File(path);
  if (!sha.ok()) return read(path);  // read() names the problem
  const std::string entry = absl::StrCat(cache_dir, "/label-", *sha, ".flc");
  if (absl::StatusOr<std::string> bytes = ReadFile(entry, kMaxEntryBytes); bytes.ok()) {
    if (std::optional<T> hit = decode(*bytes)) {
      if (from_cache != nullptr) *from_cache = true;
      return std::move(*hit);
    }
  }
  absl::StatusOr<T> out = read(path);
  if (out.ok() && EnsureDirectory(cache_dir).ok()) {
    // Not durable: a lost entry costs a parse, and a torn one is ignored.
    // A failed write (a full disk) costs the same and nothing else, so the
    // load goes on, saying so; the entry is tried again next time.
    const std::string data = encode(*out);
    if (absl::Status w = WriteFileAtomically(entry, {std::string_view(data)}, 0600, /*durable=*/false); !w.ok()) {
      spdlog::warn("label cache: {} (the label object is read again next time)", std::string(w.message()));
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<SegObject> ReadSegmentationCached(const std::string& path, const std::string& cache_dir,
                                                 bool* from_cache) {
  return Cached<SegObject>(
      path, cache_dir, from_cache, [](const std::string& p) { return ReadSegmentation(p); }, EncodeSeg, DecodeSeg);
}

absl::StatusOr<RtStructObject> ReadRtStructCached(const std::string& path, const std::string& cache_dir,
                                                  bool* from_cache) {
  return Cached<RtStructObject>(
      path, cache_dir, from_cache, [](const std::string& p) { return ReadRtStruct(p); }, EncodeRt, DecodeRt);
}

}  // namespace fedrad::node
