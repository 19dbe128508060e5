#pragma once
// Crafted TPM structures for the attest tests: TPM2B_PUBLIC of OpenSSL keys, TPMS_ATTEST of
// quotes, TPMT_SIGNATURE made with OpenSSL (the swtpm round trip is in guest/tests).
#include <doctest/doctest.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "cove/attest/tpm_quote.hpp"

namespace cove::attest::tpm_test {

using bytes = std::vector<uint8_t>;

struct be_writer {
  bytes b;
  be_writer& u8(uint8_t v) {
    b.push_back(v);
    return *this;
  }
  be_writer& u16(uint16_t v) { return u8(static_cast<uint8_t>(v >> 8)).u8(static_cast<uint8_t>(v)); }
  be_writer& u32(uint32_t v) { return u16(static_cast<uint16_t>(v >> 16)).u16(static_cast<uint16_t>(v)); }
  be_writer& u64(uint64_t v) { return u32(static_cast<uint32_t>(v >> 32)).u32(static_cast<uint32_t>(v)); }
  be_writer& raw(const bytes& v) {
    b.insert(b.end(), v.begin(), v.end());
    return *this;
  }
  be_writer& tpm2b(const bytes& v) { return u16(static_cast<uint16_t>(v.size())).raw(v); }
};

using pkey = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

inline bytes bn_param(EVP_PKEY* k, const char* name, std::size_t width) {
  BIGNUM* bn = nullptr;
  REQUIRE(EVP_PKEY_get_bn_param(k, name, &bn) == 1);
  bytes out(width);
  REQUIRE(BN_bn2binpad(bn, out.data(), static_cast<int>(width)) == static_cast<int>(width));
  BN_free(bn);
  return out;
}

constexpr uint32_t ak_attrs =
    0x00050072;  // fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign

inline bytes ecc_public(EVP_PKEY* k, uint32_t attrs = ak_attrs) {
  be_writer t;
  t.u16(tpm_alg_ecc).u16(tpm_alg_sha256).u32(attrs).tpm2b({});
  t.u16(tpm_alg_null).u16(tpm_alg_ecdsa).u16(tpm_alg_sha256).u16(tpm_ecc_nist_p256).u16(tpm_alg_null);
  t.tpm2b(bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, 32)).tpm2b(bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32));
  return be_writer{}.tpm2b(t.b).b;
}

inline bytes rsa_public(EVP_PKEY* k, uint16_t scheme) {
  be_writer t;
  t.u16(tpm_alg_rsa).u16(tpm_alg_sha256).u32(ak_attrs).tpm2b({});
  t.u16(tpm_alg_null).u16(scheme);
  if (scheme != tpm_alg_null) t.u16(tpm_alg_sha256);
  t.u16(2048).u32(0).tpm2b(bn_param(k, OSSL_PKEY_PARAM_RSA_N, 256));
  return be_writer{}.tpm2b(t.b).b;
}

inline bytes spki(EVP_PKEY* k) {
  int n = i2d_PUBKEY(k, nullptr);
  bytes out(static_cast<std::size_t>(n));
  unsigned char* p = out.data();
  i2d_PUBKEY(k, &p);
  return out;
}

inline bytes sha256(const bytes& in) {
  bytes out(32);
  SHA256(in.data(), in.size(), out.data());
  return out;
}

inline tpm_pcr_values sample_pcrs() {
  tpm_pcr_values v;
  for (uint32_t i : {0u, 1u, 2u, 7u, 16u}) v[i] = bytes(32, static_cast<uint8_t>(0x10 + i));
  return v;
}

// TPMS_ATTEST of a quote over the sha256 PCRs of `pcrs` (sample_pcrs: {0,1,2,7,16}).
inline bytes make_attest(const bytes& nonce, const tpm_pcr_values& pcrs,
                         uint16_t type = tpm_st_attest_quote) {
  bytes concat;
  for (auto& [i, v] : pcrs) concat.insert(concat.end(), v.begin(), v.end());
  be_writer w;
  w.u32(tpm_generated_value).u16(type).tpm2b(bytes(34, 0xAA)).tpm2b(nonce);
  w.u64(123456).u32(7).u32(1).u8(1).u64(0x2023000100000000ull);
  uint8_t select[3] = {0, 0, 0};
  for (auto& [i, v] : pcrs) select[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
  w.u32(1).u16(tpm_alg_sha256).u8(3).u8(select[0]).u8(select[1]).u8(select[2]);
  w.tpm2b(sha256(concat));
  return w.b;
}

inline bytes tpm2b(const bytes& body) {
  return be_writer{}.tpm2b(body).b;
}

inline bytes sign(EVP_PKEY* k, const bytes& msg, uint16_t scheme) {
  auto* md = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  REQUIRE(EVP_DigestSignInit(md, &pctx, EVP_sha256(), nullptr, k) == 1);
  if (scheme == tpm_alg_rsapss) {
    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
  }
  std::size_t n = 0;
  REQUIRE(EVP_DigestSign(md, nullptr, &n, msg.data(), msg.size()) == 1);
  bytes sig(n);
  REQUIRE(EVP_DigestSign(md, sig.data(), &n, msg.data(), msg.size()) == 1);
  sig.resize(n);
  EVP_MD_CTX_free(md);
  be_writer w;
  w.u16(scheme).u16(tpm_alg_sha256);
  if (scheme == tpm_alg_ecdsa) {
    const unsigned char* p = sig.data();
    ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
    REQUIRE(es != nullptr);
    bytes r(32);
    bytes s(32);
    BN_bn2binpad(ECDSA_SIG_get0_r(es), r.data(), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), s.data(), 32);
    ECDSA_SIG_free(es);
    w.tpm2b(r).tpm2b(s);
  } else {
    w.tpm2b(sig);
  }
  return w.b;
}

}  // namespace cove::attest::tpm_test
