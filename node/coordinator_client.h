#ifndef FEDRAD_NODE_COORDINATOR_CLIENT_H_
#define FEDRAD_NODE_COORDINATOR_CLIENT_H_

// What the node runtime asks of the coordinator, in project types
// (common/protocol.h): the runtime decides, this seam carries. The program
// uses the gRPC client over mutual TLS (MakeGrpcCoordinatorClient); unit
// tests of the runtime answer through their own implementation, on a
// FakeClock. gRPC's types stay behind it, in grpc_coordinator_client.cc and
// update_upload.h.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/protocol.h"

namespace fedrad::node {

struct NodeConfig;

// Hello's answer: the plan, and the certificate the coordinator presented
// (the one TLS verified against the federation's CA: model publications
// must be signed with its key).
struct Joined {
  protocol::JoinedPlan plan;
  std::string coordinator_certificate_pem;
};

// One piece of a model download as it arrives: views into the transport's
// buffers, valid during the callback only.
struct ModelChunkView {
  uint64_t total_bytes = 0;
  uint64_t offset = 0;
  std::vector<std::string_view> data;  // pieces, in order
  uint64_t data_bytes = 0;
};

// The coordinator's task stream for this site.
class TaskStream {
 public:
  virtual ~TaskStream() = default;
  // Blocks for the next task; nullopt once the stream has ended (Finish
  // says why). A message of a kind this build does not know is the empty
  // task (std::monostate).
  virtual std::optional<protocol::Task> Next() = 0;
  // Ends the stream, cancelling it if it is still open, and says how it
  // ended: AlreadyExists when the coordinator refused it because another
  // node holds this site's stream; Cancelled when this side ended it.
  virtual absl::Status Finish() = 0;
};

class CoordinatorClient {
 public:
  virtual ~CoordinatorClient() = default;

  // Errors carry the coordinator's status code: PermissionDenied,
  // Unauthenticated, FailedPrecondition and InvalidArgument are refusals
  // retrying cannot mend; Unavailable and DeadlineExceeded are the network.
  virtual absl::StatusOr<Joined> Hello(absl::Time deadline) = 0;
  virtual absl::StatusOr<std::unique_ptr<TaskStream>> WaitTask() = 0;
  // Streams one update: `claim` first, then, once the coordinator is ready
  // for it, `bytes` in pieces of at most `chunk_bytes`. `owner` keeps the
  // bytes alive while the transport may still read them.
  virtual absl::Status SubmitUpdate(const protocol::UpdateClaim& claim, std::string_view bytes,
                                    std::shared_ptr<const void> owner, size_t chunk_bytes, absl::Time deadline) = 0;
  // Downloads the model `sha256`, handing each chunk to `on_chunk` as it
  // arrives; an error from `on_chunk` ends the call and is returned.
  virtual absl::Status FetchModel(const std::string& sha256, absl::Time deadline,
                                  const std::function<absl::Status(const ModelChunkView&)>& on_chunk) = 0;
  virtual absl::Status Decline(const protocol::DeclineNotice& notice, absl::Time deadline) = 0;
  virtual absl::Status SubmitEvaluation(const protocol::EvaluationReport& report, absl::Time deadline) = 0;
  // From any thread (a signal's): every call under way ends soon, and every
  // later one fails at once, with Cancelled.
  virtual void CancelAll() = 0;
};

// The coordinator at `config.coordinator_address`, over mutual TLS with the
// site's kit; reconnects with the transport's backoff up to
// config.max_backoff_s.
std::unique_ptr<CoordinatorClient> MakeGrpcCoordinatorClient(const NodeConfig& config);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_COORDINATOR_CLIENT_H_
