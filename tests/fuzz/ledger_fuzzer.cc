// libFuzzer target for audit-ledger entries as `fedrad audit verify` and
// `audit report` read them: a site writes its own ledger with its own key,
// so every kind and body is hostile. The input is fields separated by NUL:
// kind, body, kind, body, ...; the first byte says how many entries go to a
// site's ledger, the rest to the coordinator's. Each ledger starts with a
// real writer certificate from the federation's CA, so the bodies are
// decoded and cross-checked as a verified writer's would be (their
// signatures fail, which is a named problem, not a stop). Verification, the
// text verdict, the JSON and the HTML page must all come out.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_split.h"
#include "common/ledger.h"
#include "common/ledger_entries.h"
#include "crypto/pki.h"
#include "crypto/sha256.h"
#include "tools/audit.h"

namespace {

struct Federation {
  std::string ca_pem;
  fedrad::LedgerSigner site, coordinator;
};

const Federation& TheFederation() {
  static const Federation* const f = [] {
    auto ca = fedrad::crypto::CertificateAuthority::Create("fuzz federation CA", 30);
    if (!ca.ok()) __builtin_trap();
    auto site = (*ca)->Issue({"site-a", fedrad::crypto::CertificateRequest::Usage::kClient, {}, {}, 30});
    auto coord =
        (*ca)->Issue({"coordinator", fedrad::crypto::CertificateRequest::Usage::kServer, {"localhost"}, {}, 30});
    if (!site.ok() || !coord.ok()) __builtin_trap();
    return new Federation{(*ca)->certificate_pem(),
                          {site->private_key_pem, site->certificate_pem, "site-a"},
                          {coord->private_key_pem, coord->certificate_pem, "coordinator"}};
  }();
  return *f;
}

// A ledger whose first entry is `signer`'s certificate, validly signed, and
// whose others are the fuzzer's, linked but unsigned.
std::vector<fedrad::LedgerEntry> Ledger(const fedrad::LedgerSigner& signer,
                                        const std::vector<std::pair<std::string, std::string>>& fuzzed) {
  std::vector<fedrad::LedgerEntry> out;
  fedrad::LedgerEntry first;
  first.seq = 1;
  first.at_ms = 1000;
  first.kind = fedrad::ledger::WriterCertificate::kKind;
  first.body = fedrad::ledger::Encode(fedrad::ledger::WriterCertificate{signer.certificate_pem, signer.subject});
  first.prev_sha256 = std::string(64, '0');
  first.sha256 = fedrad::LedgerEntryDigest(first.seq, first.at_ms, first.kind, first.body, first.prev_sha256);
  absl::StatusOr<std::string> signature = fedrad::crypto::SignSha256(signer.key_pem, first.sha256);
  if (!signature.ok()) __builtin_trap();
  first.signature = fedrad::crypto::HexEncode(*signature);
  out.push_back(first);
  for (const auto& [kind, body] : fuzzed) {
    fedrad::LedgerEntry e;
    e.seq = static_cast<int64_t>(out.size()) + 1;
    e.at_ms = 1000 + e.seq;
    e.kind = kind;
    e.body = body;
    e.prev_sha256 = out.back().sha256;
    e.sha256 = fedrad::LedgerEntryDigest(e.seq, e.at_ms, e.kind, e.body, e.prev_sha256);
    e.signature = "00";
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const Federation& f = TheFederation();
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::vector<std::string> fields = absl::StrSplit(text, '\0');
  std::vector<std::pair<std::string, std::string>> site, coordinator;
  for (size_t i = 0; i + 1 < fields.size(); i += 2) {
    (site.size() < data[0] % 16 ? site : coordinator).push_back({fields[i], fields[i + 1]});
  }
  std::vector<fedrad::tools::AuditedLedger> ledgers;
  ledgers.push_back(fedrad::tools::AuditEntries("site.db", "node", Ledger(f.site, site), f.ca_pem));
  ledgers.push_back(
      fedrad::tools::AuditEntries("state.db", "coordinator", Ledger(f.coordinator, coordinator), f.ca_pem));
  const fedrad::tools::AuditVerification v = fedrad::tools::VerifyAudited(std::move(ledgers), f.ca_pem);
  // Each rendering comes out whole: the verdict's last line, JSON that
  // parses, a page that ends.
  const std::string verdict = fedrad::tools::FormatVerification(v);
  if (verdict.find(v.ok() ? "PASS: " : "FAIL: ") == std::string::npos) __builtin_trap();
  if (nlohmann::json::parse(fedrad::tools::AuditReportJson(v), nullptr, false).is_discarded()) __builtin_trap();
  if (fedrad::tools::AuditReportHtml(v).find("</html>") == std::string::npos) __builtin_trap();
  // Every body that decodes writes itself back as a body that decodes.
  for (const auto& [kind, body] : site) {
    absl::StatusOr<fedrad::ledger::Body> decoded = fedrad::ledger::DecodeBody(kind, body);
    if (!decoded.ok()) continue;
    if (!fedrad::ledger::DecodeBody(kind, fedrad::ledger::EncodeBody(*decoded)).ok()) __builtin_trap();
  }
  return 0;
}
