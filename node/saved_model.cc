#include "node/saved_model.h"

#include <algorithm>
#include <map>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/json_depth.h"
#include "common/model_zoo.h"
#include "common/tensor.h"
#include "crypto/sha256.h"

namespace fedrad::node {
namespace {

// A pipeline description's steps by name ("window", "resize", ..., "color").
std::map<std::string, std::string> PipelineSteps(const std::string& description) {
  std::map<std::string, std::string> steps;
  for (absl::string_view part : absl::StrSplit(description, '|', absl::SkipEmpty())) {
    steps[PipelineStepName(std::string_view(part.data(), part.size()))] = std::string(part);
  }
  return steps;
}

// "window=explicit(40,400) here, window=lung(-600,1500) in the model; ...".
std::string PipelineDifference(const std::string& model, const std::string& site) {
  const std::map<std::string, std::string> m = PipelineSteps(model), s = PipelineSteps(site);
  std::map<std::string, std::pair<std::string, std::string>> differ;
  for (const auto& [name, step] : m) differ[name].first = step;
  for (const auto& [name, step] : s) differ[name].second = step;
  std::vector<std::string> out;
  for (const auto& [name, pair] : differ) {
    if (pair.first == pair.second) continue;
    out.push_back(absl::StrCat(pair.first.empty() ? absl::StrCat("no ", name) : pair.first, " in the model, ",
                               pair.second.empty() ? absl::StrCat("no ", name) : pair.second, " here"));
  }
  return absl::StrJoin(out, "; ");
}

}  // namespace

absl::StatusOr<SavedModel> LoadSavedModel(const std::string& path, const SavedModelShape& o) {
  absl::StatusOr<std::string> bytes = ReadFile(path, uint64_t{64} << 30);
  if (!bytes.ok()) return bytes.status();
  absl::StatusOr<SafetensorsFile> file = DecodeSafetensors(*bytes, path);
  if (!file.ok()) return file.status();
  auto arch = file->metadata.find("architecture");
  if (arch == file->metadata.end()) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' does not name its architecture"));
  }
  // A shape figure from the file, or `given` (0: not given), or `fallback`.
  auto shape = [&](const char* key, int given, int fallback, const std::string& flag) -> absl::StatusOr<int> {
    auto it = file->metadata.find(key);
    if (it == file->metadata.end()) return given > 0 ? given : fallback;
    int value = 0;
    if (!absl::SimpleAtoi(it->second, &value) || value <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", path, "': metadata ", key, " = '", it->second, "' is not a positive integer"));
    }
    if (given > 0 && given != value) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", path, "' is a model of ", key, " ", value, ", not ", given, " (", flag, ")"));
    }
    return value;
  };
  absl::StatusOr<int> size = shape("input_size", o.size, o.default_size, o.size_flag);
  if (!size.ok()) return size.status();
  absl::StatusOr<int> classes = shape("num_classes", o.classes, o.default_classes, o.classes_flag);
  if (!classes.ok()) return classes.status();
  absl::StatusOr<int> channels = shape("in_channels", 0, 1, "");
  if (!channels.ok()) return channels.status();
  SavedModel out;
  out.path = path;
  out.sha256 = crypto::Sha256Hex(*bytes);
  out.spec = ModelSpec{arch->second, *channels, *size, *classes};
  if (auto task = file->metadata.find("task"); task != file->metadata.end()) {
    std::optional<ModelTask> t = ParseTask(task->second);
    if (!t) {
      return absl::InvalidArgumentError(absl::StrCat("'", path, "': metadata task = '",
                                                     absl::CEscape(task->second.substr(0, 64)),
                                                     "' is not \"classification\" or \"segmentation\""));
    }
    out.spec.task = *t;
  }
  if (out.spec.architecture == "unet2d") {
    absl::StatusOr<int> depth = shape("depth", 0, out.spec.depth, "");
    if (!depth.ok()) return depth.status();
    out.spec.depth = *depth;
  }
  if (out.spec.architecture == "unet2d" || IsResNet(out.spec.architecture)) {
    absl::StatusOr<int> width = shape("base_width", 0, out.spec.base_width, "");
    if (!width.ok()) return width.status();
    out.spec.base_width = *width;
  }
  if (auto norm = file->metadata.find("norm"); norm != file->metadata.end() && IsResNet(out.spec.architecture)) {
    out.spec.norm = norm->second;  // CheckModelSpec below names one it does not know
  }
  if (auto names = file->metadata.find("class_names"); names != file->metadata.end()) {
    const nlohmann::json j = JsonDepth(names->second, 1) == 1
                                 ? nlohmann::json::parse(names->second, nullptr, /*allow_exceptions=*/false)
                                 : nlohmann::json();
    if (!j.is_array() || j.size() > static_cast<size_t>(kMaxClasses) ||
        !std::all_of(j.begin(), j.end(), [](const nlohmann::json& e) { return e.is_string(); })) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", path, "': metadata class_names is not a JSON array of at most ", kMaxClasses, " names"));
    }
    for (const nlohmann::json& e : j) out.spec.class_names.push_back(e.get<std::string>());
  }
  absl::Status s = CheckModelSpec(out.spec);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", s.message()));
  absl::StatusOr<Manifest> manifest = ModelManifest(out.spec);
  if (!manifest.ok()) return manifest.status();
  if (!(*manifest == file->parameters.manifest)) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': its tensors are not those of ", out.spec.architecture,
                                                   " with ", *classes, " classes"));
  }
  // A NaN or infinite weight makes every output NaN: refused here, for
  // every command that loads a saved model (predict, train-local, audit).
  if (std::optional<size_t> bad = FirstNonFinite(file->parameters.values)) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': value ", *bad, " of the model is ",
                                                   file->parameters.values[*bad], "; a model must be finite"));
  }
  out.parameters = std::move(file->parameters);
  out.metadata = std::move(file->metadata);
  return out;
}

void SetPipelineMetadata(const PreprocessSettings& settings, SafetensorsMetadata* metadata) {
  (*metadata)["preprocessing"] = DescribePipeline(settings);
  (*metadata)["preprocessing_sha256"] = PipelineSha256(settings);
}

absl::Status CheckPipeline(const SavedModel& model, const PreprocessSettings& settings) {
  auto it = model.metadata.find("preprocessing");
  if (it == model.metadata.end() || it->second.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", model.path,
                     "' does not name the preprocessing it was trained on (an untrained round-0 model, or one "
                     "saved before fedrad recorded it), so its inputs cannot be prepared the same way"));
  }
  const std::string here = DescribePipeline(settings);
  // A federation's model lists every pipeline its sites used, one per line.
  const std::vector<std::string> pipelines = absl::StrSplit(it->second, '\n');
  for (const std::string& p : pipelines) {
    if (p == here) return absl::OkStatus();
  }
  std::vector<std::string> differences;
  for (const std::string& p : pipelines) differences.push_back(PipelineDifference(p, here));
  return absl::FailedPreconditionError(
      absl::StrCat("'", model.path, "' was trained on images prepared differently from this site's [preprocess]: ",
                   absl::StrJoin(differences, pipelines.size() > 1 ? " | or, for its other pipeline: " : "")));
}

}  // namespace fedrad::node
