#include "cove/agent/cocos_auth.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "cove/c_handle.hpp"
#include "cove/crypto/encoding.hpp"

namespace cove::agent::cocos {

namespace {

using md_ctx = c_handle<EVP_MD_CTX, EVP_MD_CTX_free>;

/// SHA-256 for RSA and ECDSA; none (the raw message) for Ed25519.
const EVP_MD* digest_for(crypto::key_type t) {
  return t == crypto::key_type::ed25519 ? nullptr : EVP_sha256();
}

constexpr size_t max_signature = 2048;  // RSA-16384 signatures are 2048 bytes

}  // namespace

std::string_view role_string(role r) noexcept {
  switch (r) {
    case role::algorithm_provider:
      return "algorithm-provider";
    case role::data_provider:
      return "data-provider";
    case role::consumer:
      return "consumer";
  }
  return "unknown";
}

expected<void> verify_role_signature(const crypto::public_key& key, role r,
                                     std::span<const uint8_t> signature) {
  if (signature.empty() || signature.size() > max_signature)
    return make_error(errc::unauthorized, "signature: empty or longer than 2048 bytes");
  md_ctx ctx(EVP_MD_CTX_new());
  if (!ctx) return make_error(errc::internal, "out of memory");
  EVP_PKEY_CTX* pctx = nullptr;
  if (EVP_DigestVerifyInit(ctx.get(), &pctx, digest_for(key.type()), nullptr, key.native()) != 1) {
    ERR_clear_error();
    return make_error(errc::internal, "cannot set up signature verification");
  }
  if (key.type() == crypto::key_type::rsa && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) {
    ERR_clear_error();
    return make_error(errc::internal, "cannot select RSA PKCS#1 v1.5");
  }
  auto msg = role_string(r);
  int rc = EVP_DigestVerify(ctx.get(), signature.data(), signature.size(),
                            reinterpret_cast<const unsigned char*>(msg.data()), msg.size());
  ERR_clear_error();
  if (rc != 1)
    return make_error(errc::unauthorized, "signature over '" + std::string(msg) + "' does not verify under " +
                                              std::string(crypto::to_string(key.type())) + " key " +
                                              key.short_id());
  return ok();
}

expected<std::vector<uint8_t>> sign_role(const crypto::private_key& key, role r) {
  md_ctx ctx(EVP_MD_CTX_new());
  if (!ctx) return make_error(errc::internal, "out of memory");
  EVP_PKEY_CTX* pctx = nullptr;
  if (EVP_DigestSignInit(ctx.get(), &pctx, digest_for(key.type()), nullptr, key.native()) != 1 ||
      (key.type() == crypto::key_type::rsa && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)) {
    ERR_clear_error();
    return make_error(errc::crypto_failed, "cannot set up signing");
  }
  auto msg = role_string(r);
  size_t len = 0;
  const auto* data = reinterpret_cast<const unsigned char*>(msg.data());
  if (EVP_DigestSign(ctx.get(), nullptr, &len, data, msg.size()) != 1) {
    ERR_clear_error();
    return make_error(errc::crypto_failed, "signing failed");
  }
  std::vector<uint8_t> sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, data, msg.size()) != 1) {
    ERR_clear_error();
    return make_error(errc::crypto_failed, "signing failed");
  }
  sig.resize(len);
  return sig;
}

expected<std::vector<uint8_t>> decode_signature(std::string_view value) {
  if (value.size() > 4 * max_signature) return make_error(errc::unauthorized, "signature metadata: too long");
  auto raw = crypto::base64_decode(value);
  if (!raw)
    return make_error(errc::unauthorized,
                      "signature metadata: not standard base64 (" + raw.error().message + ")");
  return raw;
}

}  // namespace cove::agent::cocos
