#ifndef FEDRAD_NODE_UPDATE_UPLOAD_H_
#define FEDRAD_NODE_UPDATE_UPLOAD_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "node/coordinator_client.h"

namespace grpc {
class Channel;
class ClientContext;
}  // namespace grpc

namespace fedrad::node {

// The gRPC transport under MakeGrpcCoordinatorClient (coordinator_client.h);
// the runtime never calls these itself.

// Streams one update to the coordinator's SubmitUpdate: `header_message`
// (a serialized v1::UpdateChunk holding the header), then, once the
// coordinator answers `ready`, `bytes` as UpdateChunk.data messages of at
// most `chunk_bytes` each, then the end of the stream; returns the call's
// status. The chunks are framed here (field tag and length) and gRPC reads
// the bytes where they are: no copy into a protobuf message and none into
// its serialization, twice the update's size of memory traffic saved.
// gRPC may hold the bytes a little after the call returns; `owner` keeps
// them alive until it lets go of the last chunk. Blocks until the call ends
// (its deadline is `ctx`'s).
grpc::Status UploadUpdate(const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext* ctx,
                          const std::string& header_message, std::string_view bytes, std::shared_ptr<const void> owner,
                          size_t chunk_bytes);

// Downloads the model `sha256` from the coordinator's FetchModel: each
// ModelChunk as it arrives is handed to `on_chunk` with its data as views
// into gRPC's buffers (common/proto_framing.h), so the data is copied once,
// by `on_chunk`, into where it belongs. An error from `on_chunk` cancels the
// call and is returned. Blocks until the call ends (`ctx`'s deadline).
absl::Status DownloadModel(const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext* ctx,
                           const std::string& sha256,
                           const std::function<absl::Status(const ModelChunkView&)>& on_chunk);

// The wire form of an UpdateChunk holding `data` (field 2), less the bytes
// themselves: tag and length, what precedes them.
std::string UpdateDataPrefix(size_t data_bytes);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_UPDATE_UPLOAD_H_
