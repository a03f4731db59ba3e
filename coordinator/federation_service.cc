#include "coordinator/federation_service.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <optional>

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/security/server_credentials.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/plan.h"
#include "common/proto_framing.h"
#include "common/wire_codec.h"
#include "coordinator/stall_watch.h"
#include "coordinator/stream_gate.h"
#include "proto/federation.grpc.pb.h"

namespace fedrad::coordinator {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// The caller's site: the CN of its verified client certificate.
absl::StatusOr<std::string> CallerSite(grpc::CallbackServerContext* ctx, const RoundDriver& driver) {
  std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
  std::vector<grpc::string_ref> cn =
      auth ? auth->FindPropertyValues("x509_common_name") : std::vector<grpc::string_ref>{};
  if (cn.empty()) {
    return absl::UnauthenticatedError("no client certificate common name");
  }
  std::string site(cn.front().data(), cn.front().size());
  if (!driver.IsSite(site)) {
    spdlog::warn("refused a call from {}: certificate CN '{}' is not a site in the plan", ctx->peer(), site);
    return absl::PermissionDeniedError(
        absl::StrCat("certificate CN '", site, "' is not a site in the federation plan"));
  }
  return site;
}

// WaitTask: a node's long-lived stream of tasks.
class TaskStream final : public grpc::ServerWriteReactor<v1::Task>, public TaskChannel {
 public:
  TaskStream(RoundDriver* driver, std::string site, const std::string& peer) : driver_(driver), site_(std::move(site)) {
    absl::Status connected = driver_->Connect(site_, this, peer);
    if (!connected.ok()) {
      {
        absl::MutexLock lock(&mu_);
        finish_requested_ = finished_ = true;
      }
      Finish(ToGrpc(connected));
    }
  }

  void Send(const protocol::Task& task) override {
    v1::Task message;
    protocol::Encode(task, &message);
    const v1::Task* next = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (finish_requested_) return;
      queue_.push_back(std::move(message));
      if (writing_) return;
      writing_ = true;
      next = &queue_.front();
    }
    StartWrite(next);
  }

  void Close() override { RequestFinish(grpc::Status::OK); }

  void OnWriteDone(bool ok) override {
    const v1::Task* next = nullptr;
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      queue_.pop_front();
      if (!ok) {
        queue_.clear();
        finish_requested_ = true;
      }
      if (!queue_.empty()) {
        next = &queue_.front();
      } else {
        writing_ = false;
        finish = finish_requested_ && !finished_;
        if (finish) finished_ = true;
      }
    }
    if (next) StartWrite(next);
    if (finish) Finish(finish_status_);
  }

  void OnCancel() override { RequestFinish(grpc::Status::CANCELLED); }

  void OnDone() override {
    driver_->Disconnect(site_, this);
    delete this;
  }

 private:
  void RequestFinish(grpc::Status status) {
    {
      absl::MutexLock lock(&mu_);
      if (finish_requested_ && (finished_ || writing_)) return;
      if (!finish_requested_) finish_status_ = status;
      finish_requested_ = true;
      if (writing_ || finished_) return;
      finished_ = true;
    }
    Finish(status);
  }

  RoundDriver* driver_;
  const std::string site_;
  absl::Mutex mu_;
  std::deque<v1::Task> queue_ ABSL_GUARDED_BY(mu_);  // references stay valid on push_back
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_;
};

// A stream's place in a StreamGate.
class GatePlace {
 public:
  GatePlace(StreamGate* gate, std::string site) : gate_(gate), site_(std::move(site)) {}
  // Returns false (and the stream must finish with ALREADY_EXISTS) for a
  // site's second stream; otherwise `start` runs now or once admitted.
  bool Enter(std::function<void()> start) {
    // Set first: once queued, the admission (and the whole stream, up to
    // OnDone) may run on another thread before Enter returns.
    entered_ = true;
    switch (gate_->Enter(site_, this, [this, start] {
      admitted_ = true;
      start();
    })) {
      case StreamGate::Entry::kDuplicate:
        entered_ = false;
        return false;
      case StreamGate::Entry::kAdmitted:
        admitted_ = true;
        start();
        return true;
      case StreamGate::Entry::kWaiting:
        return true;
    }
    return false;
  }
  // From OnCancel: true if the stream was still waiting (it must Finish).
  bool Withdraw() { return entered_ && !admitted_ && gate_->Withdraw(this); }
  // From OnDone.
  void Leave() {
    if (entered_) gate_->Leave(site_, admitted_);
  }

 private:
  StreamGate* gate_;
  const std::string site_;
  std::atomic<bool> entered_{false};
  std::atomic<bool> admitted_{false};
};

// FetchModel: streams a model file in chunks read from disk one at a time.
// Chunks are framed here as ModelChunk messages (common/proto_framing.h):
// each chunk is read from the file once into its own buffer, which gRPC
// sends from where it is, with no copy into a message and none into its
// serialization.
class ModelSender final : public grpc::ServerWriteReactor<grpc::ByteBuffer>, public Stallable {
 public:
  ModelSender(grpc::CallbackServerContext* ctx, StreamGate* gate, StallWatch* watch, std::string site,
              const std::string& path, uint32_t chunk_bytes)
      : ctx_(ctx), chunk_bytes_(chunk_bytes), site_(site), place_(gate, std::move(site)), watch_(watch) {
    watch_->Add(this);
    if (!place_.Enter([this, path] { Start(path); })) {
      Finish(grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "this site is already downloading a model"));
    }
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "model download interrupted"));
      return;
    }
    Touch();
    Next();
  }
  // A reader that stops reading would hold its download slot for good: once
  // a chunk has waited upload_idle_timeout_s for the node to take it, the
  // call is cancelled (its pending write then fails and frees the slot).
  void CutOffIfIdleSince(int64_t cutoff_ms) override {
    const int64_t last = last_activity_ms_.load();
    if (last == 0 || last >= cutoff_ms || stalled_.exchange(true)) return;
    spdlog::warn(
        "{}: the model download took nothing for {} (coordinator.toml upload_idle_timeout_s) and was cut "
        "off",
        site_, absl::FormatDuration(watch_->idle()));
    ctx_->TryCancel();
  }
  void OnCancel() override {
    if (place_.Withdraw()) Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled while waiting to download"));
  }
  void OnDone() override {
    watch_->Remove(this);
    if (fd_ >= 0) ::close(fd_);
    place_.Leave();
    delete this;
  }

 private:
  void Touch() { last_activity_ms_.store(watch_->NowMs()); }
  void Start(const std::string& path) {
    Touch();  // watched from its admission on
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (fd_ < 0 || ::fstat(fd_, &st) != 0) {
      Finish(grpc::Status(grpc::StatusCode::INTERNAL, "model file unreadable"));
      return;
    }
    size_ = static_cast<uint64_t>(st.st_size);
    if (size_ == 0) {
      Finish(grpc::Status(grpc::StatusCode::INTERNAL, "model file is empty"));
      return;
    }
    Next();
  }

  void Next() {
    if (offset_ >= size_) {
      Finish(grpc::Status::OK);
      return;
    }
    const uint64_t n = std::min<uint64_t>(chunk_bytes_, size_ - offset_);
    char* data = static_cast<char*>(std::malloc(n));
    if (data == nullptr) {
      Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "out of memory for a model chunk"));
      return;
    }
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd_, data + done, n - done, static_cast<off_t>(offset_ + done));
      if (r <= 0) {
        std::free(data);
        Finish(grpc::Status(grpc::StatusCode::INTERNAL, "model file read failed"));
        return;
      }
      done += static_cast<size_t>(r);
    }
    std::string prefix;
    AppendVarintField(v1::ModelChunk::kTotalBytesFieldNumber, size_, &prefix);
    AppendVarintField(v1::ModelChunk::kOffsetFieldNumber, offset_, &prefix);
    AppendLengthPrefix(v1::ModelChunk::kDataFieldNumber, n, &prefix);
    grpc::Slice slices[2] = {grpc::Slice(prefix), grpc::Slice(data, n, std::free)};
    message_ = grpc::ByteBuffer(slices, 2);
    offset_ += n;
    StartWrite(&message_);
  }

  grpc::CallbackServerContext* const ctx_;
  const uint32_t chunk_bytes_;
  const std::string site_;
  GatePlace place_;
  StallWatch* const watch_;
  std::atomic<int64_t> last_activity_ms_{0};  // 0: not admitted yet
  std::atomic<bool> stalled_{false};
  int fd_ = -1;
  uint64_t size_ = 0;
  uint64_t offset_ = 0;
  grpc::ByteBuffer message_;  // the chunk being written
};

// SubmitUpdate: a header, `ready` once admitted and the header is valid,
// then chunks of the update in its wire dtype, each handed to the intake's
// Upload (coordinator/update_intake.h: checks, spool, hash, fold) as it
// arrives. Memory stays one chunk per upload. What waits on disk (recording
// the outcome, taking a rejected update out of the sum) runs on the
// driver's worker, which replies.
class UpdateReceiver final : public grpc::ServerBidiReactor<v1::UpdateChunk, v1::UploadReply>, public Stallable {
 public:
  UpdateReceiver(RoundDriver* driver, StreamGate* gate, StallWatch* watch, std::string site)
      : driver_(driver), site_(std::move(site)), place_(gate, site_), watch_(watch) {
    ready_.set_ready(true);
    watch_->Add(this);
    if (!place_.Enter([this] {
          Touch();  // watched from its admission on
          StartRead(&chunk_);
        })) {
      End(grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "an update from this site is already being received"));
    }
  }

  // From the StallWatch (under its lock, so the receiver is alive): cuts the
  // upload off if it has brought nothing since `cutoff_ms`. The node hears
  // why; the pending read then ends and OnReadDone records the rejection.
  void CutOffIfIdleSince(int64_t cutoff_ms) override {
    const int64_t last = last_activity_ms_.load();
    if (last == 0 || last >= cutoff_ms || stalled_.exchange(true)) return;
    End(ToGrpc(StallReason()));
  }

  void OnCancel() override {
    if (place_.Withdraw()) End(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled while waiting to upload"));
  }

  void OnWriteDone(bool) override {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&finish_mu_);
      writing_ = false;
      finish.swap(deferred_finish_);
    }
    if (finish) Finish(*finish);
  }

  void OnReadDone(bool ok) override {
    if (stalled_.load()) {  // already finished with StallReason()
      const std::string what =
          upload_ ? absl::StrCat(upload_->received(), " of ", upload_->expected(), " bytes received") : "no header yet";
      spdlog::warn("{}: {} ({})", site_, std::string(StallReason().message()), what);
      if (ticket_) Reject(absl::DeadlineExceededError(absl::StrCat(StallReason().message(), "; ", what)));
      return;
    }
    Touch();
    if (!ok) {
      Complete();
      return;
    }
    if (!ticket_) {
      if (!chunk_.has_header()) {
        Reject(absl::InvalidArgumentError("the first message must be the update header"));
        return;
      }
      absl::StatusOr<UpdateTicket> t = driver_->BeginUpdate(site_, protocol::Decode(chunk_.header()));
      if (!t.ok()) {
        spdlog::warn("refused an update from {}: {}", site_, std::string(t.status().message()));
        End(ToGrpc(t.status()));
        return;
      }
      ticket_ = std::move(*t);
      absl::StatusOr<std::unique_ptr<UpdateIntake::Upload>> upload = driver_->OpenUpload(*ticket_);
      if (!upload.ok()) {
        Reject(upload.status());
        return;
      }
      upload_ = std::move(*upload);
      {
        absl::MutexLock lock(&finish_mu_);
        writing_ = true;
      }
      StartWrite(&ready_);
      StartRead(&chunk_);
      return;
    }
    if (!chunk_.has_data()) {
      Reject(absl::InvalidArgumentError("a second header in one update"));
      return;
    }
    if (absl::Status taken = upload_->Take(chunk_.data()); !taken.ok()) {
      Reject(taken);
      return;
    }
    StartRead(&chunk_);
  }

  void OnDone() override {
    watch_->Remove(this);
    upload_.reset();
    place_.Leave();
    delete this;
  }

 private:
  void Touch() { last_activity_ms_.store(watch_->NowMs()); }
  absl::Status StallReason() const {
    // A rejection, not an interruption: the round does not wait for a
    // node that holds a slot and sends nothing.
    return absl::DeadlineExceededError(absl::StrCat("the upload brought nothing for ",
                                                    absl::FormatDuration(watch_->idle()),
                                                    " (coordinator.toml upload_idle_timeout_s) and was cut off"));
  }

  void Complete() {
    if (!ticket_) {
      End(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty update"));
      return;
    }
    if (absl::Status complete = upload_->Complete(); !complete.ok()) {
      Reject(complete);
      return;
    }
    driver_->FinishUpdate(*ticket_, absl::OkStatus(), [this](const absl::Status& s) { End(ToGrpc(s)); });
  }

  void Reject(const absl::Status& reason) {
    upload_.reset();  // its spool file closed
    if (ticket_) {
      ::unlink(ticket_->spool_path.c_str());
      // The node hears once it is recorded (and, if it was folded, taken
      // out of the sum), so an upload sent again finds its slot free.
      driver_->FinishUpdate(*ticket_, reason, [this, reason](const absl::Status&) { End(ToGrpc(reason)); });
      return;
    }
    End(ToGrpc(reason));
  }

  // Finish, once the `ready` write (if any) is done. The first status
  // stands (a stalled upload is ended from the StallWatch's thread, and its
  // rejection, recorded after, ends it again).
  void End(const grpc::Status& status) {
    last_activity_ms_.store(0);  // over: no longer watched
    {
      absl::MutexLock lock(&finish_mu_);
      if (ended_) return;
      ended_ = true;
      if (writing_) {
        deferred_finish_ = status;
        return;
      }
    }
    Finish(status);
  }

  RoundDriver* driver_;
  const std::string site_;
  GatePlace place_;
  StallWatch* const watch_;
  std::atomic<int64_t> last_activity_ms_{0};  // 0: not (or no longer) watched
  std::atomic<bool> stalled_{false};
  v1::UploadReply ready_;
  absl::Mutex finish_mu_;
  bool writing_ ABSL_GUARDED_BY(finish_mu_) = false;
  bool ended_ ABSL_GUARDED_BY(finish_mu_) = false;
  std::optional<grpc::Status> deferred_finish_ ABSL_GUARDED_BY(finish_mu_);
  v1::UpdateChunk chunk_;
  std::optional<UpdateTicket> ticket_;
  std::unique_ptr<UpdateIntake::Upload> upload_;  // once admitted
};

template <typename Reactor>
Reactor* Refuse(const absl::Status& s) {
  class Refusal : public Reactor {
   public:
    explicit Refusal(const grpc::Status& s) { this->Finish(s); }
    void OnDone() override { delete this; }
  };
  return new Refusal(ToGrpc(s));
}

// FetchModel is served raw (ModelSender frames its chunks itself).
class FederationServiceImpl final
    : public v1::Federation::WithRawCallbackMethod_FetchModel<v1::Federation::CallbackService> {
 public:
  FederationServiceImpl(RoundDriver* driver, int max_concurrent_streams, absl::Duration upload_idle_timeout)
      : driver_(driver),
        downloads_(max_concurrent_streams),
        uploads_(max_concurrent_streams),
        stalls_(upload_idle_timeout) {}

  // Says how the stream limit (max_concurrent_streams) was used.
  void LogStreamUse() { spdlog::info("model downloads: {}; update uploads: {}", downloads_.Use(), uploads_.Use()); }

  grpc::ServerUnaryReactor* Hello(grpc::CallbackServerContext* ctx, const v1::HelloRequest*, v1::Plan* plan) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    absl::StatusOr<std::string> site = CallerSite(ctx, *driver_);
    if (site.ok()) protocol::Encode(driver_->PlanFor(*site), plan);
    reactor->Finish(ToGrpc(site.status()));
    return reactor;
  }

  grpc::ServerWriteReactor<v1::Task>* WaitTask(grpc::CallbackServerContext* ctx, const v1::WaitTaskRequest*) override {
    absl::StatusOr<std::string> site = CallerSite(ctx, *driver_);
    if (!site.ok()) return Refuse<grpc::ServerWriteReactor<v1::Task>>(site.status());
    return new TaskStream(driver_, *site, ctx->peer());
  }

  grpc::ServerWriteReactor<grpc::ByteBuffer>* FetchModel(grpc::CallbackServerContext* ctx,
                                                         const grpc::ByteBuffer* request) override {
    using Reactor = grpc::ServerWriteReactor<grpc::ByteBuffer>;
    absl::StatusOr<std::string> site = CallerSite(ctx, *driver_);
    if (!site.ok()) return Refuse<Reactor>(site.status());
    grpc::ByteBuffer copy(*request);  // shares the slices; Deserialize consumes what it is given
    v1::FetchModelRequest req;
    if (!grpc::SerializationTraits<v1::FetchModelRequest>::Deserialize(&copy, &req).ok()) {
      return Refuse<Reactor>(absl::InvalidArgumentError("a malformed FetchModel request"));
    }
    absl::StatusOr<std::string> path = driver_->ModelPath(req.sha256());
    if (!path.ok()) return Refuse<Reactor>(path.status());
    return new ModelSender(ctx, &downloads_, &stalls_, *site, *path, driver_->chunk_bytes());
  }

  grpc::ServerBidiReactor<v1::UpdateChunk, v1::UploadReply>* SubmitUpdate(grpc::CallbackServerContext* ctx) override {
    absl::StatusOr<std::string> site = CallerSite(ctx, *driver_);
    if (!site.ok()) return Refuse<grpc::ServerBidiReactor<v1::UpdateChunk, v1::UploadReply>>(site.status());
    return new UpdateReceiver(driver_, &uploads_, &stalls_, *site);
  }

  grpc::ServerUnaryReactor* SubmitEvaluation(grpc::CallbackServerContext* ctx, const v1::Evaluation* evaluation,
                                             v1::SubmitReply* reply) override {
    return Record(ctx, reply, "an evaluation", [&](const std::string& site, RoundDriver::Reply done) {
      driver_->RecordEvaluation(site, protocol::Decode(*evaluation), std::move(done));
    });
  }

  grpc::ServerUnaryReactor* DeclineTask(grpc::CallbackServerContext* ctx, const v1::Decline* decline,
                                        v1::SubmitReply* reply) override {
    return Record(ctx, reply, "a decline", [&](const std::string& site, RoundDriver::Reply done) {
      driver_->Decline(site, protocol::Decode(*decline), std::move(done));
    });
  }

 private:
  // A unary report from the calling site, handed to `record`, which
  // replies (from the driver's worker) once it is recorded.
  template <typename Fn>
  grpc::ServerUnaryReactor* Record(grpc::CallbackServerContext* ctx, v1::SubmitReply* reply, const char* what,
                                   Fn record) {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    absl::StatusOr<std::string> site = CallerSite(ctx, *driver_);
    auto finish = [reactor, reply, what, who = site.ok() ? *site : ctx->peer()](const absl::Status& s) {
      if (!s.ok()) spdlog::warn("refused {} from {}: {}", what, who, std::string(s.message()));
      reply->set_message(s.ok() ? "recorded" : std::string(s.message()));
      reactor->Finish(ToGrpc(s));
    };
    if (!site.ok()) {
      finish(site.status());
    } else {
      record(*site, std::move(finish));
    }
    return reactor;
  }

  RoundDriver* driver_;
  StreamGate downloads_;
  StreamGate uploads_;
  StallWatch stalls_;
};

}  // namespace

struct CoordinatorServer::Impl {
  std::unique_ptr<FederationServiceImpl> service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

CoordinatorServer::CoordinatorServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

int CoordinatorServer::port() const { return impl_->port; }

void CoordinatorServer::Shutdown() {
  if (impl_->server) {
    impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(3));
    impl_->server.reset();
    impl_->service->LogStreamUse();
  }
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(const CoordinatorConfig& config,
                                                                            RoundDriver* driver) {
  auto impl = std::make_unique<Impl>();
  impl->service = std::make_unique<FederationServiceImpl>(driver, config.max_concurrent_streams,
                                                          absl::Seconds(config.upload_idle_timeout_s));
  grpc::SslServerCredentialsOptions tls(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  tls.pem_root_certs = config.tls.ca_pem;
  tls.pem_key_cert_pairs.push_back({config.tls.key_pem, config.tls.certificate_pem});
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.listen, grpc::SslServerCredentials(tls), &impl->port);
  builder.RegisterService(impl->service.get());
  // Detect nodes that vanish without closing their connection, and let nodes
  // ping an idle task stream (long local training) without being cut off.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 4 << 20);
  // A connection that has not finished its TLS handshake in 10 s is dropped:
  // unauthenticated peers cannot hold descriptors for the default 120 s.
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 10000);
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen, " (address in use or not local?)"));
  }
  return std::unique_ptr<CoordinatorServer>(new CoordinatorServer(std::move(impl)));
}

}  // namespace fedrad::coordinator
