#include "cove/crypto/x509.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

namespace cove::crypto {

namespace {

using x509_ext = c_handle<X509_EXTENSION, X509_EXTENSION_free>;
using bio = c_handle<BIO, BIO_free_all>;

expected<void> add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  x509_ext ext{X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str())};
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) return openssl_error("certificate extension " + value);
  return ok();
}

}  // namespace

error openssl_error(std::string_view what) {
  std::string text(what);
  if (unsigned long e = ERR_get_error(); e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    text += ": ";
    text += buf;
  }
  ERR_clear_error();
  return make_error(errc::crypto_failed, text);
}

expected<x509_handle> issue_certificate(EVP_PKEY* key, std::string_view cn, X509* issuer,
                                        EVP_PKEY* issuer_key, long days,
                                        const std::vector<x509_extension>& extensions) {
  x509_handle cert{X509_new()};
  if (!cert) return openssl_error("X509_new");
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) return openssl_error("serial");
  serial[0] &= 0x7f;  // positive
  c_handle<BIGNUM, BN_free> bn{BN_bin2bn(serial, sizeof serial, nullptr)};
  std::string common_name(cn);
  X509_NAME* name = X509_get_subject_name(cert.get());
  bool ok_fields =
      X509_set_version(cert.get(), 2) == 1 && bn &&
      BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get())) &&
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) &&
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), days * 86400L) &&
      X509_set_pubkey(cert.get(), key) == 1 &&
      X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("cove"), -1,
                                 -1, 0) == 1 &&
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                                 0) == 1 &&
      X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name) == 1;
  if (!ok_fields) return openssl_error("certificate fields");
  for (const auto& [nid, value] : extensions)
    if (auto r = add_ext(cert.get(), issuer ? issuer : cert.get(), nid, value); !r) return r.error();
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) <= 0) return openssl_error("certificate signature");
  return cert;
}

expected<std::string> to_pem(X509* cert, EVP_PKEY* key) {
  bio mem{BIO_new(BIO_s_mem())};
  if (!mem) return openssl_error("BIO_new");
  if (cert && PEM_write_bio_X509(mem.get(), cert) != 1) return openssl_error("PEM certificate");
  if (key && PEM_write_bio_PrivateKey(mem.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return openssl_error("PEM key");
  char* data = nullptr;
  long n = BIO_get_mem_data(mem.get(), &data);
  std::string text = n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string{};
  if (n > 0) OPENSSL_cleanse(data, static_cast<size_t>(n));
  return text;
}

}  // namespace cove::crypto
