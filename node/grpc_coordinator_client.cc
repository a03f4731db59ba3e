// The node's CoordinatorClient over gRPC and mutual TLS: the only place in
// the node, with update_upload.cc beneath it, that knows gRPC's types. Each
// call converts the project types with common/wire_codec.h and gRPC's status
// into absl's, keeping the code.

#include <set>

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/wire_codec.h"
#include "node/coordinator_client.h"
#include "node/node_config.h"
#include "node/update_upload.h"
#include "proto/federation.grpc.pb.h"

namespace fedrad::node {
namespace {

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), absl::StrCat(what, ": ", s.error_message()));
}

absl::Status Stopping() { return absl::CancelledError("the node is stopping"); }

// The calls under way, so that CancelAll() can end them; none is started
// once it has been called.
class Calls {
 public:
  bool Track(grpc::ClientContext* ctx) {
    absl::MutexLock lock(&mu_);
    if (cancelled_) return false;
    calls_.insert(ctx);
    return true;
  }
  void Untrack(grpc::ClientContext* ctx) {
    absl::MutexLock lock(&mu_);
    calls_.erase(ctx);
  }
  void CancelAll() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    for (grpc::ClientContext* ctx : calls_) ctx->TryCancel();
  }

 private:
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::set<grpc::ClientContext*> calls_ ABSL_GUARDED_BY(mu_);
};

// A ClientContext with `deadline`, tracked while it lives.
class TrackedContext {
 public:
  TrackedContext(Calls* calls, absl::Time deadline) : calls_(calls) {
    ctx_.set_deadline(absl::ToChronoTime(deadline));
    tracked_ = calls_->Track(&ctx_);
  }
  ~TrackedContext() {
    if (tracked_) calls_->Untrack(&ctx_);
  }
  // false once the node is stopping: the call must not start.
  bool tracked() const { return tracked_; }
  grpc::ClientContext* get() { return &ctx_; }

 private:
  Calls* calls_;
  grpc::ClientContext ctx_;
  bool tracked_ = false;
};

class GrpcTaskStream final : public TaskStream {
 public:
  GrpcTaskStream(Calls* calls, v1::Federation::Stub* stub) : calls_(calls) {
    if (calls_->Track(&ctx_)) reader_ = stub->WaitTask(&ctx_, v1::WaitTaskRequest());  // else: stopping
  }
  ~GrpcTaskStream() override {
    if (finished_) return;
    // Dropped without Finish(): the runtime has gone on already; how the
    // stream ended is only worth a debug line.
    const absl::Status end = Finish();
    spdlog::debug("task stream dropped: {}", end.ToString());
  }
  std::optional<protocol::Task> Next() override {
    if (!reader_) return std::nullopt;
    v1::Task message;
    if (ended_ || !reader_->Read(&message)) {
      ended_ = true;
      return std::nullopt;
    }
    return protocol::Decode(message);
  }
  absl::Status Finish() override {
    if (finished_) return absl::FailedPreconditionError("the task stream was finished already");
    finished_ = true;
    if (!reader_) return Stopping();
    // Cancelled only while still open: cancelling a stream the coordinator
    // has ended would replace its status (a refusal's reason) with CANCELLED.
    if (!ended_) ctx_.TryCancel();
    const grpc::Status end = reader_->Finish();
    calls_->Untrack(&ctx_);
    return absl::Status(static_cast<absl::StatusCode>(end.error_code()), end.error_message());
  }

 private:
  Calls* calls_;
  grpc::ClientContext ctx_;
  bool ended_ = false;  // Read() saw the end
  bool finished_ = false;
  std::unique_ptr<grpc::ClientReader<v1::Task>> reader_;
};

class GrpcCoordinatorClient final : public CoordinatorClient {
 public:
  explicit GrpcCoordinatorClient(const NodeConfig& config) : address_(config.coordinator_address) {
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = config.tls.ca_pem;
    tls.pem_private_key = config.tls.key_pem;
    tls.pem_cert_chain = config.tls.certificate_pem;
    grpc::ChannelArguments args;
    // Keep the idle task stream alive through NAT and firewalls while training.
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(config.max_backoff_s * 1000));
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 500);
    channel_ = grpc::CreateCustomChannel(address_, grpc::SslCredentials(tls), args);
    stub_ = v1::Federation::NewStub(channel_);
  }

  absl::StatusOr<Joined> Hello(absl::Time deadline) override {
    TrackedContext ctx(&calls_, deadline);
    if (!ctx.tracked()) return Stopping();
    v1::HelloRequest req;
    req.set_software_version("fedrad 0.1.0");
    v1::Plan reply;
    if (absl::Status s = FromGrpc(stub_->Hello(ctx.get(), req, &reply), absl::StrCat("coordinator ", address_));
        !s.ok()) {
      return s;
    }
    Joined joined{protocol::Decode(reply), ""};
    if (!joined.plan.update_dtype) {
      return absl::FailedPreconditionError(
          absl::StrCat("the plan's update dtype ", reply.update_dtype(), " is unknown to this node; update fedrad"));
    }
    if (std::shared_ptr<const grpc::AuthContext> auth = ctx.get()->auth_context()) {
      for (const grpc::string_ref& v : auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME)) {
        joined.coordinator_certificate_pem.assign(v.data(), v.size());
      }
    }
    return joined;
  }

  absl::StatusOr<std::unique_ptr<TaskStream>> WaitTask() override {
    auto stream = std::make_unique<GrpcTaskStream>(&calls_, stub_.get());
    return std::unique_ptr<TaskStream>(std::move(stream));
  }

  absl::Status SubmitUpdate(const protocol::UpdateClaim& claim, std::string_view bytes,
                            std::shared_ptr<const void> owner, size_t chunk_bytes, absl::Time deadline) override {
    TrackedContext ctx(&calls_, deadline);
    if (!ctx.tracked()) return Stopping();
    v1::UpdateChunk header;
    protocol::Encode(claim, header.mutable_header());
    return FromGrpc(UploadUpdate(channel_, ctx.get(), header.SerializeAsString(), bytes, std::move(owner), chunk_bytes),
                    absl::StrCat("round ", claim.round, " update"));
  }

  absl::Status FetchModel(const std::string& sha256, absl::Time deadline,
                          const std::function<absl::Status(const ModelChunkView&)>& on_chunk) override {
    TrackedContext ctx(&calls_, deadline);
    if (!ctx.tracked()) return Stopping();
    return DownloadModel(channel_, ctx.get(), sha256, on_chunk);
  }

  absl::Status Decline(const protocol::DeclineNotice& notice, absl::Time deadline) override {
    TrackedContext ctx(&calls_, deadline);
    if (!ctx.tracked()) return Stopping();
    v1::Decline msg;
    protocol::Encode(notice, &msg);
    v1::SubmitReply reply;
    return FromGrpc(stub_->DeclineTask(ctx.get(), msg, &reply), "declining the round");
  }

  absl::Status SubmitEvaluation(const protocol::EvaluationReport& report, absl::Time deadline) override {
    TrackedContext ctx(&calls_, deadline);
    if (!ctx.tracked()) return Stopping();
    v1::Evaluation msg;
    protocol::Encode(report, &msg);
    v1::SubmitReply reply;
    return FromGrpc(stub_->SubmitEvaluation(ctx.get(), msg, &reply), "evaluation");
  }

  void CancelAll() override { calls_.CancelAll(); }

 private:
  const std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Federation::Stub> stub_;
  Calls calls_;
};

}  // namespace

std::unique_ptr<CoordinatorClient> MakeGrpcCoordinatorClient(const NodeConfig& config) {
  return std::make_unique<GrpcCoordinatorClient>(config);
}

}  // namespace fedrad::node
