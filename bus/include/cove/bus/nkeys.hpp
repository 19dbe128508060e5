#pragma once
// NATS nkeys for users (Ed25519, libsodium): the textual seed ("SU...") and
// public key ("U..."), and signing the server's connect nonce.
//
// Encoding (nats-io/nkeys): base32 (RFC 4648 alphabet, no padding) of
//   public key: 'U' prefix byte (20 << 3), 32-byte Ed25519 public key, CRC16
//   seed:       two bytes holding the seed prefix (18 << 3) and the user prefix,
//               the 32-byte Ed25519 seed, CRC16
// where CRC16 is CRC-16/XMODEM (poly 0x1021, init 0) of everything before it,
// little-endian. A cove participant key of type Ed25519 *is* an nkey: the
// same 32-byte seed gives the same public key.
#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cove/crypto/keys.hpp"
#include "cove/expected.hpp"

namespace cove::bus::nkeys {

using raw_public = std::array<uint8_t, 32>;

/// CRC-16/XMODEM as nkeys uses it.
uint16_t crc16(std::span<const uint8_t> data) noexcept;

/// RFC 4648 base32 without padding, and its strict inverse (upper case only;
/// errc::invalid_request on any other character or on non-zero trailing bits).
std::string base32_encode(std::span<const uint8_t> data);
expected<std::vector<uint8_t>> base32_decode(std::string_view text);

/// "U..." (56 characters) for a raw Ed25519 public key.
std::string encode_user_public(const raw_public& pk);
/// The raw key of a "U..." public key; errc::invalid_request on a bad length,
/// prefix, character or checksum.
expected<raw_public> decode_user_public(std::string_view text);
/// The raw Ed25519 public key of a cove key; errc::invalid_request unless it
/// is an Ed25519 key.
expected<raw_public> raw_ed25519(const crypto::public_key& key);

/// A user nkey (Ed25519 key pair). The 64-byte libsodium secret key lives in
/// sodium_malloc memory (guarded, locked, wiped when freed). Move-only.
class user_key {
 public:
  static expected<user_key> generate();
  /// From the 32-byte Ed25519 seed.
  static expected<user_key> from_raw_seed(std::span<const uint8_t> seed);
  /// From an encoded user seed "SU..." (surrounding whitespace ignored).
  static expected<user_key> from_seed(std::string_view encoded);
  /// From a cove participant key; errc::invalid_request unless Ed25519.
  static expected<user_key> from_private_key(const crypto::private_key& key);
  /// Reads a file holding either an encoded user seed or an Ed25519 private
  /// key PEM (what `cove keys generate` writes).
  static expected<user_key> load_file(const std::filesystem::path& path);

  user_key(user_key&& other) noexcept;
  user_key& operator=(user_key&& other) noexcept;
  user_key(const user_key&) = delete;
  user_key& operator=(const user_key&) = delete;
  ~user_key();

  /// The encoded seed "SU..." (58 characters): a secret.
  [[nodiscard]] std::string seed() const;
  /// The encoded public key "U...".
  [[nodiscard]] std::string public_key() const;
  [[nodiscard]] const raw_public& raw_public_key() const noexcept { return pk_; }
  /// Ed25519 signature (64 bytes) of `message`.
  [[nodiscard]] std::array<uint8_t, 64> sign(std::span<const uint8_t> message) const;

 private:
  user_key() = default;
  unsigned char* sk_ = nullptr;  // 64 bytes: seed || public key (libsodium layout)
  raw_public pk_{};
};

/// True iff `sig` is `pk`'s Ed25519 signature of `message`.
bool verify(const raw_public& pk, std::span<const uint8_t> message, std::span<const uint8_t> sig) noexcept;

/// Writes the encoded seed to `path` (created 0600, replaced atomically).
expected<void> save_seed(const user_key& key, const std::filesystem::path& path);

}  // namespace cove::bus::nkeys
