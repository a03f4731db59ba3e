#include "common/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/json_depth.h"

namespace fedrad {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100 << 20;  // as in the reference reader
// A header is an object of tensors (or __metadata__), each an object holding
// arrays of numbers: three levels. Deeper text is refused before it is
// parsed (json_depth.h says why).
constexpr int kMaxHeaderDepth = 3;
// Far above any network's tensor count (ResNet-152 has about 900), far below
// what a 100 MB header of one-letter names could declare.
constexpr size_t kMaxTensors = 65536;

absl::Status Bad(absl::string_view what, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": not a valid safetensors file: ", problem));
}

}  // namespace

std::string EncodeSafetensorsHeader(const Manifest& manifest, const SafetensorsMetadata& metadata) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const TensorSpec& t : manifest.tensors) {
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * 4;
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  // Names and metadata are ours or read from a parsed header (UTF-8); an
  // invalid byte would be replaced, never thrown on.
  std::string json = header.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  while ((8 + json.size()) % 8 != 0) json.push_back(' ');
  std::string out(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  out += json;
  return out;
}

namespace {

absl::StatusOr<uint64_t> SafetensorsHeaderLength(std::string_view prefix, uint64_t file_bytes, absl::string_view what) {
  if (prefix.size() < 8 || file_bytes < 8) return Bad(what, "shorter than its 8-byte header length");
  uint64_t header_len;
  std::memcpy(&header_len, prefix.data(), 8);
  if (header_len > kMaxHeaderBytes || header_len > file_bytes - 8) {
    return Bad(what, absl::StrCat("header length ", header_len, " exceeds the file"));
  }
  return header_len;
}

absl::StatusOr<SafetensorsFile> DecodeSafetensorsHeader(std::string_view header_bytes, uint64_t file_bytes,
                                                        absl::string_view what) {
  absl::StatusOr<uint64_t> header_len = SafetensorsHeaderLength(header_bytes, file_bytes, what);
  if (!header_len.ok()) return header_len.status();
  if (header_bytes.size() != 8 + *header_len) return Bad(what, "the header is incomplete");
  const std::string_view text = header_bytes.substr(8);
  if (JsonDepth(text, kMaxHeaderDepth) < 0) {
    return Bad(what, absl::StrCat("header is nested more than ", kMaxHeaderDepth, " levels deep"));
  }
  nlohmann::json header = nlohmann::json::parse(text, nullptr, false);
  if (header.is_discarded() || !header.is_object()) return Bad(what, "header is not a JSON object");
  const size_t tensors = header.size() - header.count("__metadata__");
  if (tensors > kMaxTensors) {
    return Bad(what, absl::StrCat("header declares ", tensors, " tensors, more than ", kMaxTensors));
  }

  struct Entry {
    TensorSpec spec;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  SafetensorsFile out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return Bad(what, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return Bad(what, absl::StrCat("metadata '", m.key(), "' is not a string"));
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets")) {
      return Bad(what, absl::StrCat("tensor '", name, "' lacks dtype, shape or data_offsets"));
    }
    if (v["dtype"] != "F32") {
      return Bad(what, absl::StrCat("tensor '", name, "' has dtype ", v["dtype"].dump(), "; only F32 is supported"));
    }
    const nlohmann::json& shape = v["shape"];
    const nlohmann::json& offs = v["data_offsets"];
    if (!shape.is_array() || shape.size() > 8 || !offs.is_array() || offs.size() != 2 ||
        !offs[0].is_number_unsigned() || !offs[1].is_number_unsigned()) {
      return Bad(what, absl::StrCat("tensor '", name, "' has a malformed shape or data_offsets"));
    }
    Entry e;
    e.spec.name = name;
    uint64_t numel = 1;
    for (const nlohmann::json& d : shape) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > (uint64_t{1} << 40)) {
        return Bad(what, absl::StrCat("tensor '", name, "' has an invalid dimension"));
      }
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > (uint64_t{1} << 40) / dim)
        return Bad(what, absl::StrCat("tensor '", name, "' is too large"));
      numel *= dim;
      e.spec.shape.push_back(static_cast<int64_t>(dim));
    }
    e.begin = offs[0].get<uint64_t>();
    e.end = offs[1].get<uint64_t>();
    if (e.end < e.begin || e.end - e.begin != numel * 4) {
      return Bad(what, absl::StrCat("tensor '", name, "' has data_offsets that do not match its shape"));
    }
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  const uint64_t body_len = file_bytes - header_bytes.size();
  uint64_t expect = 0;
  for (const Entry& e : entries) {
    if (e.begin != expect) return Bad(what, absl::StrCat("tensor '", e.spec.name, "' overlaps or leaves a gap"));
    expect = e.end;
  }
  if (expect != body_len) {
    return Bad(what, absl::StrCat("tensors cover ", expect, " bytes but the body has ", body_len));
  }
  for (Entry& e : entries) out.parameters.manifest.tensors.push_back(std::move(e.spec));
  return out;
}

}  // namespace

absl::StatusOr<SafetensorsFile> DecodeSafetensors(std::string_view bytes, absl::string_view what) {
  absl::StatusOr<uint64_t> header_len = SafetensorsHeaderLength(bytes, bytes.size(), what);
  if (!header_len.ok()) return header_len.status();
  absl::StatusOr<SafetensorsFile> out = DecodeSafetensorsHeader(bytes.substr(0, 8 + *header_len), bytes.size(), what);
  if (!out.ok()) return out.status();
  const std::string_view body = bytes.substr(8 + *header_len);
  out->parameters.values.resize(body.size() / 4);
  if (!body.empty()) std::memcpy(out->parameters.values.data(), body.data(), body.size());
  return out;
}

SafetensorsReceiver::SafetensorsReceiver(uint64_t file_bytes, std::string what, std::vector<float> reuse)
    : file_bytes_(file_bytes), what_(std::move(what)), values_(std::move(reuse)) {}

absl::Status SafetensorsReceiver::Add(std::string_view bytes) {
  if (received_ + bytes.size() > file_bytes_) return Bad(what_, "more bytes than the file's size");
  received_ += bytes.size();
  while (!bytes.empty() && !file_) {
    // The prefix and the JSON header are gathered, then decoded once.
    const uint64_t want = header_.size() < 8 ? 8 : 8 + header_len_;
    const size_t take = static_cast<size_t>(std::min<uint64_t>(want - header_.size(), bytes.size()));
    header_.append(bytes.data(), take);
    bytes.remove_prefix(take);
    if (header_.size() < want) return absl::OkStatus();
    if (header_.size() == 8) {
      absl::StatusOr<uint64_t> len = SafetensorsHeaderLength(header_, file_bytes_, what_);
      if (!len.ok()) return len.status();
      header_len_ = *len;
      if (header_len_ > 0) continue;
    }
    absl::StatusOr<SafetensorsFile> file = DecodeSafetensorsHeader(header_, file_bytes_, what_);
    if (!file.ok()) return file.status();
    file_ = std::move(*file);
    // Every value is written below: a reused vector of the right size needs
    // no clearing.
    values_.resize((file_bytes_ - header_.size()) / sizeof(float));
  }
  if (bytes.empty()) return absl::OkStatus();
  const uint64_t at = received_ - bytes.size() - header_.size();  // offset of `bytes` in the body
  std::memcpy(reinterpret_cast<char*>(values_.data()) + at, bytes.data(), bytes.size());
  return absl::OkStatus();
}

absl::StatusOr<SafetensorsFile> SafetensorsReceiver::Finish() {
  if (received_ != file_bytes_ || !file_) {
    return Bad(what_, absl::StrCat("ended after ", received_, " of ", file_bytes_, " bytes"));
  }
  file_->parameters.values = std::move(values_);
  return std::move(*file_);
}

ModelStream::ModelStream(uint64_t max_bytes, std::string what, std::vector<float> reuse, bool hash)
    : max_bytes_(max_bytes), what_(std::move(what)), reuse_(std::move(reuse)), hash_(hash) {}

absl::Status ModelStream::Add(uint64_t total_bytes, uint64_t offset, const std::vector<std::string_view>& pieces) {
  uint64_t bytes = 0;
  for (std::string_view piece : pieces) bytes += piece.size();
  if (total_bytes > max_bytes_ || offset != offset_ || bytes > total_bytes || offset > total_bytes - bytes ||
      (receiver_ && total_bytes != total_)) {
    return absl::DataLossError(absl::StrCat(what_, ": the coordinator sent a malformed model stream"));
  }
  if (!receiver_) {
    total_ = total_bytes;
    receiver_.emplace(total_bytes, what_, std::move(reuse_));
    if (hash_) sha_.emplace();
  }
  for (std::string_view piece : pieces) {
    if (sha_) sha_->Update(piece);
    if (absl::Status added = receiver_->Add(piece); !added.ok()) return added;
  }
  offset_ += bytes;
  return absl::OkStatus();
}

absl::StatusOr<SafetensorsFile> ModelStream::Finish(const std::string& sha256, std::string* header) {
  if (!receiver_) return absl::DataLossError(absl::StrCat(what_, ": the coordinator sent an empty model"));
  if (sha_ && sha_->FinishHex() != sha256) {
    return absl::DataLossError(absl::StrCat("the model received does not match its SHA-256 ", sha256));
  }
  *header = std::string(receiver_->header());
  return receiver_->Finish();
}

absl::Status WriteSafetensorsFile(const std::string& path, const ModelParameters& parameters,
                                  const SafetensorsMetadata& metadata) {
  if (static_cast<int64_t>(parameters.values.size()) != parameters.manifest.total_elements()) {
    return absl::InvalidArgumentError(absl::StrCat("writing '", path, "': ", parameters.values.size(),
                                                   " values for a manifest of ", parameters.manifest.total_elements()));
  }
  const std::string header = EncodeSafetensorsHeader(parameters.manifest, metadata);
  std::string_view body(reinterpret_cast<const char*>(parameters.values.data()), parameters.values.size() * 4);
  return WriteFileAtomically(path, {header, body});
}

absl::StatusOr<SafetensorsFile> ReadSafetensorsFile(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path, uint64_t{64} << 30);
  if (!bytes.ok()) return bytes.status();
  return DecodeSafetensors(*bytes, path);
}

}  // namespace fedrad
