// libFuzzer target for the messages each side of the federation decodes,
// through the functions its services call: the first byte picks the
// message, the rest is its protobuf encoding (or, for streams, a sequence
// of messages each prefixed by a 2-byte little-endian length).
//   0  the coordinator receives an upload: UpdateChunk messages, the
//      header decoded and checked (CheckUpdateClaim), the data chunks into
//      the update intake (spooled, folded, hashed) in the plan's dtype
//      (the second byte), then completed and accepted or withdrawn;
//   1  an evaluation report (CheckEvaluationReport under two plans' rules);
//   2  a decline (CheckDeclineNotice);
//   3  the node receives the plan (CheckJoinedPlan);
//   4  a task (training settings checked);
//   5  a model download: ModelChunk messages into a ModelStream.
// `fedrad-fuzz-protocol --write-seeds DIR` writes a valid message of each
// kind, encoded by the same codec, as the seed corpus.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/model_zoo.h"
#include "common/protocol.h"
#include "common/safetensors.h"
#include "common/wire_codec.h"
#include "coordinator/update_intake.h"
#include "crypto/sha256.h"
#include "google/protobuf/stubs/logging.h"
#include "proto/federation.pb.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using namespace fedrad;  // NOLINT: a fuzz target's one function

constexpr size_t kValues = 64;

// The messages of a stream input.
std::vector<std::string_view> Messages(std::string_view in) {
  std::vector<std::string_view> out;
  while (in.size() >= 2) {
    const size_t n = static_cast<uint8_t>(in[0]) | static_cast<size_t>(static_cast<uint8_t>(in[1])) << 8;
    in.remove_prefix(2);
    out.push_back(in.substr(0, n));
    in.remove_prefix(std::min(n, in.size()));
  }
  return out;
}

std::string Framed(const std::vector<std::string>& messages) {
  std::string out;
  for (const std::string& m : messages) {
    out.push_back(static_cast<char>(m.size() & 0xff));
    out.push_back(static_cast<char>(m.size() >> 8));
    out += m;
  }
  return out;
}

// Taking an update back is the intake's own step: it must work.
void Withdraw(coordinator::UpdateIntake& intake) {
  if (!intake.Withdraw(1).ok()) __builtin_trap();
}

void Upload(std::string_view in) {
  if (in.empty()) return;
  const WireDtype dtype = static_cast<WireDtype>(static_cast<uint8_t>(in[0]) % 3);
  const std::string spool = "/dev/shm/fedrad-fuzz-" + std::to_string(::getpid()) + ".spool";
  coordinator::UpdateIntake intake(kValues, /*folds=*/true);
  intake.NewRound();
  std::unique_ptr<coordinator::UpdateIntake::Upload> upload;
  for (std::string_view m : Messages(in.substr(1))) {
    v1::UpdateChunk chunk;
    if (!chunk.ParseFromArray(m.data(), static_cast<int>(m.size()))) return;
    if (chunk.has_header()) {
      if (upload) return;  // the service refuses a second header
      const protocol::UpdateClaim claim = protocol::Decode(chunk.header());
      if (!protocol::CheckUpdateClaim(claim).ok()) return;
      if (!intake.Admit(1, static_cast<double>(claim.num_examples), spool).ok()) return;
      absl::StatusOr<std::unique_ptr<coordinator::UpdateIntake::Upload>> opened =
          intake.Open({1, spool, kValues * BytesPerValue(dtype), dtype, claim.update_sha256, /*max_norm=*/1e6});
      if (!opened.ok()) return;
      upload = std::move(*opened);
    } else if (upload) {
      if (absl::Status taken = upload->Take(chunk.data()); !taken.ok()) {
        fuzz::ExpectOkOrNamed(taken);
        Withdraw(intake);
        return;
      }
    }
  }
  if (upload && upload->Complete().ok()) {
    // A complete upload is counted and sealed: the intake's own steps.
    if (!intake.Accept(1).ok() || !intake.Seal({{1, 1.0}}).ok()) __builtin_trap();
  } else if (upload) {
    Withdraw(intake);
  }
}

void ModelDownload(std::string_view in) {
  ModelStream stream(uint64_t{1} << 20, "fuzz model");
  for (std::string_view m : Messages(in)) {
    v1::ModelChunk chunk;
    if (!chunk.ParseFromArray(m.data(), static_cast<int>(m.size()))) return;
    if (absl::Status added = stream.Add(chunk.total_bytes(), chunk.offset(), {chunk.data()}); !added.ok()) {
      fuzz::ExpectOkOrNamed(added);
      return;
    }
  }
  std::string header;
  fuzz::ExpectOkOrNamed(stream.Finish(std::string(64, '0'), &header));
}

template <class Message>
bool Parse(std::string_view in, Message* m) {
  return m->ParseFromArray(in.data(), static_cast<int>(in.size()));
}

void WriteSeed(const std::string& dir, const std::string& name, char kind, const std::string& body) {
  FILE* f = std::fopen((dir + "/" + name).c_str(), "wb");
  if (f == nullptr) std::exit(1);
  std::fputc(kind, f);
  std::fwrite(body.data(), 1, body.size(), f);
  std::fclose(f);
}

void WriteSeeds(const std::string& dir) {
  const std::string sha(64, 'a');
  protocol::JoinedPlan plan;
  plan.federation = "fuzz";
  plan.site = "site-a";
  plan.model = ModelSpec{"ctnet", 1, 32, 2};
  plan.manifest_sha256 = ModelManifest(plan.model)->Sha256();
  plan.rounds = 3;
  plan.chunk_bytes = 65536;
  plan.update_dtype = WireDtype::kBFloat16;
  v1::Plan p;
  protocol::Encode(plan, &p);
  WriteSeed(dir, "plan", 3, p.SerializeAsString());

  protocol::TrainingTask train;
  train.round = 2;
  train.attempt = 1;
  train.model_sha256 = sha;
  train.nonce = std::string(16, 'n');
  train.publication = {1, std::string(70, 's')};
  v1::Task t;
  protocol::Encode(protocol::Task(train), &t);
  WriteSeed(dir, "task-train", 4, t.SerializeAsString());
  protocol::EvaluationTask eval;
  eval.round = 2;
  eval.model_sha256 = sha;
  protocol::Encode(protocol::Task(eval), &t);
  WriteSeed(dir, "task-evaluate", 4, t.SerializeAsString());

  protocol::DeclineNotice decline{2, 1, std::string(16, 'n'), protocol::DeclineReason::kPolicy, 1.5, 3, "max_rounds"};
  v1::Decline d;
  protocol::Encode(decline, &d);
  WriteSeed(dir, "decline", 2, d.SerializeAsString());

  protocol::EvaluationReport report;
  report.round = 2;
  report.model_sha256 = sha;
  report.ledger_seq = 9;
  report.ledger_sha256 = sha;
  protocol::ReleasedEvaluation release;
  release.noise_multiplier = 2;
  release.delta = 1e-5;
  release.epsilon_spent = 0.4;
  release.num_classes = 2;
  release.statistics = EvaluationStatistics::Empty(2);
  release.unit = "patient";
  release.statistics.confusion = {20, 3, 4, 25};
  report.release = release;
  v1::Evaluation e;
  protocol::Encode(report, &e);
  WriteSeed(dir, "evaluation", 1, e.SerializeAsString());

  // An upload: its header, then its values in two chunks (float32).
  std::vector<float> values(kValues, 0.01f);
  const std::string bytes(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  protocol::UpdateClaim claim;
  claim.round = 2;
  claim.attempt = 1;
  claim.nonce = std::string(16, 'n');
  claim.base_model_sha256 = sha;
  claim.update_sha256 = crypto::Sha256Hex(bytes);
  claim.total_bytes = bytes.size();
  claim.num_examples = 40;
  claim.privacy = protocol::PrivacyReport{"patient", 1.1, 1.0, 0.1, 50, 1e-5, 0.8, 3};
  claim.dtype = WireDtype::kFloat32;
  claim.pipeline = "window=explicit(40,400)|resize=area(32)";
  v1::UpdateChunk header;
  protocol::Encode(claim, header.mutable_header());
  v1::UpdateChunk first, second;
  first.set_data(bytes.substr(0, 100));
  second.set_data(bytes.substr(100));
  WriteSeed(dir, "upload-float32", 0,
            std::string(1, '\0') +
                Framed({header.SerializeAsString(), first.SerializeAsString(), second.SerializeAsString()}));

  // A model download in three chunks.
  const std::string file = EncodeSafetensorsHeader(Manifest{{{"w", {4}}}}, {{"round", "1"}}) + std::string(16, '\0');
  std::vector<std::string> chunks;
  for (size_t at = 0; at < file.size(); at += 40) {
    v1::ModelChunk c;
    c.set_total_bytes(file.size());
    c.set_offset(at);
    c.set_data(file.substr(at, 40));
    chunks.push_back(c.SerializeAsString());
  }
  WriteSeed(dir, "model", 5, Framed(chunks));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  // Invalid UTF-8 in a string field is a parse failure, logged by protobuf
  // at every input: the failure is what is tested, the log is noise.
  google::protobuf::SetLogHandler(nullptr);
  for (int i = 1; i + 1 < *argc; ++i) {
    if (std::strcmp((*argv)[i], "--write-seeds") == 0) {
      std::filesystem::create_directories((*argv)[i + 1]);
      WriteSeeds((*argv)[i + 1]);
      std::exit(0);
    }
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 6) {
    case 0:
      Upload(in);
      break;
    case 1: {
      v1::Evaluation m;
      if (!Parse(in, &m)) break;
      const protocol::EvaluationReport e = protocol::Decode(m);
      std::optional<ReleasedFigures> figures;
      fuzz::ExpectOkOrNamed(protocol::CheckEvaluationReport(e, {2, false, 1}, &figures));
      fuzz::ExpectOkOrNamed(protocol::CheckEvaluationReport(e, {3, true, 10}, &figures));
      break;
    }
    case 2: {
      v1::Decline m;
      if (Parse(in, &m)) fuzz::ExpectOkOrNamed(protocol::CheckDeclineNotice(protocol::Decode(m)));
      break;
    }
    case 3: {
      v1::Plan m;
      if (Parse(in, &m)) fuzz::ExpectOkOrNamed(protocol::CheckJoinedPlan(protocol::Decode(m)));
      break;
    }
    case 4: {
      v1::Task m;
      if (!Parse(in, &m)) break;
      const protocol::Task task = protocol::Decode(m);
      if (const auto* t = std::get_if<protocol::TrainingTask>(&task))
        fuzz::ExpectOkOrNamed(protocol::CheckTrainingSettings(t->settings));
      break;
    }
    default:
      ModelDownload(in);
      break;
  }
  return 0;
}
