#pragma once
// Participant keys: Ed25519, ECDSA P-256 and RSA (>= 2048 bits), wrapping
// OpenSSL EVP_PKEY. Anything else is rejected with errc::invalid_request.
//
// Signature schemes (the only ones cove produces or accepts):
//   ed25519     Ed25519 over the raw message (64-byte signature)
//   ecdsa_p256  ECDSA P-256 with SHA-256, DER-encoded (r, s)
//   rsa         RSA-PSS, SHA-256, MGF1-SHA-256, salt length 32
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/evp.h>

#include "cove/c_handle.hpp"
#include "cove/expected.hpp"

namespace cove::crypto {

enum class key_type { ed25519, ecdsa_p256, rsa };

std::string_view to_string(key_type t) noexcept;

using evp_pkey = c_handle<EVP_PKEY, EVP_PKEY_free>;

/// An immutable public key. Copies share the underlying EVP_PKEY.
class public_key {
 public:
  /// DER SubjectPublicKeyInfo; trailing bytes are rejected.
  static expected<public_key> from_der(std::span<const uint8_t> der);
  /// A "PUBLIC KEY" PEM block (also "RSA PUBLIC KEY", PKCS#1).
  static expected<public_key> from_pem(std::string_view pem);
  /// PEM, or base64 of DER SubjectPublicKeyInfo (the cocos manifest form).
  /// Surrounding whitespace is ignored.
  static expected<public_key> parse(std::string_view text);
  /// Takes a reference on `pkey` after checking its type is supported.
  static expected<public_key> from_evp(EVP_PKEY* pkey);

  public_key(const public_key& other);
  public_key& operator=(const public_key& other);
  public_key(public_key&&) noexcept = default;
  public_key& operator=(public_key&&) noexcept = default;
  ~public_key() = default;

  /// DER SubjectPublicKeyInfo (cached).
  [[nodiscard]] const std::vector<uint8_t>& der() const noexcept { return der_; }
  [[nodiscard]] std::string pem() const;
  [[nodiscard]] key_type type() const noexcept { return type_; }
  /// Key size in bits (256 for P-256, 253 for Ed25519, modulus size for RSA).
  [[nodiscard]] int bits() const noexcept;
  /// Hex SHA3-256 of der() (64 hex characters).
  [[nodiscard]] std::string fingerprint() const;
  /// First 16 hex characters of fingerprint(): a short id for logs and UIs.
  [[nodiscard]] std::string short_id() const;
  /// errc::unauthorized if the signature does not verify under this key's scheme.
  [[nodiscard]] expected<void> verify(std::span<const uint8_t> message,
                                      std::span<const uint8_t> signature) const;
  [[nodiscard]] EVP_PKEY* native() const noexcept { return pkey_.get(); }

  friend bool operator==(const public_key& a, const public_key& b) { return a.der_ == b.der_; }

 private:
  friend class private_key;
  public_key(evp_pkey pkey, key_type type, std::vector<uint8_t> der)
      : pkey_(std::move(pkey)), type_(type), der_(std::move(der)) {}

  evp_pkey pkey_;
  key_type type_;
  std::vector<uint8_t> der_;
};

/// Reads a file holding secret text (a key, a seed) of at most `max_bytes`: the
/// read buffer is wiped, and a larger file is refused ("too large") rather than read.
/// The caller wipes the returned text (OPENSSL_cleanse) when done with it.
expected<std::string> read_secret_file(const std::filesystem::path& path, size_t max_bytes);

/// A private key. Move-only.
class private_key {
 public:
  /// `rsa_bits` is used for key_type::rsa only (2048..16384).
  static expected<private_key> generate(key_type type, int rsa_bits = 4096);
  /// Accepts "PRIVATE KEY" (PKCS#8, or PKCS#1 RSA DER as cocos writes it),
  /// "RSA PRIVATE KEY" (PKCS#1) and "EC PRIVATE KEY" (SEC1; a leading
  /// "EC PARAMETERS" block is skipped). Encrypted keys are rejected.
  static expected<private_key> from_pem(std::string_view pem);
  static expected<private_key> load_file(const std::filesystem::path& path);
  /// Takes a reference on `pkey` after checking its type is supported.
  static expected<private_key> from_evp(EVP_PKEY* pkey);

  private_key(private_key&&) noexcept = default;
  private_key& operator=(private_key&&) noexcept = default;
  private_key(const private_key&) = delete;
  private_key& operator=(const private_key&) = delete;
  ~private_key() = default;

  /// Unencrypted PKCS#8 "PRIVATE KEY" PEM. Treat the result as a secret.
  [[nodiscard]] std::string to_pem() const;
  [[nodiscard]] key_type type() const noexcept { return type_; }
  [[nodiscard]] crypto::public_key public_key() const;
  /// Signs under the key type's scheme (see the top of this header).
  [[nodiscard]] expected<std::vector<uint8_t>> sign(std::span<const uint8_t> message) const;
  [[nodiscard]] EVP_PKEY* native() const noexcept { return pkey_.get(); }

 private:
  private_key(evp_pkey pkey, key_type type) : pkey_(std::move(pkey)), type_(type) {}

  evp_pkey pkey_;
  key_type type_;
};

}  // namespace cove::crypto
