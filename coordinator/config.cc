#include "coordinator/config.h"

#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/model_zoo.h"
#include "coordinator/strategy_registry.h"

namespace fedrad::coordinator {

absl::StatusOr<CoordinatorConfig> LoadCoordinatorConfig(const std::string& path) {
  absl::StatusOr<std::unique_ptr<ConfigReader>> opened = ConfigReader::Open(path);
  if (!opened.ok()) return opened.status();
  ConfigReader& c = **opened;
  CoordinatorConfig out;
  out.path = path;
  out.plan_path = c.GetPath("plan");
  out.listen = c.GetString("listen", "0.0.0.0:50051");
  out.state_dir = c.GetPath("state_dir", "state");
  out.linger_s = c.GetDouble("linger_s", 5, 0, 3600);
  out.max_concurrent_streams = static_cast<int>(c.GetInt("max_concurrent_streams", 16, 1, 4096));
  out.upload_idle_timeout_s = c.GetDouble("upload_idle_timeout_s", 60, 1, 86400);
  out.keep_models = static_cast<int>(c.GetInt("keep_models", 0, 0, 1000000));
  const std::string ca = c.GetPath("tls.ca");
  const std::string cert = c.GetPath("tls.certificate");
  const std::string key = c.GetPath("tls.key");
  if (std::optional<std::string> problem = HostPortProblem(out.listen)) c.Fail("listen", *problem);
  absl::Status s = c.Finish();
  if (!s.ok()) return s;

  absl::StatusOr<TlsIdentity> tls = LoadTlsIdentity(path, ca, cert, key);
  if (!tls.ok()) return tls.status();
  out.tls = std::move(*tls);

  absl::StatusOr<FederationPlan> plan = LoadPlan(out.plan_path, CheckPlanStrategy);
  if (!plan.ok()) return plan.status();
  s = CheckModelSpec(plan->model);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(out.plan_path, ": [model]: ", s.message()));
  out.plan = std::move(*plan);
  return out;
}

}  // namespace fedrad::coordinator
