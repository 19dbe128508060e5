#include "cove/crypto/hash.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <openssl/evp.h>

namespace cove::crypto {

namespace {
[[noreturn]] void fatal(const char* what) {
  std::fprintf(stderr, "cove::crypto: %s failed\n", what);
  std::abort();
}

const unsigned char empty_byte = 0;
const unsigned char* ptr_or_empty(std::span<const uint8_t> s) {
  return s.data() != nullptr ? s.data() : &empty_byte;
}
}  // namespace

sha3_256::sha3_256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha3_256(), nullptr) != 1) fatal("SHA3-256 init");
}

void sha3_256::update(std::span<const uint8_t> data) {
  if (EVP_DigestUpdate(ctx_.get(), ptr_or_empty(data), data.size()) != 1) fatal("SHA3-256 update");
}

void sha3_256::update(std::string_view data) {
  update(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
}

sha3_digest sha3_256::finish() {
  sha3_digest out{};
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx_.get(), out.data(), &len) != 1 || len != out.size()) fatal("SHA3-256 final");
  if (EVP_DigestInit_ex(ctx_.get(), EVP_sha3_256(), nullptr) != 1) fatal("SHA3-256 init");
  return out;
}

sha3_digest sha3_256_of(std::span<const uint8_t> data) {
  sha3_256 h;
  h.update(data);
  return h.finish();
}

sha3_digest sha3_256_of(std::string_view data) {
  sha3_256 h;
  h.update(data);
  return h.finish();
}

expected<sha3_digest> sha3_256_file(const std::filesystem::path& path) {
  struct file_closer {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
  };
  std::unique_ptr<std::FILE, file_closer> f(std::fopen(path.c_str(), "rb"));
  if (!f) {
    return make_error(errc::not_found, "cannot open '" + path.string() + "': " + std::strerror(errno));
  }
  constexpr size_t buffer_size = size_t{1} << 20;
  std::vector<uint8_t> buf(buffer_size);
  sha3_256 h;
  for (;;) {
    size_t n = std::fread(buf.data(), 1, buf.size(), f.get());
    if (n > 0) h.update(std::span<const uint8_t>(buf.data(), n));
    if (n < buf.size()) {
      if (std::ferror(f.get()) != 0) {
        return make_error(errc::internal, "error reading '" + path.string() + "'");
      }
      break;
    }
  }
  return h.finish();
}

sha512_digest sha512_of(std::span<const uint8_t> data) {
  sha512_digest out{};
  unsigned int len = 0;
  if (EVP_Digest(ptr_or_empty(data), data.size(), out.data(), &len, EVP_sha512(), nullptr) != 1 ||
      len != out.size()) {
    fatal("SHA-512");
  }
  return out;
}

}  // namespace cove::crypto
