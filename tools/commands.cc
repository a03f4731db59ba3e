#include "tools/commands.h"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/privacy_accountant.h"
#include "tools/audit.h"
#include "tools/import.h"

namespace fedrad::tools {
namespace {

int Fail(const absl::Status& s, int code) {
  spdlog::error("{}", std::string(s.message()));
  return code;
}

}  // namespace

bool ToolCommand::chosen() const { return command_->parsed(); }

ProvisionCommand::ProvisionCommand(CLI::App* app) {
  command_ = app->add_subcommand(
      "provision", "Create a federation CA, the coordinator's certificate and one certificate + node.toml per site");
  command_->add_option("--plan", options_.plan_path, "Federation plan (TOML)")->required()->check(CLI::ExistingFile);
  command_->add_option("--out", options_.out_dir, "Folder for the kits to hand out (created)")->required();
  command_->add_option("--ca-dir", options_.ca_dir,
                       "Folder for the federation CA (ca.key, ca.pem); never inside --out. Default: OUT-ca");
  command_->add_option("--data-root", options_.data_root,
                       "Folder with one data folder per site, written into each node.toml");
  command_->add_option("--validity-days", options_.validity_days, "Certificate lifetime")->check(CLI::Range(1, 3650));
  command_->add_flag("--force", options_.force, "Replace an existing CA (a new federation)");
}

int ProvisionCommand::Run() {
  absl::Status s = Provision(options_);
  return s.ok() ? 0 : Fail(s, 1);
}

AddSiteCommand::AddSiteCommand(CLI::App* app) {
  command_ = app->add_subcommand("add-site", "Issue a certificate and node.toml for one more site from an existing CA");
  command_->add_option("--kits", kits_, "Kits folder made by `fedrad provision`")
      ->required()
      ->check(CLI::ExistingDirectory);
  command_->add_option("--ca-dir", ca_dir_, "The federation CA's folder (default: KITS-ca)");
  command_->add_option("--name", site_, "Site name (the certificate's CN)")->required();
  command_->add_option("--address", address_, "host:port of the coordinator")->capture_default_str();
  command_->add_option("--data-root", data_root_, "Folder with the site's data folder");
  command_->add_option("--validity-days", validity_days_, "Certificate lifetime")->check(CLI::Range(1, 3650));
}

int AddSiteCommand::Run() {
  absl::Status s = ProvisionSite(kits_, ca_dir_, site_, address_, data_root_, validity_days_);
  if (!s.ok()) return Fail(s, 1);
  spdlog::info("issued a certificate for site '{}' in {}/{}; add it to the plan", site_, kits_, site_);
  return 0;
}

SynthCommand::SynthCommand(CLI::App* app) {
  command_ = app->add_subcommand("synth",
                                 "Write a synthetic multi-site CT cohort as real DICOM files plus labels.csv per site");
  command_->add_option("--sites", options_.sites, "Number of sites")->capture_default_str()->check(CLI::Range(1, 100));
  command_->add_option("--seed", options_.seed, "Seed; the same seed gives the same files")->capture_default_str();
  command_->add_option("--out", options_.out_dir, "Output folder (one subfolder per site)")->required();
  command_->add_option("--patients", options_.patients_per_site, "Patients per site")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  command_->add_option("--images", options_.images_per_patient, "Images (slices) per patient")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  command_->add_option("--size", options_.image_size, "Rows and columns of each image")
      ->capture_default_str()
      ->check(CLI::Range(32, 2048));
  command_->add_option("--names", options_.site_names, "Site names (default hospital-a, hospital-b, ...)");
  command_
      ->add_option("--task", options_.task,
                   "classification: labels.csv says which slices show a lesion; segmentation: each patient's "
                   "series also gets its lesion masks as a DICOM SEG object (seg.dcm beside its slices); "
                   "multilabel: labels.csv has a 0/1 column per finding (lesion, effusion, clip), for a plan "
                   "with task = \"multilabel\", num_classes = 3 and those class_names")
      ->capture_default_str()
      ->check(CLI::IsMember({"classification", "segmentation", "multilabel"}));
  command_->add_flag("--rtstruct", options_.rtstruct,
                     "With --task segmentation: the ground truth also as an RT Structure Set (rtstruct.dcm)");
}

int SynthCommand::Run() {
  absl::Status s = WriteSyntheticCohort(options_);
  return s.ok() ? 0 : Fail(s, 1);
}

ImportCommand::ImportCommand(CLI::App* app) {
  command_ = app->add_subcommand(
      "import",
      "Convert a labelled image set (IDX files such as Fashion-MNIST, PNG folders, or images with segmentation "
      "masks) into DICOM Secondary Capture files plus labels.csv");
  command_->add_option("--idx-images", idx_images_, "IDX image file (.gz or plain)");
  command_->add_option("--idx-labels", idx_labels_, "IDX label file (.gz or plain)");
  command_->add_option("--png-dir", png_dir_, "Folder with one sub-folder of PNG files per class");
  command_->add_option("--images", images_,
                       "Segmentation: folder of PNG or JPEG images, each with its mask in --masks (train with "
                       "task = \"segmentation\"; labels.csv is then headed path,mask)");
  command_->add_option("--masks", masks_,
                       "Segmentation: folder of PNG masks named as the images (<stem>.png), each the image's size: "
                       "0/255 for one class, else class indices");
  command_->add_option("--out", out_, "Output folder")->required();
  command_->add_option("--limit", limit_, "Import at most this many images");
}

int ImportCommand::Run() {
  const bool segmentation = !images_.empty() || !masks_.empty();
  if (segmentation) {
    if (images_.empty() || masks_.empty() || !idx_images_.empty() || !idx_labels_.empty() || !png_dir_.empty()) {
      return Fail(absl::InvalidArgumentError("a segmentation import needs --images and --masks, and nothing else"), 1);
    }
    absl::StatusOr<SegmentationImport> imported = ImportSegmentation(images_, masks_, out_, images_, limit_);
    if (!imported.ok()) return Fail(imported.status(), 1);
    spdlog::info(
        "imported {} images with their masks into {} (DICOM Secondary Capture, masks as class-index PNGs, "
        "labels.csv headed path,mask); {} show a class above 0; classes 0..{}: train with task = \"segmentation\" "
        "and num_classes = {}",
        imported->images, out_, imported->with_foreground, imported->classes - 1, imported->classes);
    return 0;
  }
  absl::StatusOr<LabelledImages> images;
  if (!idx_images_.empty() && !idx_labels_.empty() && png_dir_.empty()) {
    images = ReadIdx(idx_images_, idx_labels_, limit_);
  } else if (!png_dir_.empty() && idx_images_.empty() && idx_labels_.empty()) {
    images = ReadPngFolders(png_dir_, limit_);
  } else {
    images = absl::InvalidArgumentError(
        "import needs --idx-images and --idx-labels, or --png-dir, or (segmentation) --images and --masks");
  }
  if (!images.ok()) return Fail(images.status(), 1);
  // UIDs derive from the source, so re-importing the same data gives the same files.
  absl::Status s = WriteAsDicom(*images, out_, png_dir_.empty() ? idx_images_ : png_dir_);
  if (!s.ok()) return Fail(s, 1);
  spdlog::info("imported {} images ({}x{}) into {} (DICOM Secondary Capture + labels.csv)", images->count(),
               images->rows, images->columns, out_);
  return 0;
}

PartitionCommand::PartitionCommand(CLI::App* app) {
  command_ = app->add_subcommand("partition",
                                 "Split a labelled DICOM set across N sites (patients kept whole), IID or label-skewed "
                                 "with a Dirichlet(alpha) draw; prints each site's class histogram");
  command_->add_option("--data", options_.data_dir, "Labelled set: DICOM files and labels.csv")->required();
  command_->add_option("--labels", options_.labels_csv, "labels.csv (default DATA/labels.csv)");
  command_->add_option("--sites", options_.sites, "Number of sites")->capture_default_str()->check(CLI::Range(1, 1000));
  command_->add_option("--mode", options_.mode, "iid or dirichlet")->capture_default_str();
  command_->add_option("--alpha", options_.alpha, "Dirichlet concentration (small: strong skew)")
      ->capture_default_str();
  command_->add_option("--seed", options_.seed, "Seed; the same seed gives the same split")->capture_default_str();
  command_->add_option("--out", options_.out_dir, "Output folder: one sub-folder per site")->required();
  command_->add_option("--names", options_.site_names, "Site names (default hospital-a, hospital-b, ...)");
}

int PartitionCommand::Run() {
  absl::StatusOr<PartitionResult> result = Partition(options_);
  if (!result.ok()) return Fail(result.status(), 1);
  std::cout << FormatHistogram(*result);
  return 0;
}

DpCommand::DpCommand(CLI::App* app) {
  command_ = app->add_subcommand(
      "dp", "Plan differential privacy: the RDP accountant of the Poisson-subsampled Gaussian (DP-SGD)");
  command_->require_subcommand(1);
  epsilon_ = command_->add_subcommand(
      "epsilon", "epsilon after STEPS steps at noise multiplier and sampling rate (printed rounded up; --json: exact)");
  epsilon_->add_option("--noise", noise_multiplier_, "Noise multiplier sigma (noise std / clipping norm)")
      ->required()
      ->check(CLI::NonNegativeNumber);
  noise_ = command_->add_subcommand(
      "noise",
      "the smallest noise multiplier that stays within (epsilon, delta) (printed rounded up, so the printed "
      "value always meets the target; --json: exact)");
  noise_->add_option("--epsilon", target_epsilon_, "Target epsilon")->required()->check(CLI::PositiveNumber);
  for (CLI::App* c : {epsilon_, noise_}) {
    c->add_option("--rate", rate_, "Sampling rate q (expected batch / dataset size)")
        ->required()
        ->check(CLI::Range(0.0, 1.0));
    c->add_option("--steps", steps_, "Number of steps")->required()->check(CLI::PositiveNumber);
    c->add_option("--delta", delta_, "delta")->capture_default_str()->check(CLI::Range(1e-300, 0.999));
    c->add_flag("--json", json_, "Print a JSON object with every figure at full precision");
  }
}

bool DpCommand::chosen() const { return epsilon_->parsed() || noise_->parsed(); }

int DpCommand::Run() {
  if (epsilon_->parsed()) {
    Epsilon e = EpsilonFor(noise_multiplier_, rate_, steps_, delta_);
    if (json_) {
      std::cout << nlohmann::json{{"epsilon", e.epsilon},   {"delta", delta_}, {"noise_multiplier", noise_multiplier_},
                                  {"sampling_rate", rate_}, {"steps", steps_}, {"rdp_order", e.order}}
                       .dump()
                << "\n";
      return 0;
    }
    std::cout << "epsilon = " << FormatRoundedUp(e.epsilon)
              << absl::StrFormat(" (rounded up; delta = %g, best RDP order %g)\n", delta_, e.order);
    return 0;
  }
  absl::StatusOr<double> sigma = NoiseMultiplierFor(target_epsilon_, delta_, rate_, steps_);
  if (!sigma.ok()) {
    std::cerr << sigma.status().message() << "\n";
    return 1;
  }
  Epsilon e = EpsilonFor(*sigma, rate_, steps_, delta_);
  if (json_) {
    std::cout << nlohmann::json{{"noise_multiplier", *sigma},
                                {"epsilon", e.epsilon},
                                {"target_epsilon", target_epsilon_},
                                {"delta", delta_},
                                {"sampling_rate", rate_},
                                {"steps", steps_},
                                {"rdp_order", e.order}}
                     .dump()
              << "\n";
    return 0;
  }
  // The printed σ is rounded up: running with it spends at most the target.
  std::cout << "noise multiplier = " << FormatRoundedUp(*sigma)
            << absl::StrFormat(" (rounded up; epsilon = %s at delta = %g, best RDP order %g)\n",
                               FormatRoundedUp(e.epsilon), delta_, e.order);
  return 0;
}

AuditCommand::AuditCommand(CLI::App* app) {
  command_ = app->add_subcommand(
      "audit", "Check what left each site and under which privacy parameters, from the signed ledgers alone");
  command_->require_subcommand(1);
  verify_ = command_->add_subcommand(
      "verify",
      "Recompute every ledger's hash chain and signatures and cross-check node ledgers against the "
      "coordinator's; exit status 0 = pass, 1 = problems found (each named by file, position and kind)");
  report_ = command_->add_subcommand("report",
                                     "Write a self-contained HTML report (and JSON) of epsilon spent per site over "
                                     "rounds, DP parameters, data accesses, updates sent, models received and the "
                                     "verification result");
  for (CLI::App* c : {verify_, report_}) {
    c->add_option("--node", nodes_, "A site's node.db (state_dir/node.db); repeat for several sites")
        ->check(CLI::ExistingFile);
    c->add_option("--coordinator", coordinator_, "The coordinator's state.db")->check(CLI::ExistingFile);
    c->add_option("--ca", ca_,
                  "The federation's CA certificate (ca.pem from any kit), which every ledger's "
                  "writer certificate must come from")
        ->required()
        ->check(CLI::ExistingFile);
  }
  report_->add_option("--out", html_, "HTML report to write")->capture_default_str();
  report_->add_option("--json", json_, "Also write the report's facts as JSON here");
  // It trains on the site's data with LibTorch: the node's command now.
  empirical_ = command_->add_subcommand(
      "empirical", "Moved: run `fedrad-node audit empirical --config node.toml` on the site's node");
  empirical_->allow_extras();
}

bool AuditCommand::chosen() const { return verify_->parsed() || report_->parsed() || empirical_->parsed(); }

int AuditCommand::Run() {
  if (empirical_->parsed()) {
    std::cerr << "`fedrad audit empirical` moved to the node, where the data and LibTorch are: run `fedrad-node "
                 "audit empirical` with the same options (e.g. fedrad-node audit empirical --config node.toml)\n";
    return 2;
  }
  if (nodes_.empty() && coordinator_.empty()) {
    std::cerr << "audit: give at least one --node NODE_DB or --coordinator STATE_DB\n";
    return 2;
  }
  absl::StatusOr<std::string> ca = ReadFile(ca_, 1 << 20);
  if (!ca.ok()) {
    std::cerr << ca.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<AuditVerification> v = VerifyAudit(nodes_, coordinator_, *ca);
  if (!v.ok()) {
    std::cerr << v.status().message() << "\n";
    return 2;
  }
  std::cout << FormatVerification(*v);
  if (report_->parsed()) {
    absl::Status s = WriteFileAtomically(html_, AuditReportHtml(*v));
    if (s.ok() && !json_.empty()) s = WriteFileAtomically(json_, AuditReportJson(*v));
    if (!s.ok()) {
      std::cerr << s.message() << "\n";
      return 2;
    }
    std::cout << "report written to " << html_ << (json_.empty() ? "" : " and " + json_) << "\n";
  }
  return v->ok() ? 0 : 1;
}

}  // namespace fedrad::tools
