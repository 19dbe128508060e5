#pragma once
// Participant keys shared by the crypto tests: generated once per (type, slot)
// and cached, because RSA generation is slow.
#include <doctest/doctest.h>

#include <map>
#include <utility>

#include "cove/crypto/keys.hpp"

namespace cove::crypto::test {

inline const private_key& cached_key(key_type t, int which = 0) {
  static std::map<std::pair<key_type, int>, private_key> cache;
  auto it = cache.find({t, which});
  if (it == cache.end()) {
    auto k = private_key::generate(t, 2048);
    REQUIRE(k);
    it = cache.emplace(std::pair{t, which}, std::move(*k)).first;
  }
  return it->second;
}

}  // namespace cove::crypto::test
