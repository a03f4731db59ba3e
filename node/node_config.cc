#include "node/node_config.h"

#include "absl/strings/str_cat.h"
#include "common/config.h"

namespace fedrad::node {

absl::StatusOr<NodeConfig> LoadNodeConfig(const std::string& path) {
  absl::StatusOr<std::unique_ptr<ConfigReader>> opened = ConfigReader::Open(path);
  if (!opened.ok()) return opened.status();
  ConfigReader& c = **opened;
  NodeConfig out;
  out.path = path;
  out.coordinator_address = c.GetString("coordinator.address");
  const std::string ca = c.GetPath("tls.ca");
  const std::string cert = c.GetPath("tls.certificate");
  const std::string key = c.GetPath("tls.key");
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
  if (!out.coordinator_address.empty() && out.coordinator_address.rfind(':') == std::string::npos) {
    c.Fail("coordinator.address", "must be host:port");
  }
  absl::Status s = c.Finish();
  if (!s.ok()) return s;

  absl::StatusOr<TlsIdentity> tls = LoadTlsIdentity(path, ca, cert, key);
  if (!tls.ok()) return tls.status();
  out.tls = std::move(*tls);
  return out;
}

}  // namespace fedrad::node
