#ifndef FEDRAD_CRYPTO_PKI_H_
#define FEDRAD_CRYPTO_PKI_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace fedrad::crypto {

// What a new leaf certificate is for. Server certificates carry the host
// names and IP addresses clients will dial; client certificates identify a
// site by their common name.
struct CertificateRequest {
  enum class Usage { kServer, kClient };
  std::string common_name;
  Usage usage = Usage::kClient;
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;
  int validity_days = 825;
};

struct IssuedCertificate {
  std::string certificate_pem;
  std::string private_key_pem;  // PKCS#8, unencrypted: write it mode 0600.
};

// A federation's certificate authority: an ECDSA P-256 key and a self-signed
// CA certificate. Thread-compatible.
class CertificateAuthority {
 public:
  // Creates a fresh CA named `name`.
  static absl::StatusOr<std::unique_ptr<CertificateAuthority>> Create(const std::string& name, int validity_days);
  // Loads an existing CA; fails if the key does not belong to the certificate
  // or the certificate is not a CA.
  static absl::StatusOr<std::unique_ptr<CertificateAuthority>> Load(const std::string& certificate_pem,
                                                                    const std::string& private_key_pem);

  ~CertificateAuthority();
  CertificateAuthority(const CertificateAuthority&) = delete;
  CertificateAuthority& operator=(const CertificateAuthority&) = delete;

  const std::string& certificate_pem() const { return certificate_pem_; }
  const std::string& private_key_pem() const { return private_key_pem_; }

  // Issues a leaf certificate with a new key pair, signed by this CA.
  absl::StatusOr<IssuedCertificate> Issue(const CertificateRequest& request) const;

 private:
  struct Keys;
  CertificateAuthority(std::unique_ptr<Keys> keys, std::string cert_pem, std::string key_pem);
  std::unique_ptr<Keys> keys_;
  std::string certificate_pem_;
  std::string private_key_pem_;
};

struct CertificateInfo {
  std::string common_name;
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;
  bool is_ca = false;
  int64_t not_before_unix = 0;
  int64_t not_after_unix = 0;
};

// Parses one PEM certificate. `what` names the source in error messages.
absl::StatusOr<CertificateInfo> ParseCertificate(const std::string& pem, const std::string& what);

// OK if `cert_pem` is signed by `ca_pem` and is valid now (or, with
// `at_any_time`, was issued by it, expired or not: for checking records
// signed while it was valid).
absl::Status VerifyCertificateChain(const std::string& cert_pem, const std::string& ca_pem, const std::string& what,
                                    bool at_any_time = false);

// OK if the private key in `key_pem` belongs to the certificate.
absl::Status CheckKeyMatchesCertificate(const std::string& cert_pem, const std::string& key_pem,
                                        const std::string& what);

// Signs `data` (ECDSA or RSA over SHA-256) with the PEM private key; the
// signature is DER. Ledgers sign their entries with the site's or the
// coordinator's kit key.
absl::StatusOr<std::string> SignSha256(const std::string& key_pem, std::string_view data);

// OK if `signature` is the certificate's key's signature of `data`.
// PermissionDenied if it is not, InvalidArgument for an unreadable certificate.
absl::Status VerifySha256(const std::string& cert_pem, std::string_view data, std::string_view signature);

}  // namespace fedrad::crypto

#endif  // FEDRAD_CRYPTO_PKI_H_
