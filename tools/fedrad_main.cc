// `fedrad`: tooling around a federation — provisioning, synthetic data.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "common/logging.h"
#include "tools/provision.h"
#include "tools/synth.h"

int main(int argc, char** argv) {
  CLI::App app{"fedrad: tools for a fedrad federation (provisioning, synthetic data)"};
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "More log output");

  fedrad::tools::ProvisionOptions prov;
  CLI::App* provision = app.add_subcommand(
      "provision",
      "Create a federation CA, the coordinator's certificate and one certificate + node.toml per site");
  provision->add_option("--plan", prov.plan_path, "Federation plan (TOML)")->required()->check(CLI::ExistingFile);
  provision->add_option("--out", prov.out_dir, "Folder for the kits (created)")->required();
  provision->add_option("--data-root", prov.data_root,
                        "Folder with one data folder per site, written into each node.toml");
  provision->add_option("--validity-days", prov.validity_days, "Certificate lifetime")
      ->check(CLI::Range(1, 3650));
  provision->add_flag("--force", prov.force, "Replace an existing CA in --out (a new federation)");

  std::string kits, site, address = "127.0.0.1:50051", data_root;
  int site_days = 825;
  CLI::App* add_site = app.add_subcommand(
      "add-site", "Issue a certificate and node.toml for one more site from an existing CA");
  add_site->add_option("--kits", kits, "Kits folder made by `fedrad provision`")->required()->check(CLI::ExistingDirectory);
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
  synth_cmd->add_option("--patients", synth.patients_per_site, "Patients per site")->capture_default_str()->check(CLI::Range(1, 100000));
  synth_cmd->add_option("--images", synth.images_per_patient, "Images (slices) per patient")->capture_default_str()->check(CLI::Range(1, 1000));
  synth_cmd->add_option("--size", synth.image_size, "Rows and columns of each image")->capture_default_str()->check(CLI::Range(32, 2048));
  synth_cmd->add_option("--names", synth.site_names, "Site names (default hospital-a, hospital-b, ...)");

  CLI11_PARSE(app, argc, argv);
  fedrad::InitLogging("fedrad", verbose);

  absl::Status status;
  if (*provision) {
    status = fedrad::tools::Provision(prov);
  } else if (*add_site) {
    status = fedrad::tools::ProvisionSite(kits, site, address, data_root, site_days);
    if (status.ok()) spdlog::info("issued a certificate for site '{}' in {}/{}; add it to the plan", site, kits, site);
  } else if (*synth_cmd) {
    status = fedrad::tools::WriteSyntheticCohort(synth);
  }
  if (!status.ok()) {
    spdlog::error("{}", std::string(status.message()));
    return 1;
  }
  return 0;
}
