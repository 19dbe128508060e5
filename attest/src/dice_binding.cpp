// The DICE leaf key's signature over an agent evidence's REPORT_DATA (dice.hpp).
#include <openssl/pem.h>

#include "cove/attest/dice.hpp"
#include "ossl.hpp"

namespace cove::attest {
namespace {

/// The digest for the key's signature scheme: SHA-256 (P-256), SHA-384 (P-384), none (Ed25519).
expected<const EVP_MD*> digest_for(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "ED25519")) return static_cast<const EVP_MD*>(nullptr);
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64] = {};
    size_t len = 0;
    if (EVP_PKEY_get_group_name(key, group, sizeof group, &len) == 1) {
      std::string_view g(group, len);
      if (g == "prime256v1" || g == "P-256") return EVP_sha256();
      if (g == "secp384r1" || g == "P-384") return EVP_sha384();
    }
  }
  return make_error(errc::attestation_failed,
                    "dice.binding: the agent layer's key is not P-256, P-384 or Ed25519");
}

}  // namespace

std::vector<uint8_t> dice_binding_message(std::span<const uint8_t> report_data) {
  std::vector<uint8_t> m(dice_binding_tag.begin(), dice_binding_tag.end());
  auto n = static_cast<uint32_t>(report_data.size());
  for (int shift = 24; shift >= 0; shift -= 8) m.push_back(static_cast<uint8_t>(n >> shift));
  m.insert(m.end(), report_data.begin(), report_data.end());
  return m;
}

expected<std::vector<uint8_t>> sign_dice_binding(std::string_view leaf_key_pem,
                                                 std::span<const uint8_t> report_data) {
  ossl::bio b{BIO_new_mem_buf(leaf_key_pem.data(), static_cast<int>(leaf_key_pem.size()))};
  ossl::evp_pkey key{b ? PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr) : nullptr};
  if (!key) return make_error(errc::invalid_request, "dice.binding: leaf key: " + ossl::last_error());
  auto md = digest_for(key.get());
  if (!md) return md.error();
  auto msg = dice_binding_message(report_data);
  ossl::evp_md_ctx ctx{EVP_MD_CTX_new()};
  size_t len = 0;
  if (!ctx ||
      EVP_DigestSignInit_ex(ctx.get(), nullptr, *md ? EVP_MD_get0_name(*md) : nullptr, nullptr, nullptr,
                            key.get(), nullptr) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, msg.data(), msg.size()) != 1)
    return make_error(errc::crypto_failed, "dice.binding: sign: " + ossl::last_error());
  std::vector<uint8_t> sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, msg.data(), msg.size()) != 1)
    return make_error(errc::crypto_failed, "dice.binding: sign: " + ossl::last_error());
  sig.resize(len);
  return sig;
}

expected<void> verify_dice_binding(const dice_layer& leaf, std::span<const uint8_t> report_data,
                                   std::span<const uint8_t> signature) {
  auto cert = ossl::parse_der(leaf.cert_der);
  if (!cert) return make_error(errc::attestation_failed, "dice.binding: the leaf certificate is malformed");
  EVP_PKEY* key = X509_get0_pubkey(cert.get());
  if (key == nullptr)
    return make_error(errc::attestation_failed, "dice.binding: the leaf certificate's key is unreadable");
  auto md = digest_for(key);
  if (!md) return md.error();
  if (signature.empty() || signature.size() > 512)
    return make_error(errc::attestation_failed,
                      "dice.binding: no signature by the agent layer's key (binding_signature is empty or "
                      "over 512 bytes)");
  auto msg = dice_binding_message(report_data);
  ossl::evp_md_ctx ctx{EVP_MD_CTX_new()};
  int rc = ctx ? EVP_DigestVerifyInit_ex(ctx.get(), nullptr, *md ? EVP_MD_get0_name(*md) : nullptr, nullptr,
                                         nullptr, key, nullptr)
               : 0;
  if (rc == 1) rc = EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), msg.data(), msg.size());
  ERR_clear_error();
  if (rc != 1)
    return make_error(
        errc::attestation_failed,
        "dice.binding: the agent layer's key ('" + leaf.subject +
            "') did not sign this evidence's REPORT_DATA (a chain from another agent or session?)");
  return ok();
}

}  // namespace cove::attest
