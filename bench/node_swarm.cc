// Many real nodes in one process, for measuring the coordinator with a
// thousand connected sites on one machine (a fedrad-node process each would
// not fit: every one maps LibTorch). Each node is a full NodeRuntime with its
// own kit (certificate, state directory and node.db), its own gRPC channel
// and TLS connection, and serves rounds until the coordinator says stop,
// exactly as `fedrad-node run` does. Meant for kits with trainer = "noop".
//
//   fedrad-bench-swarm KIT_DIR...     (each KIT_DIR holds node.toml)
//
// Exits 0 when every node finished the federation, 1 otherwise.
#include <atomic>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/logging.h"
#include "node/node_config.h"
#include "node/node_runtime.h"

int main(int argc, char** argv) {
  CLI::App app{"Run many fedrad nodes (trainer = \"noop\" kits) in one process, each with its own TLS connection"};
  std::vector<std::string> kits;
  bool verbose = false;
  app.add_option("kits", kits, "Kit directories, each with a node.toml")->required();
  app.add_flag("-v,--verbose", verbose, "Log every node's progress (default: warnings and errors only)");
  CLI11_PARSE(app, argc, argv);
  fedrad::InitProgram("swarm", false);
  if (!verbose) spdlog::set_level(spdlog::level::warn);

  // A socket and a database (with its journal) per node.
  absl::Status fds = fedrad::RaiseOpenFileLimit(4 * kits.size() + 64);
  if (!fds.ok()) {
    std::cerr << "fedrad-bench-swarm: " << fds.message() << "\n";
    return 2;
  }

  std::vector<std::unique_ptr<fedrad::node::NodeRuntime>> nodes;
  for (const std::string& kit : kits) {
    absl::StatusOr<fedrad::node::NodeConfig> config = fedrad::node::LoadNodeConfig(kit + "/node.toml");
    if (!config.ok()) {
      std::cerr << "fedrad-bench-swarm: " << config.status().message() << "\n";
      return 2;
    }
    if (config->trainer != "noop") {
      std::cerr << "fedrad-bench-swarm: " << config->path << " has trainer = \"" << config->trainer
                << "\"; a swarm runs noop nodes only (training nodes need a process each)\n";
      return 2;
    }
    absl::StatusOr<std::unique_ptr<fedrad::node::NodeRuntime>> node = fedrad::node::NodeRuntime::Create(*config);
    if (!node.ok()) {
      std::cerr << "fedrad-bench-swarm: " << config->path << ": " << node.status().message() << "\n";
      return 1;
    }
    nodes.push_back(std::move(*node));
  }

  const absl::Time start = absl::Now();
  std::atomic<int> finished{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  threads.reserve(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    threads.emplace_back([&, i] {
      absl::Status s = nodes[i]->Run();
      if (s.ok()) {
        finished.fetch_add(1);
      } else {
        failed.fetch_add(1);
        spdlog::error("{}: {}", kits[i], std::string(s.message()));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::printf("swarm: %zu nodes, %d finished the federation, %d failed, %.1f s\n", nodes.size(), finished.load(),
              failed.load(), absl::ToDoubleSeconds(absl::Now() - start));
  return failed.load() == 0 ? 0 : 1;
}
