// A misbehaving node for integration tests: a real site kit and a real TLS
// connection, but every training task (or evaluation) is answered badly.
//   rogue_node KIT_DIR ADDRESS MODE
// MODE: nan (a NaN among the right number of values), shape (a header that
// claims one float fewer than the manifest), norm (values far past the
// plan's max_update_norm), pipeline (a preprocessing description with a
// control character); eval-small (figures of 3 cases, below the plan's
// min_report), eval-lie (an accuracy its confusion matrix does not give);
// fetch-stall (stops reading the base model's download for 8 s, then
// downloads it again and sends a valid update).
// In the eval modes updates are valid; otherwise evaluations are suppressed
// with nothing counted. Exits 0 when the coordinator says Stop.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/model_zoo.h"
#include "common/tls_identity.h"
#include "crypto/sha256.h"
#include "proto/federation.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: rogue_node KIT_DIR ADDRESS nan|shape|norm|pipeline|stall|eval-small|eval-lie|fetch-stall\n";
    return 2;
  }
  const std::string kit = argv[1], address = argv[2], mode = argv[3];
  absl::StatusOr<fedrad::TlsIdentity> id =
      fedrad::LoadTlsIdentity(kit + "/node.toml", kit + "/ca.pem", kit + "/site.pem", kit + "/site.key");
  if (!id.ok()) {
    std::cerr << id.status() << "\n";
    return 1;
  }
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = id->ca_pem;
  tls.pem_private_key = id->key_pem;
  tls.pem_cert_chain = id->certificate_pem;
  auto stub = fedrad::v1::Federation::NewStub(grpc::CreateChannel(address, grpc::SslCredentials(tls)));

  fedrad::v1::Plan plan;
  for (int attempt = 0;; ++attempt) {
    grpc::ClientContext ctx;
    grpc::Status s = stub->Hello(&ctx, fedrad::v1::HelloRequest(), &plan);
    if (s.ok()) break;
    if (attempt > 100) {
      std::cerr << "cannot reach the coordinator: " << s.error_message() << "\n";
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  fedrad::ModelSpec spec{plan.model().architecture(), static_cast<int>(plan.model().in_channels()),
                         static_cast<int>(plan.model().input_size()), static_cast<int>(plan.model().num_classes())};
  spec.parameters = static_cast<int64_t>(plan.model().parameters());
  absl::StatusOr<fedrad::Manifest> manifest = fedrad::ModelManifest(spec);
  if (!manifest.ok()) {
    std::cerr << manifest.status() << "\n";
    return 1;
  }
  const size_t n = manifest->total_elements();

  grpc::ClientContext wait_ctx;
  auto reader = stub->WaitTask(&wait_ctx, fedrad::v1::WaitTaskRequest());
  fedrad::v1::Task task;
  while (reader->Read(&task)) {
    if (task.has_stop()) {
      std::cout << "stop: " << task.stop().reason() << "\n";
      wait_ctx.TryCancel();
      reader->Finish();
      return 0;
    }
    if (task.has_evaluate()) {
      grpc::ClientContext ctx;
      fedrad::v1::Evaluation e;
      e.set_round(task.evaluate().round());
      e.set_nonce(task.evaluate().nonce());
      e.set_model_sha256(task.evaluate().model_sha256());
      const int k = static_cast<int>(plan.model().num_classes());
      if (mode == "eval-small" || mode == "eval-huge") {
        // eval-small: a release of 3 cases; eval-huge: the review's 2^40
        // cases with a loss of 1e308.
        const double count = mode == "eval-small" ? 3 : std::ldexp(1.0, 40);
        fedrad::v1::EvaluationRelease* r = e.mutable_release();
        r->set_noise_multiplier(1.0);
        r->set_num_classes(static_cast<uint32_t>(k));
        r->set_delta(1e-5);
        r->set_epsilon_spent(1.0);
        for (int i = 0; i < k * k; ++i) r->add_confusion(i == 0 ? count : 0);  // all of class 0, right
        r->set_loss_sum(mode == "eval-small" ? 0.3 : 1e308);
        for (int i = 0; i < 20; ++i) r->add_confidence(0);
        for (int i = 0; i < (k == 2 ? 1 : k) * 20; ++i) r->add_scores(0);
      } else {
        e.set_suppressed(true);  // nothing counted, so rounds close promptly
      }
      fedrad::v1::SubmitReply reply;
      grpc::Status s = stub->SubmitEvaluation(&ctx, e, &reply);
      std::cout << "evaluation " << task.evaluate().round() << " (" << mode
                << "): " << (s.ok() ? "accepted" : "refused") << ": " << s.error_message() << std::endl;
      continue;
    }
    if (!task.has_train()) continue;
    if (mode == "fetch-stall") {
      // One chunk of the base model, then nothing read for 8 s (the
      // connection stays up): the coordinator should cut the download off
      // and free the site's download slot, so a second download completes.
      grpc::ClientContext stalled;
      fedrad::v1::FetchModelRequest req;
      req.set_sha256(task.train().model_sha256());
      auto download = stub->FetchModel(&stalled, req);
      fedrad::v1::ModelChunk chunk;
      const bool first = download->Read(&chunk);
      std::this_thread::sleep_for(std::chrono::seconds(8));
      while (download->Read(&chunk)) {
      }
      const grpc::Status cut = download->Finish();
      std::cout << "stalled download: first chunk " << (first ? "read" : "missing") << ", then "
                << (cut.ok() ? "completed" : "ended: " + cut.error_message()) << std::endl;
      grpc::ClientContext again;
      auto second = stub->FetchModel(&again, req);
      uint64_t got = 0;
      while (second->Read(&chunk)) got += chunk.data().size();
      const grpc::Status done = second->Finish();
      std::cout << "second download: " << (done.ok() ? "complete" : done.error_message()) << ", " << got << " bytes"
                << std::endl;
    }
    std::vector<float> values(n, 0.001f);
    if (mode == "nan") values[n / 2] = std::numeric_limits<float>::quiet_NaN();
    if (mode == "norm") values.assign(n, 1e6f);
    if (mode == "shape") values.pop_back();
    const std::string bytes(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    grpc::ClientContext ctx;
    auto writer = stub->SubmitUpdate(&ctx);
    fedrad::v1::UpdateChunk header;
    fedrad::v1::UpdateHeader* h = header.mutable_header();
    h->set_round(task.train().round());
    h->set_attempt(task.train().attempt());
    h->set_nonce(task.train().nonce());
    h->set_base_model_sha256(task.train().model_sha256());
    h->set_update_sha256(fedrad::crypto::Sha256Hex(bytes));
    h->set_total_bytes(bytes.size());
    // heavy: a plausible but outsized claim; huge: the review's 2^40.
    h->set_num_examples(mode == "heavy" ? 1000000000 : mode == "huge" ? (uint64_t{1} << 40) : 10);
    if (mode == "pipeline") h->set_pipeline("window=explicit(40,400)\x1b[2J|gray");
    bool ok = writer->Write(header);
    fedrad::v1::UploadReply ready;
    ok = ok && writer->Read(&ready);
    fedrad::v1::UpdateChunk data;
    const size_t chunk = plan.chunk_bytes() / sizeof(float) * sizeof(float);
    if (mode == "stall") {
      // Half the update, then nothing (the connection stays up): blocks
      // until the coordinator ends the call.
      data.set_data(bytes.substr(0, std::min(chunk, bytes.size() / 2 / sizeof(float) * sizeof(float))));
      if (ok && writer->Write(data)) {
        while (writer->Read(&ready)) {
        }
      }
      ok = false;
    }
    for (size_t off = 0; ok && off < bytes.size(); off += chunk) {
      data.set_data(bytes.substr(off, chunk));
      ok = writer->Write(data);
    }
    if (ok) writer->WritesDone();
    grpc::Status s = writer->Finish();
    std::cout << "round " << task.train().round() << " (" << mode << "): " << (s.ok() ? "accepted" : "refused") << ": "
              << s.error_message() << std::endl;
  }
  reader->Finish();
  return 1;
}
