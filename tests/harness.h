#ifndef FEDRAD_TESTS_HARNESS_H_
#define FEDRAD_TESTS_HARNESS_H_

// Helpers for integration tests that run the real fedrad binaries as
// separate processes on 127.0.0.1, with real certificates and real files.

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/sqlite.h"

namespace fedrad::testing {

// Paths of the binaries under test (set by CMake).
std::string FedradBin();
std::string NodeBin();
std::string CoordinatorBin();
std::string RogueNodeBin();  // tests/rogue_node.cc
std::string SourceDir();     // the repository

// A child process with stdout and stderr sent to `log_path`.
class Process {
 public:
  Process(std::vector<std::string> argv, std::string log_path, std::string cwd = "");
  ~Process();  // SIGKILLs the child if it is still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool Running();
  void Signal(int sig);
  // The exit code, or 128 + signal; nullopt if still running after `timeout`.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string log_path_;
};

// A fresh folder for one test, removed when the test passes.
std::string MakeWorkspace();
void RemoveWorkspaceIfPassed(const std::string& dir);

// A TCP port that was free a moment ago on 127.0.0.1.
int FreePort();

// Runs a command to completion (with a timeout) and returns its exit code;
// output goes to `log_path`.
int RunCommand(const std::vector<std::string>& argv, const std::string& log_path,
               std::chrono::milliseconds timeout = std::chrono::minutes(2));

std::string ReadText(const std::string& path);
void WriteText(const std::string& path, const std::string& text);
// Replaces the first `from` in the file at `path` with `to`; fails the
// current test (ADD_FAILURE, naming both) and changes nothing if `from` is absent.
void ReplaceInFile(const std::string& path, const std::string& from, const std::string& to);

// A provisioned federation in a workspace: plan, kits, synthetic data.
struct MiniFederation {
  std::string dir;
  int port = 0;
  std::vector<std::string> sites;

  std::string CoordinatorConfig() const { return dir + "/kits/coordinator/coordinator.toml"; }
  std::string NodeConfig(const std::string& site) const { return dir + "/kits/" + site + "/node.toml"; }
  std::string StateDb() const { return dir + "/kits/coordinator/state/state.db"; }
  // The federation's CA certificate, as in every kit (the CA's own folder,
  // with its key, is kits-ca/, outside the kits).
  std::string CaPem() const { return dir + "/kits/coordinator/ca.pem"; }
  std::string NodeDb(const std::string& site) const { return dir + "/kits/" + site + "/state/node.db"; }
};

struct MiniFederationOptions {
  int sites = 2;
  int rounds = 2;
  int min_nodes = 2;
  int local_epochs = 1;
  int patients = 8;
  int images = 3;
  double round_deadline_s = 60;
  double start_grace_s = 10;
  // DP-SGD at the nodes (the kits' default: target epsilon 3 over the plan).
  // Off where retried rounds would spend a test's budget on what it does not test.
  bool dp = true;
  std::string update_dtype = "float32";
  // Federated evaluation's small-count suppression, in the plan and in each
  // node.toml's [policy] (0: releases are always sent).
  int min_report = 10;
  // The plan's batch. Under DP q = batch / the released (noisy) unit count:
  // a batch far above any release (1000) makes q = 1 whatever the noise.
  int batch_size = 16;
  // The plan's retry policy (tests retry quickly, and as often as they need).
  int max_attempts = 20;
  double retry_backoff_s = 0.2;
  // "segmentation": a small unet2d, and `fedrad synth --task segmentation`
  // data (the sites' labels are DICOM SEG objects). "multilabel": ctnet
  // with synth's three findings (lesion, effusion, clip) as its labels.
  std::string task = "classification";
  // [model] init: starting weights, relative to the plan's folder (`dir`).
  std::string model_init;
  // More lines for the plan's [model] (e.g. freeze = [...]).
  std::string model_lines;
};

// Writes a plan, synthesizes data and provisions kits with `fedrad`.
// Fails the current test (ADD_FAILURE) and returns what it has on error.
MiniFederation SetUpFederation(const std::string& dir, const MiniFederationOptions& options);

// Switches the sites' node.toml to trainer = "noop"; a site in `seconds`
// pretends to train that long each round.
void UseNoopTrainers(const MiniFederation& f, const std::map<std::string, double>& seconds = {});

// Starts the coordinator and waits until it listens.
std::unique_ptr<Process> StartCoordinator(const MiniFederation& f, const std::string& log_name);
std::unique_ptr<Process> StartNode(const MiniFederation& f, const std::string& site);

// Runs the coordinator and one node per site until the federation finishes;
// fails the test unless every process exits 0. Returns the logs (coordinator
// first, then the sites in order).
std::vector<std::string> RunFederationToCompletion(const MiniFederation& f,
                                                   std::chrono::minutes timeout = std::chrono::minutes(3));

// Rows of a query against a database file (opened read-write, WAL).
std::vector<SqlRow> QueryDb(const std::string& path, const std::string& sql);
// Polls `sql` against the database at `path` until it returns a row: true
// then; false after `timeout`, or as soon as `watched` (if given) has exited,
// with a failure that says the last error. A database not yet created, or
// whose tables are still being made, is polled again.
bool WaitForRow(const std::string& path, const std::string& sql, std::chrono::milliseconds timeout,
                Process* watched = nullptr);

}  // namespace fedrad::testing

#endif  // FEDRAD_TESTS_HARNESS_H_
