#ifndef FEDRAD_COMMON_TLS_IDENTITY_H_
#define FEDRAD_COMMON_TLS_IDENTITY_H_

#include <string>

#include "absl/status/statusor.h"

namespace fedrad {

// A party's TLS material as named in its config's [tls] table.
struct TlsIdentity {
  std::string ca_pem;  // the federation CA (may be a bundle)
  std::string certificate_pem;
  std::string key_pem;
  std::string common_name;  // of certificate_pem
};

// Reads the three files and checks them together: the key belongs to the
// certificate, and the certificate chains to the CA and is valid now.
// Errors name `config_path` and the field (tls.ca, tls.certificate, tls.key).
absl::StatusOr<TlsIdentity> LoadTlsIdentity(const std::string& config_path, const std::string& ca_file,
                                            const std::string& certificate_file, const std::string& key_file);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_TLS_IDENTITY_H_
