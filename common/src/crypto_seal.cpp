#include "cove/crypto/seal.hpp"

#include <cstring>
#include <string>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rsa.h>

#include "cove/crypto/encoding.hpp"

namespace cove::crypto {

namespace {

using pkey_ctx = c_handle<EVP_PKEY_CTX, EVP_PKEY_CTX_free>;
using kdf_handle = c_handle<EVP_KDF, EVP_KDF_free>;
using kdf_ctx = c_handle<EVP_KDF_CTX, EVP_KDF_CTX_free>;

const uint8_t empty_byte = 0;
/// Some libsodium functions are declared nonnull even for zero lengths.
const uint8_t* ptr_or_empty(std::span<const uint8_t> s) {
  return s.data() != nullptr ? s.data() : &empty_byte;
}

error fail(errc code, std::string message) {
  ERR_clear_error();
  return make_error(code, std::move(message));
}

/// Bytes wiped on destruction, for intermediate secrets.
template <size_t N>
struct wiped {
  std::array<uint8_t, N> b{};
  wiped() = default;
  wiped(const wiped&) = delete;
  wiped& operator=(const wiped&) = delete;
  ~wiped() { sodium_memzero(b.data(), b.size()); }
  uint8_t* data() { return b.data(); }
};

}  // namespace

// ---------------------------------------------------------------- secret_key

secret_key secret_key::generate() {
  secret_key k;
  random_bytes(k.bytes_);
  return k;
}

expected<secret_key> secret_key::from_bytes(std::span<const uint8_t> bytes) {
  if (bytes.size() != size) {
    return make_error(errc::invalid_request,
                      "a secret key must be 32 bytes, got " + std::to_string(bytes.size()));
  }
  secret_key k;
  std::memcpy(k.bytes_.data(), bytes.data(), size);
  return k;
}

secret_key::secret_key(secret_key&& other) noexcept : bytes_(other.bytes_) {
  sodium_memzero(other.bytes_.data(), size);
}

secret_key& secret_key::operator=(secret_key&& other) noexcept {
  if (this != &other) {
    bytes_ = other.bytes_;
    sodium_memzero(other.bytes_.data(), size);
  }
  return *this;
}

secret_key::~secret_key() {
  sodium_memzero(bytes_.data(), size);
}

// --------------------------------------------------------------- key exchange

static_assert(crypto_kx_PUBLICKEYBYTES == 32 && crypto_kx_SECRETKEYBYTES == 32 &&
              crypto_kx_SESSIONKEYBYTES == secret_key::size);

kx_keypair kx_keypair::generate() {
  ensure_sodium();
  kx_keypair kp;
  crypto_kx_keypair(kp.public_key.data(), kp.secret.data());
  return kp;
}

kx_keypair kx_keypair::from_secret(secret_key secret) {
  ensure_sodium();
  kx_keypair kp;
  kp.secret = std::move(secret);
  crypto_scalarmult_base(kp.public_key.data(), kp.secret.data());
  return kp;
}

expected<secret_key> client_session_key(const kx_keypair& client, std::span<const uint8_t> server_pk) {
  ensure_sodium();
  if (server_pk.size() != crypto_kx_PUBLICKEYBYTES) {
    return make_error(errc::invalid_request, "server key-exchange public key must be 32 bytes");
  }
  secret_key rx;
  secret_key tx;
  if (crypto_kx_client_session_keys(rx.data(), tx.data(), client.public_key.data(), client.secret.data(),
                                    server_pk.data()) != 0) {
    return make_error(errc::crypto_failed, "unacceptable server key-exchange public key");
  }
  return tx;
}

expected<secret_key> server_session_key(const kx_keypair& server, std::span<const uint8_t> client_pk) {
  ensure_sodium();
  if (client_pk.size() != crypto_kx_PUBLICKEYBYTES) {
    return make_error(errc::invalid_request, "client key-exchange public key must be 32 bytes");
  }
  secret_key rx;
  secret_key tx;
  if (crypto_kx_server_session_keys(rx.data(), tx.data(), server.public_key.data(), server.secret.data(),
                                    client_pk.data()) != 0) {
    return make_error(errc::crypto_failed, "unacceptable client key-exchange public key");
  }
  return rx;
}

// ------------------------------------------------------------------- streams

expected<seal_stream> seal_stream::create(const secret_key& key, seal_header& header_out) {
  ensure_sodium();
  seal_stream s;
  if (crypto_secretstream_xchacha20poly1305_init_push(&s.state_, header_out.data(), key.data()) != 0) {
    return make_error(errc::crypto_failed, "cannot start sealed stream");
  }
  return s;
}

seal_stream::seal_stream(seal_stream&& other) noexcept : state_(other.state_), finished_(other.finished_) {
  sodium_memzero(&other.state_, sizeof other.state_);
  other.finished_ = true;
}

seal_stream& seal_stream::operator=(seal_stream&& other) noexcept {
  if (this != &other) {
    state_ = other.state_;
    finished_ = other.finished_;
    sodium_memzero(&other.state_, sizeof other.state_);
    other.finished_ = true;
  }
  return *this;
}

seal_stream::~seal_stream() {
  sodium_memzero(&state_, sizeof state_);
}

expected<void> seal_stream::push(std::span<const uint8_t> plain, bool final, std::vector<uint8_t>& out) {
  if (finished_) return make_error(errc::wrong_state, "sealed stream already finished");
  if (plain.size() > crypto_secretstream_xchacha20poly1305_MESSAGEBYTES_MAX) {
    return make_error(errc::too_large, "chunk too large to seal");
  }
  out.resize(plain.size() + seal_overhead);
  unsigned long long clen = 0;
  const uint8_t tag = final ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
                            : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
  if (crypto_secretstream_xchacha20poly1305_push(&state_, out.data(), &clen, ptr_or_empty(plain),
                                                 plain.size(), nullptr, 0, tag) != 0) {
    return make_error(errc::crypto_failed, "sealing a chunk failed");
  }
  if (final) finished_ = true;
  return ok();
}

expected<open_stream> open_stream::create(const secret_key& key, std::span<const uint8_t> header) {
  ensure_sodium();
  if (header.size() != seal_header_size) {
    return make_error(errc::invalid_request, "sealed stream header must be " +
                                                 std::to_string(seal_header_size) + " bytes, got " +
                                                 std::to_string(header.size()));
  }
  open_stream s;
  if (crypto_secretstream_xchacha20poly1305_init_pull(&s.state_, header.data(), key.data()) != 0) {
    return make_error(errc::crypto_failed, "invalid sealed stream header");
  }
  return s;
}

open_stream::open_stream(open_stream&& other) noexcept
    : state_(other.state_), finished_(other.finished_), failed_(other.failed_) {
  sodium_memzero(&other.state_, sizeof other.state_);
  other.failed_ = true;
}

open_stream& open_stream::operator=(open_stream&& other) noexcept {
  if (this != &other) {
    state_ = other.state_;
    finished_ = other.finished_;
    failed_ = other.failed_;
    sodium_memzero(&other.state_, sizeof other.state_);
    other.failed_ = true;
  }
  return *this;
}

open_stream::~open_stream() {
  sodium_memzero(&state_, sizeof state_);
}

expected<void> open_stream::pull(std::span<const uint8_t> cipher, std::vector<uint8_t>& plain_out,
                                 bool& final_out) {
  final_out = false;
  if (failed_) return make_error(errc::crypto_failed, "sealed stream already failed");
  if (finished_) {
    failed_ = true;
    return make_error(errc::crypto_failed, "chunk after the final chunk of a sealed stream");
  }
  if (cipher.size() < seal_overhead) {
    failed_ = true;
    return make_error(errc::crypto_failed, "sealed chunk is truncated");
  }
  plain_out.resize(cipher.size() - seal_overhead);
  unsigned long long mlen = 0;
  unsigned char tag = 0;
  uint8_t none = 0;  // libsodium wants a non-null output even for an empty chunk
  uint8_t* m = plain_out.empty() ? &none : plain_out.data();
  if (crypto_secretstream_xchacha20poly1305_pull(&state_, m, &mlen, &tag, cipher.data(), cipher.size(),
                                                 nullptr, 0) != 0) {
    failed_ = true;
    plain_out.clear();
    return make_error(errc::crypto_failed,
                      "sealed chunk failed authentication (forged, reordered or missing chunk)");
  }
  if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
    finished_ = true;
    final_out = true;
  } else if (tag != crypto_secretstream_xchacha20poly1305_TAG_MESSAGE) {
    failed_ = true;  // cove never sends PUSH or REKEY tags
    plain_out.clear();
    return make_error(errc::crypto_failed, "unexpected tag in sealed stream");
  }
  return ok();
}

// ----------------------------------------------------------------- wrapping

namespace {

constexpr size_t p256_point_size = 65;
constexpr size_t xnonce_size = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr std::string_view wrap_info_tag = "cove-wrap-v1";

expected<std::vector<uint8_t>> encoded_point(EVP_PKEY* pkey) {
  std::vector<uint8_t> out(p256_point_size);
  size_t len = 0;
  if (EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, out.data(), out.size(),
                                      &len) != 1 ||
      len != p256_point_size) {
    return fail(errc::internal, "cannot encode P-256 public key");
  }
  return out;
}

expected<evp_pkey> p256_from_point(std::span<const uint8_t> point) {
  pkey_ctx ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  char group[] = "prime256v1";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, const_cast<uint8_t*>(point.data()),
                                        point.size()),
      OSSL_PARAM_construct_end(),
  };
  EVP_PKEY* raw = nullptr;
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params) != 1) {
    return fail(errc::crypto_failed, "wrapped key has an invalid ephemeral point");
  }
  return evp_pkey(raw);
}

/// ECDH(own, peer) -> HKDF-SHA256(info = tag || eph || recipient) -> 32-byte key.
expected<void> p256_kek(EVP_PKEY* own, EVP_PKEY* peer, std::span<const uint8_t> eph_point,
                        std::span<const uint8_t> recipient_point, uint8_t* kek_out) {
  pkey_ctx dctx(EVP_PKEY_CTX_new_from_pkey(nullptr, own, nullptr));
  wiped<32> shared;
  size_t slen = shared.b.size();
  if (!dctx || EVP_PKEY_derive_init(dctx.get()) != 1 || EVP_PKEY_derive_set_peer(dctx.get(), peer) != 1 ||
      EVP_PKEY_derive(dctx.get(), shared.data(), &slen) != 1 || slen != shared.b.size()) {
    return fail(errc::crypto_failed, "ECDH failed");
  }
  std::vector<uint8_t> info(wrap_info_tag.begin(), wrap_info_tag.end());
  info.insert(info.end(), eph_point.begin(), eph_point.end());
  info.insert(info.end(), recipient_point.begin(), recipient_point.end());
  kdf_handle kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  kdf_ctx kctx(kdf ? EVP_KDF_CTX_new(kdf.get()) : nullptr);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, shared.data(), slen),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end(),
  };
  if (!kctx || EVP_KDF_derive(kctx.get(), kek_out, 32, params) != 1) {
    return fail(errc::internal, "HKDF failed");
  }
  return ok();
}

expected<std::vector<uint8_t>> wrap_p256(const public_key& recipient, const secret_key& key) {
  evp_pkey eph(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!eph) return fail(errc::internal, "ephemeral key generation failed");
  auto eph_point = encoded_point(eph.get());
  if (!eph_point) return std::move(eph_point).error();
  auto rcpt_point = encoded_point(recipient.native());
  if (!rcpt_point) return std::move(rcpt_point).error();
  wiped<32> kek;
  if (auto r = p256_kek(eph.get(), recipient.native(), *eph_point, *rcpt_point, kek.data()); !r) {
    return std::move(r).error();
  }
  std::vector<uint8_t> out;
  out.reserve(1 + p256_point_size + xnonce_size + secret_key::size +
              crypto_aead_xchacha20poly1305_ietf_ABYTES);
  out.push_back(wrap_tag_p256);
  out.insert(out.end(), eph_point->begin(), eph_point->end());
  std::array<uint8_t, xnonce_size> nonce{};
  random_bytes(nonce);
  out.insert(out.end(), nonce.begin(), nonce.end());
  size_t ct_at = out.size();
  out.resize(ct_at + secret_key::size + crypto_aead_xchacha20poly1305_ietf_ABYTES);
  unsigned long long clen = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(out.data() + ct_at, &clen, key.data(), secret_key::size, nullptr,
                                             0, nullptr, nonce.data(), kek.data());
  return out;
}

expected<secret_key> unwrap_p256(const private_key& recipient, std::span<const uint8_t> body) {
  constexpr size_t ct_size = secret_key::size + crypto_aead_xchacha20poly1305_ietf_ABYTES;
  if (body.size() != p256_point_size + xnonce_size + ct_size) {
    return make_error(errc::crypto_failed, "wrapped key has the wrong size");
  }
  auto eph_point = body.subspan(0, p256_point_size);
  auto nonce = body.subspan(p256_point_size, xnonce_size);
  auto ct = body.subspan(p256_point_size + xnonce_size);
  auto eph = p256_from_point(eph_point);
  if (!eph) return std::move(eph).error();
  auto rcpt_point = encoded_point(recipient.native());
  if (!rcpt_point) return std::move(rcpt_point).error();
  wiped<32> kek;
  if (auto r = p256_kek(recipient.native(), eph->get(), eph_point, *rcpt_point, kek.data()); !r) {
    return make_error(errc::crypto_failed, "cannot unwrap key: " + r.error().message);
  }
  secret_key out;
  unsigned long long mlen = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(out.data(), &mlen, nullptr, ct.data(), ct.size(), nullptr, 0,
                                                 nonce.data(), kek.data()) != 0 ||
      mlen != secret_key::size) {
    return make_error(errc::crypto_failed, "cannot unwrap key: wrong key or damaged wrapped key");
  }
  return out;
}

expected<std::vector<uint8_t>> wrap_ed25519(const public_key& recipient, const secret_key& key) {
  std::array<uint8_t, 32> ed_pk{};
  size_t len = ed_pk.size();
  std::array<uint8_t, 32> x_pk{};
  if (EVP_PKEY_get_raw_public_key(recipient.native(), ed_pk.data(), &len) != 1 || len != ed_pk.size()) {
    return fail(errc::internal, "cannot read Ed25519 public key");
  }
  if (crypto_sign_ed25519_pk_to_curve25519(x_pk.data(), ed_pk.data()) != 0) {
    return make_error(errc::invalid_request, "Ed25519 public key cannot be converted to X25519");
  }
  std::vector<uint8_t> out(1 + crypto_box_SEALBYTES + secret_key::size);
  out[0] = wrap_tag_ed25519;
  if (crypto_box_seal(out.data() + 1, key.data(), secret_key::size, x_pk.data()) != 0) {
    return make_error(errc::crypto_failed, "sealing the key failed");
  }
  return out;
}

expected<secret_key> unwrap_ed25519(const private_key& recipient, std::span<const uint8_t> body) {
  if (body.size() != crypto_box_SEALBYTES + secret_key::size) {
    return make_error(errc::crypto_failed, "wrapped key has the wrong size");
  }
  wiped<32> seed;
  size_t len = seed.b.size();
  if (EVP_PKEY_get_raw_private_key(recipient.native(), seed.data(), &len) != 1 || len != seed.b.size()) {
    return fail(errc::internal, "cannot read Ed25519 private key");
  }
  std::array<uint8_t, crypto_sign_PUBLICKEYBYTES> ed_pk{};
  wiped<crypto_sign_SECRETKEYBYTES> ed_sk;
  wiped<32> x_sk;
  std::array<uint8_t, 32> x_pk{};
  crypto_sign_seed_keypair(ed_pk.data(), ed_sk.data(), seed.data());
  if (crypto_sign_ed25519_sk_to_curve25519(x_sk.data(), ed_sk.data()) != 0 ||
      crypto_sign_ed25519_pk_to_curve25519(x_pk.data(), ed_pk.data()) != 0) {
    return make_error(errc::crypto_failed, "Ed25519 key cannot be converted to X25519");
  }
  secret_key out;
  if (crypto_box_seal_open(out.data(), body.data(), body.size(), x_pk.data(), x_sk.data()) != 0) {
    return make_error(errc::crypto_failed, "cannot unwrap key: wrong key or damaged wrapped key");
  }
  return out;
}

bool set_oaep(EVP_PKEY_CTX* ctx) {
  return EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) == 1 &&
         EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) == 1 &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) == 1;
}

expected<std::vector<uint8_t>> wrap_rsa(const public_key& recipient, const secret_key& key) {
  pkey_ctx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, recipient.native(), nullptr));
  size_t len = 0;
  if (!ctx || EVP_PKEY_encrypt_init(ctx.get()) != 1 || !set_oaep(ctx.get()) ||
      EVP_PKEY_encrypt(ctx.get(), nullptr, &len, key.data(), secret_key::size) != 1) {
    return fail(errc::internal, "cannot set up RSA-OAEP");
  }
  std::vector<uint8_t> out(1 + len);
  out[0] = wrap_tag_rsa;
  if (EVP_PKEY_encrypt(ctx.get(), out.data() + 1, &len, key.data(), secret_key::size) != 1) {
    return fail(errc::internal, "RSA-OAEP encryption failed");
  }
  out.resize(1 + len);
  return out;
}

expected<secret_key> unwrap_rsa(const private_key& recipient, std::span<const uint8_t> body) {
  pkey_ctx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, recipient.native(), nullptr));
  size_t len = 0;
  if (!ctx || EVP_PKEY_decrypt_init(ctx.get()) != 1 || !set_oaep(ctx.get()) ||
      EVP_PKEY_decrypt(ctx.get(), nullptr, &len, body.data(), body.size()) != 1) {
    return fail(errc::crypto_failed, "cannot unwrap key: damaged wrapped key");
  }
  std::vector<uint8_t> plain(len);
  bool good = EVP_PKEY_decrypt(ctx.get(), plain.data(), &len, body.data(), body.size()) == 1 &&
              len == secret_key::size;
  ERR_clear_error();
  expected<secret_key> out =
      good ? secret_key::from_bytes(std::span<const uint8_t>(plain.data(), len))
           : expected<secret_key>(
                 make_error(errc::crypto_failed, "cannot unwrap key: wrong key or damaged wrapped key"));
  sodium_memzero(plain.data(), plain.size());
  return out;
}

}  // namespace

expected<std::vector<uint8_t>> wrap_key(const public_key& recipient, const secret_key& key) {
  ensure_sodium();
  switch (recipient.type()) {
    case key_type::ed25519:
      return wrap_ed25519(recipient, key);
    case key_type::ecdsa_p256:
      return wrap_p256(recipient, key);
    case key_type::rsa:
      return wrap_rsa(recipient, key);
  }
  return make_error(errc::invalid_request, "unsupported key type");
}

expected<secret_key> unwrap_key(const private_key& recipient, std::span<const uint8_t> wrapped) {
  ensure_sodium();
  if (wrapped.empty()) return make_error(errc::crypto_failed, "empty wrapped key");
  uint8_t expected_tag = 0;
  switch (recipient.type()) {
    case key_type::ed25519:
      expected_tag = wrap_tag_ed25519;
      break;
    case key_type::ecdsa_p256:
      expected_tag = wrap_tag_p256;
      break;
    case key_type::rsa:
      expected_tag = wrap_tag_rsa;
      break;
  }
  if (wrapped[0] != expected_tag) {
    return make_error(errc::crypto_failed, "key was wrapped for a different key type or format version");
  }
  auto body = wrapped.subspan(1);
  switch (recipient.type()) {
    case key_type::ed25519:
      return unwrap_ed25519(recipient, body);
    case key_type::ecdsa_p256:
      return unwrap_p256(recipient, body);
    case key_type::rsa:
      return unwrap_rsa(recipient, body);
  }
  return make_error(errc::crypto_failed, "unsupported key type");
}

}  // namespace cove::crypto
