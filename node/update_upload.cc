#include "node/update_upload.h"

#include <algorithm>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/proto_framing.h"
#include "proto/federation.pb.h"

namespace fedrad::node {
namespace {

// The method's full name, as the generated stub spells it. RpcMethod keeps a
// pointer to it for the call's lifetime, hence a static.
const std::string& SubmitUpdateMethod() {
  static const std::string* name = new std::string("/fedrad.v1.Federation/SubmitUpdate");
  return *name;
}

const std::string& FetchModelMethod() {
  static const std::string* name = new std::string("/fedrad.v1.Federation/FetchModel");
  return *name;
}

// A server-streaming call made through the generic stub (a bidi stream that
// writes its one request), so that each reply arrives as gRPC's own buffer.
class Download final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                       public std::enable_shared_from_this<Download> {
 public:
  explicit Download(const std::function<absl::Status(const ModelChunkView&)>& on_chunk) : on_chunk_(on_chunk) {}

  absl::Status Run(const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext* ctx,
                   const std::string& request) {
    ctx_ = ctx;
    {
      absl::MutexLock lock(&mu_);
      self_ = shared_from_this();
    }
    grpc::Slice slice(request);
    request_ = grpc::ByteBuffer(&slice, 1);
    grpc::GenericStub stub(channel);
    stub.PrepareBidiStreamingCall(ctx, FetchModelMethod(), grpc::StubOptions(), this);
    StartWriteLast(&request_, grpc::WriteOptions());
    StartRead(&reply_);
    StartCall();
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
    if (!failure_.ok()) return failure_;
    if (status_.ok()) return absl::OkStatus();
    return absl::Status(static_cast<absl::StatusCode>(status_.error_code()),
                        absl::StrCat("downloading the model: ", status_.error_message()));
  }

  void OnWriteDone(bool) override {}

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended: OnDone brings the status
    std::vector<grpc::Slice> slices;
    absl::Status s;
    if (!reply_.Dump(&slices).ok()) s = absl::DataLossError("the coordinator sent an unreadable model chunk");
    std::vector<std::string_view> pieces;
    for (const grpc::Slice& slice : slices) {
      pieces.emplace_back(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
    if (s.ok()) {
      absl::StatusOr<FramedMessage> m = ParseFramedMessage(pieces, v1::ModelChunk::kDataFieldNumber, "a model chunk");
      if (m.ok()) {
        ModelChunkView view{m->Varint(v1::ModelChunk::kTotalBytesFieldNumber),
                            m->Varint(v1::ModelChunk::kOffsetFieldNumber), std::move(m->bytes), m->bytes_size};
        s = on_chunk_(view);
      } else {
        s = m.status();
      }
    }
    if (!s.ok()) {
      {
        absl::MutexLock lock(&mu_);
        failure_ = s;
      }
      ctx_->TryCancel();
      return;
    }
    StartRead(&reply_);
  }

  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<Download> self;
    absl::MutexLock lock(&mu_);
    status_ = status;
    done_ = true;
    self.swap(self_);
  }

 private:
  const std::function<absl::Status(const ModelChunkView&)>& on_chunk_;
  grpc::ClientContext* ctx_ = nullptr;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer reply_;
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  absl::Status failure_ ABSL_GUARDED_BY(mu_);  // from on_chunk or the framing
  std::shared_ptr<Download> self_ ABSL_GUARDED_BY(mu_);
};

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

absl::Status DownloadModel(const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext* ctx,
                           const std::string& sha256,
                           const std::function<absl::Status(const ModelChunkView&)>& on_chunk) {
  v1::FetchModelRequest request;
  request.set_sha256(sha256);
  auto download = std::make_shared<Download>(on_chunk);
  return download->Run(channel, ctx, request.SerializeAsString());
}

std::string UpdateDataPrefix(size_t data_bytes) {
  std::string prefix;
  AppendLengthPrefix(v1::UpdateChunk::kDataFieldNumber, data_bytes, &prefix);
  return prefix;
}

grpc::Status UploadUpdate(const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext* ctx,
                          const std::string& header_message, std::string_view bytes, std::shared_ptr<const void> owner,
                          size_t chunk_bytes) {
  if (chunk_bytes == 0) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "chunk size 0");
  auto upload = std::make_shared<Upload>(bytes, std::move(owner), chunk_bytes);
  return upload->Run(channel, ctx, header_message);
}

}  // namespace fedrad::node
