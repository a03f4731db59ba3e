#include "coordinator/fedavg.h"

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace fedrad::coordinator {

void FedAvgAccumulator::AddChunk(size_t offset, const float* values, size_t n, double weight) {
  const float w = static_cast<float>(weight);
  float* out = sum_.data() + offset;
  for (size_t i = 0; i < n; ++i) out[i] += w * values[i];
}

absl::Status FedAvgAccumulator::AddUpdateFile(const std::string& path, double weight) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat("cannot open spooled update '", path, "'"));
  std::vector<float> buf(1 << 18);
  size_t offset = 0, n;
  while ((n = std::fread(buf.data(), sizeof(float), buf.size(), f)) > 0) {
    if (offset + n > sum_.size()) break;
    AddChunk(offset, buf.data(), n, weight);
    offset += n;
  }
  std::fclose(f);
  if (offset != sum_.size()) {
    return absl::DataLossError(absl::StrCat("spooled update '", path, "' has ", offset,
                                            " values, expected ", sum_.size()));
  }
  FinishUpdate(weight);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> FedAvgAccumulator::TakeMeanDelta() && {
  if (updates_ == 0 || total_weight_ <= 0) {
    return absl::FailedPreconditionError("no update to average");
  }
  const double inv = 1.0 / total_weight_;
  for (float& v : sum_) v = static_cast<float>(static_cast<double>(v) * inv);
  return std::move(sum_);
}

}  // namespace fedrad::coordinator
