// snp_chain_cache: the same verdicts and messages as verify_snp_evidence, with the AMD
// chain verified once per (VCEK, bundle, trusted roots) and its validity re-checked.
#include "cove/attest/chain_cache.hpp"

#include <doctest/doctest.h>

#include "test_util.hpp"

using namespace cove::attest;
namespace t = cove::attest::test;

TEST_CASE("chain cache: one chain verification, then signature and binding only") {
  snp_chain_cache cache(2);
  auto opts = t::real_amd_options();
  const auto report = t::read_bytes("genoa-report.bin");
  const auto vcek = t::read_bytes("genoa-vcek.der");
  const auto bundle = t::read_text("ask_ark_genoa.pem");
  auto cold = verify_snp_evidence(report, vcek, bundle, opts);
  REQUIRE(cold);
  for (int i = 0; i < 3; ++i) {
    auto warm = cache.verify(report, vcek, bundle, opts);
    REQUIRE_MESSAGE(warm, warm.error().to_string());
    CHECK(warm->raw == cold->raw);
    CHECK(warm->product == snp_product::genoa);
  }
  CHECK(cache.misses() == 1);
  CHECK(cache.hits() == 2);
  CHECK(cache.size() == 1);

  SUBCASE("a tampered report fails its signature on a cache hit") {
    for (std::size_t pos : {std::size_t{0x90}, std::size_t{0x50}, std::size_t{0x2A0}}) {
      auto bad = report;
      bad[pos] ^= 1;
      auto r = cache.verify(bad, vcek, bundle, opts);
      REQUIRE_FALSE(r);
      auto want = verify_snp_evidence(bad, vcek, bundle, opts);
      REQUIRE_FALSE(want);
      CHECK(r.error().message == want.error().message);
    }
    CHECK(cache.misses() == 1);
  }
  SUBCASE("another chip's report with the cached VCEK fails the signature") {
    auto r = cache.verify(t::read_bytes("milan-report.bin"), vcek, bundle, opts);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.starts_with("signature: "));
  }
  SUBCASE("other trusted roots are another key: the chain is checked again, and fails") {
    verify_options milan_only = opts;
    milan_only.trusted_ark_pems = {t::ark_pem_of("ask_ark_milan.pem")};
    auto r = cache.verify(report, vcek, bundle, milan_only);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.starts_with("cert chain: ARK "));
    CHECK(cache.misses() == 2);
    CHECK(cache.size() == 1);  // failures are not cached
  }
  SUBCASE("a clock outside the cached validity window re-runs the chain check") {
    verify_options later = opts;
    later.now = std::chrono::sys_days{std::chrono::year{2040} / 1 / 1};
    auto r = cache.verify(report, vcek, bundle, later);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("expired") != std::string::npos);
    CHECK(cache.misses() == 2);
  }
  SUBCASE("eviction keeps at most `capacity` chains") {
    CHECK(cache.verify(t::read_bytes("milan-report.bin"), t::read_bytes("milan-vcek.der"),
                       t::read_text("ask_ark_milan.pem"), opts));
    CHECK(cache.verify(t::read_bytes("turin-report.bin"), t::read_bytes("turin-vcek.der"),
                       t::read_text("ask_ark_turin.pem"), opts));
    CHECK(cache.size() == 2);
    CHECK(cache.verify(report, vcek, bundle, opts));  // evicted first: a miss again
    CHECK(cache.misses() == 4);
    cache.clear();
    CHECK(cache.size() == 0);
  }
}
