#pragma once
// Private OpenSSL helpers for cove::attest: RAII handles and error text.
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/buffer.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cove/c_handle.hpp"
#include "cove/expected.hpp"

namespace cove::attest::ossl {

using x509 = c_handle<X509, X509_free>;
using evp_pkey = c_handle<EVP_PKEY, EVP_PKEY_free>;
using evp_md_ctx = c_handle<EVP_MD_CTX, EVP_MD_CTX_free>;
using bio = c_handle<BIO, BIO_free>;
using bignum = c_handle<BIGNUM, BN_free>;
using ecdsa_sig = c_handle<ECDSA_SIG, ECDSA_SIG_free>;
using asn1_object = c_handle<ASN1_OBJECT, ASN1_OBJECT_free>;
using asn1_integer = c_handle<ASN1_INTEGER, ASN1_INTEGER_free>;
using asn1_string = c_handle<ASN1_STRING, ASN1_STRING_free>;
using asn1_octet_string = c_handle<ASN1_OCTET_STRING, ASN1_OCTET_STRING_free>;
using x509_extension = c_handle<X509_EXTENSION, X509_EXTENSION_free>;
using x509_name = c_handle<X509_NAME, X509_NAME_free>;

/// The oldest queued OpenSSL error as text (and clears the queue); `fallback` if none.
inline std::string last_error(std::string_view fallback = "unknown OpenSSL error") {
  unsigned long e = ERR_get_error();
  std::string s;
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    s = buf;
  } else {
    s = fallback;
  }
  ERR_clear_error();
  return s;
}

/// Parses exactly one DER certificate occupying the whole buffer.
inline x509 parse_der(std::span<const uint8_t> der) {
  if (der.empty() || der.size() > (1u << 20)) return nullptr;
  const unsigned char* p = der.data();
  x509 cert{d2i_X509(nullptr, &p, static_cast<long>(der.size()))};
  if (!cert || p != der.data() + der.size()) {
    ERR_clear_error();
    return nullptr;
  }
  return cert;
}

inline std::vector<uint8_t> to_der(const X509* cert) {
  int n = i2d_X509(cert, nullptr);
  if (n <= 0) return {};
  std::vector<uint8_t> out(static_cast<std::size_t>(n));
  unsigned char* p = out.data();
  i2d_X509(cert, &p);
  return out;
}

inline std::string bio_to_string(BIO* b) {
  BUF_MEM* mem = nullptr;
  BIO_get_mem_ptr(b, &mem);
  if (mem == nullptr || mem->data == nullptr) return {};
  return std::string(mem->data, mem->length);
}

}  // namespace cove::attest::ossl
