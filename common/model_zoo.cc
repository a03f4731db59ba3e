#include "common/model_zoo.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fedrad {
namespace {

// How one parameter tensor starts: uniform in [-bound, bound], or a constant.
// Conv2d and Linear use PyTorch's defaults (kaiming_uniform with a = sqrt(5),
// which is uniform within 1/sqrt(fan_in), for weight and bias alike);
// GroupNorm starts as the identity (weight 1, bias 0).
struct ParameterLayout {
  TensorSpec tensor;
  double bound = 0;  // > 0: uniform in [-bound, bound]
  float constant = 0;
};

class Layout {
 public:
  void Conv2d(const std::string& name, int64_t in, int64_t out, int64_t kernel) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in * kernel * kernel));
    Add(name + ".weight", {out, in, kernel, kernel}, bound, 0);
    Add(name + ".bias", {out}, bound, 0);
  }
  void Linear(const std::string& name, int64_t in, int64_t out) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    Add(name + ".weight", {out, in}, bound, 0);
    Add(name + ".bias", {out}, bound, 0);
  }
  void GroupNorm(const std::string& name, int64_t channels) {
    Add(name + ".weight", {channels}, 0, 1);
    Add(name + ".bias", {channels}, 0, 0);
  }
  void Add(const std::string& name, std::vector<int64_t> shape, double bound, float constant) {
    parameters_.push_back(ParameterLayout{TensorSpec{name, std::move(shape)}, bound, constant});
  }
  const std::vector<ParameterLayout>& parameters() const { return parameters_; }

 private:
  std::vector<ParameterLayout> parameters_;
};

// The parameters of each network in the order its torch module registers
// them (common/model_zoo_torch.cc builds the modules; a unit test checks that
// both sides agree for every architecture).
absl::StatusOr<Layout> LayoutOf(const ModelSpec& spec) {
  absl::Status s = CheckModelSpec(spec);
  if (!s.ok()) return s;
  Layout l;
  if (spec.architecture == "ctnet") {
    l.Conv2d("conv1", spec.in_channels, 16, 5);
    l.GroupNorm("norm1", 16);
    l.Conv2d("conv2", 16, 32, 3);
    l.GroupNorm("norm2", 32);
    l.Conv2d("conv3", 32, 32, 3);
    l.GroupNorm("norm3", 32);
    l.Linear("fc1", 32, 32);
    l.Linear("fc2", 32, spec.num_classes);
  } else if (spec.architecture == "tbcnn28") {
    l.Conv2d("conv1", spec.in_channels, 16, 8);
    l.Conv2d("conv2", 16, 32, 4);
    l.Linear("fc1", 32 * 4 * 4, 32);
    l.Linear("fc2", 32, spec.num_classes);
  } else {  // flat
    l.Add("weights", {spec.parameters}, 0.01, 0);
  }
  return l;
}

}  // namespace

std::vector<std::string> KnownArchitectures() { return {"ctnet", "tbcnn28", "flat"}; }

absl::Status CheckModelSpec(const ModelSpec& spec) {
  if (spec.in_channels < 1 || spec.in_channels > 4) {
    return absl::InvalidArgumentError(absl::StrCat("model in_channels must be 1 to 4, not ", spec.in_channels));
  }
  if (spec.num_classes < 2 || spec.num_classes > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("model num_classes must be 2 to 1000, not ", spec.num_classes));
  }
  if (spec.input_size < 1 || spec.input_size > kMaxInputSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("model input_size must be 1 to ", kMaxInputSize, ", not ", spec.input_size));
  }
  if (spec.architecture == "ctnet") {
    if (spec.input_size < 16) {
      return absl::InvalidArgumentError("model 'ctnet' needs input_size of at least 16");
    }
    return absl::OkStatus();
  }
  if (spec.architecture == "flat") {
    if (spec.parameters < 1 || spec.parameters > (int64_t{1} << 31)) {
      return absl::InvalidArgumentError("model 'flat' needs parameters between 1 and 2^31 in the plan's [model]");
    }
    return absl::OkStatus();
  }
  if (spec.architecture == "tbcnn28") {
    if (spec.input_size != 28) {
      return absl::InvalidArgumentError(
          absl::StrCat("model 'tbcnn28' takes 28x28 images; the plan asks for input_size ", spec.input_size));
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown model architecture '", spec.architecture,
                                                 "'; known: ", absl::StrJoin(KnownArchitectures(), ", ")));
}

absl::StatusOr<Manifest> ModelManifest(const ModelSpec& spec) {
  absl::StatusOr<Layout> layout = LayoutOf(spec);
  if (!layout.ok()) return layout.status();
  Manifest m;
  for (const ParameterLayout& p : layout->parameters()) m.tensors.push_back(p.tensor);
  return m;
}

absl::StatusOr<ModelParameters> InitialParameters(const ModelSpec& spec, uint64_t seed) {
  absl::StatusOr<Layout> layout = LayoutOf(spec);
  if (!layout.ok()) return layout.status();
  ModelParameters out;
  for (const ParameterLayout& p : layout->parameters()) out.manifest.tensors.push_back(p.tensor);
  out.values.reserve(static_cast<size_t>(out.manifest.total_elements()));
  std::mt19937_64 rng(seed);
  for (const ParameterLayout& p : layout->parameters()) {
    const int64_t n = p.tensor.numel();
    if (p.bound > 0) {
      std::uniform_real_distribution<float> uniform(static_cast<float>(-p.bound), static_cast<float>(p.bound));
      for (int64_t i = 0; i < n; ++i) out.values.push_back(uniform(rng));
    } else {
      out.values.insert(out.values.end(), static_cast<size_t>(n), p.constant);
    }
  }
  return out;
}

SafetensorsMetadata ModelShapeMetadata(const ModelSpec& model) {
  return {{"architecture", model.architecture},
          {"in_channels", std::to_string(model.in_channels)},
          {"input_size", std::to_string(model.input_size)},
          {"num_classes", std::to_string(model.num_classes)}};
}

}  // namespace fedrad
