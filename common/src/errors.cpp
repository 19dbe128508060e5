#include "cove/errors.hpp"

namespace cove {

std::string_view to_string(errc e) noexcept {
  switch (e) {
    case errc::none:
      return "none";
    case errc::invalid_request:
      return "invalid_request";
    case errc::not_found:
      return "not_found";
    case errc::already_exists:
      return "already_exists";
    case errc::unauthorized:
      return "unauthorized";
    case errc::wrong_state:
      return "wrong_state";
    case errc::hash_mismatch:
      return "hash_mismatch";
    case errc::attestation_failed:
      return "attestation_failed";
    case errc::timeout:
      return "timeout";
    case errc::unavailable:
      return "unavailable";
    case errc::too_large:
      return "too_large";
    case errc::algorithm_failed:
      return "algorithm_failed";
    case errc::internal:
      return "internal";
    case errc::crypto_failed:
      return "crypto_failed";
    case errc::unknown:
      return "unknown";
  }
  return "unknown";
}

errc errc_from_wire(uint8_t v) noexcept {
  if (v <= static_cast<uint8_t>(errc::crypto_failed)) return static_cast<errc>(v);
  return errc::unknown;
}

namespace {
class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "cove"; }
  std::string message(int ev) const override {
    return std::string(to_string(errc_from_wire(static_cast<uint8_t>(ev))));
  }
};
}  // namespace

const std::error_category& cove_category() noexcept {
  static const category c;
  return c;
}

std::string error::to_string() const {
  std::string s(cove::to_string(code));
  if (!message.empty()) {
    s += ": ";
    s += message;
  }
  return s;
}

}  // namespace cove
