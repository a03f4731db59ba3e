#include "tests/harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace fedrad::testing {

std::string FedradBin() { return FEDRAD_BIN; }
std::string NodeBin() { return FEDRAD_NODE_BIN; }
std::string CoordinatorBin() { return FEDRAD_COORDINATOR_BIN; }
std::string RogueNodeBin() { return FEDRAD_ROGUE_BIN; }
std::string SourceDir() { return FEDRAD_SOURCE_DIR; }

Process::Process(std::vector<std::string> argv, std::string log_path, std::string cwd)
    : log_path_(std::move(log_path)) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  if (posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ) != 0) pid_ = -1;
  posix_spawn_file_actions_destroy(&actions);
  EXPECT_GT(pid_, 0) << "cannot start " << argv[0];
}

Process::~Process() {
  if (Running()) {
    Signal(SIGKILL);
    Wait(std::chrono::seconds(10));
  }
}

bool Process::Running() {
  if (pid_ <= 0 || status_) return false;
  int st = 0;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return false;
  }
  return true;
}

void Process::Signal(int sig) {
  if (pid_ > 0 && !status_) ::kill(pid_, sig);
}

std::optional<int> Process::Wait(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (Running()) {
    if (std::chrono::steady_clock::now() > until) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return status_;
}

std::string Process::Log() const { return ReadText(log_path_); }

std::string MakeWorkspace() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string dir = absl::StrCat(std::filesystem::temp_directory_path().string(), "/fedrad-it-",
                                 info->test_suite_name(), "-", info->name(), "-", ::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void RemoveWorkspaceIfPassed(const std::string& dir) {
  if (::testing::Test::HasFailure()) {
    std::fprintf(stderr, "workspace kept for inspection: %s\n", dir.c_str());
  } else {
    std::filesystem::remove_all(dir);
  }
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

int RunCommand(const std::vector<std::string>& argv, const std::string& log_path, std::chrono::milliseconds timeout) {
  Process p(argv, log_path);
  std::optional<int> code = p.Wait(timeout);
  return code.value_or(-1);
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteText(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

MiniFederation SetUpFederation(const std::string& dir, const MiniFederationOptions& o) {
  MiniFederation f;
  f.dir = dir;
  f.port = FreePort();
  std::string plan = absl::StrCat(
      "[federation]\nname = \"it\"\nrounds = ", o.rounds, "\nmin_nodes = ", o.min_nodes,
      "\nround_deadline_s = ", o.round_deadline_s, "\nmax_attempts = ", o.max_attempts,
      "\nretry_backoff_s = ", o.retry_backoff_s, "\neval_deadline_s = 30\nstart_grace_s = ", o.start_grace_s,
      "\nseed = 3\nmin_report = ", o.min_report, "\nupdate_dtype = \"", o.update_dtype, "\"\n\n[model]\n",
      o.task == "segmentation" ? "task = \"segmentation\"\narchitecture = \"unet2d\"\ndepth = 2\nbase_width = 8\n"
                                 "class_names = [\"background\", \"lesion\"]\n"
      : o.task == "multilabel" ? "task = \"multilabel\"\narchitecture = \"ctnet\"\nnum_classes = 3\n"
                                 "class_names = [\"lesion\", \"effusion\", \"clip\"]\n"
                               : "architecture = \"ctnet\"\n",
      "input_size = 32\n", o.model_init.empty() ? "" : absl::StrCat("init = \"", o.model_init, "\"\n"), o.model_lines,
      "\n", "[training]\nlocal_epochs = ", o.local_epochs, "\nbatch_size = ", o.batch_size,
      "\nlearning_rate = 0.01\n\n", "[coordinator]\naddress = \"127.0.0.1:", f.port,
      "\"\nhosts = [\"localhost\", \"127.0.0.1\"]\n");
  for (int i = 0; i < o.sites; ++i) {
    f.sites.push_back(absl::StrCat("site-", std::string(1, static_cast<char>('a' + i))));
    absl::StrAppend(&plan, "\n[[site]]\nname = \"", f.sites.back(), "\"\n");
  }
  WriteText(dir + "/plan.toml", plan);
  std::vector<std::string> synth = {FedradBin(),  "synth",
                                    "--sites",    std::to_string(o.sites),
                                    "--seed",     "5",
                                    "--out",      dir + "/data",
                                    "--patients", std::to_string(o.patients),
                                    "--images",   std::to_string(o.images),
                                    "--size",     "64",
                                    "--task",     o.task,
                                    "--names"};
  for (const std::string& s : f.sites) synth.push_back(s);
  EXPECT_EQ(RunCommand(synth, dir + "/synth.log"), 0) << ReadText(dir + "/synth.log");
  EXPECT_EQ(RunCommand({FedradBin(), "provision", "--plan", dir + "/plan.toml", "--out", dir + "/kits", "--data-root",
                        dir + "/data"},
                       dir + "/provision.log"),
            0)
      << ReadText(dir + "/provision.log");
  for (const std::string& s : f.sites) {
    // Quick retries in tests, one LibTorch thread per node.
    ReplaceInFile(f.NodeConfig(s), "max_backoff_s = 10", "max_backoff_s = 1");
    ReplaceInFile(f.NodeConfig(s), "threads = 0", "threads = 1");
    if (!o.dp) ReplaceInFile(f.NodeConfig(s), "enabled = true", "enabled = false");
    // The site's evaluation floor follows the plan's (the kits write 10).
    if (o.min_report != 10) {
      ReplaceInFile(f.NodeConfig(s), "min_report = 10\n", absl::StrCat("min_report = ", o.min_report, "\n"));
    }
  }
  return f;
}

void ReplaceInFile(const std::string& path, const std::string& from, const std::string& to) {
  std::string text = ReadText(path);
  const size_t at = text.find(from);
  if (at == std::string::npos) {
    ADD_FAILURE() << path << " has no '" << from << "' to replace with '" << to << "'";
    return;
  }
  text.replace(at, from.size(), to);
  WriteText(path, text);
}

void UseNoopTrainers(const MiniFederation& f, const std::map<std::string, double>& seconds) {
  for (const std::string& site : f.sites) {
    auto s = seconds.find(site);
    ReplaceInFile(f.NodeConfig(site), "trainer = \"torch\"",
                  s == seconds.end() ? std::string("trainer = \"noop\"")
                                     : absl::StrCat("trainer = \"noop\"\nnoop_seconds = ", s->second));
  }
}

std::unique_ptr<Process> StartCoordinator(const MiniFederation& f, const std::string& log_name) {
  const std::string log = f.dir + "/" + log_name;
  auto p = std::make_unique<Process>(
      std::vector<std::string>{CoordinatorBin(), "serve", "--config", f.CoordinatorConfig()}, log);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (ReadText(log).find("listening on") == std::string::npos) {
    if (!p->Running() || std::chrono::steady_clock::now() > until) {
      ADD_FAILURE() << "coordinator did not start:\n" << ReadText(log);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return p;
}

std::unique_ptr<Process> StartNode(const MiniFederation& f, const std::string& site) {
  return std::make_unique<Process>(std::vector<std::string>{NodeBin(), "run", "--config", f.NodeConfig(site)},
                                   f.dir + "/" + site + ".log");
}

std::vector<std::string> RunFederationToCompletion(const MiniFederation& f, std::chrono::minutes timeout) {
  auto coordinator = StartCoordinator(f, "coordinator.log");
  std::vector<std::unique_ptr<Process>> nodes;
  for (const std::string& site : f.sites) nodes.push_back(StartNode(f, site));
  EXPECT_EQ(coordinator->Wait(timeout), 0) << coordinator->Log();
  std::vector<std::string> logs{coordinator->Log()};
  for (auto& node : nodes) {
    EXPECT_EQ(node->Wait(std::chrono::seconds(30)), 0) << node->Log();
    logs.push_back(node->Log());
  }
  return logs;
}

std::vector<SqlRow> QueryDb(const std::string& path, const std::string& sql) {
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path);
  EXPECT_TRUE(db.ok()) << db.status();
  if (!db.ok()) return {};
  absl::StatusOr<std::vector<SqlRow>> rows = (*db)->Query(sql);
  EXPECT_TRUE(rows.ok()) << rows.status();
  return rows.ok() ? *rows : std::vector<SqlRow>{};
}

bool WaitForRow(const std::string& path, const std::string& sql, std::chrono::milliseconds timeout, Process* watched) {
  // The process being watched creates the database and then its tables: until
  // they exist the query fails, which is "not yet", not a failure. The last
  // error is said if the row never comes.
  const auto until = std::chrono::steady_clock::now() + timeout;
  absl::Status last = absl::NotFoundError("no row yet");
  while (std::chrono::steady_clock::now() < until && (watched == nullptr || watched->Running())) {
    if (std::filesystem::exists(path)) {
      absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(path);
      absl::StatusOr<std::vector<SqlRow>> rows = db.ok() ? (*db)->Query(sql) : db.status();
      if (rows.ok() && !rows->empty()) return true;
      last = rows.ok() ? absl::NotFoundError("no row yet") : rows.status();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ADD_FAILURE() << "no row of \"" << sql << "\" in " << path << ": " << last;
  return false;
}

}  // namespace fedrad::testing
