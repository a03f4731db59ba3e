#include "node/node_config.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/config.h"

namespace fedrad::node {

PrivacySettings ReadPrivacySettings(ConfigReader& c) {
  PrivacySettings p;
  p.enabled = c.GetBool("privacy.enabled", true);
  const std::string unit = c.GetString("privacy.unit", "patient");
  if (unit != "patient" && unit != "image") c.Fail("privacy.unit", "must be \"patient\" or \"image\"");
  p.patient_level = unit != "image";
  p.clip_norm = c.GetDouble("privacy.clip_norm", 1.0, 1e-6, 1e6);
  p.delta = c.GetDouble("privacy.delta", 1e-5, 1e-300, 0.01);
  p.epsilon_max = c.GetDouble("privacy.epsilon_max", 3.0, 1e-3, 100);
  const bool has_sigma = c.Has("privacy.noise_multiplier");
  const bool has_target = c.Has("privacy.target_epsilon");
  if (has_sigma) p.noise_multiplier = c.GetDouble("privacy.noise_multiplier", std::nullopt, 0.1, 1e4);
  if (has_target) p.target_epsilon = c.GetDouble("privacy.target_epsilon", std::nullopt, 1e-3, 100);
  if (has_sigma && has_target) {
    c.Fail("privacy.target_epsilon", "must not be set together with noise_multiplier; choose one");
  } else if (!has_sigma && !has_target) {
    p.target_epsilon = p.epsilon_max;  // spend the budget evenly over the federation's rounds
  } else if (has_target && p.target_epsilon > p.epsilon_max) {
    c.Fail("privacy.target_epsilon", "is larger than epsilon_max; the budget would stop the run before it");
  }
  return p;
}

SitePolicy ReadSitePolicy(ConfigReader& c) {
  SitePolicy p;
  p.max_round_epsilon = c.GetDouble("policy.max_round_epsilon", 0, 0, 100);
  p.rounds = static_cast<int>(c.GetInt("policy.rounds", 0, 0, 1000000));
  p.architectures = c.GetStringArray("policy.architectures", std::vector<std::string>{});
  p.max_local_epochs = static_cast<int>(c.GetInt("policy.max_local_epochs", 0, 0, 1000));
  p.min_batch_size = static_cast<int>(c.GetInt("policy.min_batch_size", 0, 0, 65536));
  p.min_report = static_cast<int>(c.GetInt("policy.min_report", 10, 0, 1000000));
  p.evaluation_epsilon = c.GetDouble("policy.evaluation_epsilon", -1, 0, 100);  // -1: epsilon_max, set by the caller
  return p;
}

absl::StatusOr<NodeConfig> LoadNodeConfig(const std::string& path, NodeConfigUse use) {
  absl::StatusOr<std::unique_ptr<ConfigReader>> opened = ConfigReader::Open(path);
  if (!opened.ok()) return opened.status();
  ConfigReader& c = **opened;
  NodeConfig out;
  out.path = path;
  const bool local = use == NodeConfigUse::kLocal;
  std::string ca, cert, key;
  if (local) {
    for (const char* field : {"coordinator.address", "tls.ca", "tls.certificate", "tls.key"}) c.Ignore(field);
  } else {
    out.coordinator_address = c.GetString("coordinator.address");
    ca = c.GetPath("tls.ca");
    cert = c.GetPath("tls.certificate");
    key = c.GetPath("tls.key");
  }
  out.dicom_dir = c.GetPath("data.dicom_dir");
  out.labels_csv = c.GetPath("data.labels");
  out.class_names = c.GetStringArray("data.class_names", std::vector<std::string>{});
  out.validation_fraction = c.GetDouble("data.validation_fraction", 0.2, 0.0, 0.9);
  out.split_seed = static_cast<uint64_t>(c.GetInt("data.split_seed", 42, 0, INT64_MAX));
  out.preprocess = ReadPreprocessSettings(c);
  out.state_dir = c.GetPath("node.state_dir", "state");
  out.threads = static_cast<int>(c.GetInt("node.threads", 0, 0, 1024));
  out.loader_threads = static_cast<int>(c.GetInt("node.loader_threads", 0, 0, 1024));
  out.cache = c.GetBool("node.cache", true);
  out.max_backoff_s = c.GetDouble("node.max_backoff_s", 10, 0.1, 3600);
  out.trainer = c.GetString("node.trainer", "torch");
  if (out.trainer != "torch" && out.trainer != "noop") c.Fail("node.trainer", "must be \"torch\" or \"noop\"");
  out.noop_seconds = c.GetDouble("node.noop_seconds", 0, 0, 86400);
  out.privacy = ReadPrivacySettings(c);
  out.policy = ReadSitePolicy(c);
  if (out.policy.evaluation_epsilon < 0) {
    // The ε the site plans to reach, for its validation patients too.
    out.policy.evaluation_epsilon =
        out.privacy.target_epsilon > 0 ? out.privacy.target_epsilon : out.privacy.epsilon_max;
  } else if (out.policy.evaluation_epsilon > out.privacy.epsilon_max) {
    c.Fail("policy.evaluation_epsilon", "is larger than [privacy] epsilon_max; the site's epsilon would pass it");
  }
  if (std::optional<std::string> problem = HostPortProblem(out.coordinator_address);
      !out.coordinator_address.empty() && problem) {
    c.Fail("coordinator.address", *problem);
  }
  absl::Status s = c.Finish();
  if (!s.ok()) return s;
  if (local) return out;

  absl::StatusOr<TlsIdentity> tls = LoadTlsIdentity(path, ca, cert, key);
  if (!tls.ok()) return tls.status();
  out.tls = std::move(*tls);
  return out;
}

DatasetSpec SiteDataset(const NodeConfig& config) {
  DatasetSpec spec;
  spec.data_dir = config.dicom_dir;
  spec.labels_csv = config.labels_csv;
  spec.require_patient_key = config.privacy.enabled && config.privacy.patient_level;
  spec.class_names = config.class_names;
  spec.preprocess = config.preprocess;
  spec.loader.threads = config.loader_threads;
  if (config.cache) spec.loader.cache_dir = config.state_dir + "/cache";
  return spec;
}

absl::StatusOr<std::string> LatestModel(const NodeConfig& config) {
  namespace fs = std::filesystem;
  const std::string dir = config.state_dir + "/models";
  std::error_code ec;
  std::string newest;
  fs::file_time_type newest_time;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() != ".safetensors" || !e.is_regular_file(ec)) continue;
    const fs::file_time_type t = e.last_write_time(ec);
    if (newest.empty() || t > newest_time) {
      newest = e.path().string();
      newest_time = t;
    }
  }
  if (newest.empty()) {
    return absl::NotFoundError(absl::StrCat("no global model in ", dir, " yet (the node receives one when it ",
                                            "first takes part in a round); give --model FILE"));
  }
  return newest;
}

}  // namespace fedrad::node
