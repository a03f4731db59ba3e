// Two nodes and a coordinator, two rounds, as separate processes over mutual
// TLS on 127.0.0.1: the global model changes each round, and the final
// model's SHA-256 is the same at the coordinator and at both nodes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

#include "common/model_zoo.h"
#include "common/safetensors.h"
#include "crypto/sha256.h"
#include "node/trainer.h"
#include "tests/harness.h"

namespace fedrad::testing {
namespace {

TEST(FederationTest, TwoNodesTwoRoundsAgreeOnTheGlobalModel) {
  const std::string dir = MakeWorkspace();
  // min_report 0: every round's release is sent, whatever its noisy count.
  MiniFederation f = SetUpFederation(dir, {.sites = 2, .rounds = 2, .min_nodes = 2, .min_report = 0});
  ASSERT_FALSE(::testing::Test::HasFailure());
  RunFederationToCompletion(f);
  ASSERT_FALSE(::testing::Test::HasFailure());

  std::vector<SqlRow> models = QueryDb(f.StateDb(), "SELECT round, sha256 FROM models ORDER BY round");
  ASSERT_EQ(models.size(), 3u);  // initial model + two rounds
  EXPECT_NE(AsText(models[0][1]), AsText(models[1][1]));
  EXPECT_NE(AsText(models[1][1]), AsText(models[2][1]));
  const std::string final_sha = AsText(models[2][1]);

  // The coordinator's file hashes to its name and says which round it is.
  const std::string path = dir + "/kits/coordinator/state/models/" + final_sha + ".safetensors";
  EXPECT_EQ(*crypto::Sha256File(path), final_sha);
  auto file = ReadSafetensorsFile(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata.at("round"), "2");
  EXPECT_EQ(file->metadata.at("architecture"), "ctnet");
  // ...and the preprocessing its sites trained on (both use the kit's).
  EXPECT_EQ(file->metadata.at("preprocessing").find('\n'), std::string::npos);
  EXPECT_EQ(file->metadata.at("preprocessing_sha256"), crypto::Sha256Hex(file->metadata.at("preprocessing")));

  for (const std::string& site : f.sites) {
    // Each node recorded receiving the final model, and its own copy hashes the same.
    std::vector<SqlRow> got = QueryDb(f.NodeDb(site), "SELECT sha256 FROM models_received");
    bool has_final = false;
    for (const SqlRow& r : got) has_final |= AsText(r[0]) == final_sha;
    EXPECT_TRUE(has_final) << site << " never received the final model";
    EXPECT_EQ(*crypto::Sha256File(dir + "/kits/" + site + "/state/models/" + final_sha + ".safetensors"), final_sha);
    // Both its updates were accepted.
    std::vector<SqlRow> sent = QueryDb(f.NodeDb(site), "SELECT outcome FROM updates_sent ORDER BY round");
    ASSERT_EQ(sent.size(), 2u) << site;
    for (const SqlRow& r : sent) EXPECT_EQ(AsText(r[0]), "accepted");
    // Scoring the final model locally on the site's validation split gives
    // what the node itself measured (exactly, kept on site) in the
    // federation's last evaluation.
    std::vector<SqlRow> own =
        QueryDb(f.NodeDb(site), "SELECT accuracy, count FROM evaluations WHERE model_sha256 = '" + final_sha + "'");
    ASSERT_EQ(own.size(), 1u) << site;
    const std::string log = dir + "/evaluate-" + site + ".log";
    ASSERT_EQ(
        RunCommand({NodeBin(), "evaluate", "--config", f.NodeConfig(site), "--model", path, "--bootstrap", "50"}, log),
        0)
        << ReadText(log);
    const std::string table = ReadText(log);
    EXPECT_NE(table.find(" on " + std::to_string(AsInt(own[0][1])) + " images"), std::string::npos) << table;
    const size_t at = table.find("\naccuracy ");
    ASSERT_NE(at, std::string::npos) << table;
    EXPECT_NEAR(std::stod(table.substr(at + 10)), AsDouble(own[0][0]), 1e-4) << table;
    EXPECT_NE(table.find("ROC AUC"), std::string::npos) << table;

    // A clinician's run on the site's folder uses the final model the node holds.
    const std::string predict_log = dir + "/predict-" + site + ".log";
    ASSERT_EQ(RunCommand({NodeBin(), "predict", "--config", f.NodeConfig(site), "--input", dir + "/data/" + site,
                          "--out", dir + "/predict-" + site + ".csv"},
                         predict_log),
              0)
        << ReadText(predict_log);
    EXPECT_NE(ReadText(predict_log).find("sha256 " + final_sha.substr(0, 12)), std::string::npos)
        << ReadText(predict_log);
  }
  std::vector<SqlRow> rounds = QueryDb(f.StateDb(), "SELECT round, status, answered FROM rounds ORDER BY round");
  ASSERT_EQ(rounds.size(), 2u);
  for (const SqlRow& r : rounds) {
    EXPECT_EQ(AsText(r[1]), "applied");
    EXPECT_EQ(AsInt(r[2]), 2);
  }
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM evaluations WHERE round = 2")[0][0], SqlValue(int64_t{2}));
  RemoveWorkspaceIfPassed(dir);
}

// Federated evaluation without DP (sites that set [privacy] enabled =
// false): the release is exact. A site whose release counts at least
// min_report validation patients sends it (a confusion matrix the
// coordinator pools); a smaller one sends nothing but the suppressed flag,
// not even its count, and the round's figures leave it out.
TEST(FederationTest, SmallSitesSendNoRelease) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(
      dir, {.sites = 2, .rounds = 1, .min_nodes = 2, .patients = 100, .images = 1, .dp = false, .min_report = 10});
  ASSERT_FALSE(::testing::Test::HasFailure());
  // The second site keeps 3 patients' labels: at most 3 validation patients.
  const std::string small = f.sites[1], large = f.sites[0];
  const std::string labels = dir + "/data/" + small + "/labels.csv";
  std::vector<std::string> lines = absl::StrSplit(ReadText(labels), '\n');
  WriteText(labels, absl::StrJoin(std::vector<std::string>(lines.begin(), lines.begin() + 4), "\n") + "\n");
  std::vector<std::string> logs = RunFederationToCompletion(f);
  ASSERT_FALSE(::testing::Test::HasFailure());

  // What each node measured itself (one image per patient: images = patients).
  std::map<std::string, std::pair<double, int64_t>> sent;
  for (const std::string& site : f.sites) {
    std::vector<SqlRow> r = QueryDb(f.NodeDb(site), "SELECT accuracy, count FROM evaluations WHERE round = 1");
    ASSERT_EQ(r.size(), 1u) << site;
    sent[site] = {AsDouble(r[0][0]), AsInt(r[0][1])};
  }
  ASSERT_GE(sent[large].second, 10) << "the large site's split changed; pick other sizes";
  ASSERT_LT(sent[small].second, 10);

  std::vector<SqlRow> got =
      QueryDb(f.StateDb(),
              "SELECT e.site, e.accuracy, e.count, f.suppressed, f.confusion, f.roc_auc FROM evaluations e "
              "JOIN evaluation_figures f USING(round, site) WHERE e.round = 1 ORDER BY e.site");
  ASSERT_EQ(got.size(), 2u);
  for (const SqlRow& r : got) {
    const std::string site = AsText(r[0]);
    if (site == small) {
      EXPECT_EQ(AsInt(r[2]), 0) << "not even its count left";
      EXPECT_EQ(AsInt(r[3]), 1);
      EXPECT_EQ(AsDouble(r[1]), 0.0);  // nothing at all
      EXPECT_EQ(AsText(r[4]), "");
      EXPECT_TRUE(std::holds_alternative<std::nullptr_t>(r[5]));
    } else {
      EXPECT_EQ(AsInt(r[2]), sent[site].second) << site;
      EXPECT_EQ(AsInt(r[3]), 0);
      EXPECT_NEAR(AsDouble(r[1]), sent[site].first, 1e-9);
      int64_t sum = 0;
      for (absl::string_view n : absl::StrSplit(AsText(r[4]), ',')) sum += std::stoll(std::string(n));
      EXPECT_EQ(sum, sent[site].second);
    }
  }
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT noise_multiplier FROM evaluation_releases WHERE site = '" + large + "'")[0][0],
            SqlValue(0.0));
  std::vector<SqlRow> round =
      QueryDb(f.StateDb(), "SELECT reporting_sites, count, accuracy FROM round_evaluations WHERE round = 1");
  ASSERT_EQ(round.size(), 1u);
  EXPECT_EQ(AsInt(round[0][0]), 1);
  EXPECT_EQ(AsInt(round[0][1]), sent[large].second);
  EXPECT_NEAR(AsDouble(round[0][2]), sent[large].first, 1e-9);
  EXPECT_NE(logs[0].find("(supp.)"), std::string::npos) << logs[0];
  RemoveWorkspaceIfPassed(dir);
}

// trainer = "noop" (for round-overhead benchmarks): rounds complete, no data
// is read, nothing is charged to the privacy ledger.
TEST(FederationTest, NoopNodesCompleteRoundsWithoutReadingData) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 2, .rounds = 2, .min_nodes = 2, .start_grace_s = 1});
  ASSERT_FALSE(::testing::Test::HasFailure());
  UseNoopTrainers(f);
  std::vector<std::string> logs = RunFederationToCompletion(f, std::chrono::minutes(2));
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM rounds WHERE status = 'applied'")[0][0], SqlValue(int64_t{2}));
  for (size_t i = 1; i < logs.size(); ++i) {
    EXPECT_EQ(logs[i].find("] info: data: "), std::string::npos) << logs[i];
    EXPECT_NE(logs[i].find("trainer = \"noop\""), std::string::npos) << logs[i];
  }
  for (const std::string& site : f.sites) {
    EXPECT_EQ(QueryDb(f.NodeDb(site), "SELECT COUNT(*) FROM updates_sent WHERE outcome = 'accepted'")[0][0],
              SqlValue(int64_t{2}));
    EXPECT_TRUE(QueryDb(f.NodeDb(site), "SELECT 1 FROM privacy_ledger").empty());
    // Three models were received (initial, after round 1, after round 2); the newest stays.
    EXPECT_EQ(QueryDb(f.NodeDb(site), "SELECT COUNT(*) FROM models_received")[0][0], SqlValue(int64_t{3}));
    std::vector<std::string> cached;
    for (const auto& e : std::filesystem::directory_iterator(f.dir + "/kits/" + site + "/state/models")) {
      cached.push_back(e.path().filename().string());
    }
    EXPECT_EQ(cached.size(), 1u) << site;
  }
  RemoveWorkspaceIfPassed(dir);
}

// max_concurrent_streams = 1: four nodes answer together, all but one wait
// for the download and upload slot in turn, and every update still counts.
TEST(FederationTest, StreamsBeyondTheLimitWaitTheirTurn) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 4, .rounds = 2, .min_nodes = 4, .start_grace_s = 1});
  ASSERT_FALSE(::testing::Test::HasFailure());
  UseNoopTrainers(f);
  ReplaceInFile(f.CoordinatorConfig(), "max_concurrent_streams = 16", "max_concurrent_streams = 1");
  // 32 MB models and updates: four nodes asking at once overlap, so some
  // must wait for the one slot (a small model would move too fast to tell).
  ReplaceInFile(dir + "/kits/coordinator/federation.toml", "architecture = \"ctnet\"\ninput_size = 32",
                "architecture = \"flat\"\nparameters = 8000000");
  ASSERT_FALSE(::testing::Test::HasFailure());
  const std::vector<std::string> logs = RunFederationToCompletion(f, std::chrono::minutes(3));
  ASSERT_FALSE(logs.empty());
  std::smatch m;
  ASSERT_TRUE(
      std::regex_search(logs[0], m,
                        std::regex("model downloads: at most (\\d+) at once \\(limit 1\\), (\\d+) waited for a "
                                   "slot; update uploads: at most (\\d+) at once \\(limit 1\\), (\\d+) waited")))
      << logs[0];
  EXPECT_EQ(m[1], "1");
  EXPECT_EQ(m[3], "1");
  EXPECT_GT(std::stoi(m[2]), 0) << "no download ever waited: the limit was not in force";
  EXPECT_GT(std::stoi(m[4]), 0) << "no upload ever waited: the limit was not in force";
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM rounds WHERE status = 'applied'")[0][0], SqlValue(int64_t{2}));
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM submissions WHERE status = 'accepted'")[0][0],
            SqlValue(int64_t{8}));
  RemoveWorkspaceIfPassed(dir);
}

// update_dtype = "bfloat16": DP-trained updates travel at half the bytes and
// are accepted; both sides record the SHA-256 of the same (bfloat16) bytes.
TEST(FederationTest, BFloat16UpdatesAreAcceptedAndHashedAsSent) {
  const std::string dir = MakeWorkspace();
  MiniFederation f =
      SetUpFederation(dir, {.sites = 2, .rounds = 1, .min_nodes = 2, .start_grace_s = 1, .update_dtype = "bfloat16"});
  ASSERT_FALSE(::testing::Test::HasFailure());
  RunFederationToCompletion(f, std::chrono::minutes(3));
  EXPECT_EQ(QueryDb(f.StateDb(), "SELECT COUNT(*) FROM rounds WHERE status = 'applied'")[0][0], SqlValue(int64_t{1}));
  for (const std::string& site : f.sites) {
    auto sent = QueryDb(f.NodeDb(site), "SELECT update_sha256 FROM updates_sent WHERE outcome = 'accepted'");
    ASSERT_EQ(sent.size(), 1u) << site;
    auto got = QueryDb(f.StateDb(),
                       "SELECT update_sha256 FROM submissions WHERE site = '" + site + "' AND status = 'accepted'");
    ASSERT_EQ(got.size(), 1u) << site;
    EXPECT_EQ(AsText(sent[0][0]), AsText(got[0][0])) << site;
  }
  RemoveWorkspaceIfPassed(dir);
}

// keep_models = 2: the coordinator keeps the files of the newest two models
// only; every model's hash stays in state.db (and in its ledger).
TEST(FederationTest, OnlyTheNewestModelFilesAreKeptWhenAsked) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 2, .rounds = 4, .min_nodes = 2, .dp = false});
  ASSERT_FALSE(::testing::Test::HasFailure());
  UseNoopTrainers(f);
  ReplaceInFile(f.CoordinatorConfig(), "keep_models = 0", "keep_models = 2");
  RunFederationToCompletion(f);
  ASSERT_FALSE(::testing::Test::HasFailure());
  std::vector<SqlRow> models = QueryDb(f.StateDb(), "SELECT round, sha256 FROM models ORDER BY round");
  ASSERT_EQ(models.size(), 5u);
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/kits/coordinator/state/models")) {
    if (e.path().extension() == ".safetensors") files.push_back(e.path().stem().string());
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> newest = {AsText(models[3][1]), AsText(models[4][1])};
  std::sort(newest.begin(), newest.end());
  EXPECT_EQ(files, newest);
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing

namespace fedrad::testing {
namespace {

// [model] init: provision checks the file and copies it beside the
// coordinator's plan; the federation's round-0 model holds its values.
TEST(FederationInitTest, TheFederationStartsFromTheGivenWeights) {
  const std::string dir = MakeWorkspace();
  const ModelSpec spec{"ctnet", 1, 32, 2};
  absl::StatusOr<ModelParameters> start = InitialParameters(spec, 99);
  ASSERT_TRUE(start.ok());
  std::filesystem::create_directories(dir + "/weights");
  ASSERT_TRUE(WriteSafetensorsFile(dir + "/weights/start.safetensors", *start, ModelShapeMetadata(spec)).ok());
  MiniFederation f = SetUpFederation(
      dir, {.sites = 1, .rounds = 1, .min_nodes = 1, .dp = false, .model_init = "weights/start.safetensors"});
  ASSERT_FALSE(::testing::Test::HasFailure());
  EXPECT_TRUE(std::filesystem::exists(dir + "/kits/coordinator/weights/start.safetensors"));
  RunFederationToCompletion(f);
  const std::vector<SqlRow> round0 = QueryDb(f.StateDb(), "SELECT sha256 FROM models WHERE round = 0");
  ASSERT_EQ(round0.size(), 1u);
  absl::StatusOr<SafetensorsFile> model =
      ReadSafetensorsFile(dir + "/kits/coordinator/state/models/" + AsText(round0[0][0]) + ".safetensors");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->parameters.values, start->values);
  // Fresh weights (the plan's seed) would differ.
  EXPECT_NE(InitialParameters(spec, 3)->values, start->values);
  // train-local --plan, the federation's central baseline, starts there too.
  const std::string log = dir + "/train-local.log";
  ASSERT_EQ(
      RunCommand({NodeBin(), "train-local", "--config", f.NodeConfig(f.sites[0]), "--plan", dir + "/plan.toml"}, log),
      0)
      << ReadText(log);
  EXPECT_NE(ReadText(log).find("starting from " + dir + "/weights/start.safetensors"), std::string::npos)
      << ReadText(log);
  RemoveWorkspaceIfPassed(dir);
}

// python/convert_state_dict.py turns a PyTorch state_dict (made here by
// Debian's python3-torch from python/fedrad_torch.py's ResNet-18, with
// torchvision's BatchNorm statistics beside it and 10 classes) into a file
// [model] init takes for a 2-class plan: the statistics dropped, every
// parameter as it was, the head re-initialised; a name the network lacks
// stops the converter, named.
TEST(FederationInitTest, AStateDictConvertsToStartingWeights) {
  const std::string dir = MakeWorkspace();
  const std::string make = absl::StrCat(
      "import sys, torch\nsys.path.insert(0, '", SourceDir(), "/python')\nimport fedrad_torch\n",
      "torch.manual_seed(4)\nm = fedrad_torch.ResNet('resnet18', 1, 10, 8)\nsd = m.state_dict()\n",
      "sd['bn1.running_mean'] = torch.zeros(8)\nsd['layer1.0.bn1.num_batches_tracked'] = torch.tensor(3)\n",
      "torch.save(sd, '", dir, "/sd.pt')\n", "open('", dir,
      "/conv1.bin', 'wb').write(sd['conv1.weight'].numpy().tobytes())\n",
      "sd['extra.weight'] = torch.zeros(2)\ntorch.save(sd, '", dir, "/bad.pt')\n");
  ASSERT_EQ(RunCommand({"/usr/bin/python3", "-c", make}, dir + "/make.log"), 0) << ReadText(dir + "/make.log");
  const std::string log = dir + "/convert.log", out = dir + "/start.safetensors";
  ASSERT_EQ(RunCommand({"/usr/bin/python3", SourceDir() + "/python/convert_state_dict.py", dir + "/sd.pt", out,
                        "--architecture", "resnet18", "--input-size", "64", "--num-classes", "10", "--base-width", "8"},
                       log),
            0)
      << ReadText(log);
  EXPECT_NE(ReadText(log).find("dropped 2 BatchNorm statistics"), std::string::npos) << ReadText(log);
  ModelSpec spec{"resnet18", 1, 64, 2};
  spec.base_width = 8;
  absl::StatusOr<InitialWeights> w = WeightsFromFile(spec, out, 3);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->notes.size(), 1u);  // the head: 10 classes in the file, 2 in the plan
  const std::string conv1 = ReadText(dir + "/conv1.bin");
  ASSERT_EQ(conv1.size(), 8u * 49 * sizeof(float));
  EXPECT_EQ(std::memcmp(conv1.data(), w->parameters.values.data(), conv1.size()), 0);
  EXPECT_NE(RunCommand({"/usr/bin/python3", SourceDir() + "/python/convert_state_dict.py", dir + "/bad.pt",
                        dir + "/bad.safetensors", "--architecture", "resnet18", "--base-width", "8"},
                       log),
            0);
  EXPECT_NE(ReadText(log).find("not in the network: extra.weight"), std::string::npos) << ReadText(log);
  RemoveWorkspaceIfPassed(dir);
}

// [model] freeze over mTLS with DP: the frozen layers of the round-1 model
// are byte for byte those of round 0, the others moved, and each update
// held the trained parameters only (the coordinator's spool size check
// accepted them; its log says how many travel).
TEST(FederationFreezeTest, FrozenLayersStayAndOnlyTrainedParametersTravel) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(
      dir, {.sites = 1, .rounds = 1, .min_nodes = 1, .model_lines = "freeze = [\"conv1\", \"norm1\", \"conv2\"]\n"});
  ASSERT_FALSE(::testing::Test::HasFailure());
  const std::vector<std::string> logs = RunFederationToCompletion(f);
  auto model_of = [&](int round) {
    const std::vector<SqlRow> rows =
        QueryDb(f.StateDb(), absl::StrCat("SELECT sha256 FROM models WHERE round = ", round));
    EXPECT_EQ(rows.size(), 1u) << "round " << round;
    absl::StatusOr<SafetensorsFile> file =
        ReadSafetensorsFile(dir + "/kits/coordinator/state/models/" + AsText(rows.at(0)[0]) + ".safetensors");
    EXPECT_TRUE(file.ok()) << file.status();
    return file->parameters;
  };
  const ModelParameters before = model_of(0), after = model_of(1);
  ModelSpec spec{"ctnet", 1, 32, 2};
  spec.freeze = {"conv1", "norm1", "conv2"};
  absl::StatusOr<TrainedParameters> trained = TrainedParametersOf(spec);
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->frozen, (std::vector<std::string>{"conv1.weight", "conv1.bias", "norm1.weight", "norm1.bias",
                                                       "conv2.weight", "conv2.bias"}));
  const int64_t frozen_values = before.manifest.total_elements() - trained->elements();
  EXPECT_EQ(frozen_values, 16 * 25 + 16 + 32 + 32 * 16 * 9 + 32);
  // The frozen layers come first in ctnet's manifest.
  EXPECT_TRUE(std::equal(before.values.begin(), before.values.begin() + frozen_values, after.values.begin()));
  EXPECT_EQ(trained->Gather(before.values).size(), static_cast<size_t>(trained->elements()));
  EXPECT_NE(trained->Gather(before.values), trained->Gather(after.values));
  const std::string& log = logs.at(0);
  EXPECT_NE(log.find(absl::StrCat("[model] freeze: ", trained->elements(), " of ", before.manifest.total_elements(),
                                  " parameters train")),
            std::string::npos)
      << log;
  RemoveWorkspaceIfPassed(dir);
}

// A freeze prefix that names no layer stops provision before anything is written.
TEST(FederationFreezeTest, AnUnknownPrefixStopsProvision) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 1, .rounds = 1, .min_nodes = 1, .dp = false});
  ASSERT_FALSE(::testing::Test::HasFailure());
  ReplaceInFile(dir + "/plan.toml", "input_size = 32\n", "input_size = 32\nfreeze = [\"conv9\"]\n");
  const std::string log = dir + "/provision-freeze.log";
  EXPECT_NE(RunCommand({FedradBin(), "provision", "--plan", dir + "/plan.toml", "--out", dir + "/kits2", "--data-root",
                        dir + "/data"},
                       log),
            0);
  const std::string text = ReadText(log);
  EXPECT_NE(text.find("[model]: model freeze prefix 'conv9' names no parameter of 'ctnet' (its layers: conv1, norm1"),
            std::string::npos)
      << text;
  EXPECT_FALSE(std::filesystem::exists(dir + "/kits2"));
  RemoveWorkspaceIfPassed(dir);
}

// A torchvision-style ResNet with real BatchNorm layers (statistics from
// training-mode batches, affine parameters away from the identity) converts
// with --norm frozen_batch, its statistics kept: fedrad's network of the same
// shape computes what PyTorch computes in eval mode, to 1e-4, and trains
// only the affine parameters (the statistics never enter an update).
TEST(FederationInitTest, ATorchvisionBatchNormResNetRunsAsFrozenAffineMaps) {
  const std::string dir = MakeWorkspace();
  const std::string make = absl::StrCat(
      "import sys, torch\nsys.path.insert(0, '", SourceDir(), "/python')\nimport fedrad_torch\n",
      "torch.manual_seed(6)\nm = fedrad_torch.ResNet('resnet18', 1, 3, 8, norm='frozen_batch')\n",
      "for mod in list(m.modules()):\n", "    for name, child in list(mod.named_children()):\n",
      "        if isinstance(child, fedrad_torch.FrozenBatchNorm2d):\n",
      "            setattr(mod, name, torch.nn.BatchNorm2d(child.weight.numel()))\n",
      "m.train()\nwith torch.no_grad():\n", "    for _ in range(3):\n        m(torch.randn(8, 1, 64, 64) * 2 + 0.5)\n",
      "    for mod in m.modules():\n        if isinstance(mod, torch.nn.BatchNorm2d):\n",
      "            mod.weight.uniform_(0.5, 1.5)\n            mod.bias.uniform_(-0.2, 0.2)\n",
      "m.eval()\nx = torch.randn(2, 1, 64, 64)\nwith torch.no_grad():\n    y = torch.softmax(m(x), 1)\n",
      "torch.save(m.state_dict(), '", dir, "/sd.pt')\n", "open('", dir, "/x.bin', 'wb').write(x.numpy().tobytes())\n",
      "open('", dir, "/y.bin', 'wb').write(y.numpy().tobytes())\n");
  ASSERT_EQ(RunCommand({"/usr/bin/python3", "-c", make}, dir + "/make.log"), 0) << ReadText(dir + "/make.log");
  const std::string log = dir + "/convert.log", out = dir + "/start.safetensors";
  ASSERT_EQ(RunCommand({"/usr/bin/python3", SourceDir() + "/python/convert_state_dict.py", dir + "/sd.pt", out,
                        "--architecture", "resnet18", "--input-size", "64", "--num-classes", "3", "--base-width", "8",
                        "--norm", "frozen_batch"},
                       log),
            0)
      << ReadText(log);
  EXPECT_NE(ReadText(log).find("dropped 20 BatchNorm statistics (not used by a frozen BatchNorm): "
                               "bn1.num_batches_tracked"),
            std::string::npos)
      << ReadText(log);
  ModelSpec spec{"resnet18", 1, 64, 3};
  spec.base_width = 8;
  spec.norm = kFrozenBatchNorm;
  absl::StatusOr<InitialWeights> w = WeightsFromFile(spec, out, 3);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE(w->notes.empty());
  const std::string x = ReadText(dir + "/x.bin"), y = ReadText(dir + "/y.bin");
  ASSERT_EQ(x.size(), 2u * 64 * 64 * sizeof(float));
  ASSERT_EQ(y.size(), 2u * 3 * sizeof(float));
  std::vector<float> pixels(2 * 64 * 64), expected(6);
  std::memcpy(pixels.data(), x.data(), x.size());
  std::memcpy(expected.data(), y.data(), y.size());
  node::ImageSet images;
  images.size = 64;
  images.pixels = std::move(pixels);
  images.labels = {0, 1};
  images.patients = {"p1", "p2"};
  absl::StatusOr<node::Evaluation> eval = node::EvaluateModel(spec, w->parameters, images);
  ASSERT_TRUE(eval.ok()) << eval.status();
  ASSERT_EQ(eval->scores.probabilities.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(eval->scores.probabilities[i], expected[i], 1e-4) << i;
  // The statistics are in the manifest and never in an update.
  absl::StatusOr<TrainedParameters> trained = TrainedParametersOf(spec);
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->frozen.size(), 40u);  // running_mean and running_var of 20 norms
  for (const std::string& name : trained->frozen) EXPECT_TRUE(IsStatistic(name)) << name;
  RemoveWorkspaceIfPassed(dir);
}

// A federation that does not learn says so: with a learning rate that moves
// nothing, the global model keeps the initial one's single-class
// predictions, which the coordinator names from the pooled releases and the
// node from its exact figures each round (balanced accuracy beside
// accuracy), and from the sixth round the coordinator says the validation
// loss has not improved for five.
TEST(FederationProgressTest, AModelThatPredictsOneClassAndAStalledLossAreSaid) {
  const std::string dir = MakeWorkspace();
  MiniFederation f =
      SetUpFederation(dir, {.sites = 1, .rounds = 6, .min_nodes = 1, .patients = 30, .dp = false, .min_report = 0});
  ASSERT_FALSE(::testing::Test::HasFailure());
  ReplaceInFile(dir + "/kits/coordinator/federation.toml", "learning_rate = 0.01", "learning_rate = 1e-8");
  const std::vector<std::string> logs = RunFederationToCompletion(f);
  const std::string& coordinator = logs.at(0);
  const std::string& node = logs.at(1);
  EXPECT_NE(coordinator.find("round 1/6: from the sites' DP releases: 100.0% of about"), std::string::npos)
      << coordinator;
  EXPECT_NE(coordinator.find("the model holds the class prior, not the task (balanced accuracy 0.500)"),
            std::string::npos)
      << coordinator;
  EXPECT_NE(coordinator.find("(balanced 0.500)"), std::string::npos) << coordinator;
  EXPECT_EQ(coordinator.find("round 5/6: the validation loss has not improved"), std::string::npos) << coordinator;
  EXPECT_NE(coordinator.find("round 6/6: the validation loss has not improved for 5 rounds (best "), std::string::npos)
      << coordinator;
  EXPECT_NE(node.find("round 1: the global model on this site's validation images: every one of the"),
            std::string::npos)
      << node;
  EXPECT_NE(node.find("(balanced 0.500)"), std::string::npos) << node;
  RemoveWorkspaceIfPassed(dir);
}

// A file that does not fit the plan's model stops provision, naming what.
TEST(FederationInitTest, WeightsThatDoNotFitStopProvision) {
  const std::string dir = MakeWorkspace();
  MiniFederation f = SetUpFederation(dir, {.sites = 1, .rounds = 1, .min_nodes = 1, .dp = false});
  ASSERT_FALSE(::testing::Test::HasFailure());
  absl::StatusOr<ModelParameters> other = InitialParameters(ModelSpec{"tbcnn28", 1, 28, 2}, 1);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(WriteSafetensorsFile(dir + "/other.safetensors", *other, {}).ok());
  ReplaceInFile(dir + "/plan.toml", "input_size = 32\n", "input_size = 32\ninit = \"other.safetensors\"\n");
  const std::string log = dir + "/provision-init.log";
  EXPECT_NE(RunCommand({FedradBin(), "provision", "--plan", dir + "/plan.toml", "--out", dir + "/kits2", "--data-root",
                        dir + "/data"},
                       log),
            0);
  const std::string text = ReadText(log);
  EXPECT_NE(text.find("[model] init: '"), std::string::npos) << text;
  EXPECT_NE(text.find("does not fit model 'ctnet'"), std::string::npos) << text;
  EXPECT_NE(text.find("missing: norm1.weight"), std::string::npos) << text;
  EXPECT_NE(text.find("conv1.weight (16x1x8x8 in the file, 16x1x5x5 in the plan's model)"), std::string::npos) << text;
  RemoveWorkspaceIfPassed(dir);
}

}  // namespace
}  // namespace fedrad::testing
