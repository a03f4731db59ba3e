#include "common/tls_identity.h"

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "crypto/pki.h"

namespace fedrad {

absl::StatusOr<TlsIdentity> LoadTlsIdentity(const std::string& config_path, const std::string& ca_file,
                                            const std::string& certificate_file, const std::string& key_file) {
  TlsIdentity out;
  struct {
    const std::string* file;
    const char* field;
    std::string* into;
  } files[] = {{&ca_file, "tls.ca", &out.ca_pem},
               {&certificate_file, "tls.certificate", &out.certificate_pem},
               {&key_file, "tls.key", &out.key_pem}};
  for (auto& f : files) {
    absl::StatusOr<std::string> text = ReadFile(*f.file, 1 << 20);
    if (!text.ok()) {
      return absl::Status(text.status().code(),
                          absl::StrCat(config_path, ": field '", f.field, "': ", text.status().message()));
    }
    *f.into = std::move(*text);
  }
  const std::string what = absl::StrCat(config_path, ": tls.certificate");
  absl::Status s = crypto::CheckKeyMatchesCertificate(out.certificate_pem, out.key_pem, what);
  if (s.ok()) {
    s = crypto::VerifyCertificateChain(out.certificate_pem, out.ca_pem, absl::StrCat(what, " against tls.ca"));
  }
  if (!s.ok()) return s;
  absl::StatusOr<crypto::CertificateInfo> info = crypto::ParseCertificate(out.certificate_pem, what);
  if (!info.ok()) return info.status();
  out.common_name = info->common_name;
  return out;
}

}  // namespace fedrad
