#include "node/image_loader.h"

#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/json_depth.h"
#include "crypto/random.h"
#include "crypto/sha256.h"

namespace fedrad::node {
namespace {

// Version 2 holds the patient key's issuer and the study: entries of
// version 1 are decoded again rather than read without them. Version 3
// holds the DICOM strings hex-encoded: they are bytes in the file's
// character set (ISO 8859-1 is common), which JSON's UTF-8 cannot carry
// unchanged, and the patient key of a cached pass must be the decoded one's.
// Version 4 holds the image's geometry (position, orientation, spacing) and
// its series.
constexpr char kCacheMagic[4] = {'F', 'R', 'C', '4'};
constexpr uint64_t kMaxCacheEntryBytes = uint64_t{4} << 30;

// The string facts a cache entry holds, by key.
const std::vector<std::pair<const char*, std::string DicomFacts::*>>& StringFacts() {
  static const auto* const facts = new std::vector<std::pair<const char*, std::string DicomFacts::*>>{
      {"patient_id", &DicomFacts::patient_id},
      {"issuer_of_patient_id", &DicomFacts::issuer_of_patient_id},
      {"study_instance_uid", &DicomFacts::study_instance_uid},
      {"sop_instance_uid", &DicomFacts::sop_instance_uid},
      {"modality", &DicomFacts::modality},
      {"transfer_syntax", &DicomFacts::transfer_syntax},
      {"photometric", &DicomFacts::photometric},
      {"image_position", &DicomFacts::image_position},
      {"image_orientation", &DicomFacts::image_orientation},
      {"pixel_spacing", &DicomFacts::pixel_spacing},
      {"series_instance_uid", &DicomFacts::series_instance_uid}};
  return *facts;
}

// Cache file: magic, u32 JSON length, JSON (facts and frame indices), then
// the frames' floats back to back. A file that does not parse is ignored
// (and rewritten), so a torn write can cost a decode but never a wrong image.
std::string EncodeCacheEntry(const LoadedImage& image) {
  nlohmann::json j;
  for (const auto& [key, field] : StringFacts()) j[key] = crypto::HexEncode(image.facts.*field);
  j["rows"] = image.facts.rows;
  j["columns"] = image.facts.columns;
  std::vector<int> indices;
  for (const PreparedFrame& f : image.frames) indices.push_back(f.index);
  j["frames"] = indices;
  j["values_per_frame"] = image.frames.empty() ? 0 : image.frames[0].pixels.size();
  const std::string header = j.dump();
  std::string out(kCacheMagic, 4);
  const uint32_t n = static_cast<uint32_t>(header.size());
  out.append(reinterpret_cast<const char*>(&n), 4);
  out += header;
  for (const PreparedFrame& f : image.frames) {
    out.append(reinterpret_cast<const char*>(f.pixels.data()), f.pixels.size() * sizeof(float));
  }
  return out;
}

std::optional<LoadedImage> DecodeCacheEntry(const std::string& bytes, size_t expect_values) {
  if (bytes.size() < 8 || std::memcmp(bytes.data(), kCacheMagic, 4) != 0) return std::nullopt;
  uint32_t n;
  std::memcpy(&n, bytes.data() + 4, 4);
  if (n > bytes.size() - 8) return std::nullopt;
  const std::string_view header = std::string_view(bytes).substr(8, n);
  if (JsonDepth(header, 2) < 0) return std::nullopt;  // ours is an object holding one list
  nlohmann::json j = nlohmann::json::parse(header, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  try {
    LoadedImage out;
    for (const auto& [key, field] : StringFacts()) {
      std::optional<std::string> value = crypto::HexDecode(j.at(key).get<std::string>());
      if (!value) return std::nullopt;
      out.facts.*field = std::move(*value);
    }
    out.facts.rows = j.at("rows").get<int>();
    out.facts.columns = j.at("columns").get<int>();
    const std::vector<int> indices = j.at("frames").get<std::vector<int>>();
    const size_t per = j.at("values_per_frame").get<size_t>();
    if (per != expect_values || bytes.size() != 8 + n + indices.size() * per * sizeof(float)) return std::nullopt;
    const char* p = bytes.data() + 8 + n;
    for (int index : indices) {
      PreparedFrame f;
      f.index = index;
      f.pixels.resize(per);
      std::memcpy(f.pixels.data(), p, per * sizeof(float));
      p += per * sizeof(float);
      out.frames.push_back(std::move(f));
    }
    out.from_cache = true;
    return out;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

DicomReadOptions ReadOptions(const PreprocessSettings& settings) {
  DicomReadOptions options;
  options.color_to_gray = settings.color_to_gray;
  return options;
}

LoadedImage Decode(const std::string& path, const PreprocessSettings& settings) {
  LoadedImage out;
  absl::StatusOr<DicomImageFile> file = ReadDicomImage(path, ReadOptions(settings));
  if (!file.ok()) {
    out.status = file.status();
    return out;
  }
  out.facts = {file->patient_id,
               file->issuer_of_patient_id,
               file->study_instance_uid,
               file->sop_instance_uid,
               file->modality,
               file->transfer_syntax_name,
               file->photometric,
               file->rows,
               file->columns,
               file->image_position,
               file->image_orientation,
               file->pixel_spacing,
               file->series_instance_uid};
  for (const ModalityFrame& frame : file->frames) {
    out.frames.push_back({frame.index, PreprocessFrame(frame, *file, settings)});
  }
  return out;
}

}  // namespace

ImageLoader::ImageLoader(std::vector<std::string> paths, PreprocessSettings settings, LoaderOptions options)
    : paths_(std::move(paths)),
      settings_(std::move(settings)),
      options_(std::move(options)),
      pipeline_sha256_(PipelineSha256(settings_)) {
  if (!options_.cache_dir.empty()) (void)EnsureDirectory(options_.cache_dir);
  int threads =
      options_.threads > 0 ? options_.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min<int>(threads, static_cast<int>(std::max<size_t>(1, paths_.size())));
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
}

ImageLoader::~ImageLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  space_.notify_all();
  for (std::thread& t : workers_) t.join();
}

LoadedImage ImageLoader::Load(const std::string& path, const PreprocessSettings& settings) {
  return Decode(path, settings);
}

LoadedImage ImageLoader::Prepare(size_t item) {
  const std::string& path = paths_[item];
  if (options_.cache_dir.empty()) {
    LoadedImage out = Decode(path, settings_);
    out.item = item;
    return out;
  }
  // The cache key is the file's content, so a renamed or re-exported
  // identical file hits and an edited one misses.
  // The file is hashed in blocks, never held whole, and only once its size
  // could be an image's.
  LoadedImage out;
  out.item = item;
  out.status = CheckDicomFileSize(path, ReadOptions(settings_));
  if (!out.status.ok()) return out;
  absl::StatusOr<std::string> content_sha = crypto::Sha256File(path);
  if (!content_sha.ok()) {
    out.status = DicomFileError(DicomProblem::kMissing, path, content_sha.status().message());
    return out;
  }
  const std::string entry =
      absl::StrCat(options_.cache_dir, "/", pipeline_sha256_.substr(0, 16), "-", *content_sha, ".frc");
  const size_t per = static_cast<size_t>(settings_.output_size) * settings_.output_size;
  if (absl::StatusOr<std::string> cached = ReadFile(entry, kMaxCacheEntryBytes); cached.ok()) {
    if (std::optional<LoadedImage> hit = DecodeCacheEntry(*cached, per)) {
      hit->item = item;
      return std::move(*hit);
    }
  }
  out = Decode(path, settings_);
  out.item = item;
  if (out.status.ok()) {
    // Written without fsync: losing a cache entry in a crash costs a decode.
    const std::string tmp = absl::StrCat(entry, ".", std::hash<std::thread::id>{}(std::this_thread::get_id()), ".tmp");
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (f != nullptr) {
      const std::string data = EncodeCacheEntry(out);
      const bool ok = std::fwrite(data.data(), 1, data.size(), f) == data.size();
      std::fclose(f);
      if (!ok || std::rename(tmp.c_str(), entry.c_str()) != 0) std::remove(tmp.c_str());
    }
  }
  return out;
}

void ImageLoader::Work() {
  while (true) {
    size_t item;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ || next_item_ >= paths_.size()) return;
      item = next_item_++;
    }
    LoadedImage image = Prepare(item);
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [this] { return stopping_ || queue_.size() < options_.queue_capacity; });
    if (stopping_) return;
    queue_.push_back(std::move(image));
    ready_.notify_one();
  }
}

std::optional<LoadedImage> ImageLoader::Next() {
  std::unique_lock<std::mutex> lock(mu_);
  if (handed_out_ >= paths_.size()) return std::nullopt;
  ready_.wait(lock, [this] { return !queue_.empty(); });
  LoadedImage out = std::move(queue_.front());
  queue_.pop_front();
  ++handed_out_;
  space_.notify_one();
  return out;
}

}  // namespace fedrad::node
