#pragma once
// cove's one error vocabulary: the same numbers in std::error_code, in
// cove::error and on the wire (cove.v1.ErrorCode in schemas/common.fbs).
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

namespace cove {

enum class errc : uint8_t {
  none = 0,
  invalid_request = 1,
  not_found = 2,
  already_exists = 3,
  unauthorized = 4,
  wrong_state = 5,
  hash_mismatch = 6,
  attestation_failed = 7,
  timeout = 8,
  unavailable = 9,
  too_large = 10,
  algorithm_failed = 11,
  internal = 12,
  crypto_failed = 13,
  unknown = 255,
};

std::string_view to_string(errc e) noexcept;

/// Maps a number received from a peer to errc; numbers this build does not
/// know become errc::unknown.
errc errc_from_wire(uint8_t v) noexcept;

const std::error_category& cove_category() noexcept;
inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), cove_category()};
}

/// An error with a short, user-safe message.
struct error {
  errc code = errc::internal;
  std::string message;

  /// "<code>: <message>", e.g. "hash_mismatch: dataset 'a.csv' ...".
  [[nodiscard]] std::string to_string() const;
};

inline error make_error(errc code, std::string message) {
  return error{code, std::move(message)};
}

}  // namespace cove

template <>
struct std::is_error_code_enum<cove::errc> : std::true_type {};
