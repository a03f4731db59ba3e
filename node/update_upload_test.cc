#include "node/update_upload.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "proto/federation.grpc.pb.h"

namespace fedrad::node {
namespace {

// A real gRPC server (plain TCP on 127.0.0.1; TLS is covered by the
// integration tests) whose SubmitUpdate is the generated, protobuf-typed
// one: what it receives is what any protobuf reader makes of our framing.
class Receiver final : public v1::Federation::CallbackService {
 public:
  // How the server answers the header.
  enum class Answer { kReady, kNotReady, kRefuse };
  explicit Receiver(Answer answer) : answer_(answer) {}

  grpc::ServerBidiReactor<v1::UpdateChunk, v1::UploadReply>* SubmitUpdate(grpc::CallbackServerContext*) override {
    return new Stream(this);
  }

  absl::Mutex mu;
  std::optional<v1::UpdateHeader> header ABSL_GUARDED_BY(mu);
  std::vector<std::string> chunks ABSL_GUARDED_BY(mu);
  bool ended ABSL_GUARDED_BY(mu) = false;

 private:
  class Stream final : public grpc::ServerBidiReactor<v1::UpdateChunk, v1::UploadReply> {
   public:
    explicit Stream(Receiver* r) : r_(r) { StartRead(&chunk_); }
    void OnReadDone(bool ok) override {
      absl::MutexLock lock(&r_->mu);
      if (!ok) {
        r_->ended = true;
        Finish(grpc::Status::OK);
        return;
      }
      if (chunk_.has_header()) {
        r_->header = chunk_.header();
        if (r_->answer_ == Answer::kRefuse) {
          Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "round 7 is closed"));
          return;
        }
        reply_.set_ready(r_->answer_ == Answer::kReady);
        StartWrite(&reply_);
      } else {
        r_->chunks.push_back(chunk_.data());
      }
      StartRead(&chunk_);
    }
    void OnWriteDone(bool) override {}
    void OnDone() override { delete this; }

   private:
    Receiver* r_;
    v1::UpdateChunk chunk_;
    v1::UploadReply reply_;
  };
  const Answer answer_;
};

struct Server {
  explicit Server(Receiver::Answer answer) : receiver(answer) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&receiver);
    server = builder.BuildAndStart();
    channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  }
  ~Server() { server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5)); }

  grpc::Status Upload(const std::string& bytes, std::shared_ptr<const void> owner, size_t chunk_bytes) {
    v1::UpdateChunk header;
    header.mutable_header()->set_round(7);
    header.mutable_header()->set_total_bytes(bytes.size());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return UploadUpdate(channel, &ctx, header.SerializeAsString(), bytes, std::move(owner), chunk_bytes);
  }

  Receiver receiver;
  int port = 0;
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<grpc::Channel> channel;
};

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + i / 251) & 0xff);
  return s;
}

TEST(UpdateUploadTest, ThePrefixIsWhatProtobufWritesBeforeTheBytes) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{127}, size_t{128}, size_t{16383}, size_t{16384}, size_t{1} << 20,
                   (size_t{1} << 21) + 5}) {
    v1::UpdateChunk chunk;
    chunk.set_data(std::string(n, 'x'));
    const std::string wire = chunk.SerializeAsString();
    ASSERT_GE(wire.size(), n);
    EXPECT_EQ(UpdateDataPrefix(n), wire.substr(0, wire.size() - n)) << n;
  }
}

TEST(UpdateUploadTest, BytesArriveWholeInChunksAfterTheHeader) {
  Server server(Receiver::Answer::kReady);
  auto owner = std::make_shared<const std::string>(Pattern(2 * 4096 + 1000));
  const grpc::Status s = server.Upload(*owner, owner, 4096);
  ASSERT_TRUE(s.ok()) << s.error_message();
  absl::MutexLock lock(&server.receiver.mu);
  ASSERT_TRUE(server.receiver.header.has_value());
  EXPECT_EQ(server.receiver.header->round(), 7u);
  EXPECT_EQ(server.receiver.header->total_bytes(), owner->size());
  ASSERT_EQ(server.receiver.chunks.size(), 3u);
  EXPECT_EQ(server.receiver.chunks[0].size(), 4096u);
  EXPECT_EQ(server.receiver.chunks[1].size(), 4096u);
  EXPECT_EQ(server.receiver.chunks[2].size(), 1000u);
  std::string joined;
  for (const std::string& c : server.receiver.chunks) joined += c;
  EXPECT_EQ(joined, *owner);
  EXPECT_TRUE(server.receiver.ended);
}

TEST(UpdateUploadTest, GrpcLetsGoOfTheBytesOnceTheCallIsOver) {
  Server server(Receiver::Answer::kReady);
  auto owner = std::make_shared<const std::string>(Pattern(100000));
  ASSERT_TRUE(server.Upload(*owner, owner, 8192).ok());
  // Each chunk's slice held a reference; the last is dropped with the call
  // or very soon after, on gRPC's threads.
  for (int i = 0; i < 500 && owner.use_count() > 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(owner.use_count(), 1);
}

TEST(UpdateUploadTest, AnEmptyUpdateIsAHeaderAlone) {
  Server server(Receiver::Answer::kReady);
  auto owner = std::make_shared<const std::string>();
  ASSERT_TRUE(server.Upload(*owner, owner, 4096).ok());
  absl::MutexLock lock(&server.receiver.mu);
  EXPECT_TRUE(server.receiver.header.has_value());
  EXPECT_TRUE(server.receiver.chunks.empty());
}

TEST(UpdateUploadTest, ARefusalReachesTheCallerAndNoBytesAreSent) {
  Server server(Receiver::Answer::kRefuse);
  auto owner = std::make_shared<const std::string>(Pattern(50000));
  const grpc::Status s = server.Upload(*owner, owner, 4096);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(s.error_message(), "round 7 is closed");
  absl::MutexLock lock(&server.receiver.mu);
  EXPECT_TRUE(server.receiver.chunks.empty());
}

TEST(UpdateUploadTest, WithoutReadyTheBytesStayAndTheCallIsCancelled) {
  Server server(Receiver::Answer::kNotReady);
  auto owner = std::make_shared<const std::string>(Pattern(50000));
  const grpc::Status s = server.Upload(*owner, owner, 4096);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED);
  absl::MutexLock lock(&server.receiver.mu);
  EXPECT_TRUE(server.receiver.chunks.empty());
}

TEST(UpdateUploadTest, NobodyListeningEndsAtTheDeadline) {
  auto channel = grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  auto owner = std::make_shared<const std::string>(Pattern(1000));
  const grpc::Status s = UploadUpdate(channel, &ctx, v1::UpdateChunk().SerializeAsString(), *owner, owner, 4096);
  EXPECT_FALSE(s.ok());
}

}  // namespace
}  // namespace fedrad::node
