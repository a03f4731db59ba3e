// fedrad-coordinator: runs a federation's rounds for the sites in its plan.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "common/bench_floor.h"

#include "common/files.h"
#include "common/logging.h"
#include "coordinator/config.h"
#include "coordinator/federation_service.h"
#include "coordinator/round_driver.h"

namespace {

int Serve(const std::string& config_path, const std::string& ledger_lost) {
  absl::StatusOr<fedrad::coordinator::CoordinatorConfig> config =
      fedrad::coordinator::LoadCoordinatorConfig(config_path);
  if (!config.ok()) {
    spdlog::error("{}", std::string(config.status().message()));
    return 2;
  }
  config->ledger_lost = ledger_lost;
  if (fedrad::kBenchFloor) {
    spdlog::warn(
        "this fedrad-coordinator is a benchmark-floor build (FEDRAD_BENCH_FLOOR): it does not check, hash "
        "or keep the updates it is sent. Never use it for a federation");
  }
  // Signals are handled by one thread with sigwait; block them everywhere first.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Each connected site holds a socket, and a spool file while it uploads.
  absl::Status fds = fedrad::RaiseOpenFileLimit(2 * config->plan.sites.size() + 64);
  if (!fds.ok()) spdlog::warn("not every site can be connected at once: {}", std::string(fds.message()));

  absl::StatusOr<std::unique_ptr<fedrad::coordinator::RoundDriver>> driver =
      fedrad::coordinator::RoundDriver::Create(*config);
  if (!driver.ok()) {
    spdlog::error("{}", std::string(driver.status().message()));
    return 1;
  }
  absl::StatusOr<std::unique_ptr<fedrad::coordinator::CoordinatorServer>> server =
      fedrad::coordinator::CoordinatorServer::Start(*config, driver->get());
  if (!server.ok()) {
    spdlog::error("{}", std::string(server.status().message()));
    return 1;
  }
  spdlog::info("federation '{}': listening on {} (port {}) with mutual TLS; {} site(s), {} round(s), min_nodes {}",
               config->plan.name, config->listen, (*server)->port(), config->plan.sites.size(), config->plan.rounds,
               config->plan.min_nodes);

  std::atomic<bool> exiting{false};
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (exiting) return;  // woken by main to exit
    spdlog::warn("received signal {}; stopping (an open round attempt is resumed on restart)", sig);
    (*driver)->Shutdown();
  });
  absl::Status result = (*driver)->Run();
  (*server)->Shutdown();
  exiting = true;
  pthread_kill(signal_thread.native_handle(), SIGTERM);
  signal_thread.join();
  if (!result.ok()) {
    spdlog::error("{}", std::string(result.message()));
    return absl::IsCancelled(result) ? 3 : 1;
  }
  absl::StatusOr<std::string> summary = (*driver)->Summary();
  if (summary.ok()) std::fputs(summary->c_str(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fedrad-coordinator: aggregates DP-protected model updates from fedrad nodes into a global model"};
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "More log output");
  std::string config = "coordinator.toml";
  CLI::App* serve =
      app.add_subcommand("serve", "Run the federation's remaining rounds (resumes after a crash), then exit");
  serve->add_option("-c,--config", config, "Coordinator config (TOML)")->capture_default_str();
  std::string ledger_lost;
  serve->add_option("--ledger-lost", ledger_lost,
                    "Only when state.db (rounds and ledger) is gone for good: what happened. A new ledger and a new "
                    "federation at round 0 start there, and the ledger records this for the audit");
  CLI11_PARSE(app, argc, argv);
  fedrad::InitProgram("coordinator", verbose);
  return Serve(config, ledger_lost);
}
