#ifndef FEDRAD_COMMON_TENSOR_H_
#define FEDRAD_COMMON_TENSOR_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace fedrad {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the wire format and safetensors files are little-endian; "
              "big-endian hosts need byte swapping in the codec");

// One named parameter tensor. All parameters are float32.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;

  int64_t numel() const;
  bool operator==(const TensorSpec& o) const { return name == o.name && shape == o.shape; }
};

// The ordered list of a model's parameters. Models travel as their values
// flattened in this order; its hash pins the architecture in the plan.
struct Manifest {
  std::vector<TensorSpec> tensors;

  int64_t total_elements() const;
  uint64_t total_bytes() const { return static_cast<uint64_t>(total_elements()) * 4; }
  // SHA-256 of a canonical text form ("name:F32:d0,d1,...\n" per tensor).
  std::string Sha256() const;
  bool operator==(const Manifest& o) const { return tensors == o.tensors; }
};

// A model's parameters, flattened in manifest order.
struct ModelParameters {
  Manifest manifest;
  std::vector<float> values;
};

// The index of the first NaN or infinity in `values`, if any.
std::optional<size_t> FirstNonFinite(const std::vector<float>& values);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_TENSOR_H_
