// `fedrad`: tooling around a federation — provisioning, synthetic data.
#include <iostream>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/logging.h"
#include "common/privacy_accountant.h"
#include "tools/audit.h"
#include "tools/import.h"
#include "tools/partition.h"
#include "tools/provision.h"
#include "tools/synth.h"

int main(int argc, char** argv) {
  CLI::App app{"fedrad: tools for a fedrad federation (provisioning, synthetic data, privacy audits)"};
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "More log output");

  fedrad::tools::ProvisionOptions prov;
  CLI::App* provision = app.add_subcommand(
      "provision", "Create a federation CA, the coordinator's certificate and one certificate + node.toml per site");
  provision->add_option("--plan", prov.plan_path, "Federation plan (TOML)")->required()->check(CLI::ExistingFile);
  provision->add_option("--out", prov.out_dir, "Folder for the kits (created)")->required();
  provision->add_option("--data-root", prov.data_root,
                        "Folder with one data folder per site, written into each node.toml");
  provision->add_option("--validity-days", prov.validity_days, "Certificate lifetime")->check(CLI::Range(1, 3650));
  provision->add_flag("--force", prov.force, "Replace an existing CA in --out (a new federation)");

  std::string kits, site, address = "127.0.0.1:50051", data_root;
  int site_days = 825;
  CLI::App* add_site =
      app.add_subcommand("add-site", "Issue a certificate and node.toml for one more site from an existing CA");
  add_site->add_option("--kits", kits, "Kits folder made by `fedrad provision`")
      ->required()
      ->check(CLI::ExistingDirectory);
  add_site->add_option("--name", site, "Site name (the certificate's CN)")->required();
  add_site->add_option("--address", address, "host:port of the coordinator")->capture_default_str();
  add_site->add_option("--data-root", data_root, "Folder with the site's data folder");
  add_site->add_option("--validity-days", site_days, "Certificate lifetime")->check(CLI::Range(1, 3650));

  fedrad::tools::SynthOptions synth;
  CLI::App* synth_cmd = app.add_subcommand(
      "synth", "Write a synthetic multi-site CT cohort as real DICOM files plus labels.csv per site");
  synth_cmd->add_option("--sites", synth.sites, "Number of sites")->capture_default_str()->check(CLI::Range(1, 100));
  synth_cmd->add_option("--seed", synth.seed, "Seed; the same seed gives the same files")->capture_default_str();
  synth_cmd->add_option("--out", synth.out_dir, "Output folder (one subfolder per site)")->required();
  synth_cmd->add_option("--patients", synth.patients_per_site, "Patients per site")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  synth_cmd->add_option("--images", synth.images_per_patient, "Images (slices) per patient")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  synth_cmd->add_option("--size", synth.image_size, "Rows and columns of each image")
      ->capture_default_str()
      ->check(CLI::Range(32, 2048));
  synth_cmd->add_option("--names", synth.site_names, "Site names (default hospital-a, hospital-b, ...)");

  std::string idx_images, idx_labels, png_dir, import_out;
  size_t import_limit = 0;
  CLI::App* import_cmd =
      app.add_subcommand("import",
                         "Convert a labelled image set (IDX files such as Fashion-MNIST, or PNG folders) into DICOM "
                         "Secondary Capture files plus labels.csv");
  import_cmd->add_option("--idx-images", idx_images, "IDX image file (.gz or plain)");
  import_cmd->add_option("--idx-labels", idx_labels, "IDX label file (.gz or plain)");
  import_cmd->add_option("--png-dir", png_dir, "Folder with one sub-folder of PNG files per class");
  import_cmd->add_option("--out", import_out, "Output folder")->required();
  import_cmd->add_option("--limit", import_limit, "Import at most this many images");

  fedrad::tools::PartitionOptions part;
  CLI::App* partition =
      app.add_subcommand("partition",
                         "Split a labelled DICOM set across N sites (patients kept whole), IID or label-skewed "
                         "with a Dirichlet(alpha) draw; prints each site's class histogram");
  partition->add_option("--data", part.data_dir, "Labelled set: DICOM files and labels.csv")->required();
  partition->add_option("--labels", part.labels_csv, "labels.csv (default DATA/labels.csv)");
  partition->add_option("--sites", part.sites, "Number of sites")->capture_default_str()->check(CLI::Range(1, 1000));
  partition->add_option("--mode", part.mode, "iid or dirichlet")->capture_default_str();
  partition->add_option("--alpha", part.alpha, "Dirichlet concentration (small: strong skew)")->capture_default_str();
  partition->add_option("--seed", part.seed, "Seed; the same seed gives the same split")->capture_default_str();
  partition->add_option("--out", part.out_dir, "Output folder: one sub-folder per site")->required();
  partition->add_option("--names", part.site_names, "Site names (default hospital-a, hospital-b, ...)");

  double dp_noise = 0, dp_rate = 0, dp_delta = 1e-5, dp_epsilon = 0;
  int64_t dp_steps = 0;
  bool dp_json = false;
  CLI::App* dp = app.add_subcommand(
      "dp", "Plan differential privacy: the RDP accountant of the Poisson-subsampled Gaussian (DP-SGD)");
  dp->require_subcommand(1);
  CLI::App* dp_eps = dp->add_subcommand(
      "epsilon", "epsilon after STEPS steps at noise multiplier and sampling rate (printed rounded up; --json: exact)");
  dp_eps->add_option("--noise", dp_noise, "Noise multiplier sigma (noise std / clipping norm)")
      ->required()
      ->check(CLI::NonNegativeNumber);
  CLI::App* dp_sigma = dp->add_subcommand(
      "noise",
      "the smallest noise multiplier that stays within (epsilon, delta) (printed rounded up, so the printed "
      "value always meets the target; --json: exact)");
  dp_sigma->add_option("--epsilon", dp_epsilon, "Target epsilon")->required()->check(CLI::PositiveNumber);
  for (CLI::App* c : {dp_eps, dp_sigma}) {
    c->add_option("--rate", dp_rate, "Sampling rate q (expected batch / dataset size)")
        ->required()
        ->check(CLI::Range(0.0, 1.0));
    c->add_option("--steps", dp_steps, "Number of steps")->required()->check(CLI::PositiveNumber);
    c->add_option("--delta", dp_delta, "delta")->capture_default_str()->check(CLI::Range(1e-300, 0.999));
    c->add_flag("--json", dp_json, "Print a JSON object with every figure at full precision");
  }

  std::vector<std::string> audit_nodes;
  std::string audit_coordinator, audit_ca, audit_html = "audit-report.html", audit_json;
  CLI::App* audit = app.add_subcommand(
      "audit", "Check what left each site and under which privacy parameters, from the signed ledgers alone");
  audit->require_subcommand(1);
  CLI::App* audit_verify = audit->add_subcommand(
      "verify",
      "Recompute every ledger's hash chain and signatures and cross-check node ledgers against the "
      "coordinator's; exit status 0 = pass, 1 = problems found (each named by file, position and kind)");
  CLI::App* audit_report =
      audit->add_subcommand("report",
                            "Write a self-contained HTML report (and JSON) of epsilon spent per site over rounds, DP "
                            "parameters, data accesses, updates sent, models received and the verification result");
  for (CLI::App* c : {audit_verify, audit_report}) {
    c->add_option("--node", audit_nodes, "A site's node.db (state_dir/node.db); repeat for several sites")
        ->check(CLI::ExistingFile);
    c->add_option("--coordinator", audit_coordinator, "The coordinator's state.db")->check(CLI::ExistingFile);
    c->add_option("--ca", audit_ca,
                  "The federation's CA certificate (ca.pem from any kit), which every ledger's "
                  "writer certificate must come from")
        ->required()
        ->check(CLI::ExistingFile);
  }
  audit_report->add_option("--out", audit_html, "HTML report to write")->capture_default_str();
  audit_report->add_option("--json", audit_json, "Also write the report's facts as JSON here");

  // It trains on the site's data with LibTorch: the node's command now.
  CLI::App* audit_empirical = audit->add_subcommand(
      "empirical", "Moved: run `fedrad-node audit empirical --config node.toml` on the site's node");
  audit_empirical->allow_extras();

  CLI11_PARSE(app, argc, argv);
  if (*audit_empirical) {
    std::cerr << "`fedrad audit empirical` moved to the node, where the data and LibTorch are: run `fedrad-node "
                 "audit empirical` with the same options (e.g. fedrad-node audit empirical --config node.toml)\n";
    return 2;
  }
  if (*audit_verify || *audit_report) {
    fedrad::InitProgram("fedrad", verbose);
    if (audit_nodes.empty() && audit_coordinator.empty()) {
      std::cerr << "audit: give at least one --node NODE_DB or --coordinator STATE_DB\n";
      return 2;
    }
    absl::StatusOr<std::string> ca = fedrad::ReadFile(audit_ca, 1 << 20);
    if (!ca.ok()) {
      std::cerr << ca.status().message() << "\n";
      return 2;
    }
    absl::StatusOr<fedrad::tools::AuditVerification> v =
        fedrad::tools::VerifyAudit(audit_nodes, audit_coordinator, *ca);
    if (!v.ok()) {
      std::cerr << v.status().message() << "\n";
      return 2;
    }
    std::cout << fedrad::tools::FormatVerification(*v);
    if (*audit_report) {
      absl::Status s = fedrad::WriteFileAtomically(audit_html, fedrad::tools::AuditReportHtml(*v));
      if (s.ok() && !audit_json.empty()) {
        s = fedrad::WriteFileAtomically(audit_json, fedrad::tools::AuditReportJson(*v));
      }
      if (!s.ok()) {
        std::cerr << s.message() << "\n";
        return 2;
      }
      std::cout << "report written to " << audit_html << (audit_json.empty() ? "" : " and " + audit_json) << "\n";
    }
    return v->ok() ? 0 : 1;
  }
  if (*dp_eps) {
    fedrad::Epsilon e = fedrad::EpsilonFor(dp_noise, dp_rate, dp_steps, dp_delta);
    if (dp_json) {
      std::cout << nlohmann::json{{"epsilon", e.epsilon},     {"delta", dp_delta}, {"noise_multiplier", dp_noise},
                                  {"sampling_rate", dp_rate}, {"steps", dp_steps}, {"rdp_order", e.order}}
                       .dump()
                << "\n";
      return 0;
    }
    std::cout << "epsilon = " << fedrad::FormatRoundedUp(e.epsilon)
              << absl::StrFormat(" (rounded up; delta = %g, best RDP order %g)\n", dp_delta, e.order);
    return 0;
  }
  if (*dp_sigma) {
    absl::StatusOr<double> sigma = fedrad::NoiseMultiplierFor(dp_epsilon, dp_delta, dp_rate, dp_steps);
    if (!sigma.ok()) {
      std::cerr << sigma.status().message() << "\n";
      return 1;
    }
    fedrad::Epsilon e = fedrad::EpsilonFor(*sigma, dp_rate, dp_steps, dp_delta);
    if (dp_json) {
      std::cout << nlohmann::json{{"noise_multiplier", *sigma},   {"epsilon", e.epsilon},
                                  {"target_epsilon", dp_epsilon}, {"delta", dp_delta},
                                  {"sampling_rate", dp_rate},     {"steps", dp_steps},
                                  {"rdp_order", e.order}}
                       .dump()
                << "\n";
      return 0;
    }
    // The printed σ is rounded up: running with it spends at most the target.
    std::cout << "noise multiplier = " << fedrad::FormatRoundedUp(*sigma)
              << absl::StrFormat(" (rounded up; epsilon = %s at delta = %g, best RDP order %g)\n",
                                 fedrad::FormatRoundedUp(e.epsilon), dp_delta, e.order);
    return 0;
  }
  fedrad::InitProgram("fedrad", verbose);

  absl::Status status;
  if (*provision) {
    status = fedrad::tools::Provision(prov);
  } else if (*add_site) {
    status = fedrad::tools::ProvisionSite(kits, site, address, data_root, site_days);
    if (status.ok()) spdlog::info("issued a certificate for site '{}' in {}/{}; add it to the plan", site, kits, site);
  } else if (*synth_cmd) {
    status = fedrad::tools::WriteSyntheticCohort(synth);
  } else if (*import_cmd) {
    absl::StatusOr<fedrad::tools::LabelledImages> images;
    if (!idx_images.empty() && !idx_labels.empty() && png_dir.empty()) {
      images = fedrad::tools::ReadIdx(idx_images, idx_labels, import_limit);
    } else if (!png_dir.empty() && idx_images.empty() && idx_labels.empty()) {
      images = fedrad::tools::ReadPngFolders(png_dir, import_limit);
    } else {
      images = absl::InvalidArgumentError("import needs either --idx-images and --idx-labels, or --png-dir");
    }
    status = images.status();
    // UIDs derive from the source, so re-importing the same data gives the same files.
    if (status.ok()) status = fedrad::tools::WriteAsDicom(*images, import_out, png_dir.empty() ? idx_images : png_dir);
    if (status.ok()) {
      spdlog::info("imported {} images ({}x{}) into {} (DICOM Secondary Capture + labels.csv)", images->count(),
                   images->rows, images->columns, import_out);
    }
  } else if (*partition) {
    absl::StatusOr<fedrad::tools::PartitionResult> result = fedrad::tools::Partition(part);
    status = result.status();
    if (status.ok()) std::cout << fedrad::tools::FormatHistogram(*result);
  }
  if (!status.ok()) {
    spdlog::error("{}", std::string(status.message()));
    return 1;
  }
  return 0;
}
