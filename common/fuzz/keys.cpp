// Fuzzes cove::crypto's parsers of untrusted input. The first byte selects
// the target ('0'..'3' in the seed corpus; any byte works, taken mod 4):
//   0  public_key::parse (PEM or base64 DER), then DER round trip
//   1  private_key::from_pem, then sign/verify
//   2  open_stream with a fixed key: 24-byte header, then chunks each
//      prefixed by a 2-byte big-endian length
//   3  unwrap_key with fixed Ed25519 / P-256 keys
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string_view>
#include <vector>

#include <openssl/evp.h>

#include "cove/crypto/keys.hpp"
#include "cove/crypto/seal.hpp"

using namespace cove::crypto;

namespace {

constexpr std::string_view fixed_p256_pem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgyEKh79Nz+XqEILLH\n"
    "xHTkMfAMAwjeY1eU0Z8pOMYQ1t+hRANCAAQjYOw7JogdOKVOTaBz8B8CvJkZscDq\n"
    "xLyPLSXfmLL8orLSH3oJd66LafR6Zw4VrxV8i1OX6cNk+ShEc0bVe9Mw\n"
    "-----END PRIVATE KEY-----\n";

void check(bool ok) {
  if (!ok) std::abort();
}

const secret_key& stream_key() {
  static const secret_key key = *secret_key::from_bytes(std::vector<uint8_t>(32, 0x42));
  return key;
}

const private_key& fixed_ed25519() {
  static const private_key key = [] {
    std::vector<uint8_t> seed(32, 0x07);
    evp_pkey raw(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size()));
    return std::move(*private_key::from_evp(raw.get()));
  }();
  return key;
}

const private_key& fixed_p256() {
  static const private_key key = std::move(*private_key::from_pem(fixed_p256_pem));
  return key;
}

void fuzz_public(std::string_view text) {
  auto key = public_key::parse(text);
  if (!key) return;
  auto again = public_key::from_der(key->der());
  check(again.has_value() && *again == *key);
  check(public_key::from_pem(key->pem()).has_value());
  static const std::vector<uint8_t> msg = {1, 2, 3};
  check(!key->verify(msg, msg).has_value());
}

void fuzz_private(std::string_view text) {
  auto key = private_key::from_pem(text);
  if (!key) return;
  static const std::vector<uint8_t> msg = {1, 2, 3};
  auto sig = key->sign(msg);
  check(sig.has_value() && key->public_key().verify(msg, *sig).has_value());
}

void fuzz_stream(std::span<const uint8_t> in) {
  if (in.size() < seal_header_size) return;
  auto stream = open_stream::create(stream_key(), in.first(seal_header_size));
  check(stream.has_value());
  in = in.subspan(seal_header_size);
  std::vector<uint8_t> out;
  while (in.size() >= 2) {
    size_t len = (size_t{in[0]} << 8) | in[1];
    in = in.subspan(2);
    if (len > in.size()) len = in.size();
    bool fin = false;
    auto r = stream->pull(in.first(len), out, fin);
    in = in.subspan(len);
    if (!r) {
      check(!stream->pull(in, out, fin).has_value());  // a failed stream stays failed
      return;
    }
    check(out.size() + seal_overhead == len);
  }
}

void fuzz_unwrap(std::span<const uint8_t> in) {
  (void)unwrap_key(fixed_ed25519(), in);
  (void)unwrap_key(fixed_p256(), in);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::span<const uint8_t> rest(data + 1, size - 1);
  std::string_view text(reinterpret_cast<const char*>(rest.data()), rest.size());
  switch (data[0] % 4) {
    case 0:
      fuzz_public(text);
      break;
    case 1:
      fuzz_private(text);
      break;
    case 2:
      fuzz_stream(rest);
      break;
    default:
      fuzz_unwrap(rest);
      break;
  }
  return 0;
}
