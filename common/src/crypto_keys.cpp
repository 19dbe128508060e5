#include "cove/crypto/keys.hpp"

#include <climits>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "cove/crypto/encoding.hpp"
#include "cove/crypto/hash.hpp"

namespace cove::crypto {

namespace {

using bio_handle = c_handle<BIO, BIO_free>;
using md_ctx = c_handle<EVP_MD_CTX, EVP_MD_CTX_free>;
using pkey_ctx = c_handle<EVP_PKEY_CTX, EVP_PKEY_CTX_free>;
using p8_info = c_handle<PKCS8_PRIV_KEY_INFO, PKCS8_PRIV_KEY_INFO_free>;

constexpr size_t max_key_input = 1 << 20;  // keys are a few KiB; refuse anything absurd
constexpr int min_rsa_bits = 2048;
constexpr int max_rsa_bits = 16384;

const unsigned char empty_byte = 0;
const unsigned char* ptr_or_empty(std::span<const uint8_t> s) {
  return s.data() != nullptr ? s.data() : &empty_byte;
}

/// The most recent OpenSSL error as text; clears the thread's error queue.
std::string openssl_error() {
  unsigned long e = ERR_peek_last_error();
  std::string out;
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out = buf;
  }
  ERR_clear_error();
  return out;
}

error fail(errc code, std::string message) {
  ERR_clear_error();
  return make_error(code, std::move(message));
}

/// Checks `pkey` is a key type cove supports.
expected<key_type> classify(EVP_PKEY* pkey) {
  switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_ED25519:
      return key_type::ed25519;
    case EVP_PKEY_EC: {
      char name[80] = {};
      size_t len = 0;
      if (EVP_PKEY_get_group_name(pkey, name, sizeof name, &len) != 1) {
        return fail(errc::invalid_request, "EC key without a named curve is not supported; use P-256");
      }
      std::string_view curve(name, len);
      if (curve != "prime256v1" && curve != "P-256") {
        return fail(errc::invalid_request,
                    "EC curve '" + std::string(curve) + "' is not supported; only P-256 (prime256v1) is");
      }
      return key_type::ecdsa_p256;
    }
    case EVP_PKEY_RSA: {
      int bits = EVP_PKEY_get_bits(pkey);
      if (bits < min_rsa_bits) {
        return fail(errc::invalid_request, "RSA key of " + std::to_string(bits) +
                                               " bits is too small; at least 2048 bits are required");
      }
      if (bits > max_rsa_bits) {
        return fail(errc::invalid_request,
                    "RSA key of " + std::to_string(bits) + " bits is larger than the 16384-bit limit");
      }
      return key_type::rsa;
    }
    case EVP_PKEY_RSA_PSS:
      return fail(errc::invalid_request,
                  "RSA-PSS restricted keys (id-RSASSA-PSS) are not supported; use a plain RSA key");
    default: {
      const char* name = EVP_PKEY_get0_type_name(pkey);
      return fail(errc::invalid_request,
                  std::string("key type '") + (name != nullptr ? name : "unknown") +
                      "' is not supported; use Ed25519, ECDSA P-256 or RSA (>= 2048 bits)");
    }
  }
}

expected<std::vector<uint8_t>> spki_der(EVP_PKEY* pkey) {
  int len = i2d_PUBKEY(pkey, nullptr);
  if (len <= 0) return fail(errc::internal, "cannot encode public key: " + openssl_error());
  std::vector<uint8_t> der(static_cast<size_t>(len));
  unsigned char* p = der.data();
  if (i2d_PUBKEY(pkey, &p) != len)
    return fail(errc::internal, "cannot encode public key: " + openssl_error());
  return der;
}

std::string bio_contents(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return len > 0 ? std::string(data, static_cast<size_t>(len)) : std::string();
}

/// One PEM block; frees what PEM_read_bio allocated, wiping the body.
struct pem_block {
  char* name = nullptr;
  char* header = nullptr;
  unsigned char* data = nullptr;
  long len = 0;
  pem_block() = default;
  pem_block(const pem_block&) = delete;
  pem_block& operator=(const pem_block&) = delete;
  ~pem_block() { reset(); }
  void reset() {
    OPENSSL_free(name);
    OPENSSL_free(header);
    if (data != nullptr) OPENSSL_clear_free(data, static_cast<size_t>(len));
    name = header = nullptr;
    data = nullptr;
    len = 0;
  }
  [[nodiscard]] std::string_view label() const { return name != nullptr ? name : ""; }
  [[nodiscard]] bool encrypted() const { return header != nullptr && header[0] != '\0'; }
};

/// Reads PEM blocks from `text` until one whose label is not in `skip`.
expected<void> read_pem(std::string_view text, pem_block& block, std::string_view skip = {}) {
  if (text.size() > max_key_input) return fail(errc::invalid_request, "key input is too large");
  bio_handle bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  if (!bio) return fail(errc::internal, "out of memory");
  for (;;) {
    block.reset();
    if (PEM_read_bio(bio.get(), &block.name, &block.header, &block.data, &block.len) != 1) {
      return fail(errc::invalid_request, "no PEM block found");
    }
    if (skip.empty() || block.label() != skip) return ok();
  }
}

expected<evp_pkey> decode_der(std::span<const uint8_t> der, int type /* 0: SPKI */, bool is_private) {
  const unsigned char* p = der.data();
  auto len = static_cast<long>(der.size());
  evp_pkey key;
  if (is_private) {
    key.reset(d2i_PrivateKey(type, nullptr, &p, len));
  } else if (type == 0) {
    key.reset(d2i_PUBKEY(nullptr, &p, len));
  } else {
    key.reset(d2i_PublicKey(type, nullptr, &p, len));
  }
  if (!key) return fail(errc::invalid_request, "malformed key: " + openssl_error());
  if (p != der.data() + der.size()) return fail(errc::invalid_request, "malformed key: trailing bytes");
  return key;
}

/// Configures RSA-PSS SHA-256 / MGF1-SHA-256 / salt = 32 on a sign or verify context.
bool set_pss(EVP_PKEY_CTX* pctx) {
  return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1 &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) == 1;
}

}  // namespace

std::string_view to_string(key_type t) noexcept {
  switch (t) {
    case key_type::ed25519:
      return "ed25519";
    case key_type::ecdsa_p256:
      return "ecdsa-p256";
    case key_type::rsa:
      return "rsa";
  }
  return "unknown";
}

// ---------------------------------------------------------------- public_key

expected<public_key> public_key::from_evp(EVP_PKEY* pkey) {
  if (pkey == nullptr) return make_error(errc::invalid_request, "no key");
  auto type = classify(pkey);
  if (!type) return std::move(type).error();
  auto der = spki_der(pkey);
  if (!der) return std::move(der).error();
  // Re-parse the SPKI so the object holds public material only.
  auto key = decode_der(*der, 0, false);
  if (!key) return std::move(key).error();
  return public_key(std::move(*key), *type, std::move(*der));
}

expected<public_key> public_key::from_der(std::span<const uint8_t> der) {
  if (der.size() > max_key_input) return make_error(errc::invalid_request, "key input is too large");
  auto key = decode_der(der, 0, false);
  if (!key) return std::move(key).error();
  return from_evp(key->get());
}

expected<public_key> public_key::from_pem(std::string_view pem) {
  pem_block block;
  if (auto r = read_pem(pem, block); !r) return std::move(r).error();
  std::span<const uint8_t> der(block.data, static_cast<size_t>(block.len));
  if (block.label() == "PUBLIC KEY") return from_der(der);
  if (block.label() == "RSA PUBLIC KEY") {
    auto key = decode_der(der, EVP_PKEY_RSA, false);
    if (!key) return std::move(key).error();
    return from_evp(key->get());
  }
  return make_error(errc::invalid_request,
                    "expected a 'PUBLIC KEY' PEM block, got '" + std::string(block.label()) + "'");
}

expected<public_key> public_key::parse(std::string_view text) {
  constexpr std::string_view space = " \t\r\n";
  auto first = text.find_first_not_of(space);
  if (first == std::string_view::npos) return make_error(errc::invalid_request, "empty public key");
  text = text.substr(first, text.find_last_not_of(space) - first + 1);
  if (text.starts_with("-----BEGIN")) return from_pem(text);
  if (text.size() > max_key_input) return make_error(errc::invalid_request, "key input is too large");
  std::string compact;
  compact.reserve(text.size());
  for (char c : text) {
    if (space.find(c) == std::string_view::npos) compact.push_back(c);
  }
  auto der = base64_decode(compact);
  if (!der) {
    return make_error(errc::invalid_request,
                      "public key is neither PEM nor base64 of DER SubjectPublicKeyInfo");
  }
  return from_der(*der);
}

public_key::public_key(const public_key& other) : type_(other.type_), der_(other.der_) {
  EVP_PKEY_up_ref(other.pkey_.get());
  pkey_.reset(other.pkey_.get());
}

public_key& public_key::operator=(const public_key& other) {
  if (this != &other) {
    public_key copy(other);
    *this = std::move(copy);
  }
  return *this;
}

std::string public_key::pem() const {
  bio_handle bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), pkey_.get()) != 1) {
    ERR_clear_error();
    return {};
  }
  return bio_contents(bio.get());
}

int public_key::bits() const noexcept {
  return EVP_PKEY_get_bits(pkey_.get());
}

std::string public_key::fingerprint() const {
  return to_hex(sha3_256_of(der_));
}

std::string public_key::short_id() const {
  return fingerprint().substr(0, 16);
}

expected<void> public_key::verify(std::span<const uint8_t> message,
                                  std::span<const uint8_t> signature) const {
  md_ctx ctx(EVP_MD_CTX_new());
  if (!ctx) return fail(errc::internal, "out of memory");
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  const EVP_MD* md = type_ == key_type::ed25519 ? nullptr : EVP_sha256();
  if (EVP_DigestVerifyInit(ctx.get(), &pctx, md, nullptr, pkey_.get()) != 1 ||
      (type_ == key_type::rsa && !set_pss(pctx))) {
    return fail(errc::internal, "cannot set up signature verification: " + openssl_error());
  }
  int rc = EVP_DigestVerify(ctx.get(), ptr_or_empty(signature), signature.size(), ptr_or_empty(message),
                            message.size());
  if (rc != 1) {
    return fail(errc::unauthorized,
                "signature does not verify under " + std::string(to_string(type_)) + " key " + short_id());
  }
  return ok();
}

// --------------------------------------------------------------- private_key

expected<private_key> private_key::from_evp(EVP_PKEY* pkey) {
  if (pkey == nullptr) return make_error(errc::invalid_request, "no key");
  auto type = classify(pkey);
  if (!type) return std::move(type).error();
  // A damaged key can decode yet have a public half that does not match the
  // private one (SEC1/PKCS#8 carry both; RSA carries CRT values).
  {
    pkey_ctx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey, nullptr));
    if (!ctx || EVP_PKEY_pairwise_check(ctx.get()) != 1) {
      return fail(errc::invalid_request,
                  "private key is inconsistent (public and private parts do not match)");
    }
  }
  EVP_PKEY_up_ref(pkey);
  return private_key(evp_pkey(pkey), *type);
}

expected<private_key> private_key::generate(key_type type, int rsa_bits) {
  evp_pkey key;
  switch (type) {
    case key_type::ed25519:
      key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
      break;
    case key_type::ecdsa_p256:
      key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
      break;
    case key_type::rsa:
      if (rsa_bits < min_rsa_bits || rsa_bits > max_rsa_bits) {
        return make_error(errc::invalid_request,
                          "RSA key size " + std::to_string(rsa_bits) + " is outside 2048..16384 bits");
      }
      key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(rsa_bits)));
      break;
  }
  if (!key) return fail(errc::internal, "key generation failed: " + openssl_error());
  return from_evp(key.get());
}

expected<private_key> private_key::from_pem(std::string_view pem) {
  pem_block block;
  if (auto r = read_pem(pem, block, "EC PARAMETERS"); !r) return std::move(r).error();
  std::string_view label = block.label();
  if (block.encrypted() || label == "ENCRYPTED PRIVATE KEY") {
    return make_error(errc::invalid_request,
                      "encrypted private keys are not supported; decrypt the key first");
  }
  std::span<const uint8_t> der(block.data, static_cast<size_t>(block.len));
  expected<evp_pkey> key = make_error(errc::invalid_request, "");
  if (label == "PRIVATE KEY") {
    // PKCS#8 first; cocos writes PKCS#1 RSA DER under this label too.
    const unsigned char* p = der.data();
    p8_info p8(d2i_PKCS8_PRIV_KEY_INFO(nullptr, &p, static_cast<long>(der.size())));
    if (p8 && p == der.data() + der.size()) {
      evp_pkey k(EVP_PKCS82PKEY(p8.get()));
      if (k) key = std::move(k);
    }
    ERR_clear_error();
    if (!key) key = decode_der(der, EVP_PKEY_RSA, true);
  } else if (label == "RSA PRIVATE KEY") {
    key = decode_der(der, EVP_PKEY_RSA, true);
  } else if (label == "EC PRIVATE KEY") {
    key = decode_der(der, EVP_PKEY_EC, true);
  } else {
    return make_error(errc::invalid_request,
                      "unsupported PEM block '" + std::string(label) +
                          "'; expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY");
  }
  if (!key) return make_error(errc::invalid_request, "malformed '" + std::string(label) + "' block");
  return from_evp(key->get());
}

expected<std::string> read_secret_file(const std::filesystem::path& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(errc::not_found, "cannot open key file '" + path.string() + "'");
  std::string text;
  char buf[4096];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > max_bytes) break;
  }
  OPENSSL_cleanse(buf, sizeof buf);
  if (text.size() > max_bytes) {
    OPENSSL_cleanse(text.data(), text.size());
    return make_error(errc::invalid_request, "key file '" + path.string() + "': too large (over " +
                                                 std::to_string(max_bytes) + " bytes)");
  }
  return text;
}

expected<private_key> private_key::load_file(const std::filesystem::path& path) {
  auto read = read_secret_file(path, max_key_input);
  if (!read) return read.error();
  std::string& text = *read;
  auto key = from_pem(text);
  OPENSSL_cleanse(text.data(), text.size());
  if (!key) return make_error(key.error().code, "key file '" + path.string() + "': " + key.error().message);
  return key;
}

std::string private_key::to_pem() const {
  bio_handle bio(BIO_new(BIO_s_secmem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), pkey_.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    ERR_clear_error();
    return {};
  }
  return bio_contents(bio.get());
}

crypto::public_key private_key::public_key() const {
  auto der = spki_der(pkey_.get());
  auto key = der ? decode_der(*der, 0, false) : expected<evp_pkey>(der.error());
  if (!key) std::abort();  // our own key always re-encodes
  return crypto::public_key(std::move(*key), type_, std::move(*der));
}

expected<std::vector<uint8_t>> private_key::sign(std::span<const uint8_t> message) const {
  md_ctx ctx(EVP_MD_CTX_new());
  if (!ctx) return fail(errc::internal, "out of memory");
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  const EVP_MD* md = type_ == key_type::ed25519 ? nullptr : EVP_sha256();
  if (EVP_DigestSignInit(ctx.get(), &pctx, md, nullptr, pkey_.get()) != 1 ||
      (type_ == key_type::rsa && !set_pss(pctx))) {
    return fail(errc::internal, "cannot set up signing: " + openssl_error());
  }
  size_t len = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &len, ptr_or_empty(message), message.size()) != 1) {
    return fail(errc::internal, "signing failed: " + openssl_error());
  }
  std::vector<uint8_t> sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, ptr_or_empty(message), message.size()) != 1) {
    return fail(errc::internal, "signing failed: " + openssl_error());
  }
  sig.resize(len);
  return sig;
}

}  // namespace cove::crypto
