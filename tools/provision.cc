#include "tools/provision.h"

#include <filesystem>

#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/model_zoo.h"
#include "common/plan.h"
#include "coordinator/strategy_registry.h"
#include "crypto/pki.h"

namespace fedrad::tools {
namespace {

namespace fs = std::filesystem;

bool LooksLikeIp(const std::string& host) {
  return !host.empty() && host.find_first_not_of("0123456789.") == std::string::npos;
}

std::string NodeToml(const std::string& site, const std::string& address, const std::string& data_root) {
  const std::string data =
      data_root.empty() ? std::string("/path/to/dicom") : (fs::absolute(data_root) / site).lexically_normal().string();
  return absl::StrCat(
      "# fedrad node configuration for site \"", site, "\".\n",
      "# Paths are relative to this file unless absolute.\n\n", "[coordinator]\n",
      "# Where the consortium's coordinator listens. The node always dials out.\n", "address = \"", address, "\"\n\n",
      "[tls]\n", "# The site's identity is the common name of this certificate.\n", "ca = \"ca.pem\"\n",
      "certificate = \"site.pem\"\n", "key = \"site.key\"\n\n", "[data]\n",
      "# Folder of DICOM files and the label file (header \"path,label\"; paths\n",
      "# relative to dicom_dir). Nothing from here ever leaves this machine.\n", "dicom_dir = \"", data, "\"\n",
      "labels = \"", data, "/labels.csv\"\n",
      "# If labels.csv names classes instead of numbering them: the names, in class order.\n",
      "# class_names = [\"normal\", \"lesion\"]\n",
      "# Share of patients held out for validation (split by patient, never by image).\n",
      "validation_fraction = 0.2\n", "split_seed = 42\n\n", "[preprocess]\n",
      "# Applied in order: window -> resize -> denoise -> CLAHE -> normalize.\n",
      "# window: \"explicit\" (center/width in modality units, e.g. HU), \"file\" (the\n",
      "# file's own VOI), or a CT preset: lung, mediastinum, bone, brain, soft-tissue, liver.\n",
      "window = \"explicit\"\n", "window_center = 40\n", "window_width = 400\n",
      "# resize to the model's input: \"pad\" (keep aspect, pad) or \"crop\" (centre square).\n", "resize = \"pad\"\n",
      "# denoise: \"none\", \"median\" or \"gaussian\" (denoise_size: odd kernel size).\n", "denoise = \"none\"\n",
      "denoise_size = 3\n", "# Contrast-limited adaptive histogram equalisation.\n", "clahe = false\n",
      "clahe_clip = 2.0\n", "clahe_tiles = 8\n",
      "# normalize: \"none\" (keep [0, 1]), \"zscore\" (per image) or \"fixed\" (mean/std).\n",
      "normalize = \"none\"\n", "# Colour images (RGB, YBR) become luminance; false skips them instead.\n",
      "color_to_gray = true\n\n", "[privacy]\n",
      "# Differential privacy of every update this node sends (DP-SGD). The budget\n",
      "# is this site's own, over everything in its ledger (state_dir/node.db);\n",
      "# a round that would pass epsilon_max is declined before the data is read.\n", "enabled = true\n",
      "# Privacy unit: \"patient\" (DICOM PatientID; all of a patient's images together) or \"image\".\n",
      "unit = \"patient\"\n", "epsilon_max = 3.0\n", "delta = 1e-5\n", "# Per-unit gradient clipping norm C.\n",
      "clip_norm = 0.1\n", "# Either a total epsilon to reach at the federation's last round (the noise\n",
      "# is then chosen each round; retried rounds are paid from the margin up to\n",
      "# epsilon_max), or a fixed noise multiplier sigma per step.\n", "target_epsilon = 2.7\n",
      "# noise_multiplier = 1.1\n\n", "[policy]\n",
      "# What this site lets any coordinator ask of it; the plan cannot widen these.\n",
      "# A task beyond them is declined before the data is read, with the reason\n",
      "# in this node's ledger and the coordinator's log. Commented out: no limit.\n",
      "# The most epsilon one training round may cost.\n", "# max_round_epsilon = 0.5\n",
      "# Rounds this site plans to join: target_epsilon is spread over them,\n",
      "# whatever the plan says (default: the plan's rounds).\n", "# rounds = 20\n",
      "# Networks this site trains and evaluates.\n", "# architectures = [\"ctnet\"]\n",
      "# The largest local_epochs and the smallest batch a task may ask.\n", "# max_local_epochs = 10\n",
      "# min_batch_size = 16\n", "# Federated evaluation: fewer validation patients and no figure leaves\n",
      "# (the plan's min_report can raise this, never lower it).\n", "min_report = 10\n\n", "[node]\n",
      "# Local state: node.db and received models.\n", "state_dir = \"state\"\n",
      "# LibTorch threads and DICOM decoding threads; 0 uses every core.\n", "threads = 0\n", "loader_threads = 0\n",
      "# Keep preprocessed images in state_dir/cache (keyed by file content and pipeline).\n", "cache = true\n",
      "# Longest wait between reconnection attempts while the coordinator is away.\n", "max_backoff_s = 10\n",
      "# \"torch\" trains on the data; \"noop\" reads no data and sends the model back\n",
      "# nearly unchanged, to measure round overhead (benchmarks only).\n", "trainer = \"torch\"\n");
}

std::string CoordinatorToml(const std::string& listen) {
  return absl::StrCat(
      "# fedrad coordinator configuration. Paths are relative to this file.\n\n", "plan = \"federation.toml\"\n",
      "# Address and port to listen on (mutual TLS only; there is no plaintext mode).\n", "listen = \"", listen, "\"\n",
      "# state.db (SQLite) and models/ live here; keep it on durable storage.\n", "state_dir = \"state\"\n",
      "# Seconds to keep serving after the last round so nodes receive Stop.\n", "linger_s = 5\n",
      "# Model downloads, and update uploads, served at once; more wait their turn\n",
      "# (memory stays about this many chunks however many nodes are connected).\n", "max_concurrent_streams = 16\n",
      "# Seconds an upload under way may bring nothing before it is cut off and\n",
      "# rejected (a stalled node; the round then closes with the others).\n", "upload_idle_timeout_s = 60\n",
      "# Model files kept in state/models: 0 keeps every round's; K keeps the newest\n",
      "# K (a 1 GiB model otherwise takes 1 GiB of disk a round).\n", "keep_models = 0\n\n", "[tls]\n",
      "ca = \"ca.pem\"\n", "certificate = \"coordinator.pem\"\n", "key = \"coordinator.key\"\n");
}

absl::Status WriteKit(const std::string& dir, const std::string& ca_pem, const crypto::IssuedCertificate& cert,
                      const std::string& cert_name, const std::string& key_name) {
  absl::Status s = EnsureDirectory(dir);
  if (!s.ok()) return s;
  s = WriteFileAtomically(dir + "/ca.pem", ca_pem, 0644);
  if (s.ok()) s = WriteFileAtomically(dir + "/" + cert_name, cert.certificate_pem, 0644);
  if (s.ok()) s = WriteFileAtomically(dir + "/" + key_name, cert.private_key_pem, 0600);
  return s;
}

// A CA folder inside the kits folder would go out with the kits.
absl::Status CheckOutside(const std::string& ca_dir, const std::string& kits_dir) {
  std::error_code ec;
  const fs::path ca = fs::weakly_canonical(fs::absolute(ca_dir, ec), ec);
  const fs::path kits = fs::weakly_canonical(fs::absolute(kits_dir, ec), ec);
  const fs::path relative = ca.lexically_relative(kits);  // "." for the same folder
  if (!relative.empty() && *relative.begin() != "..") {
    return absl::InvalidArgumentError(absl::StrCat("the CA's folder '", ca_dir, "' is inside the kits folder '",
                                                   kits_dir, "', whose folders are handed out; choose one outside it"));
  }
  return absl::OkStatus();
}

absl::Status IssueSiteKit(const crypto::CertificateAuthority& ca, const std::string& kits_dir, const std::string& site,
                          const std::string& address, const std::string& data_root, int validity_days) {
  absl::StatusOr<crypto::IssuedCertificate> cert =
      ca.Issue({site, crypto::CertificateRequest::Usage::kClient, {}, {}, validity_days});
  if (!cert.ok()) return cert.status();
  const std::string dir = kits_dir + "/" + site;
  absl::Status s = WriteKit(dir, ca.certificate_pem(), *cert, "site.pem", "site.key");
  if (s.ok()) s = WriteFileAtomically(dir + "/node.toml", NodeToml(site, address, data_root));
  return s;
}

}  // namespace

std::string DefaultCaDir(const std::string& out_dir) {
  std::string trimmed = out_dir;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  return trimmed + "-ca";
}

absl::Status Provision(const ProvisionOptions& options) {
  absl::StatusOr<FederationPlan> plan = LoadPlan(options.plan_path, coordinator::CheckPlanStrategy);
  if (!plan.ok()) return plan.status();
  if (absl::Status spec = CheckModelSpec(plan->model); !spec.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(options.plan_path, ": [model]: ", spec.message()));
  }
  const std::string ca_dir = options.ca_dir.empty() ? DefaultCaDir(options.out_dir) : options.ca_dir;
  if (absl::Status inside = CheckOutside(ca_dir, options.out_dir); !inside.ok()) return inside;
  std::error_code ec;
  for (const std::string& held : {ca_dir + "/ca.key", options.out_dir + "/ca/ca.key"}) {
    if (fs::exists(held, ec) && !options.force) {
      return absl::AlreadyExistsError(
          absl::StrCat("'", held,
                       "' is a federation CA's key; refusing to replace it "
                       "(pass --force to start a new federation, or use `fedrad add-site` to add a site)"));
    }
  }
  absl::StatusOr<std::unique_ptr<crypto::CertificateAuthority>> ca =
      crypto::CertificateAuthority::Create(absl::StrCat(plan->name, " federation CA"), options.validity_days + 365);
  if (!ca.ok()) return ca.status();
  absl::Status s = EnsureDirectory(ca_dir);
  if (s.ok()) s = WriteFileAtomically(ca_dir + "/ca.pem", (*ca)->certificate_pem(), 0644);
  if (s.ok()) s = WriteFileAtomically(ca_dir + "/ca.key", (*ca)->private_key_pem(), 0600);
  if (!s.ok()) return s;
  // A kits folder provisioned before the CA moved out of it.
  fs::remove_all(options.out_dir + "/ca", ec);

  crypto::CertificateRequest server{
      "coordinator", crypto::CertificateRequest::Usage::kServer, {}, {}, options.validity_days};
  for (const std::string& host : plan->coordinator_hosts) {
    (LooksLikeIp(host) ? server.ip_addresses : server.dns_names).push_back(host);
  }
  absl::StatusOr<crypto::IssuedCertificate> coord = (*ca)->Issue(server);
  if (!coord.ok()) return coord.status();
  const std::string coord_dir = options.out_dir + "/coordinator";
  s = WriteKit(coord_dir, (*ca)->certificate_pem(), *coord, "coordinator.pem", "coordinator.key");
  if (!s.ok()) return s;
  absl::StatusOr<std::string> plan_text = ReadFile(options.plan_path);
  if (!plan_text.ok()) return plan_text.status();
  s = WriteFileAtomically(coord_dir + "/federation.toml", *plan_text);
  if (s.ok() && !plan->model_init.empty()) {
    // The starting weights are checked now, and go with the coordinator's
    // copy of the plan, where its relative path will be resolved.
    absl::StatusOr<InitialWeights> weights = WeightsFromFile(plan->model, plan->model_init, plan->seed);
    if (!weights.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.plan_path, ": [model] init: ", weights.status().message()));
    }
    for (const std::string& note : weights->notes) spdlog::warn("[model] init: {}", note);
    const std::filesystem::path written(plan->model_init_as_written);
    if (written.is_relative()) {
      if (!written.empty() && *written.begin() == "..") {
        return absl::InvalidArgumentError(
            absl::StrCat(options.plan_path, ": [model] init '", plan->model_init_as_written,
                         "' leaves the plan's folder: give an absolute path, or put the file beside the plan"));
      }
      const std::filesystem::path to = std::filesystem::path(coord_dir) / written;
      std::error_code ec;
      std::filesystem::create_directories(to.parent_path(), ec);
      std::filesystem::copy_file(plan->model_init, to, std::filesystem::copy_options::overwrite_existing, ec);
      if (ec)
        return absl::InternalError(
            absl::StrCat("cannot copy '", plan->model_init, "' to '", to.string(), "': ", ec.message()));
    }
  }
  if (s.ok()) s = WriteFileAtomically(coord_dir + "/coordinator.toml", CoordinatorToml(plan->coordinator_address));
  if (!s.ok()) return s;

  for (const std::string& site : plan->sites) {
    s = IssueSiteKit(**ca, options.out_dir, site, plan->coordinator_address, options.data_root, options.validity_days);
    if (!s.ok()) return s;
  }
  spdlog::info(
      "provisioned federation '{}': coordinator ({}) and {} site kit(s) in {}; the CA in {} (keep it offline: "
      "its key issues identities)",
      plan->name, absl::StrJoin(plan->coordinator_hosts, ", "), plan->sites.size(), options.out_dir, ca_dir);
  return absl::OkStatus();
}

absl::Status ProvisionSite(const std::string& kits_dir, const std::string& ca_dir_given, const std::string& site,
                           const std::string& coordinator_address, const std::string& data_root, int validity_days) {
  const std::string ca_dir = ca_dir_given.empty() ? DefaultCaDir(kits_dir) : ca_dir_given;
  if (absl::Status inside = CheckOutside(ca_dir, kits_dir); !inside.ok()) return inside;
  if (std::optional<std::string> problem = SiteNameProblem(site)) return absl::InvalidArgumentError(*problem);
  // A kit one case apart would share its folder on a case-insensitive file
  // system (and its name in every case-blind log).
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(kits_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name != site && absl::AsciiStrToLower(name) == absl::AsciiStrToLower(site)) {
      return absl::AlreadyExistsError(absl::StrCat("'", kits_dir, "' holds a kit for '", name, "'; site names are ",
                                                   "compared ignoring case, so '", site, "' would collide with it"));
    }
  }
  if (fs::exists(kits_dir + "/ca/ca.key", ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", kits_dir,
                     "/ca/ca.key' is the CA's key inside the kits folder, which is handed out: move the folder out "
                     "(mv '",
                     kits_dir, "/ca' '", ca_dir, "') and keep it offline"));
  }
  absl::StatusOr<std::string> cert = ReadFile(ca_dir + "/ca.pem");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFile(ca_dir + "/ca.key");
  if (!key.ok()) return key.status();
  absl::StatusOr<std::unique_ptr<crypto::CertificateAuthority>> ca = crypto::CertificateAuthority::Load(*cert, *key);
  if (!ca.ok()) return ca.status();
  return IssueSiteKit(**ca, kits_dir, site, coordinator_address, data_root, validity_days);
}

}  // namespace fedrad::tools
