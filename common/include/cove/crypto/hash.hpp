#pragma once
// SHA3-256 (file and manifest hashes) and SHA-512 (evidence report data),
// both through OpenSSL EVP.
#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>

#include <openssl/evp.h>

#include "cove/c_handle.hpp"
#include "cove/expected.hpp"

namespace cove::crypto {

using sha3_digest = std::array<uint8_t, 32>;
using sha512_digest = std::array<uint8_t, 64>;

/// Incremental SHA3-256. finish() returns the digest and resets the object
/// so it can hash the next message. OpenSSL failing to hash (out of memory)
/// aborts the process: there is no meaningful recovery and no caller checks.
class sha3_256 {
 public:
  sha3_256();
  sha3_256(sha3_256&&) noexcept = default;
  sha3_256& operator=(sha3_256&&) noexcept = default;

  void update(std::span<const uint8_t> data);
  void update(std::string_view data);
  sha3_digest finish();

 private:
  c_handle<EVP_MD_CTX, EVP_MD_CTX_free> ctx_;
};

sha3_digest sha3_256_of(std::span<const uint8_t> data);
sha3_digest sha3_256_of(std::string_view data);

/// Streams the file through SHA3-256 with a 1 MiB buffer.
/// errc::not_found if it cannot be opened, errc::internal on read errors.
expected<sha3_digest> sha3_256_file(const std::filesystem::path& path);

sha512_digest sha512_of(std::span<const uint8_t> data);

}  // namespace cove::crypto
