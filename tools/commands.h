#ifndef FEDRAD_TOOLS_COMMANDS_H_
#define FEDRAD_TOOLS_COMMANDS_H_

// The `fedrad` tool's subcommands, one class each: its options bound to a
// CLI11 subcommand, and its run (the exit status). tools/fedrad_main.cc only
// builds them and runs the one chosen.

#include <cstdint>
#include <string>
#include <vector>

#include "tools/partition.h"
#include "tools/provision.h"
#include "tools/synth.h"

namespace CLI {
class App;
}  // namespace CLI

namespace fedrad::tools {

class ToolCommand {
 public:
  virtual ~ToolCommand() = default;
  virtual bool chosen() const;
  // 0 done; 1 it failed (or, for audits, problems were found); 2 the
  // command line or an input file is wrong.
  virtual int Run() = 0;

 protected:
  CLI::App* command_ = nullptr;
};

// `fedrad provision`: the CA, the coordinator's kit and one kit per site.
class ProvisionCommand final : public ToolCommand {
 public:
  explicit ProvisionCommand(CLI::App* app);
  int Run() override;

 private:
  ProvisionOptions options_;
};

// `fedrad add-site`: one more site's kit from an existing CA.
class AddSiteCommand final : public ToolCommand {
 public:
  explicit AddSiteCommand(CLI::App* app);
  int Run() override;

 private:
  std::string kits_, ca_dir_, site_, address_ = "127.0.0.1:50051", data_root_;
  int validity_days_ = 825;
};

// `fedrad synth`: a synthetic multi-site CT cohort as DICOM.
class SynthCommand final : public ToolCommand {
 public:
  explicit SynthCommand(CLI::App* app);
  int Run() override;

 private:
  SynthOptions options_;
};

// `fedrad import`: IDX files, PNG folders or images with masks into DICOM
// Secondary Capture.
class ImportCommand final : public ToolCommand {
 public:
  explicit ImportCommand(CLI::App* app);
  int Run() override;

 private:
  std::string idx_images_, idx_labels_, png_dir_, images_, masks_, out_;
  size_t limit_ = 0;
};

// `fedrad partition`: a labelled set split across sites, patients whole.
class PartitionCommand final : public ToolCommand {
 public:
  explicit PartitionCommand(CLI::App* app);
  int Run() override;

 private:
  PartitionOptions options_;
};

// `fedrad dp epsilon` and `fedrad dp noise`: the RDP accountant.
class DpCommand final : public ToolCommand {
 public:
  explicit DpCommand(CLI::App* app);
  bool chosen() const override;
  int Run() override;

 private:
  CLI::App* epsilon_ = nullptr;
  CLI::App* noise_ = nullptr;
  double noise_multiplier_ = 0, rate_ = 0, delta_ = 1e-5, target_epsilon_ = 0;
  int64_t steps_ = 0;
  bool json_ = false;
};

// `fedrad audit verify` and `fedrad audit report`, from the ledgers alone;
// `fedrad audit empirical` says where it moved.
class AuditCommand final : public ToolCommand {
 public:
  explicit AuditCommand(CLI::App* app);
  bool chosen() const override;
  int Run() override;

 private:
  CLI::App* verify_ = nullptr;
  CLI::App* report_ = nullptr;
  CLI::App* empirical_ = nullptr;
  std::vector<std::string> nodes_;
  std::string coordinator_, ca_, html_ = "audit-report.html", json_;
};

}  // namespace fedrad::tools

#endif  // FEDRAD_TOOLS_COMMANDS_H_
