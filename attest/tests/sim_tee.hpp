#pragma once
// A simulated TEE shared by the evidence tests: one root, two chips issued by it
// (the second for "evidence from another chip" cases) and a fixed measurement.
// Generated once per test binary: RSA/ECDSA key generation is the slow part.
// Also the two checks every evidence test makes of a failure.
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "cove/attest/sim.hpp"
#include "cove/expected.hpp"

namespace cove::attest::test {

struct sim_tee {
  sim_root root;
  sim_chip chip, other_chip;
  std::array<uint8_t, 48> measurement{};
};

inline const sim_tee& shared_sim_tee() {
  static const sim_tee t = [] {
    sim_tee out;
    auto root = generate_sim_root();
    REQUIRE(root);
    out.root = *root;
    auto chip = issue_sim_vcek(out.root);
    auto other = issue_sim_vcek(out.root);
    REQUIRE(chip);
    REQUIRE(other);
    out.chip = *chip;
    out.other_chip = *other;
    out.measurement.fill(0x5a);
    return out;
  }();
  return t;
}

/// The message of `r`, which must be an attestation_failed error.
template <class T>
std::string attestation_error(const cove::expected<T>& r) {
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cove::errc::attestation_failed);
  return r.error().message;
}

inline bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

}  // namespace cove::attest::test
