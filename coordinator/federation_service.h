#ifndef FEDRAD_COORDINATOR_FEDERATION_SERVICE_H_
#define FEDRAD_COORDINATOR_FEDERATION_SERVICE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "coordinator/config.h"
#include "coordinator/round_driver.h"

namespace fedrad::coordinator {

// The coordinator's gRPC endpoint: the Federation service over TLS that
// requires and verifies a client certificate from the federation CA. Uses
// gRPC's callback API, so no thread is tied up per connected node. A caller's
// site is the CN of its certificate; a CN that is not in the plan is refused.
class CoordinatorServer {
 public:
  // Starts listening on config.listen. `driver` must outlive the server.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(const CoordinatorConfig& config, RoundDriver* driver);
  ~CoordinatorServer();
  int port() const;
  // Stops accepting calls and cancels open streams, waiting at most a few seconds.
  void Shutdown();

 private:
  struct Impl;
  explicit CoordinatorServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_FEDERATION_SERVICE_H_
