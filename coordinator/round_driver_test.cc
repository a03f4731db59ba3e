// The round driver on a FakeClock, with sites answering through its own
// interfaces (project types, the intake's uploads): quorum and retry,
// deadlines, close_at_fraction and declines, each in milliseconds. The
// integration tests (tests/) confirm the same over real processes and TLS.

#include "coordinator/round_driver.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <deque>
#include <filesystem>
#include <future>
#include <thread>

#include "common/sqlite.h"
#include "crypto/pki.h"
#include "crypto/sha256.h"

namespace fedrad::coordinator {
namespace {

constexpr int kValues = 16;

// A site's task stream, as the driver sees it: tasks land in a queue the
// test reads.
class FakeSite final : public TaskChannel {
 public:
  explicit FakeSite(std::string name) : name_(std::move(name)) {}
  void Send(const protocol::Task& task) override {
    absl::MutexLock lock(&mu_);
    tasks_.push_back(task);
  }
  void Close() override {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }
  // The next task, waiting for it in real time (the driver runs on its own
  // thread); a test that waits this long has failed.
  std::optional<protocol::Task> Next() {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !tasks_.empty(); };
    if (!mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Seconds(30))) return std::nullopt;
    protocol::Task t = tasks_.front();
    tasks_.pop_front();
    return t;
  }
  template <class T>
  T NextOf() {
    std::optional<protocol::Task> t = Next();
    EXPECT_TRUE(t.has_value()) << name_ << " got no task";
    if (!t) return T{};
    const T* typed = std::get_if<T>(&*t);
    EXPECT_NE(typed, nullptr) << name_ << " got a task of another kind (index " << t->index() << ")";
    return typed ? *typed : T{};
  }
  // Waits (in real time, briefly) for the driver to close the stream.
  bool closed() {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&closed_), absl::Seconds(30));
  }
  size_t pending() {
    absl::MutexLock lock(&mu_);
    return tasks_.size();
  }
  const std::string& name() const { return name_; }

 private:
  const std::string name_;
  absl::Mutex mu_;
  std::deque<protocol::Task> tasks_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

class RoundDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/round_driver_test_" + std::to_string(::getpid());
    std::filesystem::remove_all(dir_);
    auto ca = crypto::CertificateAuthority::Create("round driver test", 2);
    ASSERT_TRUE(ca.ok()) << ca.status();
    config_.state_dir = dir_;
    config_.linger_s = 1;
    config_.tls.key_pem = (*ca)->private_key_pem();
    config_.tls.certificate_pem = (*ca)->certificate_pem();
    config_.tls.ca_pem = (*ca)->certificate_pem();
    config_.tls.common_name = "coordinator";
    FederationPlan& p = config_.plan;
    p.name = "unit";
    p.rounds = 1;
    p.min_nodes = 2;
    p.round_deadline_s = 600;
    p.eval_deadline_s = 120;
    p.start_grace_s = 5;
    p.retry_backoff_s = 5;
    p.min_report = 1;
    p.model.architecture = "flat";
    p.model.parameters = kValues;
    p.sites = {"a", "b", "c"};
  }
  void TearDown() override {
    if (driver_) {
      driver_->Shutdown();
      if (run_.valid()) run_.wait();
      for (auto& [name, site] : sites_) driver_->Disconnect(name, site.get());
      driver_.reset();
    }
    std::filesystem::remove_all(dir_);
  }

  void Start() {
    absl::StatusOr<std::unique_ptr<RoundDriver>> d = RoundDriver::Create(config_, &clock_);
    ASSERT_TRUE(d.ok()) << d.status();
    driver_ = std::move(*d);
    run_ = std::async(std::launch::async, [this] { return driver_->Run(); });
  }
  FakeSite& Connect(const std::string& name) {
    auto& site = sites_[name];
    site = std::make_unique<FakeSite>(name);
    EXPECT_TRUE(driver_->Connect(name, site.get(), "ipv4:127.0.0.1:1").ok());
    return *site;
  }
  // Waits (in real time, briefly) until the driver waits on the fake clock
  // for a deadline still ahead, then moves the clock on by `d`.
  void Advance(absl::Duration d) {
    for (int i = 0; i < 30000 && !clock_.NextDeadline(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_TRUE(clock_.NextDeadline().has_value()) << "the driver never waited on its clock";
    clock_.Advance(d);
  }

  // The site's answer: an update of its `delta`s for `task`, through the
  // intake as the service would move it. What the node would be told.
  absl::Status Answer(const std::string& site, const protocol::TrainingTask& task, float delta = 0.01f) {
    std::vector<float> values(kValues, delta);
    const std::string bytes(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    protocol::UpdateClaim claim;
    claim.round = task.round;
    claim.attempt = task.attempt;
    claim.nonce = task.nonce;
    claim.base_model_sha256 = task.model_sha256;
    claim.update_sha256 = crypto::Sha256Hex(bytes);
    claim.total_bytes = bytes.size();
    claim.num_examples = 10;
    claim.dtype = WireDtype::kFloat32;
    absl::StatusOr<UpdateTicket> ticket = driver_->BeginUpdate(site, claim);
    if (!ticket.ok()) return ticket.status();
    absl::StatusOr<std::unique_ptr<UpdateIntake::Upload>> upload = driver_->OpenUpload(*ticket);
    if (!upload.ok()) return upload.status();
    absl::Status outcome = (*upload)->Take(bytes);
    if (outcome.ok()) outcome = (*upload)->Complete();
    std::promise<absl::Status> told;
    driver_->FinishUpdate(*ticket, outcome, [&](const absl::Status& s) { told.set_value(s); });
    return told.get_future().get();
  }
  absl::Status Suppressed(const std::string& site, const protocol::EvaluationTask& task) {
    std::promise<absl::Status> told;
    driver_->RecordEvaluation(site, protocol::EvaluationReport{task.round, task.nonce, task.model_sha256, true},
                              [&](const absl::Status& s) { told.set_value(s); });
    return told.get_future().get();
  }
  // Every connected site answers its evaluation task with a suppressed
  // report, then hears Stop.
  void EvaluateAndStop(const std::vector<std::string>& names) {
    for (const std::string& n : names) {
      protocol::EvaluationTask e = sites_[n]->NextOf<protocol::EvaluationTask>();
      EXPECT_TRUE(Suppressed(n, e).ok());
    }
    for (const std::string& n : names) StopAndLeave(n);
  }
  // The site hears Stop, its stream is closed after it, and it goes.
  void StopAndLeave(const std::string& name) {
    sites_[name]->NextOf<protocol::StopTask>();
    EXPECT_TRUE(sites_[name]->closed()) << name << "'s stream stays open after Stop";
    driver_->Disconnect(name, sites_[name].get());
  }
  // Sites a, b and c connect; the first round's training task of each.
  std::vector<protocol::TrainingTask> ConnectAllAndTakeTheirTasks() {
    std::vector<FakeSite*> sites = {&Connect("a"), &Connect("b"), &Connect("c")};
    std::vector<protocol::TrainingTask> tasks;
    for (FakeSite* s : sites) tasks.push_back(s->NextOf<protocol::TrainingTask>());
    return tasks;
  }
  // Run() returns OK, with these attempts in state.db.
  void ExpectTheRunEndsWith(const std::vector<std::tuple<int64_t, int64_t, std::string>>& attempts) {
    ASSERT_EQ(run_.wait_for(std::chrono::seconds(30)), std::future_status::ready);
    EXPECT_TRUE(run_.get().ok());
    EXPECT_EQ(Attempts(), attempts);
  }
  // (round, attempt, status) of every attempt in state.db.
  std::vector<std::tuple<int64_t, int64_t, std::string>> Attempts() {
    auto db = Database::OpenReadOnly(dir_ + "/state.db");
    EXPECT_TRUE(db.ok());
    std::vector<std::tuple<int64_t, int64_t, std::string>> out;
    auto rows = (*db)->Query("SELECT round, attempt, status FROM rounds ORDER BY round, attempt");
    EXPECT_TRUE(rows.ok());
    for (const SqlRow& r : *rows) out.emplace_back(AsInt(r[0]), AsInt(r[1]), AsText(r[2]));
    return out;
  }

  std::string dir_;
  CoordinatorConfig config_;
  FakeClock clock_;
  std::unique_ptr<RoundDriver> driver_;
  std::future<absl::Status> run_;
  std::map<std::string, std::unique_ptr<FakeSite>> sites_;
};

TEST_F(RoundDriverTest, TooFewAnswersByTheDeadlineFailTheAttemptAndTheRetryComesAfterTheBackoff) {
  config_.plan.start_grace_s = 0;  // c never comes; no wait for it
  Start();
  FakeSite& a = Connect("a");
  FakeSite& b = Connect("b");
  protocol::TrainingTask ta = a.NextOf<protocol::TrainingTask>();
  protocol::TrainingTask tb = b.NextOf<protocol::TrainingTask>();
  EXPECT_EQ(ta.round, 1);
  EXPECT_EQ(ta.attempt, 1);
  EXPECT_EQ(ta.deadline_unix_ms, clock_.NowMs() + 600000) << "the deadline is on the driver's clock";
  EXPECT_NE(ta.nonce, tb.nonce);
  ASSERT_TRUE(Answer("a", ta).ok());
  EXPECT_EQ(Answer("a", ta).code(), absl::StatusCode::kAlreadyExists) << "one answer per site";
  Advance(absl::Seconds(600));              // b never answers: 1 of min_nodes 2
  a.NextOf<protocol::RoundFailedNotice>();  // a's accepted update was not used
  // The retry comes retry_backoff_s (5 s) later, not at once: nothing is
  // asked until the fake clock has moved that far.
  Advance(absl::Seconds(4));
  EXPECT_EQ(a.pending() + b.pending(), 0u) << "the retry came before its backoff";
  Advance(absl::Seconds(1));
  protocol::TrainingTask ta2 = a.NextOf<protocol::TrainingTask>();
  protocol::TrainingTask tb2 = b.NextOf<protocol::TrainingTask>();
  EXPECT_EQ(ta2.attempt, 2);
  EXPECT_EQ(Answer("b", tb).code(), absl::StatusCode::kFailedPrecondition) << "attempt 1 is closed";
  ASSERT_TRUE(Answer("a", ta2).ok());
  ASSERT_TRUE(Answer("b", tb2).ok());
  EvaluateAndStop({"a", "b"});
  ExpectTheRunEndsWith({{1, 1, "failed"}, {1, 2, "applied"}});
}

TEST_F(RoundDriverTest, CloseAtFractionDoesNotWaitForTheLastSite) {
  config_.plan.close_at_fraction = 0.6;  // 2 of 3
  Start();
  const std::vector<protocol::TrainingTask> t = ConnectAllAndTakeTheirTasks();
  ASSERT_TRUE(Answer("a", t[0]).ok());
  ASSERT_TRUE(Answer("b", t[1]).ok());
  // No time passes: the round closes on the second answer.
  protocol::EvaluationTask e = sites_["a"]->NextOf<protocol::EvaluationTask>();
  EXPECT_EQ(e.round, 1);
  EXPECT_EQ(Answer("c", t[2]).code(), absl::StatusCode::kFailedPrecondition)
      << "the straggler's update comes after the round closed";
  ASSERT_TRUE(Suppressed("a", e).ok());
  EvaluateAndStop({"b", "c"});
  StopAndLeave("a");
  ExpectTheRunEndsWith({{1, 1, "applied"}});
  EXPECT_EQ(clock_.Now(), absl::FromUnixSeconds(1800000000)) << "nothing waited for a deadline";
}

TEST_F(RoundDriverTest, ASiteThatDeclinesForItsBudgetIsNotAskedAgain) {
  config_.plan.rounds = 2;
  Start();
  const std::vector<protocol::TrainingTask> t = ConnectAllAndTakeTheirTasks();
  std::promise<absl::Status> declined;
  driver_->Decline("c",
                   protocol::DeclineNotice{t[2].round, t[2].attempt, t[2].nonce,
                                           protocol::DeclineReason::kBudgetExhausted, 2.9, 3.0, "epsilon 2.9 of 3"},
                   [&](const absl::Status& s) { declined.set_value(s); });
  ASSERT_TRUE(declined.get_future().get().ok());
  ASSERT_TRUE(Answer("a", t[0]).ok());
  ASSERT_TRUE(Answer("b", t[1]).ok());
  for (const char* n : {"a", "b", "c"}) {
    ASSERT_TRUE(Suppressed(n, sites_[n]->NextOf<protocol::EvaluationTask>()).ok());
  }
  // Round 2 goes to a and b only; c (budget spent) hears only the end.
  protocol::TrainingTask ta2 = sites_["a"]->NextOf<protocol::TrainingTask>();
  protocol::TrainingTask tb2 = sites_["b"]->NextOf<protocol::TrainingTask>();
  EXPECT_EQ(ta2.round, 2);
  EXPECT_EQ(sites_["c"]->pending(), 0u);
  ASSERT_TRUE(Answer("a", ta2).ok());
  ASSERT_TRUE(Answer("b", tb2).ok());
  EvaluateAndStop({"a", "b", "c"});
  ExpectTheRunEndsWith({{1, 1, "applied"}, {2, 1, "applied"}});
}

}  // namespace
}  // namespace fedrad::coordinator
