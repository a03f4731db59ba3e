#ifndef FEDRAD_NODE_SITE_POLICY_H_
#define FEDRAD_NODE_SITE_POLICY_H_

// [policy] of node.toml: what this site lets any coordinator ask of it. The
// plan comes from the coordinator; these limits come from the site and the
// plan cannot widen them. Torch-free.

#include <optional>
#include <string>
#include <vector>

namespace fedrad::node {

struct SitePolicy {
  // The most ε one training round may cost (the increase of the ledger's
  // total); 0: no limit of the site's own beyond epsilon_max.
  double max_round_epsilon = 0;
  // Rounds the site plans to join: with a target ε the noise spreads the
  // target over these, whatever the plan says; 0: the plan's rounds.
  int rounds = 0;
  // Networks the site trains and evaluates; empty: any the node knows.
  std::vector<std::string> architectures;
  // The largest local_epochs and the smallest batch a task may ask; 0: none.
  int max_local_epochs = 0;
  int min_batch_size = 0;
  // Federated evaluation: a release counting fewer validation patients than
  // this is not sent; the plan's min_report can raise it, never lower it.
  // 0: always sent (DP protects every patient either way; the floor is
  // about figures drowned in noise).
  int min_report = 10;
  // The most ε the site's federated evaluation releases may reach (on its
  // validation patients, who never train: the site's ε is the larger of
  // this part and training's). Default: [privacy] target_epsilon (with a
  // fixed sigma, epsilon_max); 0: no evaluation leaves.
  double evaluation_epsilon = 0;
};

// What a training task asks, as far as the policy is concerned.
struct TaskAsk {
  std::string architecture;
  int local_epochs = 0;
  int batch_size = 0;
};

// The first way `ask` goes beyond `policy`, in words that name the
// [policy] field, or nullopt if the site allows it.
std::optional<std::string> PolicyViolation(const SitePolicy& policy, const TaskAsk& ask);
// The architecture check alone (evaluation tasks ask nothing else of it).
std::optional<std::string> ArchitectureViolation(const SitePolicy& policy, const std::string& architecture);

// The floor figures need: the larger of the site's and the plan's.
int EffectiveMinReport(const SitePolicy& policy, int plan_min_report);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_SITE_POLICY_H_
