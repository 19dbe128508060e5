// Simulated DICE chain: UDS -> device (root) -> firmware -> kernel -> agent, P-256 keys
// derived deterministically from CDIs (derivation documented in dice.hpp).
#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include <array>
#include <ctime>

#include "cove/attest/dice.hpp"
#include "ossl.hpp"

namespace cove::attest {
namespace {

using bytes = std::vector<uint8_t>;
using kdf = c_handle<EVP_KDF, EVP_KDF_free>;
using kdf_ctx = c_handle<EVP_KDF_CTX, EVP_KDF_CTX_free>;
using ec_group = c_handle<EC_GROUP, EC_GROUP_free>;
using ec_point = c_handle<EC_POINT, EC_POINT_free>;
using bn_ctx = c_handle<BN_CTX, BN_CTX_free>;
using param_bld = c_handle<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>;
using params = c_handle<OSSL_PARAM, OSSL_PARAM_free>;
using pkey_ctx = c_handle<EVP_PKEY_CTX, EVP_PKEY_CTX_free>;

error sim_error(const std::string& what) {
  return make_error(errc::crypto_failed, "sim DICE: " + what + ": " + ossl::last_error());
}

expected<bytes> hkdf_sha256(std::span<const uint8_t> ikm, std::span<const uint8_t> salt,
                            std::string_view info) {
  kdf k{EVP_KDF_fetch(nullptr, "HKDF", nullptr)};
  if (!k) return sim_error("HKDF unavailable");
  kdf_ctx ctx{EVP_KDF_CTX_new(k.get())};
  if (!ctx) return sim_error("EVP_KDF_CTX_new");
  char digest[] = "SHA256";
  OSSL_PARAM ps[5];
  int n = 0;
  ps[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  ps[n++] =
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(ikm.data()), ikm.size());
  if (!salt.empty())
    ps[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<uint8_t*>(salt.data()),
                                                salt.size());
  ps[n++] =
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()), info.size());
  ps[n] = OSSL_PARAM_construct_end();
  bytes out(32);
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), ps) != 1) return sim_error("HKDF");
  return out;
}

bytes sha384(std::span<const uint8_t> data) {
  bytes out(48);
  SHA384(data.data(), data.size(), out.data());
  return out;
}

// key_i from CDI_i: first counter giving a scalar in [1, n-1].
expected<ossl::evp_pkey> derive_p256(const bytes& cdi) {
  ec_group group{EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1)};
  bn_ctx bctx{BN_CTX_new()};
  if (!group || !bctx) return sim_error("EC group");
  const BIGNUM* order = EC_GROUP_get0_order(group.get());
  ossl::bignum d;
  for (int counter = 0; counter < 256 && !d; ++counter) {
    std::string info = "cove-dice/key-p256";
    info.push_back(static_cast<char>(counter));
    auto raw = hkdf_sha256(cdi, {}, info);
    if (!raw) return std::move(raw).error();
    ossl::bignum cand{BN_bin2bn(raw->data(), static_cast<int>(raw->size()), nullptr)};
    if (cand && !BN_is_zero(cand.get()) && BN_cmp(cand.get(), order) < 0) d = std::move(cand);
  }
  if (!d) return sim_error("no valid P-256 scalar");
  ec_point pub{EC_POINT_new(group.get())};
  if (!pub || EC_POINT_mul(group.get(), pub.get(), d.get(), nullptr, nullptr, bctx.get()) != 1)
    return sim_error("EC_POINT_mul");
  unsigned char pub_oct[65];
  std::size_t pub_len = EC_POINT_point2oct(group.get(), pub.get(), POINT_CONVERSION_UNCOMPRESSED, pub_oct,
                                           sizeof pub_oct, bctx.get());
  if (pub_len != sizeof pub_oct) return sim_error("EC_POINT_point2oct");
  param_bld bld{OSSL_PARAM_BLD_new()};
  if (!bld || OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_PRIV_KEY, d.get()) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, pub_oct, pub_len) != 1)
    return sim_error("OSSL_PARAM_BLD");
  params ps{OSSL_PARAM_BLD_to_param(bld.get())};
  pkey_ctx pctx{EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr)};
  EVP_PKEY* raw_key = nullptr;
  if (!ps || !pctx || EVP_PKEY_fromdata_init(pctx.get()) != 1 ||
      EVP_PKEY_fromdata(pctx.get(), &raw_key, EVP_PKEY_KEYPAIR, ps.get()) != 1)
    return sim_error("EVP_PKEY_fromdata");
  return ossl::evp_pkey{raw_key};
}

bool add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ossl::x509_extension ext{X509V3_EXT_conf_nid(nullptr, &ctx, nid, value)};
  return ext && X509_add_ext(cert, ext.get(), -1) == 1;
}

bool set_time(ASN1_TIME* t, std::optional<std::chrono::system_clock::time_point> tp) {
  if (!tp) return ASN1_TIME_set_string(t, "99991231235959Z") == 1;
  return ASN1_TIME_set(t, std::chrono::system_clock::to_time_t(*tp)) != nullptr;
}

struct cert_spec {
  const char* cn;
  EVP_PKEY* subject_key;
  EVP_PKEY* issuer_key;
  X509* issuer;  // nullptr: self-signed
  std::optional<dice_tcb_info> tcb;
};

expected<ossl::x509> make_cert(const cert_spec& s, const sim_dice_inputs& in) {
  ossl::x509 cert{X509_new()};
  ossl::x509_name name{X509_NAME_new()};
  if (!cert || !name) return sim_error("X509_new");
  const auto* o = reinterpret_cast<const unsigned char*>("cove simulated DICE");
  if (X509_NAME_add_entry_by_txt(name.get(), "O", MBSTRING_ASC, o, -1, -1, 0) != 1 ||
      X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(s.cn),
                                 -1, -1, 0) != 1)
    return sim_error("subject");
  // Serial: SHA-256 of the public key, first 20 bytes, positive and non-zero.
  unsigned char* spki = nullptr;
  int spki_len = i2d_PUBKEY(s.subject_key, &spki);
  if (spki_len <= 0) return sim_error("i2d_PUBKEY");
  std::array<uint8_t, 32> h{};
  SHA256(spki, static_cast<std::size_t>(spki_len), h.data());
  OPENSSL_free(spki);
  h[0] = static_cast<uint8_t>((h[0] & 0x7f) | 0x01);
  ossl::bignum serial{BN_bin2bn(h.data(), 20, nullptr)};
  if (!serial || BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr)
    return sim_error("serial");
  X509* issuer = s.issuer != nullptr ? s.issuer : cert.get();
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      X509_set_subject_name(cert.get(), name.get()) != 1 ||
      X509_set_issuer_name(cert.get(), s.issuer != nullptr ? X509_get_subject_name(s.issuer) : name.get()) !=
          1 ||
      !set_time(X509_getm_notBefore(cert.get()), in.not_before) ||
      !set_time(X509_getm_notAfter(cert.get()), in.not_after) ||
      X509_set_pubkey(cert.get(), s.subject_key) != 1)
    return sim_error("certificate fields");
  if (!add_ext(cert.get(), issuer, NID_basic_constraints, "critical,CA:TRUE") ||
      !add_ext(cert.get(), issuer, NID_key_usage, "critical,keyCertSign,digitalSignature") ||
      !add_ext(cert.get(), issuer, NID_subject_key_identifier, "hash") ||
      !add_ext(cert.get(), issuer, NID_authority_key_identifier, "keyid:always"))
    return sim_error("standard extensions");
  if (s.tcb) {
    auto value = encode_dice_tcb_info(*s.tcb);
    ossl::asn1_object obj{OBJ_txt2obj(dice_tcb_info_oid, 1)};
    ossl::asn1_octet_string os{ASN1_OCTET_STRING_new()};
    if (!obj || !os || ASN1_OCTET_STRING_set(os.get(), value.data(), static_cast<int>(value.size())) != 1)
      return sim_error("DiceTcbInfo");
    // TCG recommends marking DiceTcbInfo critical.
    ossl::x509_extension ext{X509_EXTENSION_create_by_OBJ(nullptr, obj.get(), 1, os.get())};
    if (!ext || X509_add_ext(cert.get(), ext.get(), -1) != 1) return sim_error("DiceTcbInfo");
  }
  if (X509_sign(cert.get(), s.issuer_key, EVP_sha256()) <= 0) return sim_error("X509_sign");
  return cert;
}

std::string to_pem(X509* c) {
  ossl::bio b{BIO_new(BIO_s_mem())};
  if (!b || PEM_write_bio_X509(b.get(), c) != 1) return {};
  return ossl::bio_to_string(b.get());
}

}  // namespace

expected<sim_dice_chain> make_sim_dice_chain(const sim_dice_inputs& in) {
  if (in.uds.size() != 32) return make_error(errc::invalid_request, "sim DICE: UDS must be 32 bytes");
  auto cdi = hkdf_sha256(in.uds, {}, "cove-dice/cdi0");
  if (!cdi) return std::move(cdi).error();
  auto root_key = derive_p256(*cdi);
  if (!root_key) return std::move(root_key).error();
  auto root = make_cert({"device", root_key->get(), root_key->get(), nullptr, std::nullopt}, in);
  if (!root) return std::move(root).error();

  sim_dice_chain out;
  out.root_pem = to_pem(root->get());
  out.chain_pem = out.root_pem;

  struct layer_in {
    const char* cn;
    const bytes* measured;
    const bytes* digest;
    uint32_t flags;
    int64_t svn;
  };
  const layer_in layers[] = {
      {"firmware", &in.firmware, &in.firmware_digest, in.firmware_flags, in.firmware_svn},
      {"kernel", &in.kernel, &in.kernel_digest, in.kernel_flags, in.kernel_svn},
      {"agent", &in.agent, &in.agent_digest, in.agent_flags, in.agent_svn}};
  for (const auto& l : layers)
    if (!l.digest->empty() && l.digest->size() != 48)
      return make_error(errc::invalid_request,
                        std::string("sim DICE: the ") + l.cn + " digest must be 48 bytes (SHA-384)");
  ossl::x509 prev_cert = std::move(*root);
  ossl::evp_pkey prev_key = std::move(*root_key);
  int64_t layer_no = 1;
  for (const auto& l : layers) {
    bytes m = l.digest->empty() ? sha384(*l.measured) : *l.digest;
    auto next_cdi = hkdf_sha256(*cdi, m, "cove-dice/cdi");
    if (!next_cdi) return std::move(next_cdi).error();
    cdi = std::move(next_cdi);
    auto key = derive_p256(*cdi);
    if (!key) return std::move(key).error();
    dice_tcb_info tcb;
    tcb.vendor = "cove";
    tcb.model = "sim";
    tcb.svn = l.svn;
    tcb.layer = layer_no++;
    tcb.fwids.push_back({oid_sha384, m});
    tcb.flags = l.flags;
    auto cert = make_cert({l.cn, key->get(), prev_key.get(), prev_cert.get(), tcb}, in);
    if (!cert) return std::move(cert).error();
    out.chain_pem += to_pem(cert->get());
    out.fwids.push_back(std::move(m));
    prev_cert = std::move(*cert);
    prev_key = std::move(*key);
  }
  ossl::bio b{BIO_new(BIO_s_mem())};
  if (!b || PEM_write_bio_PrivateKey(b.get(), prev_key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return sim_error("leaf key PEM");
  out.leaf_key_pem = ossl::bio_to_string(b.get());
  return out;
}

std::vector<uint8_t> sim_dice_firmware_fwid() {
  return sha384(
      {reinterpret_cast<const uint8_t*>(sim_dice_firmware_bytes.data()), sim_dice_firmware_bytes.size()});
}

std::vector<uint8_t> sim_dice_kernel_fwid() {
  return sha384(
      {reinterpret_cast<const uint8_t*>(sim_dice_kernel_bytes.data()), sim_dice_kernel_bytes.size()});
}

expected<sim_dice_chain> make_sim_agent_dice_chain(std::span<const uint8_t> uds_seed,
                                                   std::span<const uint8_t> agent_measurement) {
  if (uds_seed.empty()) return make_error(errc::invalid_request, "sim DICE: empty UDS seed");
  if (agent_measurement.size() != 48)
    return make_error(errc::invalid_request, "sim DICE: the agent measurement must be 48 bytes");
  auto uds = hkdf_sha256(uds_seed, {}, "cove-sim-dice-uds-v1");
  if (!uds) return std::move(uds).error();
  sim_dice_inputs in;
  in.uds = std::move(*uds);
  in.firmware.assign(sim_dice_firmware_bytes.begin(), sim_dice_firmware_bytes.end());
  in.kernel.assign(sim_dice_kernel_bytes.begin(), sim_dice_kernel_bytes.end());
  in.agent_digest.assign(agent_measurement.begin(), agent_measurement.end());
  return make_sim_dice_chain(in);
}

}  // namespace cove::attest
