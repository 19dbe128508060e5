// The cocos front door's signature check on untrusted metadata: the `signature` value
// (base64) and the key the first byte selects (RSA, ECDSA P-256, Ed25519) for one of the
// three roles. It must never crash and never accept: these keys sign nothing here.
#include <cstdint>
#include <string_view>

#include "cove/agent/cocos_auth.hpp"
#include "cove/crypto/keys.hpp"

namespace {
struct keys {
  cove::crypto::private_key rsa = *cove::crypto::private_key::generate(cove::crypto::key_type::rsa, 2048);
  cove::crypto::private_key ec = *cove::crypto::private_key::generate(cove::crypto::key_type::ecdsa_p256);
  cove::crypto::private_key ed = *cove::crypto::private_key::generate(cove::crypto::key_type::ed25519);
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static keys k;
  if (size == 0) return 0;
  using cove::agent::cocos::role;
  const role roles[] = {role::algorithm_provider, role::data_provider, role::consumer};
  const cove::crypto::private_key* pick[] = {&k.rsa, &k.ec, &k.ed};
  auto r = roles[data[0] % 3];
  const auto& key = *pick[(data[0] / 3) % 3];
  std::string_view value(reinterpret_cast<const char*>(data + 1), size - 1);
  auto sig = cove::agent::cocos::decode_signature(value);
  if (!sig) return 0;
  if (cove::agent::cocos::verify_role_signature(key.public_key(), r, *sig)) __builtin_trap();
  return 0;
}
