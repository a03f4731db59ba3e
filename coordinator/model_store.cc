#include "coordinator/model_store.h"

#include <filesystem>
#include <future>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "crypto/sha256.h"

namespace fedrad::coordinator {

absl::StatusOr<std::unique_ptr<ModelStore>> ModelStore::Open(const std::string& dir) {
  absl::Status s = EnsureDirectory(dir);
  if (!s.ok()) return s;
  return std::unique_ptr<ModelStore>(new ModelStore(dir));
}

std::string ModelStore::PathFor(const std::string& sha256) const {
  return absl::StrCat(dir_, "/", sha256, ".safetensors");
}

absl::StatusOr<std::string> ModelStore::Put(const ModelParameters& parameters, const SafetensorsMetadata& metadata) {
  if (static_cast<int64_t>(parameters.values.size()) != parameters.manifest.total_elements()) {
    return absl::InvalidArgumentError("model values do not match their manifest");
  }
  const std::string header = EncodeSafetensorsHeader(parameters.manifest, metadata);
  const std::string_view body(reinterpret_cast<const char*>(parameters.values.data()),
                              parameters.values.size() * sizeof(float));
  // The name is the content's hash: the file is hashed on a second thread
  // while it is written and fsynced under a temporary name (a round's end
  // waits for both).
  std::future<std::string> hashed = std::async(std::launch::async, [&] {
    crypto::Sha256 h;
    h.Update(header);
    h.Update(body.data(), body.size());
    return h.FinishHex();
  });
  absl::StatusOr<std::string> tmp = WriteTemporaryFile(dir_, "model.safetensors", {header, body});
  const std::string sha = hashed.get();
  if (!tmp.ok()) return tmp.status();
  const std::string path = PathFor(sha);
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    std::filesystem::remove(*tmp, ec);
    return sha;
  }
  absl::Status s = RenameIntoPlace(*tmp, path);
  if (!s.ok()) return s;
  return sha;
}

absl::StatusOr<ModelParameters> ModelStore::Load(const std::string& sha256) const {
  if (!crypto::IsSha256Hex(sha256)) {
    return absl::InvalidArgumentError(absl::StrCat("'", sha256, "' is not a model hash"));
  }
  const std::string path = PathFor(sha256);
  absl::StatusOr<std::string> bytes = ReadFile(path, uint64_t{64} << 30);
  if (!bytes.ok()) return bytes.status();
  if (crypto::Sha256Hex(*bytes) != sha256) {
    return absl::DataLossError(absl::StrCat("model file '", path, "' does not match its hash"));
  }
  absl::StatusOr<SafetensorsFile> file = DecodeSafetensors(*bytes, path);
  if (!file.ok()) return file.status();
  return std::move(file->parameters);
}

}  // namespace fedrad::coordinator
