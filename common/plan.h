#ifndef FEDRAD_COMMON_PLAN_H_
#define FEDRAD_COMMON_PLAN_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/wire_dtype.h"

namespace fedrad {

// What a model is trained to say of an image: one class for the whole image,
// one class per pixel (class 0 the background), or for each of several
// findings whether the image shows it (multilabel: num_classes independent
// sigmoid outputs, the labels named by class_names). The wire carries the
// number; CheckModelSpec refuses any other value.
enum class ModelTask : int { kClassification = 0, kSegmentation = 1, kMultilabel = 2 };
std::string TaskName(ModelTask task);
std::optional<ModelTask> ParseTask(const std::string& name);

// Which network from the model zoo, and its input/output shape.
inline constexpr int kMaxUnetDepth = 5;
inline constexpr int kMaxUnetBaseWidth = 128;

struct ModelSpec {
  std::string architecture = "ctnet";
  int in_channels = 1;
  int input_size = 64;
  int num_classes = 2;
  int64_t parameters = 0;  // "flat" only: the length of its one parameter vector
  ModelTask task = ModelTask::kClassification;
  // "unet2d": how many times the encoder halves the image (depth), and the
  // channels of its first level (doubled at each level down). "resnet18" and
  // "resnet34": base_width is the channels of the stem and first stage
  // (doubled at each of the next three; He et al.'s networks have 64).
  int depth = 3;
  int base_width = 16;
  // The classes' names, by index (segmentation: index 0 is the background;
  // multilabel: the labels, which it requires, as labels.csv's columns);
  // empty: numbered. Public: they go into the model's metadata and the
  // segment labels of the SEG objects predict writes.
  std::vector<std::string> class_names;
  // Layers that do not train ([model] freeze: name prefixes, "conv1" or
  // "layer1"): no gradient, no per-sample work, no noise, and not in updates,
  // which hold the trained parameters only (TrainedParametersOf).
  std::vector<std::string> freeze;
  // "resnet18"/"resnet34": "group" (GroupNorm) or "frozen_batch" (pretrained
  // BatchNorm layers as fixed per-channel affine maps: their running
  // statistics are in the manifest and never train; FrozenBatchNorm2dImpl).
  std::string norm = "group";
};

// Local training settings the coordinator sends with every task. Under DP a
// node reads batch_size as the expected batch of privacy units (sampling
// rate q = batch_size / units) and takes local_epochs / q Poisson-sampled steps.
struct TrainingSettings {
  int local_epochs = 1;
  int batch_size = 32;
  double learning_rate = 0.05;
  double momentum = 0.9;
  // FedProx: nodes add (mu/2)·||w - w_global||² to their local loss.
  double proximal_mu = 0;
};

// [strategy]: how the coordinator turns a round's updates into a model.
struct StrategySettings {
  std::string name = "fedavg";
  // Applied to the aggregated delta (1: plain averaging).
  double server_learning_rate = 1.0;
  double server_momentum = 0.9;  // fedavgm (Hsu et al. 2019)
  // fedadagrad, fedadam, fedyogi (Reddi et al. 2021): first/second moment
  // decay and the adaptivity tau.
  double beta1 = 0.9;
  double beta2 = 0.99;
  double tau = 1e-3;
  double proximal_mu = 0.01;   // fedprox
  double trim_fraction = 0.1;  // trimmed-mean: share dropped at each end, per coordinate
  int byzantine = 1;           // krum, multi-krum: updates assumed malicious (f)
  int multi_krum_select = 0;   // multi-krum: updates averaged (m; 0: n - f)
  // Each update's weight in the average: "examples" (the count the site
  // reports, under DP its noisy released count) or "equal".
  std::string weighting = "examples";
  // No weight above this multiple of the round's (lower) median weight, so
  // no site's claim can outweigh the others at will; 0: no cap.
  double max_weight_ratio = 10;
};

// The federation plan (configs/federation.toml): who takes part, which model,
// how many rounds. Provisioning, the coordinator and the nodes all read it.
struct FederationPlan {
  std::string name;
  int rounds = 5;
  int min_nodes = 2;
  double round_deadline_s = 600;
  // Straggler policy: 1 waits for every selected site (until the deadline);
  // below 1 closes the round once this share of them has answered (and at
  // least min_nodes updates were accepted).
  double close_at_fraction = 1.0;
  // A round that fails (too few accepted updates) is retried after
  // retry_backoff_s, doubling each time up to 300 s, at most max_attempts
  // times in all; then the federation ends with the reason. Every attempt is
  // a charged training task at every DP site, so retries are never free.
  int max_attempts = 5;
  double retry_backoff_s = 5;
  double eval_deadline_s = 120;
  // Small-count suppression in federated evaluation: a site with fewer
  // validation cases than this reports only its count, no figures.
  int min_report = 10;
  // After min_nodes are connected, how long to wait for the remaining sites
  // before starting a round without them.
  double start_grace_s = 5;
  uint64_t seed = 1;
  uint32_t chunk_bytes = 1 << 20;
  // How updates travel ([federation] update_dtype): float32, or halved to
  // bfloat16 / float16 (see common/wire_dtype.h).
  WireDtype update_dtype = WireDtype::kFloat32;
  // Updates whose L2 norm (over every parameter) passes this are rejected.
  double max_update_norm = 1000;
  ModelSpec model;
  // [model] init: a safetensors file (resolved against the plan's folder)
  // the federation starts from instead of fresh weights (InitialWeights,
  // common/model_zoo.h); empty: fresh. The coordinator's alone: the sites get
  // the round-0 model it makes, like any other.
  std::string model_init;
  std::string model_init_as_written;  // the plan's own string (provision copies the file beside its copy of the plan)
  TrainingSettings training;
  StrategySettings strategy;
  // Refuse updates that do not come with a DP report. (Each site's own
  // node.toml sets its DP parameters and budget; this is the consortium's
  // floor.)
  bool require_dp = false;
  // Host names and IP addresses nodes use to reach the coordinator; they go
  // into its certificate.
  std::vector<std::string> coordinator_hosts;
  // host:port that nodes dial; also where the provisioned coordinator listens.
  std::string coordinator_address = "127.0.0.1:50051";
  std::vector<std::string> sites;

  bool HasSite(const std::string& site) const;
};

// Loads and checks a plan; errors name the file, line and field.
// Reports a problem with the plan: the key it is at ("strategy.name") and
// what is wrong with it.
using PlanFailure = std::function<void(const std::string& key, const std::string& problem)>;
// Checks the plan's [strategy] against the strategies there are: the
// coordinator's registry (coordinator/strategy_registry.h,
// CheckPlanStrategy), which common/ does not see.
using StrategyCheck = std::function<void(const FederationPlan& plan, const PlanFailure& fail)>;

absl::StatusOr<FederationPlan> LoadPlan(const std::string& path, const StrategyCheck& check_strategy);

// Site names become certificate CNs, folder names under kits/ and log
// fields: letters, digits, '-', '_' and '.', 1 to 64 characters, not
// starting with '.', and not a name provisioning uses itself: `ca` and
// `coordinator` in any case (a site so named would get its kit in the CA's
// folder, beside ca.key, or the coordinator's CN). nullopt when `name` can
// be a site's; else why not.
std::optional<std::string> SiteNameProblem(const std::string& name);
bool IsValidSiteName(const std::string& name);

// Largest chunk any stream may carry, and gRPC's default message limit
// (4 MiB) leaves room for the envelope.
inline constexpr uint32_t kMaxChunkBytes = 1 << 20;

}  // namespace fedrad

#endif  // FEDRAD_COMMON_PLAN_H_
