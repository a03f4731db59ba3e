#include "common/model_publication.h"

#include "absl/strings/str_cat.h"
#include "crypto/pki.h"
#include "crypto/sha256.h"

namespace fedrad {

absl::StatusOr<std::string> ModelPublicationText(const ModelPublication& p) {
  if (p.federation.empty() || p.federation.find_first_of("\r\n") != std::string::npos) {
    return absl::InvalidArgumentError("a model publication needs a one-line federation name");
  }
  if (p.round < 0) return absl::InvalidArgumentError("a model publication's round is negative");
  if (!crypto::IsSha256Hex(p.model_sha256)) {
    return absl::InvalidArgumentError("a model publication names no valid model SHA-256");
  }
  return absl::StrCat("fedrad model publication v1\nfederation ", p.federation, "\nround ", p.round, "\nsha256 ",
                      p.model_sha256, "\n");
}

absl::StatusOr<std::string> SignModelPublication(const std::string& key_pem, const ModelPublication& p) {
  absl::StatusOr<std::string> text = ModelPublicationText(p);
  if (!text.ok()) return text.status();
  return crypto::SignSha256(key_pem, *text);
}

absl::Status VerifyModelPublication(const std::string& certificate_pem, const ModelPublication& p,
                                    const std::string& signature) {
  absl::StatusOr<std::string> text = ModelPublicationText(p);
  if (!text.ok()) return absl::PermissionDeniedError(text.status().message());
  const std::string what =
      absl::StrCat("model ", p.model_sha256.substr(0, 12), " as round ", p.round, " of '", p.federation, "'");
  if (signature.empty()) {
    return absl::PermissionDeniedError(
        absl::StrCat("the coordinator did not sign ", what, ": an unsigned model is never used"));
  }
  absl::Status s = crypto::VerifySha256(certificate_pem, *text, signature);
  if (s.ok()) return s;
  if (s.code() == absl::StatusCode::kPermissionDenied) {
    return absl::PermissionDeniedError(
        absl::StrCat("the signature does not show that the coordinator published ", what,
                     " (signed by another key, or for another model or round): the model is not used"));
  }
  return s;
}

}  // namespace fedrad
