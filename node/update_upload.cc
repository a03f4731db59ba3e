#include "node/update_upload.h"

#include <algorithm>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include "absl/synchronization/mutex.h"
#include "proto/federation.pb.h"

namespace fedrad::node {
namespace {

// The method's full name, as the generated stub spells it. RpcMethod keeps a
// pointer to it for the call's lifetime, hence a static.
const std::string& SubmitUpdateMethod() {
  static const std::string* name = new std::string("/fedrad.v1.Federation/SubmitUpdate");
  return *name;
}

// A slice's hold on the update: released by gRPC when it frees the slice.
void ReleaseOwner(void* hold) { delete static_cast<std::shared_ptr<const void>*>(hold); }

// Owned by the caller and by itself until OnDone, so that neither gRPC's last
// callback nor the waiting caller outlives it.
class Upload final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                     public std::enable_shared_from_this<Upload> {
 public:
  Upload(std::string_view bytes, std::shared_ptr<const void> owner, size_t chunk_bytes)
      : bytes_(bytes), owner_(std::move(owner)), chunk_bytes_(chunk_bytes) {}

  grpc::Status Run(const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext* ctx,
                   const std::string& header_message) {
    ctx_ = ctx;
    {
      absl::MutexLock lock(&mu_);
      self_ = shared_from_this();
    }
    grpc::Slice header(header_message);
    message_ = grpc::ByteBuffer(&header, 1);
    grpc::GenericStub stub(channel);
    stub.PrepareBidiStreamingCall(ctx, SubmitUpdateMethod(), grpc::StubOptions(), this);
    StartWrite(&message_);
    StartRead(&reply_);
    StartCall();
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
    return status_;
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return;  // the stream broke: OnDone brings the status
    bool send = false;
    {
      absl::MutexLock lock(&mu_);
      if (!header_written_) {
        header_written_ = true;
        send = ready_;  // the bytes wait for the header's write and for `ready`
      } else {
        send = true;
      }
    }
    if (send) SendNext();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the coordinator ended the call: OnDone brings why
    v1::UploadReply reply;
    const grpc::Status parsed = grpc::SerializationTraits<v1::UploadReply>::Deserialize(&reply_, &reply);
    if (!parsed.ok() || !reply.ready()) {
      ctx_->TryCancel();  // the coordinator's status follows, or CANCELLED
      return;
    }
    bool send = false;
    {
      absl::MutexLock lock(&mu_);
      ready_ = true;
      send = header_written_;
    }
    if (send) SendNext();
  }

  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<Upload> self;
    {
      absl::MutexLock lock(&mu_);
      status_ = status;
      done_ = true;
      self.swap(self_);
    }
  }

 private:
  // Called only when no write is outstanding (after the header and `ready`,
  // then from each write's completion).
  void SendNext() {
    if (offset_ >= bytes_.size()) {
      if (!closed_) {
        closed_ = true;
        StartWritesDone();
      }
      return;
    }
    const size_t n = std::min(chunk_bytes_, bytes_.size() - offset_);
    const std::string prefix = UpdateDataPrefix(n);
    grpc::Slice slices[2] = {
        grpc::Slice(prefix),
        grpc::Slice(const_cast<char*>(bytes_.data() + offset_), n, ReleaseOwner,
                    new std::shared_ptr<const void>(owner_)),
    };
    message_ = grpc::ByteBuffer(slices, 2);
    offset_ += n;
    StartWrite(&message_);
  }

  const std::string_view bytes_;
  const std::shared_ptr<const void> owner_;
  const size_t chunk_bytes_;
  grpc::ClientContext* ctx_ = nullptr;
  grpc::ByteBuffer message_;  // the write in flight
  grpc::ByteBuffer reply_;
  size_t offset_ = 0;  // touched only by the one write in flight
  bool closed_ = false;
  absl::Mutex mu_;
  bool header_written_ ABSL_GUARDED_BY(mu_) = false;
  bool ready_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Upload> self_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::string UpdateDataPrefix(size_t data_bytes) {
  std::string prefix(1, static_cast<char>((v1::UpdateChunk::kDataFieldNumber << 3) | 2));  // length-delimited
  uint64_t v = data_bytes;
  do {
    const uint8_t low = v & 0x7f;
    v >>= 7;
    prefix.push_back(static_cast<char>(v ? (low | 0x80) : low));
  } while (v != 0);
  return prefix;
}

grpc::Status UploadUpdate(const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext* ctx,
                          const std::string& header_message, std::string_view bytes,
                          std::shared_ptr<const void> owner, size_t chunk_bytes) {
  if (chunk_bytes == 0) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "chunk size 0");
  auto upload = std::make_shared<Upload>(bytes, std::move(owner), chunk_bytes);
  return upload->Run(channel, ctx, header_message);
}

}  // namespace fedrad::node
