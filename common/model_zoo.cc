#include "common/model_zoo.h"

#include <algorithm>
#include <cmath>
#include <random>

#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
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
  void Conv2d(const std::string& name, int64_t in, int64_t out, int64_t kernel, bool bias = true) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in * kernel * kernel));
    Add(name + ".weight", {out, in, kernel, kernel}, bound, 0);
    if (bias) Add(name + ".bias", {out}, bound, 0);
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
  // As FrozenBatchNorm2dImpl registers them: the identity until pretrained
  // weights and statistics are loaded.
  void FrozenBatchNorm(const std::string& name, int64_t channels) {
    GroupNorm(name, channels);
    Add(name + ".running_mean", {channels}, 0, 0);
    Add(name + ".running_var", {channels}, 0, 1);
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
// Unchecked: LayoutOf checks the spec first.
Layout BuildLayout(const ModelSpec& spec) {
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
  } else if (spec.architecture == "unet2d") {
    // As UNet2dImpl registers them: per level down a double convolution
    // (the first input's channels, then base_width · 2^level); per level
    // up, from the deepest, the double convolution over the skip
    // connection and the upsampled path, then the 3x3 convolution (with
    // its norm) that halves the upsampled channels (it runs first); a 1x1
    // head to the classes.
    auto double_conv = [&](const std::string& name, int64_t in, int64_t out) {
      l.Conv2d(name + ".conv1", in, out, 3);
      l.GroupNorm(name + ".norm1", out);
      l.Conv2d(name + ".conv2", out, out, 3);
      l.GroupNorm(name + ".norm2", out);
    };
    const int64_t w = spec.base_width;
    double_conv("down0", spec.in_channels, w);
    for (int d = 1; d <= spec.depth; ++d) double_conv(absl::StrCat("down", d), w << (d - 1), w << d);
    for (int d = spec.depth - 1; d >= 0; --d) {
      const std::string name = absl::StrCat("up", d);
      double_conv(name, w << (d + 1), w << d);
      l.Conv2d(name + ".upconv", w << (d + 1), w << d, 3);
      l.GroupNorm(name + ".upnorm", w << d);
    }
    l.Conv2d("head", w, spec.num_classes, 1);
  } else if (IsResNet(spec.architecture)) {
    // torchvision's names, so that its state_dicts map one to one
    // (python/convert_state_dict.py): the stem, four stages of basic blocks
    // (each conv1, bn1, conv2, bn2, and where the shape changes a 1x1
    // downsample.0 with its norm downsample.1), the classifier fc. The
    // convolutions have no bias (a norm follows each); the norms are
    // GroupNorms, or with norm = "frozen_batch" frozen BatchNorms (weight,
    // bias, running_mean, running_var: torchvision's names).
    const int64_t w = spec.base_width;
    auto norm = [&](const std::string& name, int64_t channels) {
      if (spec.norm == kFrozenBatchNorm) {
        l.FrozenBatchNorm(name, channels);
      } else {
        l.GroupNorm(name, channels);
      }
    };
    l.Conv2d("conv1", spec.in_channels, w, 7, /*bias=*/false);
    norm("bn1", w);
    int64_t in = w;
    const std::vector<int>& blocks = ResNetBlocks(spec.architecture);
    for (int stage = 0; stage < 4; ++stage) {
      const int64_t out = w << stage;
      for (int b = 0; b < blocks[static_cast<size_t>(stage)]; ++b) {
        const std::string name = absl::StrCat("layer", stage + 1, ".", b);
        l.Conv2d(name + ".conv1", in, out, 3, false);
        norm(name + ".bn1", out);
        l.Conv2d(name + ".conv2", out, out, 3, false);
        norm(name + ".bn2", out);
        if (in != out) {  // the first block of stages 2-4: stride 2
          l.Conv2d(name + ".downsample.0", in, out, 1, false);
          norm(name + ".downsample.1", out);
        }
        in = out;
      }
    }
    l.Linear("fc", in, spec.num_classes);
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

absl::StatusOr<Layout> LayoutOf(const ModelSpec& spec) {
  absl::Status s = CheckModelSpec(spec);
  if (!s.ok()) return s;
  return BuildLayout(spec);
}

}  // namespace

std::vector<std::string> KnownArchitectures() { return {"ctnet", "tbcnn28", "resnet18", "resnet34", "unet2d", "flat"}; }

bool IsResNet(const std::string& architecture) { return architecture == "resnet18" || architecture == "resnet34"; }

const std::vector<int>& ResNetBlocks(const std::string& architecture) {
  static const std::vector<int> kResNet18 = {2, 2, 2, 2}, kResNet34 = {3, 4, 6, 3};
  return architecture == "resnet34" ? kResNet34 : kResNet18;
}

int64_t ResNetGroups(int64_t channels) { return std::min<int64_t>(32, channels / 2); }

namespace {

absl::Status CheckClassNames(const ModelSpec& spec) {
  if (spec.class_names.empty()) return absl::OkStatus();
  if (static_cast<int64_t>(spec.class_names.size()) != spec.num_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model names ", spec.class_names.size(), " classes but has num_classes ", spec.num_classes));
  }
  std::set<std::string> seen;
  for (const std::string& name : spec.class_names) {
    const bool printable = std::all_of(name.begin(), name.end(),
                                       [](char c) { return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f; });
    if (name.empty() || name.size() > kMaxClassNameBytes || !printable) {
      return absl::InvalidArgumentError(absl::StrCat("class name '", absl::CEscape(name.substr(0, kMaxClassNameBytes)),
                                                     "' must be 1 to ", kMaxClassNameBytes, " printable characters"));
    }
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("class name '", name, "' is given twice"));
    }
  }
  return absl::OkStatus();
}

// The task each architecture does.
ModelTask TaskOf(const std::string& architecture) {
  return architecture == "unet2d" ? ModelTask::kSegmentation : ModelTask::kClassification;
}

}  // namespace

namespace {

absl::Status CheckShape(const ModelSpec& spec) {
  if (spec.in_channels < 1 || spec.in_channels > 4) {
    return absl::InvalidArgumentError(absl::StrCat("model in_channels must be 1 to 4, not ", spec.in_channels));
  }
  if (spec.num_classes < 2 || spec.num_classes > kMaxClasses) {
    return absl::InvalidArgumentError(
        absl::StrCat("model num_classes must be 2 to ", kMaxClasses, ", not ", spec.num_classes));
  }
  if (spec.task != ModelTask::kClassification && spec.task != ModelTask::kSegmentation &&
      spec.task != ModelTask::kMultilabel) {
    return absl::InvalidArgumentError(absl::StrCat("model ", TaskName(spec.task), " is not a task fedrad knows"));
  }
  if (absl::Status names = CheckClassNames(spec); !names.ok()) return names;
  if (spec.input_size < 1 || spec.input_size > kMaxInputSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("model input_size must be 1 to ", kMaxInputSize, ", not ", spec.input_size));
  }
  // One list: begin() and end() of two calls' vectors would be two ranges.
  const std::vector<std::string> architectures = KnownArchitectures();
  const bool known = std::find(architectures.begin(), architectures.end(), spec.architecture) != architectures.end();
  // A classifier's head serves multilabel as well: one output per label.
  const ModelTask task = spec.task == ModelTask::kMultilabel ? ModelTask::kClassification : spec.task;
  if (known && spec.architecture != "flat" && task != TaskOf(spec.architecture)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", spec.architecture, "' does ", TaskName(TaskOf(spec.architecture)), ", not ", TaskName(spec.task),
        spec.task == ModelTask::kSegmentation ? " (segmentation takes architecture = \"unet2d\")" : ""));
  }
  if (spec.architecture == "unet2d") {
    if (spec.depth < 1 || spec.depth > kMaxUnetDepth) {
      return absl::InvalidArgumentError(
          absl::StrCat("model 'unet2d' depth must be 1 to ", kMaxUnetDepth, ", not ", spec.depth));
    }
    if (spec.base_width < 4 || spec.base_width > kMaxUnetBaseWidth || spec.base_width % 4 != 0) {
      return absl::InvalidArgumentError(absl::StrCat("model 'unet2d' base_width must be a multiple of 4 from 4 to ",
                                                     kMaxUnetBaseWidth, ", not ", spec.base_width));
    }
    if (spec.input_size % (1 << spec.depth) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("model 'unet2d' of depth ", spec.depth,
                                                     " needs an input_size that is a multiple of ", 1 << spec.depth,
                                                     "; the plan asks for ", spec.input_size));
    }
    return absl::OkStatus();
  }
  if (spec.norm != "group" && !(spec.norm == kFrozenBatchNorm && IsResNet(spec.architecture))) {
    const std::string known = IsResNet(spec.architecture)
                                  ? std::string("\"group\" or \"frozen_batch\"")
                                  : absl::StrCat("\"group\" (the only one of '", spec.architecture, "')");
    return absl::InvalidArgumentError(
        absl::StrCat("model norm '", absl::CEscape(spec.norm.substr(0, 32)), "' is not ", known));
  }
  if (IsResNet(spec.architecture)) {
    if (spec.in_channels > 3) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", spec.architecture, "' takes 1 to 3 input channels, not ", spec.in_channels));
    }
    if (spec.base_width < 8 || spec.base_width > kMaxResNetWidth || spec.base_width % 8 != 0) {
      return absl::InvalidArgumentError(absl::StrCat("model '", spec.architecture,
                                                     "' base_width must be a multiple of 8 from 8 to ", kMaxResNetWidth,
                                                     ", not ", spec.base_width));
    }
    if (spec.input_size < 32) {
      return absl::InvalidArgumentError(absl::StrCat("model '", spec.architecture,
                                                     "' needs input_size of at least 32 (it halves the image five "
                                                     "times); the plan asks for ",
                                                     spec.input_size));
    }
    return absl::OkStatus();
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

// The layer a tensor belongs to: its name less the last component
// ("layer1.0.conv1.weight" -> "layer1.0.conv1").
std::string LayerOf(const std::string& tensor) {
  const size_t dot = tensor.rfind('.');
  return dot == std::string::npos ? tensor : tensor.substr(0, dot);
}

// Every prefix names at least one tensor, whole layers only (a layer half
// frozen would need per-sample norms of part of a layer), and something is
// left to train.
absl::Status CheckFreeze(const ModelSpec& spec, const Layout& layout) {
  if (spec.freeze.size() > kMaxFreezePrefixes) {
    return absl::InvalidArgumentError(
        absl::StrCat("model freeze lists ", spec.freeze.size(), " prefixes; at most ", kMaxFreezePrefixes));
  }
  std::vector<std::string> layers;  // in order, for the error message
  for (const ParameterLayout& p : layout.parameters()) {
    const std::string layer = LayerOf(p.tensor.name);
    if (layers.empty() || layers.back() != layer) layers.push_back(layer);
  }
  for (const std::string& prefix : spec.freeze) {
    const bool printable = std::all_of(prefix.begin(), prefix.end(),
                                       [](char c) { return static_cast<unsigned char>(c) > 0x20 && c != 0x7f; });
    if (prefix.empty() || prefix.size() > 256 || !printable) {
      return absl::InvalidArgumentError(absl::StrCat("model freeze prefix '", absl::CEscape(prefix.substr(0, 256)),
                                                     "' must be 1 to 256 printable characters without spaces"));
    }
    bool names_one = false;
    for (const ParameterLayout& p : layout.parameters())
      names_one = names_one || FreezePrefixMatches(prefix, p.tensor.name);
    if (!names_one) {
      return absl::InvalidArgumentError(absl::StrCat("model freeze prefix '", prefix, "' names no parameter of '",
                                                     spec.architecture, "' (its layers: ", absl::StrJoin(layers, ", "),
                                                     ")"));
    }
  }
  bool any_trained = false;
  std::map<std::string, std::pair<std::vector<std::string>, std::vector<std::string>>> by_layer;  // frozen, trained
  for (const ParameterLayout& p : layout.parameters()) {
    if (IsStatistic(p.tensor.name)) continue;  // never trained, whatever the layer's parameters do
    const bool f = IsFrozen(spec, p.tensor.name);
    any_trained = any_trained || !f;
    auto& [frozen_names, trained_names] = by_layer[LayerOf(p.tensor.name)];
    (f ? frozen_names : trained_names).push_back(p.tensor.name);
  }
  for (const auto& [layer, names] : by_layer) {
    if (!names.first.empty() && !names.second.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("model freeze freezes part of layer '", layer, "' (",
                                                     absl::StrJoin(names.first, ", "), " but not ",
                                                     absl::StrJoin(names.second, ", "), "); freeze whole layers"));
    }
  }
  if (!any_trained) {
    return absl::InvalidArgumentError("model freeze freezes every parameter: nothing would train");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckModelSpec(const ModelSpec& spec) {
  if (absl::Status s = CheckShape(spec); !s.ok()) return s;
  return spec.freeze.empty() ? absl::OkStatus() : CheckFreeze(spec, BuildLayout(spec));
}

bool IsStatistic(const std::string& tensor) {
  return absl::EndsWith(tensor, ".running_mean") || absl::EndsWith(tensor, ".running_var");
}

bool IsFrozen(const ModelSpec& spec, const std::string& tensor) {
  return IsStatistic(tensor) || std::any_of(spec.freeze.begin(), spec.freeze.end(), [&](const std::string& prefix) {
           return FreezePrefixMatches(prefix, tensor);
         });
}

bool FreezePrefixMatches(const std::string& prefix, const std::string& tensor) {
  if (prefix.empty() || tensor.compare(0, prefix.size(), prefix) != 0) return false;
  return tensor.size() == prefix.size() || prefix.back() == '.' || tensor[prefix.size()] == '.';
}

int64_t TrainedParameters::elements() const { return trained.total_elements(); }

std::vector<float> TrainedParameters::Gather(const std::vector<float>& full) const {
  std::vector<float> out;
  out.reserve(static_cast<size_t>(elements()));
  for (const auto& [offset, count] : spans) out.insert(out.end(), full.begin() + offset, full.begin() + offset + count);
  return out;
}

void TrainedParameters::Scatter(const std::vector<float>& part, std::vector<float>* full) const {
  size_t k = 0;
  for (const auto& [offset, count] : spans) {
    std::copy(part.begin() + static_cast<std::ptrdiff_t>(k), part.begin() + static_cast<std::ptrdiff_t>(k + count),
              full->begin() + offset);
    k += static_cast<size_t>(count);
  }
}

void TrainedParameters::AddTo(const std::vector<float>& delta, std::vector<float>* full) const {
  size_t k = 0;
  for (const auto& [offset, count] : spans) {
    for (int64_t i = 0; i < count; ++i) (*full)[static_cast<size_t>(offset + i)] += delta[k++];
  }
}

absl::StatusOr<TrainedParameters> TrainedParametersOf(const ModelSpec& spec) {
  absl::StatusOr<Layout> layout = LayoutOf(spec);
  if (!layout.ok()) return layout.status();
  TrainedParameters out;
  int64_t offset = 0;
  for (const ParameterLayout& p : layout->parameters()) {
    const int64_t n = p.tensor.numel();
    if (IsFrozen(spec, p.tensor.name)) {
      out.frozen.push_back(p.tensor.name);
    } else {
      out.trained.tensors.push_back(p.tensor);
      if (!out.spans.empty() && out.spans.back().first + out.spans.back().second == offset) {
        out.spans.back().second += n;
      } else {
        out.spans.emplace_back(offset, n);
      }
    }
    offset += n;
  }
  return out;
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

namespace {

// The classifier head's parameter prefix: the one layer whose shape follows
// the class count.
std::string HeadOf(const ModelSpec& spec) {
  if (IsResNet(spec.architecture)) return "fc.";
  if (spec.architecture == "unet2d") return "head.";
  return "fc2.";
}

}  // namespace

absl::StatusOr<InitialWeights> WeightsFromFile(const ModelSpec& spec, const std::string& path, uint64_t seed) {
  absl::StatusOr<ModelParameters> fresh = InitialParameters(spec, seed);
  if (!fresh.ok()) return fresh.status();
  absl::StatusOr<SafetensorsFile> file = ReadSafetensorsFile(path);
  if (!file.ok()) return file.status();
  std::map<std::string, std::pair<const TensorSpec*, int64_t>> in_file;  // name -> (spec, offset)
  int64_t offset = 0;
  for (const TensorSpec& t : file->parameters.manifest.tensors) {
    in_file[t.name] = {&t, offset};
    offset += t.numel();
  }
  const std::string head = HeadOf(spec);
  std::vector<std::string> missing, mismatched, unexpected;
  InitialWeights out;
  out.parameters = *fresh;
  std::set<std::string> head_reset;
  int64_t at = 0;
  for (const TensorSpec& t : fresh->manifest.tensors) {
    auto f = in_file.find(t.name);
    if (f == in_file.end()) {
      missing.push_back(t.name);
    } else if (f->second.first->shape != t.shape) {
      if (t.name.rfind(head, 0) == 0) {
        head_reset.insert(t.name);  // keeps the fresh values
      } else {
        mismatched.push_back(absl::StrCat(t.name, " (", absl::StrJoin(f->second.first->shape, "x"), " in the file, ",
                                          absl::StrJoin(t.shape, "x"), " in the plan's model)"));
      }
    } else {
      std::copy_n(file->parameters.values.begin() + f->second.second, t.numel(), out.parameters.values.begin() + at);
    }
    if (f != in_file.end()) in_file.erase(f);
    at += t.numel();
  }
  for (const auto& [name, unused] : in_file) unexpected.push_back(name);
  auto list = [](const std::vector<std::string>& v) {
    std::vector<std::string> shown(v.begin(), v.begin() + std::min<size_t>(v.size(), 8));
    return absl::StrCat(absl::StrJoin(shown, ", "), v.size() > 8 ? absl::StrCat(" and ", v.size() - 8, " more") : "");
  };
  std::vector<std::string> problems;
  if (!missing.empty()) problems.push_back(absl::StrCat("missing: ", list(missing)));
  if (!mismatched.empty()) problems.push_back(absl::StrCat("of another shape: ", list(mismatched)));
  if (!unexpected.empty()) problems.push_back(absl::StrCat("not in the model: ", list(unexpected)));
  if (!problems.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' does not fit model '", spec.architecture,
                                                   "': tensors ", absl::StrJoin(problems, "; tensors ")));
  }
  if (!head_reset.empty()) {
    out.notes.push_back(absl::StrCat("the classifier head (", absl::StrJoin(head_reset, ", "),
                                     ") has another class count in '", path, "': freshly initialised for ",
                                     spec.num_classes, " classes"));
  }
  return out;
}

SafetensorsMetadata ModelShapeMetadata(const ModelSpec& model) {
  SafetensorsMetadata m{{"architecture", model.architecture},
                        {"task", TaskName(model.task)},
                        {"in_channels", std::to_string(model.in_channels)},
                        {"input_size", std::to_string(model.input_size)},
                        {"num_classes", std::to_string(model.num_classes)}};
  if (model.architecture == "unet2d") m["depth"] = std::to_string(model.depth);
  if (model.architecture == "unet2d" || IsResNet(model.architecture)) {
    m["base_width"] = std::to_string(model.base_width);
  }
  if (IsResNet(model.architecture) && model.norm != "group") m["norm"] = model.norm;
  if (!model.class_names.empty()) m["class_names"] = nlohmann::json(model.class_names).dump();
  return m;
}

}  // namespace fedrad
