#ifndef FEDRAD_NODE_NODE_CONFIG_H_
#define FEDRAD_NODE_NODE_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tls_identity.h"
#include "node/dataset.h"
#include "node/preprocess.h"
#include "node/privacy_budget.h"
#include "node/site_policy.h"

namespace fedrad::node {

// node.toml, checked at start-up before any data is touched.
struct NodeConfig {
  std::string path;
  std::string coordinator_address;
  TlsIdentity tls;  // tls.common_name is the site
  std::string dicom_dir;
  std::string labels_csv;
  std::vector<std::string> class_names;  // names used in labels.csv, by class index
  double validation_fraction = 0.2;
  uint64_t split_seed = 42;
  PreprocessSettings preprocess;  // output_size comes from the plan
  std::string state_dir;
  int threads = 0;         // LibTorch threads
  int loader_threads = 0;  // DICOM decoding threads
  bool cache = true;       // cache preprocessed images under state_dir/cache
  double max_backoff_s = 10;
  // "torch": train on the data. "noop" (benchmarks of round overhead): read
  // no data and answer each round with the received model plus a tiny change.
  std::string trainer = "torch";
  double noop_seconds = 0;  // "noop": how long each round pretends to train
  PrivacySettings privacy;
  SitePolicy policy;
  // Not from node.toml: `run --ledger-lost`, the operator's account of a
  // node.db lost for good, which starts a new ledger (common/ledger.h).
  std::string ledger_lost;
};

// [privacy]: DP on unless `enabled = false`; σ or a target ε (default: the
// target is epsilon_max).
PrivacySettings ReadPrivacySettings(ConfigReader& c);
// [policy]: every limit off but min_report (10) when absent.
SitePolicy ReadSitePolicy(ConfigReader& c);

enum class NodeConfigUse {
  kFederation,  // everything, with the TLS identity checked
  // Local work on the site's data (predict): [coordinator] and [tls] are
  // neither read nor checked, so nothing in it can reach the network.
  kLocal,
};

// Loads node.toml and the files it names. Errors name the file and field:
// missing files, wrong types, unknown fields, a key that does not match the
// certificate, a certificate not issued by the CA in the kit.
absl::StatusOr<NodeConfig> LoadNodeConfig(const std::string& path, NodeConfigUse use = NodeConfigUse::kFederation);

// The site's labelled images as node.toml describes them: folder, labels,
// class names, preprocessing, loader threads and cache. The caller sets the
// model's input size (preprocess.output_size) and num_classes.
DatasetSpec SiteDataset(const NodeConfig& config);

// The newest global model the node has received (state_dir/models), for
// local use; NotFound before the node's first round.
absl::StatusOr<std::string> LatestModel(const NodeConfig& config);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_NODE_CONFIG_H_
