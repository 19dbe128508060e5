#include "cove/crypto/encoding.hpp"

#include <cstdlib>

#include <sodium.h>

namespace cove::crypto {

void ensure_sodium() {
  static const int rc = sodium_init();  // magic static: initialised once, thread-safe
  if (rc < 0) std::abort();             // no usable RNG: nothing in cove can run safely
}

std::string to_hex(std::span<const uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.resize(bytes.size() * 2);
  for (size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 0x0f];
  }
  return out;
}

namespace {
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

expected<std::vector<uint8_t>> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) return make_error(errc::invalid_request, "hex string has odd length");
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = hex_value(hex[2 * i]);
    int lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return make_error(errc::invalid_request, "invalid hex character");
    out[i] = static_cast<uint8_t>((hi << 4) | lo);
  }
  return out;
}

std::string base64_encode(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return {};
  ensure_sodium();
  constexpr int variant = sodium_base64_VARIANT_ORIGINAL;
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), variant), '\0');
  sodium_bin2base64(out.data(), out.size(), bytes.data(), bytes.size(), variant);
  out.resize(out.size() - 1);  // drop the terminating NUL
  return out;
}

expected<std::vector<uint8_t>> base64_decode(std::string_view text) {
  if (text.empty()) return std::vector<uint8_t>{};
  ensure_sodium();
  if (text.size() % 4 != 0) return make_error(errc::invalid_request, "base64 length is not a multiple of 4");
  std::vector<uint8_t> out(text.size() / 4 * 3);
  size_t len = 0;
  if (sodium_base642bin(out.data(), out.size(), text.data(), text.size(), nullptr, &len, nullptr,
                        sodium_base64_VARIANT_ORIGINAL) != 0) {
    return make_error(errc::invalid_request, "invalid base64");
  }
  out.resize(len);
  return out;
}

void random_bytes(std::span<uint8_t> out) {
  if (out.empty()) return;
  ensure_sodium();
  randombytes_buf(out.data(), out.size());
}

bool constant_time_equal(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  ensure_sodium();
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace cove::crypto
