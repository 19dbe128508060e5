#pragma once
// End-to-end sealing with libsodium: X25519 key exchange (crypto_kx),
// chunked streams (crypto_secretstream_xchacha20poly1305) and wrapping a
// stream key to a participant's public key.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <sodium.h>

#include "cove/crypto/keys.hpp"
#include "cove/expected.hpp"

namespace cove::crypto {

/// A 32-byte symmetric key. Move-only; wiped (sodium_memzero) on destruction
/// and when moved from.
class secret_key {
 public:
  static constexpr size_t size = 32;

  secret_key() noexcept { bytes_.fill(0); }
  /// A fresh random key.
  static secret_key generate();
  /// errc::invalid_request unless exactly 32 bytes.
  static expected<secret_key> from_bytes(std::span<const uint8_t> bytes);

  secret_key(secret_key&& other) noexcept;
  secret_key& operator=(secret_key&& other) noexcept;
  secret_key(const secret_key&) = delete;
  secret_key& operator=(const secret_key&) = delete;
  ~secret_key();

  [[nodiscard]] std::span<const uint8_t, size> bytes() const noexcept { return bytes_; }
  [[nodiscard]] const uint8_t* data() const noexcept { return bytes_.data(); }
  [[nodiscard]] uint8_t* data() noexcept { return bytes_.data(); }

 private:
  std::array<uint8_t, size> bytes_;
};

/// An X25519 key pair for crypto_kx (the agent's boot key, or a CLI's
/// per-session key).
struct kx_keypair {
  std::array<uint8_t, 32> public_key{};
  secret_key secret;

  static kx_keypair generate();
  /// Rebuilds the pair from its secret (crypto_scalarmult_base).
  static kx_keypair from_secret(secret_key secret);
};

/// The client's transmit key (crypto_kx_client_session_keys). Equal to the
/// server's server_session_key() for the same two key pairs.
/// errc::invalid_request if server_pk is not 32 bytes, errc::crypto_failed
/// if it is a low-order point.
expected<secret_key> client_session_key(const kx_keypair& client, std::span<const uint8_t> server_pk);
/// The server's receive key (crypto_kx_server_session_keys).
expected<secret_key> server_session_key(const kx_keypair& server, std::span<const uint8_t> client_pk);

/// Bytes a sealed chunk adds to its plaintext.
inline constexpr size_t seal_overhead = crypto_secretstream_xchacha20poly1305_ABYTES;
/// Size of the stream header sent before the first chunk.
inline constexpr size_t seal_header_size = crypto_secretstream_xchacha20poly1305_HEADERBYTES;
using seal_header = std::array<uint8_t, seal_header_size>;

/// Sender side of a sealed stream. The last chunk must be pushed with
/// final = true; the receiver treats a stream without it as truncated.
class seal_stream {
 public:
  static expected<seal_stream> create(const secret_key& key, seal_header& header_out);

  seal_stream(seal_stream&& other) noexcept;
  seal_stream& operator=(seal_stream&& other) noexcept;
  seal_stream(const seal_stream&) = delete;
  seal_stream& operator=(const seal_stream&) = delete;
  ~seal_stream();

  /// Seals `plain` into `out` (resized to plain.size() + seal_overhead; no
  /// allocation when out already has the capacity). `out` must not alias
  /// `plain`. errc::wrong_state after the final chunk.
  expected<void> push(std::span<const uint8_t> plain, bool final, std::vector<uint8_t>& out);
  [[nodiscard]] bool finished() const noexcept { return finished_; }

 private:
  seal_stream() = default;
  crypto_secretstream_xchacha20poly1305_state state_{};
  bool finished_ = false;
};

/// Receiver side of a sealed stream.
class open_stream {
 public:
  /// errc::invalid_request if the header is not seal_header_size bytes.
  static expected<open_stream> create(const secret_key& key, std::span<const uint8_t> header);

  open_stream(open_stream&& other) noexcept;
  open_stream& operator=(open_stream&& other) noexcept;
  open_stream(const open_stream&) = delete;
  open_stream& operator=(const open_stream&) = delete;
  ~open_stream();

  /// Opens the next chunk into `plain_out` (resized; allocation-free with
  /// enough capacity). final_out is set when this was the final chunk.
  /// errc::crypto_failed for a forged, truncated, reordered or dropped chunk,
  /// for any chunk after the final one, and for every call after a failure.
  expected<void> pull(std::span<const uint8_t> cipher, std::vector<uint8_t>& plain_out, bool& final_out);
  /// True once the final chunk has been opened; a stream that ends without
  /// it was truncated.
  [[nodiscard]] bool finished() const noexcept { return finished_; }

 private:
  open_stream() = default;
  crypto_secretstream_xchacha20poly1305_state state_{};
  bool finished_ = false;
  bool failed_ = false;
};

/// Wrapped key format, first byte:
inline constexpr uint8_t wrap_tag_ed25519 =
    0x01;                                       // || crypto_box_seal to the X25519 form of the key (80 bytes)
inline constexpr uint8_t wrap_tag_p256 = 0x02;  // || eph pub (65) || nonce (24) || XChaCha20-Poly1305 ct (48)
inline constexpr uint8_t wrap_tag_rsa = 0x03;   // || RSA-OAEP-SHA256 (MGF1-SHA256) ciphertext

/// Encrypts `key` so only the holder of `recipient`'s private key can read it.
expected<std::vector<uint8_t>> wrap_key(const public_key& recipient, const secret_key& key);
/// errc::crypto_failed for a wrong key, wrong key type or damaged input.
expected<secret_key> unwrap_key(const private_key& recipient, std::span<const uint8_t> wrapped);

}  // namespace cove::crypto
