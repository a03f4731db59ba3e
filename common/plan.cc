#include "common/plan.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/config.h"
#include "common/model_zoo.h"

namespace fedrad {

bool FederationPlan::HasSite(const std::string& site) const {
  return std::find(sites.begin(), sites.end(), site) != sites.end();
}

std::optional<std::string> SiteNameProblem(const std::string& name) {
  static constexpr char kRule[] = "letters, digits, '-', '_', '.'; 1 to 64 characters, not starting with '.'";
  bool ok = !name.empty() && name.size() <= 64 && name[0] != '.';
  for (char c : name) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                c == '.');
  }
  if (!ok) return absl::StrCat("'", absl::CEscape(name), "' is not a valid site name (", kRule, ")");
  const std::string folded = absl::AsciiStrToLower(name);
  if (folded == "ca" || folded == "coordinator") {
    return absl::StrCat("'", name, "' is reserved: provisioning writes the ", folded == "ca" ? "CA's" : "coordinator's",
                        " kit under that name; choose another for the site");
  }
  return std::nullopt;
}

bool IsValidSiteName(const std::string& name) { return !SiteNameProblem(name).has_value(); }

std::string TaskName(ModelTask task) {
  switch (task) {
    case ModelTask::kClassification:
      return "classification";
    case ModelTask::kSegmentation:
      return "segmentation";
    case ModelTask::kMultilabel:
      return "multilabel";
  }
  return absl::StrCat("task ", static_cast<int>(task));
}

std::optional<ModelTask> ParseTask(const std::string& name) {
  if (name == "classification") return ModelTask::kClassification;
  if (name == "segmentation") return ModelTask::kSegmentation;
  if (name == "multilabel") return ModelTask::kMultilabel;
  return std::nullopt;
}

absl::StatusOr<FederationPlan> LoadPlan(const std::string& path, const StrategyCheck& check_strategy) {
  absl::StatusOr<std::unique_ptr<ConfigReader>> opened = ConfigReader::Open(path);
  if (!opened.ok()) return opened.status();
  ConfigReader& c = **opened;
  FederationPlan p;
  p.name = c.GetString("federation.name");
  p.rounds = static_cast<int>(c.GetInt("federation.rounds", 5, 1, 100000));
  p.min_nodes = static_cast<int>(c.GetInt("federation.min_nodes", 2, 1, 100000));
  p.round_deadline_s = c.GetDouble("federation.round_deadline_s", 600, 1, 7 * 86400);
  p.close_at_fraction = c.GetDouble("federation.close_at_fraction", 1.0, 0.01, 1.0);
  p.max_attempts = static_cast<int>(c.GetInt("federation.max_attempts", 5, 1, 1000));
  p.retry_backoff_s = c.GetDouble("federation.retry_backoff_s", 5, 0, 3600);
  p.eval_deadline_s = c.GetDouble("federation.eval_deadline_s", 120, 1, 86400);
  p.min_report = static_cast<int>(c.GetInt("federation.min_report", 10, 0, 1000000));
  p.start_grace_s = c.GetDouble("federation.start_grace_s", 5, 0, 86400);
  p.seed = static_cast<uint64_t>(c.GetInt("federation.seed", 1, 0, INT64_MAX));
  p.chunk_bytes = static_cast<uint32_t>(c.GetInt("federation.chunk_bytes", kMaxChunkBytes, 4096, kMaxChunkBytes));
  const std::string dtype = c.GetString("federation.update_dtype", "float32");
  if (std::optional<WireDtype> d = ParseWireDtype(dtype)) {
    p.update_dtype = *d;
  } else {
    c.Fail("federation.update_dtype", "must be \"float32\", \"bfloat16\" or \"float16\"");
  }

  p.max_update_norm = c.GetDouble("federation.max_update_norm", 1000, 1e-6, 1e12);
  p.model.architecture = c.GetString("model.architecture", "ctnet");
  p.model.in_channels = static_cast<int>(c.GetInt("model.in_channels", 1, 1, 4));
  p.model.input_size = static_cast<int>(c.GetInt("model.input_size", 64, 16, kMaxInputSize));
  p.model.num_classes = static_cast<int>(c.GetInt("model.num_classes", 2, 2, 1000));
  p.model.parameters = c.GetInt("model.parameters", 0, 0, int64_t{1} << 31);
  if (p.model.parameters != 0 && p.model.architecture != "flat") {
    c.Fail("model.parameters", "applies only to architecture \"flat\"; the others have a fixed size");
  }
  const std::string task = c.GetString("model.task", "classification");
  if (std::optional<ModelTask> t = ParseTask(task)) {
    p.model.task = *t;
  } else {
    c.Fail("model.task", "must be \"classification\", \"segmentation\" or \"multilabel\"");
  }
  const bool resnet = IsResNet(p.model.architecture);
  if (c.Has("model.depth") && p.model.architecture != "unet2d") {
    c.Fail("model.depth", "applies only to architecture \"unet2d\"");
  }
  if (c.Has("model.base_width") && p.model.architecture != "unet2d" && !resnet) {
    c.Fail("model.base_width", "applies only to architectures \"unet2d\", \"resnet18\" and \"resnet34\"");
  }
  p.model.depth = static_cast<int>(c.GetInt("model.depth", 3, 1, kMaxUnetDepth));
  p.model.base_width = static_cast<int>(resnet ? c.GetInt("model.base_width", 64, 8, kMaxResNetWidth)
                                               : c.GetInt("model.base_width", 16, 4, kMaxUnetBaseWidth));
  p.model.class_names = c.GetStringArray("model.class_names", std::vector<std::string>{});
  p.model.freeze = c.GetStringArray("model.freeze", std::vector<std::string>{});
  if (c.Has("model.norm") && !resnet)
    c.Fail("model.norm", "applies only to architectures \"resnet18\" and \"resnet34\"");
  p.model.norm = c.GetString("model.norm", "group");
  if (p.model.norm != "group" && p.model.norm != "frozen_batch") {
    c.Fail("model.norm", "must be \"group\" (GroupNorm) or \"frozen_batch\" (pretrained BatchNorm, kept fixed)");
  }
  p.model_init_as_written = c.GetString("model.init", std::string());
  p.model_init = p.model_init_as_written.empty() ? std::string() : c.GetPath("model.init");
  if (!p.model.class_names.empty() && static_cast<int>(p.model.class_names.size()) != p.model.num_classes) {
    c.Fail("model.class_names",
           absl::StrCat("names ", p.model.class_names.size(), " classes, but num_classes is ", p.model.num_classes));
  }
  if (p.model.task == ModelTask::kMultilabel && p.model.class_names.empty()) {
    c.Fail("model.class_names",
           "task \"multilabel\" needs the labels' names (labels.csv's columns, or the names its lists use)");
  }

  p.training.local_epochs = static_cast<int>(c.GetInt("training.local_epochs", 1, 1, 1000));
  p.training.batch_size = static_cast<int>(c.GetInt("training.batch_size", 32, 1, 65536));
  p.training.learning_rate = c.GetDouble("training.learning_rate", 0.05, 1e-8, 100);
  p.training.momentum = c.GetDouble("training.momentum", 0.9, 0, 0.999);
  p.require_dp = c.GetBool("privacy.require_dp", false);

  StrategySettings& st = p.strategy;
  st.name = c.GetString("strategy.name", "fedavg");
  st.server_learning_rate = c.GetDouble("strategy.server_learning_rate", 1.0, 1e-6, 100);
  st.server_momentum = c.GetDouble("strategy.server_momentum", 0.9, 0, 0.999);
  st.beta1 = c.GetDouble("strategy.beta1", 0.9, 0, 0.999);
  st.beta2 = c.GetDouble("strategy.beta2", 0.99, 0, 0.99999);
  st.tau = c.GetDouble("strategy.tau", 1e-3, 1e-12, 10);
  st.proximal_mu = c.GetDouble("strategy.proximal_mu", 0.01, 0, 100);
  st.trim_fraction = c.GetDouble("strategy.trim_fraction", 0.1, 0, 0.49);
  st.byzantine = static_cast<int>(c.GetInt("strategy.byzantine", 1, 0, 100000));
  st.multi_krum_select = static_cast<int>(c.GetInt("strategy.multi_krum_select", 0, 0, 100000));
  st.weighting = c.GetString("strategy.weighting", "examples");
  if (st.weighting != "examples" && st.weighting != "equal") {
    c.Fail("strategy.weighting", "must be \"examples\" or \"equal\"");
  }
  st.max_weight_ratio = c.GetDouble("strategy.max_weight_ratio", 10, 0, 1e6);
  if (st.max_weight_ratio > 0 && st.max_weight_ratio < 1) {
    c.Fail("strategy.max_weight_ratio", "must be 0 (no cap) or at least 1");
  }

  p.coordinator_hosts = c.GetStringArray("coordinator.hosts", std::vector<std::string>{"localhost", "127.0.0.1"});

  p.coordinator_address = c.GetString("coordinator.address", "127.0.0.1:50051");
  if (std::optional<std::string> problem = HostPortProblem(p.coordinator_address)) {
    c.Fail("coordinator.address", *problem);
  }

  const size_t n = c.TableArraySize("site");
  std::set<std::string> seen;
  for (size_t i = 0; i < n; ++i) {
    const std::string key = absl::StrCat("site[", i, "].name");
    std::string name = c.GetString(key);
    // A missing name is GetString's error already.
    if (std::optional<std::string> problem = SiteNameProblem(name); problem && c.Has(key)) {
      c.Fail(key, *problem);
    } else if (!seen.insert(absl::AsciiStrToLower(name)).second) {
      // Kits are folders: two names one case apart would share one on a
      // case-insensitive file system (the USB stick a kit travels on).
      c.Fail(key, absl::StrCat("names site '", name, "' twice (site names are compared ignoring case)"));
    }
    p.sites.push_back(name);
  }
  if (n == 0) c.Fail("site", "is required: list each site as [[site]] name = \"...\"");
  if (p.coordinator_hosts.empty()) c.Fail("coordinator.hosts", "must name at least one host");
  if (n > 0 && static_cast<size_t>(p.min_nodes) > n) {
    c.Fail("federation.min_nodes", absl::StrCat("is ", p.min_nodes, " but the plan has only ", n, " site(s)"));
  }
  // A robust strategy that cannot work with the updates a round may be
  // applied with (min_nodes of them) would keep the model while every DP
  // site pays for the round: refused here, before anyone trains.
  check_strategy(p, [&c](const std::string& key, const std::string& problem) { c.Fail(key, problem); });
  absl::Status s = c.Finish();
  if (!s.ok()) return s;
  return p;
}

}  // namespace fedrad
