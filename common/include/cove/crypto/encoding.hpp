#pragma once
// Byte encodings (hex, base64), randomness and libsodium initialisation.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cove/expected.hpp"

namespace cove::crypto {

/// Initialises libsodium once (thread-safe); every cove::crypto function that
/// needs libsodium calls it, so callers never have to.
void ensure_sodium();

/// Lowercase hex.
std::string to_hex(std::span<const uint8_t> bytes);
/// Accepts upper- and lowercase hex; rejects odd lengths and non-hex
/// characters (errc::invalid_request).
expected<std::vector<uint8_t>> from_hex(std::string_view hex);

/// Standard alphabet (RFC 4648 section 4) with '=' padding.
std::string base64_encode(std::span<const uint8_t> bytes);
/// Strict: standard alphabet, padding required, no whitespace or trailing
/// garbage (errc::invalid_request otherwise).
expected<std::vector<uint8_t>> base64_decode(std::string_view text);

/// Fills `out` from the OS CSPRNG (libsodium randombytes_buf).
void random_bytes(std::span<uint8_t> out);

/// Constant-time comparison; false when the sizes differ.
bool constant_time_equal(std::span<const uint8_t> a, std::span<const uint8_t> b);

/// View of a string's bytes.
inline std::span<const uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace cove::crypto
