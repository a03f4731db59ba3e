#ifndef FEDRAD_COORDINATOR_MODEL_STORE_H_
#define FEDRAD_COORDINATOR_MODEL_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/safetensors.h"
#include "common/tensor.h"

namespace fedrad::coordinator {

// Content-addressed model files: <dir>/<sha256>.safetensors, where sha256 is
// the hash of the whole file. Files are written to a temporary name, fsynced
// and renamed, so a file under its final name is always complete; callers
// commit the database row only after Put() returns. Thread-safe.
class ModelStore {
 public:
  static absl::StatusOr<std::unique_ptr<ModelStore>> Open(const std::string& dir);

  // Writes the model and returns its SHA-256. Idempotent for equal content.
  absl::StatusOr<std::string> Put(const ModelParameters& parameters, const SafetensorsMetadata& metadata);
  // Reads a model and checks that its content still hashes to `sha256`.
  absl::StatusOr<ModelParameters> Load(const std::string& sha256) const;
  std::string PathFor(const std::string& sha256) const;

 private:
  explicit ModelStore(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_MODEL_STORE_H_
