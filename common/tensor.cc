#include "common/tensor.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "crypto/sha256.h"

namespace fedrad {

int64_t TensorSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t Manifest::total_elements() const {
  int64_t n = 0;
  for (const TensorSpec& t : tensors) n += t.numel();
  return n;
}

std::string Manifest::Sha256() const {
  std::string text;
  for (const TensorSpec& t : tensors) {
    absl::StrAppend(&text, t.name, ":F32:", absl::StrJoin(t.shape, ","), "\n");
  }
  return crypto::Sha256Hex(text);
}

std::optional<size_t> FirstNonFinite(const std::vector<float>& values) {
  auto it = std::find_if(values.begin(), values.end(), [](float v) { return !std::isfinite(v); });
  if (it == values.end()) return std::nullopt;
  return static_cast<size_t>(it - values.begin());
}

}  // namespace fedrad
