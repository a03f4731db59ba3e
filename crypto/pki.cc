#include "crypto/pki.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <map>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"

namespace fedrad::crypto {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct ExtFree {
  void operator()(X509_EXTENSION* e) const { X509_EXTENSION_free(e); }
};
struct StoreFree {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};
struct StoreCtxFree {
  void operator()(X509_STORE_CTX* s) const { X509_STORE_CTX_free(s); }
};
struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// The most recent OpenSSL error as text, clearing the queue.
std::string OpenSslError() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

absl::Status SslFailure(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", OpenSslError()));
}

std::string BioToString(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

absl::StatusOr<PkeyPtr> GenerateKey() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return SslFailure("generating an ECDSA P-256 key");
  return key;
}

absl::StatusOr<std::string> KeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr)) {
    return SslFailure("encoding a private key");
  }
  return BioToString(bio.get());
}

absl::StatusOr<std::string> CertToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509(bio.get(), cert)) return SslFailure("encoding a certificate");
  return BioToString(bio.get());
}

absl::StatusOr<X509Ptr> ReadCert(const std::string& pem, const std::string& what) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a PEM certificate"));
  }
  return cert;
}

absl::StatusOr<PkeyPtr> ReadKey(const std::string& pem, const std::string& what) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a PEM private key"));
  }
  return key;
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  std::unique_ptr<X509_EXTENSION, ExtFree> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || !X509_add_ext(cert, ext.get(), -1)) {
    return SslFailure(absl::StrCat("adding extension ", OBJ_nid2sn(nid), "=", value));
  }
  return absl::OkStatus();
}

// Builds and signs a certificate for `subject_key`. `issuer` null means self-signed.
absl::StatusOr<X509Ptr> BuildCertificate(const std::string& common_name, EVP_PKEY* subject_key, X509* issuer,
                                         EVP_PKEY* issuer_key, int validity_days,
                                         const std::vector<std::pair<int, std::string>>& exts) {
  X509Ptr cert(X509_new());
  if (!cert) return SslFailure("allocating a certificate");
  X509_set_version(cert.get(), 2);

  std::unique_ptr<BIGNUM, BnFree> serial(BN_new());
  if (!BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
      !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get()))) {
    return SslFailure("choosing a serial number");
  }
  // Back-date by an hour so small clock differences between hosts do not
  // make a fresh certificate "not yet valid".
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), int64_t{validity_days} * 86400);

  X509_NAME* name = X509_get_subject_name(cert.get());
  if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                  reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0)) {
    return SslFailure(absl::StrCat("setting common name '", common_name, "'"));
  }
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
  if (!X509_set_pubkey(cert.get(), subject_key)) return SslFailure("setting public key");

  X509* issuer_cert = issuer ? issuer : cert.get();
  for (const auto& [nid, value] : exts) {
    absl::Status s = AddExtension(cert.get(), issuer_cert, nid, value);
    if (!s.ok()) return s;
  }
  if (!X509_sign(cert.get(), issuer_key, EVP_sha256())) {
    return SslFailure("signing a certificate");
  }
  return cert;
}

int64_t AsnTimeToUnix(const ASN1_TIME* t) {
  struct tm tm {};
  if (!ASN1_TIME_to_tm(t, &tm)) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

}  // namespace

struct CertificateAuthority::Keys {
  X509Ptr cert;
  PkeyPtr key;
};

CertificateAuthority::CertificateAuthority(std::unique_ptr<Keys> keys, std::string cert_pem, std::string key_pem)
    : keys_(std::move(keys)), certificate_pem_(std::move(cert_pem)), private_key_pem_(std::move(key_pem)) {}

CertificateAuthority::~CertificateAuthority() = default;

absl::StatusOr<std::unique_ptr<CertificateAuthority>> CertificateAuthority::Create(const std::string& name,
                                                                                   int validity_days) {
  auto keys = std::make_unique<Keys>();
  absl::StatusOr<PkeyPtr> key = GenerateKey();
  if (!key.ok()) return key.status();
  keys->key = std::move(*key);
  absl::StatusOr<X509Ptr> cert = BuildCertificate(name, keys->key.get(), nullptr, keys->key.get(), validity_days,
                                                  {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                                                   {NID_key_usage, "critical,keyCertSign,cRLSign"},
                                                   {NID_subject_key_identifier, "hash"}});
  if (!cert.ok()) return cert.status();
  keys->cert = std::move(*cert);
  absl::StatusOr<std::string> cert_pem = CertToPem(keys->cert.get());
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = KeyToPem(keys->key.get());
  if (!key_pem.ok()) return key_pem.status();
  return std::unique_ptr<CertificateAuthority>(new CertificateAuthority(std::move(keys), *cert_pem, *key_pem));
}

absl::StatusOr<std::unique_ptr<CertificateAuthority>> CertificateAuthority::Load(const std::string& certificate_pem,
                                                                                 const std::string& private_key_pem) {
  auto keys = std::make_unique<Keys>();
  absl::StatusOr<X509Ptr> cert = ReadCert(certificate_pem, "CA certificate");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<PkeyPtr> key = ReadKey(private_key_pem, "CA private key");
  if (!key.ok()) return key.status();
  if (X509_check_ca(cert->get()) == 0) {
    return absl::InvalidArgumentError("CA certificate: not a CA certificate");
  }
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("CA private key does not belong to the CA certificate");
  }
  keys->cert = std::move(*cert);
  keys->key = std::move(*key);
  return std::unique_ptr<CertificateAuthority>(
      new CertificateAuthority(std::move(keys), certificate_pem, private_key_pem));
}

absl::StatusOr<IssuedCertificate> CertificateAuthority::Issue(const CertificateRequest& request) const {
  if (request.common_name.empty()) {
    return absl::InvalidArgumentError("certificate request without a common name");
  }
  absl::StatusOr<PkeyPtr> key = GenerateKey();
  if (!key.ok()) return key.status();

  std::vector<std::pair<int, std::string>> exts = {
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_subject_key_identifier, "hash"},
      {NID_authority_key_identifier, "keyid:always"},
  };
  if (request.usage == CertificateRequest::Usage::kServer) {
    exts.push_back({NID_key_usage, "critical,digitalSignature,keyEncipherment"});
    exts.push_back({NID_ext_key_usage, "serverAuth"});
  } else {
    exts.push_back({NID_key_usage, "critical,digitalSignature"});
    exts.push_back({NID_ext_key_usage, "clientAuth"});
  }
  std::vector<std::string> san;
  for (const std::string& d : request.dns_names) san.push_back("DNS:" + d);
  for (const std::string& ip : request.ip_addresses) san.push_back("IP:" + ip);
  if (!san.empty()) exts.push_back({NID_subject_alt_name, absl::StrJoin(san, ",")});

  absl::StatusOr<X509Ptr> cert = BuildCertificate(request.common_name, key->get(), keys_->cert.get(), keys_->key.get(),
                                                  request.validity_days, exts);
  if (!cert.ok()) return cert.status();
  IssuedCertificate out;
  absl::StatusOr<std::string> cert_pem = CertToPem(cert->get());
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = KeyToPem(key->get());
  if (!key_pem.ok()) return key_pem.status();
  out.certificate_pem = std::move(*cert_pem);
  out.private_key_pem = std::move(*key_pem);
  return out;
}

absl::StatusOr<CertificateInfo> ParseCertificate(const std::string& pem, const std::string& what) {
  absl::StatusOr<X509Ptr> cert = ReadCert(pem, what);
  if (!cert.ok()) return cert.status();
  CertificateInfo info;
  X509_NAME* subject = X509_get_subject_name(cert->get());
  int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (idx >= 0) {
    ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
    unsigned char* utf8 = nullptr;
    int len = ASN1_STRING_to_UTF8(&utf8, data);
    if (len >= 0) {
      info.common_name.assign(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
      OPENSSL_free(utf8);
    }
  }
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert->get(), NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    if (gn->type == GEN_DNS) {
      const ASN1_STRING* s = gn->d.dNSName;
      info.dns_names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s));
    } else if (gn->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* ip = gn->d.iPAddress;
      if (ASN1_STRING_length(ip) == 4) {
        const unsigned char* b = ASN1_STRING_get0_data(ip);
        info.ip_addresses.push_back(absl::StrCat(b[0], ".", b[1], ".", b[2], ".", b[3]));
      }
    }
  }
  GENERAL_NAMES_free(names);
  info.is_ca = X509_check_ca(cert->get()) != 0;
  info.not_before_unix = AsnTimeToUnix(X509_get0_notBefore(cert->get()));
  info.not_after_unix = AsnTimeToUnix(X509_get0_notAfter(cert->get()));
  return info;
}

absl::Status VerifyCertificateChain(const std::string& cert_pem, const std::string& ca_pem, const std::string& what,
                                    bool at_any_time) {
  absl::StatusOr<X509Ptr> cert = ReadCert(cert_pem, what);
  if (!cert.ok()) return cert.status();
  std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
  std::unique_ptr<X509_STORE_CTX, StoreCtxFree> ctx(X509_STORE_CTX_new());
  if (!store || !ctx) return SslFailure("setting up certificate verification");
  // The CA file may be a bundle (several PEM certificates); trust each.
  BioPtr bio(BIO_new_mem_buf(ca_pem.data(), static_cast<int>(ca_pem.size())));
  int cas = 0;
  while (X509Ptr ca{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
    if (!X509_STORE_add_cert(store.get(), ca.get())) return SslFailure("adding a CA certificate");
    ++cas;
  }
  ERR_clear_error();
  if (cas == 0) return absl::InvalidArgumentError(absl::StrCat(what, " (CA): not a PEM certificate"));
  if (at_any_time) X509_STORE_set_flags(store.get(), X509_V_FLAG_NO_CHECK_TIME);
  if (!X509_STORE_CTX_init(ctx.get(), store.get(), cert->get(), nullptr)) {
    return SslFailure("setting up certificate verification");
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return absl::FailedPreconditionError(absl::StrCat(what, ": ", X509_verify_cert_error_string(err)));
  }
  return absl::OkStatus();
}

absl::Status CheckKeyMatchesCertificate(const std::string& cert_pem, const std::string& key_pem,
                                        const std::string& what) {
  absl::StatusOr<X509Ptr> cert = ReadCert(cert_pem, what);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<PkeyPtr> key = ReadKey(key_pem, absl::StrCat(what, " key"));
  if (!key.ok()) return key.status();
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return absl::FailedPreconditionError(absl::StrCat(what, ": the private key does not belong to the certificate"));
  }
  return absl::OkStatus();
}

namespace {

// With OpenSSL 3, reading a PEM key costs far more than the signature made
// with it (its decoders look up providers under global locks; 1,000 node
// runtimes in one process spent most of a round there). Keys are read once
// and kept, by their PEM text, up to kCachedKeys (then the cache starts over).
constexpr size_t kCachedKeys = 4096;

using SharedKey = std::shared_ptr<EVP_PKEY>;

class KeyCache {
 public:
  // `public_of_certificate`: the public key of the PEM certificate `pem`;
  // otherwise the private key `pem`.
  absl::StatusOr<SharedKey> Get(const std::string& pem, bool public_of_certificate) {
    auto& keys = public_of_certificate ? public_ : private_;
    {
      absl::MutexLock lock(&mu_);
      auto it = keys.find(pem);
      if (it != keys.end()) return it->second;
    }
    SharedKey key;
    if (public_of_certificate) {
      absl::StatusOr<X509Ptr> cert = ReadCert(pem, "signer certificate");
      if (!cert.ok()) return cert.status();
      key = SharedKey(X509_get_pubkey(cert->get()), EVP_PKEY_free);
      if (!key) {
        ERR_clear_error();
        return absl::InvalidArgumentError("the signer certificate has no usable public key");
      }
    } else {
      absl::StatusOr<PkeyPtr> read = ReadKey(pem, "signing key");
      if (!read.ok()) return read.status();
      key = SharedKey(read->release(), EVP_PKEY_free);
    }
    absl::MutexLock lock(&mu_);
    if (keys.size() >= kCachedKeys) keys.clear();
    keys.emplace(pem, key);
    return key;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, SharedKey> private_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, SharedKey> public_ ABSL_GUARDED_BY(mu_);
};

KeyCache& Keys() {
  static KeyCache* cache = new KeyCache();
  return *cache;
}

}  // namespace

absl::StatusOr<std::string> SignSha256(const std::string& key_pem, std::string_view data) {
  absl::StatusOr<SharedKey> key = Keys().Get(key_pem, /*public_of_certificate=*/false);
  if (!key.ok()) return key.status();
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  size_t size = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key->get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &size, reinterpret_cast<const unsigned char*>(data.data()), data.size()) !=
          1) {
    ERR_clear_error();
    return absl::InternalError("cannot sign");
  }
  std::string signature(size, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &size,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1) {
    ERR_clear_error();
    return absl::InternalError("cannot sign");
  }
  signature.resize(size);
  return signature;
}

absl::Status VerifySha256(const std::string& cert_pem, std::string_view data, std::string_view signature) {
  absl::StatusOr<SharedKey> key = Keys().Get(cert_pem, /*public_of_certificate=*/true);
  if (!key.ok()) return key.status();
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key->get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("the signer certificate has no usable public key");
  }
  const int ok = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                                  reinterpret_cast<const unsigned char*>(data.data()), data.size());
  ERR_clear_error();
  if (ok != 1) return absl::PermissionDeniedError("the signature does not verify");
  return absl::OkStatus();
}

}  // namespace fedrad::crypto
