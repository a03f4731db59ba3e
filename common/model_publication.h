#ifndef FEDRAD_COMMON_MODEL_PUBLICATION_H_
#define FEDRAD_COMMON_MODEL_PUBLICATION_H_

// The coordinator's signed statement that a model is the global model it
// published for a round of a federation. Every training and evaluation task
// carries the statement of the model it names; a node checks it with the
// certificate of the coordinator it authenticated over TLS before it fetches,
// trains on or evaluates the model, and keeps the statement in its audit
// ledger. A coordinator that shows a site a model it did not publish for that
// round (a probe built to read the site's data through its answers) either
// cannot produce the statement or leaves a signed record of doing so, which
// `fedrad audit verify` checks against the coordinator's own ledger.

#include <string>

#include "absl/status/statusor.h"

namespace fedrad {

struct ModelPublication {
  std::string federation;
  int round = 0;  // 0: the initial model
  std::string model_sha256;
};

// The bytes signed: a fixed header and one field per line, so no two
// statements share them (the federation name may hold no line break).
absl::StatusOr<std::string> ModelPublicationText(const ModelPublication& p);

// The DER signature of the statement with the coordinator's kit key.
absl::StatusOr<std::string> SignModelPublication(const std::string& key_pem, const ModelPublication& p);

// OK if `signature` is `certificate_pem`'s key's signature of the statement;
// PermissionDenied naming the round and model otherwise (no signature, or
// one of another statement or another key).
absl::Status VerifyModelPublication(const std::string& certificate_pem, const ModelPublication& p,
                                    const std::string& signature);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_MODEL_PUBLICATION_H_
