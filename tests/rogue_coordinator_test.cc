// A coordinator that asks what no honest coordinator would, against a real
// node process over mutual TLS: a real coordinator kit and a real gRPC
// server in this test, scripted task by task. The node must refuse each ask
// without reading its data for it, and say so in its ledgers.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/model_publication.h"
#include "common/model_zoo.h"
#include "common/plan.h"
#include "common/safetensors.h"
#include "common/tls_identity.h"
#include "coordinator/strategy_registry.h"
#include "crypto/pki.h"
#include "crypto/sha256.h"
#include "proto/federation.grpc.pb.h"
#include "tests/harness.h"

namespace fedrad::testing {
namespace {

using std::chrono::seconds;

struct Model {
  std::string bytes;
  std::string sha256;
};

Model Encode(const ModelParameters& p) {
  Model m;
  m.bytes = EncodeSafetensorsHeader(p.manifest, {{"round", "rogue"}});
  m.bytes.append(reinterpret_cast<const char*>(p.values.data()), p.values.size() * sizeof(float));
  m.sha256 = crypto::Sha256Hex(m.bytes);
  return m;
}

// Sends the tasks the test queues, one at a time, and records every answer.
class RogueCoordinator final : public v1::Federation::Service {
 public:
  RogueCoordinator(const FederationPlan& plan, std::string manifest_sha256)
      : plan_(plan), manifest_sha256_(std::move(manifest_sha256)) {}

  void AddModel(const Model& m) {
    absl::MutexLock lock(&mu_);
    models_[m.sha256] = m.bytes;
  }
  void Queue(v1::Task task) {
    absl::MutexLock lock(&mu_);
    tasks_.push_back(std::move(task));
  }
  // Waits until the node has sent `n` answers (evaluations and declines) in all.
  bool WaitForAnswers(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&] { return evaluations_.size() + declines_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(60));
  }
  std::vector<v1::Evaluation> evaluations() {
    absl::MutexLock lock(&mu_);
    return evaluations_;
  }
  std::vector<v1::Decline> declines() {
    absl::MutexLock lock(&mu_);
    return declines_;
  }
  int fetches(const std::string& sha) {
    absl::MutexLock lock(&mu_);
    return fetches_[sha];
  }

  grpc::Status Hello(grpc::ServerContext*, const v1::HelloRequest*, v1::Plan* out) override {
    out->set_federation(plan_.name);
    out->set_site(plan_.sites.at(0));
    v1::ModelSpec* m = out->mutable_model();
    m->set_architecture(plan_.model.architecture);
    m->set_in_channels(static_cast<uint32_t>(plan_.model.in_channels));
    m->set_input_size(static_cast<uint32_t>(plan_.model.input_size));
    m->set_num_classes(static_cast<uint32_t>(plan_.model.num_classes));
    out->set_manifest_sha256(manifest_sha256_);
    out->set_rounds(static_cast<uint32_t>(plan_.rounds));
    out->set_chunk_bytes(1 << 20);
    out->set_require_dp(true);
    out->set_min_report(0);
    return grpc::Status::OK;
  }

  grpc::Status WaitTask(grpc::ServerContext* ctx, const v1::WaitTaskRequest*,
                        grpc::ServerWriter<v1::Task>* writer) override {
    while (!ctx->IsCancelled()) {
      v1::Task next;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [&] { return !tasks_.empty(); };
        if (!mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(200))) continue;
        next = tasks_.front();
        tasks_.pop_front();
      }
      if (!writer->Write(next)) return grpc::Status::CANCELLED;
    }
    return grpc::Status::OK;
  }

  grpc::Status FetchModel(grpc::ServerContext*, const v1::FetchModelRequest* req,
                          grpc::ServerWriter<v1::ModelChunk>* writer) override {
    std::string bytes;
    {
      absl::MutexLock lock(&mu_);
      ++fetches_[req->sha256()];
      auto m = models_.find(req->sha256());
      if (m == models_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such model");
      bytes = m->second;
    }
    v1::ModelChunk chunk;
    chunk.set_total_bytes(bytes.size());
    chunk.set_offset(0);
    chunk.set_data(bytes);
    writer->Write(chunk);
    return grpc::Status::OK;
  }

  grpc::Status SubmitEvaluation(grpc::ServerContext*, const v1::Evaluation* e, v1::SubmitReply*) override {
    absl::MutexLock lock(&mu_);
    evaluations_.push_back(*e);
    return grpc::Status::OK;
  }

  grpc::Status DeclineTask(grpc::ServerContext*, const v1::Decline* d, v1::SubmitReply*) override {
    absl::MutexLock lock(&mu_);
    declines_.push_back(*d);
    return grpc::Status::OK;
  }

 private:
  const FederationPlan plan_;
  const std::string manifest_sha256_;
  absl::Mutex mu_;
  std::deque<v1::Task> tasks_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> models_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> fetches_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::Evaluation> evaluations_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::Decline> declines_ ABSL_GUARDED_BY(mu_);
};

int64_t Count(const std::string& db, const std::string& sql) {
  std::vector<SqlRow> rows = QueryDb(db, sql);
  return rows.empty() ? -1 : std::get<int64_t>(rows[0][0]);
}

class RogueCoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeWorkspace();
    // ~30 validation patients (0.2 of 150), one evaluation release in the
    // site's plan ([policy] rounds = 1), and a floor of one patient. (With
    // 40 patients the split once held 6, and the release's noisy count fell
    // below the floor: the proper ask came back suppressed.)
    f_ =
        SetUpFederation(dir_, {.sites = 1, .rounds = 2, .min_nodes = 1, .patients = 150, .images = 1, .min_report = 1});
    ASSERT_FALSE(HasFailure());
    ReplaceInFile(f_.NodeConfig(f_.sites[0]), "min_report = 1\n", "min_report = 1\nrounds = 1\n");
    const std::string kit = dir_ + "/kits/coordinator";
    absl::StatusOr<FederationPlan> plan = LoadPlan(kit + "/federation.toml", coordinator::CheckPlanStrategy);
    ASSERT_TRUE(plan.ok()) << plan.status();
    plan_ = *plan;
    absl::StatusOr<TlsIdentity> id =
        LoadTlsIdentity(kit + "/coordinator.toml", kit + "/ca.pem", kit + "/coordinator.pem", kit + "/coordinator.key");
    ASSERT_TRUE(id.ok()) << id.status();
    key_pem_ = id->key_pem;
    absl::StatusOr<Manifest> manifest = ModelManifest(plan_.model);
    ASSERT_TRUE(manifest.ok());
    service_ = std::make_unique<RogueCoordinator>(plan_, manifest->Sha256());
    grpc::SslServerCredentialsOptions tls(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    tls.pem_root_certs = id->ca_pem;
    tls.pem_key_cert_pairs.push_back({id->key_pem, id->certificate_pem});
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", f_.port), grpc::SslServerCredentials(tls));
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);

    absl::StatusOr<ModelParameters> init = InitialParameters(plan_.model, 11);
    ASSERT_TRUE(init.ok());
    published_ = Encode(*init);
    ModelParameters probe = *init;
    probe.values[0] += 0.5f;
    probe_ = Encode(probe);
    ModelParameters nan = *init;
    nan.values[7] = std::numeric_limits<float>::quiet_NaN();
    nan_ = Encode(nan);
    ModelParameters next = *init;
    next.values[1] -= 0.25f;
    next_ = Encode(next);
    for (const Model* m : {&published_, &probe_, &nan_, &next_}) service_->AddModel(*m);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + seconds(2));
    RemoveWorkspaceIfPassed(dir_);
  }

  std::string Sign(const std::string& key, int round, const Model& m) {
    absl::StatusOr<std::string> sig = SignModelPublication(key, {plan_.name, round, m.sha256});
    EXPECT_TRUE(sig.ok()) << sig.status();
    return sig.value_or("");
  }
  v1::Task Eval(int round, const Model& m, int published_round, std::string signature, int min_report) {
    v1::Task t;
    v1::EvalTask* e = t.mutable_evaluate();
    e->set_round(static_cast<uint32_t>(round));
    e->set_model_sha256(m.sha256);
    e->set_nonce(absl::StrCat("nonce-", ++tasks_));
    e->set_deadline_unix_ms(NowMs() + 60000);
    e->set_min_report(static_cast<uint32_t>(min_report));
    e->mutable_publication()->set_round(static_cast<uint32_t>(published_round));
    e->mutable_publication()->set_signature(std::move(signature));
    return t;
  }
  static int64_t NowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  // Sends one task and waits for the node's answer (the n-th in all).
  void Ask(v1::Task t, size_t n, const std::string& what) {
    service_->Queue(std::move(t));
    ASSERT_TRUE(service_->WaitForAnswers(n)) << what << ": no answer\n" << node_->Log();
  }
  int64_t EvaluateAccesses() {
    return Count(f_.NodeDb(f_.sites[0]),
                 "SELECT COUNT(*) FROM ledger WHERE kind = 'data_access' AND json_extract(body, '$.purpose') = "
                 "'evaluate'");
  }

  std::string dir_;
  MiniFederation f_;
  FederationPlan plan_;
  std::string key_pem_;
  std::unique_ptr<RogueCoordinator> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Process> node_;
  Model published_, probe_, nan_, next_;
  int tasks_ = 0;
};

TEST_F(RogueCoordinatorTest, EveryImproperAskIsRefusedWithoutReadingTheData) {
  const std::string site = f_.sites[0];
  const std::string db = f_.NodeDb(site);
  node_ = StartNode(f_, site);
  size_t answers = 0;
  // A site's kit cannot sign for the coordinator.
  const std::string site_key = ReadText(dir_ + "/kits/" + site + "/site.key");

  // Refused before the model is even fetched: unsigned; a probe carrying
  // the signature of the published model; signed with another key; signed
  // as another round's model; a min_report below the site's floor.
  const std::vector<std::pair<std::string, v1::Task>> improper = {
      {"unsigned", Eval(1, published_, 1, "", 1)},
      {"unpublished probe", Eval(1, probe_, 1, Sign(key_pem_, 1, published_), 1)},
      {"signed by a site", Eval(1, published_, 1, Sign(site_key, 1, published_), 1)},
      {"another round's publication", Eval(1, published_, 0, Sign(key_pem_, 0, published_), 1)},
      {"below the floor", Eval(1, published_, 1, Sign(key_pem_, 1, published_), 0)},
  };
  for (const auto& [what, task] : improper) {
    Ask(task, ++answers, what);
    ASSERT_FALSE(HasFailure());
    const v1::Evaluation e = service_->evaluations().back();
    EXPECT_TRUE(e.suppressed()) << what;
    EXPECT_FALSE(e.has_release()) << what;
  }
  EXPECT_EQ(service_->fetches(published_.sha256), 0);
  EXPECT_EQ(service_->fetches(probe_.sha256), 0);
  EXPECT_EQ(Count(db, "SELECT COUNT(*) FROM ledger WHERE kind = 'model_refused'"), 4);

  // Signed, but with a NaN: fetched, refused, nothing evaluated.
  Ask(Eval(1, nan_, 1, Sign(key_pem_, 1, nan_), 1), ++answers, "NaN model");
  EXPECT_TRUE(service_->evaluations().back().suppressed());
  EXPECT_EQ(Count(db,
                  "SELECT COUNT(*) FROM ledger WHERE kind = 'model_refused' AND json_extract(body, '$.reason') "
                  "LIKE '%finite%'"),
            1);
  EXPECT_EQ(EvaluateAccesses(), 0);
  EXPECT_EQ(Count(db, "SELECT COUNT(*) FROM privacy_ledger WHERE kind = 'evaluation'"), 0);

  // The proper ask: one release, charged.
  Ask(Eval(1, published_, 1, Sign(key_pem_, 1, published_), 1), ++answers, "proper");
  {
    const v1::Evaluation e = service_->evaluations().back();
    EXPECT_FALSE(e.suppressed()) << node_->Log();
    EXPECT_TRUE(e.has_release());
    EXPECT_GT(e.release().noise_multiplier(), 0);
  }
  EXPECT_EQ(EvaluateAccesses(), 1);
  EXPECT_EQ(Count(db, "SELECT COUNT(*) FROM privacy_ledger WHERE kind = 'evaluation'"), 1);

  // The same round again, properly signed: one release per round.
  Ask(Eval(1, published_, 1, Sign(key_pem_, 1, published_), 1), ++answers, "second release of round 1");
  EXPECT_TRUE(service_->evaluations().back().suppressed());
  // The next round's model, properly signed, after the site's one planned
  // release spent its evaluation budget.
  Ask(Eval(2, next_, 2, Sign(key_pem_, 2, next_), 1), ++answers, "after the budget");
  EXPECT_TRUE(service_->evaluations().back().suppressed());
  EXPECT_EQ(EvaluateAccesses(), 1);
  EXPECT_EQ(Count(db, "SELECT COUNT(*) FROM privacy_ledger WHERE kind = 'evaluation'"), 1);
  EXPECT_EQ(Count(db,
                  "SELECT COUNT(*) FROM ledger WHERE kind = 'policy_refused' AND json_extract(body, '$.detail') "
                  "LIKE '%evaluation budget spent%'"),
            1)
      << node_->Log();

  // Training on an unsigned base: declined as a refused model, nothing charged.
  v1::Task train;
  v1::TrainTask* t = train.mutable_train();
  t->set_round(2);
  t->set_attempt(1);
  t->set_model_sha256(published_.sha256);
  t->set_nonce("train-nonce");
  t->set_deadline_unix_ms(NowMs() + 60000);
  t->mutable_hyperparameters()->set_local_epochs(1);
  t->mutable_hyperparameters()->set_batch_size(16);
  t->mutable_hyperparameters()->set_learning_rate(0.01);
  t->mutable_publication()->set_round(1);
  Ask(train, ++answers, "unsigned base model");
  ASSERT_EQ(service_->declines().size(), 1u);
  EXPECT_EQ(service_->declines()[0].reason(), v1::Decline::MODEL_REFUSED);
  EXPECT_NE(service_->declines()[0].detail().find("did not sign"), std::string::npos)
      << service_->declines()[0].detail();
  EXPECT_EQ(Count(db,
                  "SELECT COUNT(*) FROM ledger WHERE kind = 'data_access' AND json_extract(body, '$.purpose') = "
                  "'train'"),
            0);
  EXPECT_EQ(Count(db, "SELECT COUNT(*) FROM privacy_ledger WHERE kind = 'dp-sgd'"), 0);

  // "Your update was discarded" for an update the node never sent writes nothing.
  v1::Task failed;
  failed.mutable_failed()->set_round(2);
  failed.mutable_failed()->set_attempt(1);
  failed.mutable_failed()->set_reason("made up");
  service_->Queue(failed);

  v1::Task stop;
  stop.mutable_stop()->set_reason("test over");
  service_->Queue(stop);
  EXPECT_EQ(node_->Wait(std::chrono::seconds(30)), 0) << node_->Log();
  EXPECT_EQ(Count(db, "SELECT COUNT(*) FROM ledger WHERE kind = 'update_outcome'"), 0);
  EXPECT_NE(node_->Log().find("has no accepted record of; ignored"), std::string::npos) << node_->Log();

  // What the node verified re-verifies from its ledger alone: the proper
  // publications of rounds 1 (the model and the NaN one) and 2.
  const std::string out = dir_ + "/verify.log";
  EXPECT_EQ(RunCommand({FedradBin(), "audit", "verify", "--ca", dir_ + "/kits/coordinator/ca.pem", "--node", db}, out),
            0)
      << ReadText(out);
  EXPECT_NE(ReadText(out).find("model publications: 3 signature(s)"), std::string::npos) << ReadText(out);
}

}  // namespace
}  // namespace fedrad::testing
