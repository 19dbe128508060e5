#include "cove/bus/nkeys.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <sodium.h>

#include "cove/crypto/encoding.hpp"

namespace cove::bus::nkeys {

namespace {

constexpr uint8_t prefix_seed = 18 << 3;  // 'S'
constexpr uint8_t prefix_user = 20 << 3;  // 'U'
constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
constexpr size_t max_key_file = 16 * 1024;

error bad(std::string_view what, std::string_view why) {
  return make_error(errc::invalid_request, std::string(what) + ": " + std::string(why));
}

// Checks and strips the CRC16 trailer.
expected<std::vector<uint8_t>> decode_checked(std::string_view text, std::string_view what) {
  auto raw = base32_decode(text);
  if (!raw) return bad(what, raw.error().message);
  if (raw->size() < 3) return bad(what, "too short");
  size_t n = raw->size() - 2;
  uint16_t want = static_cast<uint16_t>((*raw)[n] | ((*raw)[n + 1] << 8));
  if (crc16({raw->data(), n}) != want) {
    sodium_memzero(raw->data(), raw->size());
    return bad(what, "checksum mismatch");
  }
  raw->resize(n);
  return raw;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

}  // namespace

uint16_t crc16(std::span<const uint8_t> data) noexcept {
  uint16_t crc = 0;
  for (uint8_t b : data) {
    crc ^= static_cast<uint16_t>(b) << 8;
    for (int i = 0; i < 8; ++i) crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : crc << 1;
  }
  return crc;
}

std::string base32_encode(std::span<const uint8_t> data) {
  std::string out;
  out.reserve((data.size() * 8 + 4) / 5);
  uint32_t buffer = 0;
  int bits = 0;
  for (uint8_t b : data) {
    buffer = (buffer << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out.push_back(alphabet[(buffer >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0) out.push_back(alphabet[(buffer << (5 - bits)) & 31]);
  return out;
}

expected<std::vector<uint8_t>> base32_decode(std::string_view text) {
  std::vector<uint8_t> out;
  out.reserve(text.size() * 5 / 8);
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    auto v = alphabet.find(c);
    if (v == std::string_view::npos) return make_error(errc::invalid_request, "not base32");
    buffer = (buffer << 5) | static_cast<uint32_t>(v);
    bits += 5;
    if (bits >= 8) {
      out.push_back(static_cast<uint8_t>(buffer >> (bits - 8)));
      bits -= 8;
    }
  }
  // At most 4 leftover bits, all zero: anything else is not a canonical encoding.
  if (bits >= 5 || (buffer & ((1u << bits) - 1)) != 0) {
    sodium_memzero(out.data(), out.size());
    return make_error(errc::invalid_request, "not canonical base32");
  }
  return out;
}

std::string encode_user_public(const raw_public& pk) {
  std::vector<uint8_t> raw;
  raw.reserve(35);
  raw.push_back(prefix_user);
  raw.insert(raw.end(), pk.begin(), pk.end());
  uint16_t crc = crc16(raw);
  raw.push_back(static_cast<uint8_t>(crc & 0xff));
  raw.push_back(static_cast<uint8_t>(crc >> 8));
  return base32_encode(raw);
}

expected<raw_public> decode_user_public(std::string_view text) {
  constexpr std::string_view what = "nkey public key";
  text = trim(text);
  if (text.size() != 56) return bad(what, "expected 56 characters");
  auto raw = decode_checked(text, what);
  if (!raw) return raw.error();
  if (raw->size() != 33 || (*raw)[0] != prefix_user) return bad(what, "not a user key (U...)");
  raw_public pk;
  std::memcpy(pk.data(), raw->data() + 1, pk.size());
  return pk;
}

expected<raw_public> raw_ed25519(const crypto::public_key& key) {
  if (key.type() != crypto::key_type::ed25519)
    return make_error(errc::invalid_request,
                      "an nkey needs an Ed25519 key, not " + std::string(crypto::to_string(key.type())));
  raw_public pk;
  size_t len = pk.size();
  if (EVP_PKEY_get_raw_public_key(key.native(), pk.data(), &len) != 1 || len != pk.size())
    return make_error(errc::crypto_failed, "cannot read the Ed25519 public key");
  return pk;
}

expected<user_key> user_key::generate() {
  std::array<uint8_t, 32> seed;
  crypto::ensure_sodium();
  randombytes_buf(seed.data(), seed.size());
  auto k = from_raw_seed(seed);
  sodium_memzero(seed.data(), seed.size());
  return k;
}

expected<user_key> user_key::from_raw_seed(std::span<const uint8_t> seed) {
  if (seed.size() != crypto_sign_SEEDBYTES) return bad("nkey seed", "expected 32 bytes");
  crypto::ensure_sodium();
  user_key k;
  k.sk_ = static_cast<unsigned char*>(sodium_malloc(crypto_sign_SECRETKEYBYTES));
  if (k.sk_ == nullptr) return make_error(errc::internal, "out of secure memory");
  if (crypto_sign_seed_keypair(k.pk_.data(), k.sk_, seed.data()) != 0)
    return make_error(errc::crypto_failed, "cannot derive the Ed25519 key pair");
  return k;
}

expected<user_key> user_key::from_seed(std::string_view encoded) {
  constexpr std::string_view what = "nkey seed";
  encoded = trim(encoded);
  if (encoded.size() != 58) return bad(what, "expected 58 characters");
  auto raw = decode_checked(encoded, what);
  if (!raw) return raw.error();
  expected<user_key> k = bad(what, "not a user seed (SU...)");
  if (raw->size() == 34 && ((*raw)[0] & 0xf8) == prefix_seed &&
      static_cast<uint8_t>((((*raw)[0] & 7) << 5) | (((*raw)[1] & 0xf8) >> 3)) == prefix_user)
    k = from_raw_seed({raw->data() + 2, 32});
  sodium_memzero(raw->data(), raw->size());
  return k;
}

expected<user_key> user_key::from_private_key(const crypto::private_key& key) {
  if (key.type() != crypto::key_type::ed25519)
    return make_error(errc::invalid_request,
                      "an nkey needs an Ed25519 key, not " + std::string(crypto::to_string(key.type())));
  std::array<uint8_t, 32> seed;
  size_t len = seed.size();
  if (EVP_PKEY_get_raw_private_key(key.native(), seed.data(), &len) != 1 || len != seed.size())
    return make_error(errc::crypto_failed, "cannot read the Ed25519 private key");
  auto k = from_raw_seed(seed);
  sodium_memzero(seed.data(), seed.size());
  return k;
}

expected<user_key> user_key::load_file(const std::filesystem::path& path) {
  auto read = crypto::read_secret_file(path, max_key_file);
  if (!read) return read.error();
  std::string& text = *read;
  auto from_pem = [&]() -> expected<user_key> {
    auto pem = crypto::private_key::from_pem(text);
    if (!pem) return pem.error();
    return from_private_key(*pem);
  };
  auto k = trim(text).starts_with("SU") ? from_seed(text) : from_pem();
  if (!k)
    k = make_error(k.error().code, "key file '" + path.string() +
                                       "': neither an nkey seed (SU...) nor an Ed25519 key (" +
                                       k.error().message + ")");
  OPENSSL_cleanse(text.data(), text.size());
  ERR_clear_error();  // failed PEM decoders leave entries behind
  return k;
}

user_key::user_key(user_key&& other) noexcept : sk_(std::exchange(other.sk_, nullptr)), pk_(other.pk_) {}

user_key& user_key::operator=(user_key&& other) noexcept {
  if (this != &other) {
    if (sk_ != nullptr) sodium_free(sk_);
    sk_ = std::exchange(other.sk_, nullptr);
    pk_ = other.pk_;
  }
  return *this;
}

user_key::~user_key() {
  if (sk_ != nullptr) sodium_free(sk_);
}

std::string user_key::seed() const {
  std::vector<uint8_t> raw;
  raw.reserve(36);
  raw.push_back(static_cast<uint8_t>(prefix_seed | (prefix_user >> 5)));
  raw.push_back(static_cast<uint8_t>((prefix_user & 31) << 3));
  raw.insert(raw.end(), sk_, sk_ + crypto_sign_SEEDBYTES);
  uint16_t crc = crc16(raw);
  raw.push_back(static_cast<uint8_t>(crc & 0xff));
  raw.push_back(static_cast<uint8_t>(crc >> 8));
  auto out = base32_encode(raw);
  sodium_memzero(raw.data(), raw.size());
  return out;
}

std::string user_key::public_key() const {
  return encode_user_public(pk_);
}

std::array<uint8_t, 64> user_key::sign(std::span<const uint8_t> message) const {
  std::array<uint8_t, 64> sig{};
  crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(), sk_);
  return sig;
}

bool verify(const raw_public& pk, std::span<const uint8_t> message, std::span<const uint8_t> sig) noexcept {
  if (sig.size() != crypto_sign_BYTES) return false;
  crypto::ensure_sodium();
  return crypto_sign_verify_detached(sig.data(), message.data(), message.size(), pk.data()) == 0;
}

expected<void> save_seed(const user_key& key, const std::filesystem::path& path) {
  auto tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return make_error(errc::internal, "cannot write " + tmp.string() + ": " + std::strerror(errno));
  auto text = key.seed();
  text.push_back('\n');
  bool written = ::fchmod(fd, 0600) == 0 &&
                 ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                 ::fsync(fd) == 0;
  int saved = errno;
  ::close(fd);
  sodium_memzero(text.data(), text.size());
  if (!written || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return make_error(errc::internal,
                      "cannot write " + path.string() + ": " + std::strerror(written ? errno : saved));
  }
  return ok();
}

}  // namespace cove::bus::nkeys
