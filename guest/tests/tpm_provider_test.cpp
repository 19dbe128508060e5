// A real swtpm: quotes produced by tpm_provider and verified by cove::attest::verify_tpm_quote.
#include "cove/agent/tpm_provider.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "cove/attest/snp_report.hpp"
#include "cove/attest/tpm_quote.hpp"
#include "cove/test/swtpm.hpp"

using namespace cove;
using bytes = std::vector<uint8_t>;

namespace {

bytes nonce_of(uint8_t seed) {
  bytes n(32);
  for (std::size_t i = 0; i < n.size(); ++i) n[i] = static_cast<uint8_t>(seed + i * 7);
  return n;
}

bool contains(const cove::error& e, const std::string& s) {
  return e.message.find(s) != std::string::npos;
}

}  // namespace

TEST_CASE("tpm_provider: a swtpm quote verifies, and tampering fails") {
  auto tpm = test::swtpm::start();
  REQUIRE_MESSAGE(tpm, tpm.error().to_string());
  auto p = agent::tpm_provider::open(tpm->tcti());
  REQUIRE_MESSAGE(p, p.error().to_string());

  const auto& ak = p->ak_public();
  auto pub = attest::parse_tpm_public(ak.tpm2b_public);
  REQUIRE(pub);
  CHECK(pub->type == attest::tpm_alg_ecc);
  CHECK(pub->restricted_signing());
  CHECK(pub->spki_der == ak.spki_der);

  auto nonce = nonce_of(1);
  auto q = p->quote(nonce);
  REQUIRE_MESSAGE(q, q.error().to_string());
  CHECK(q->pcrs.size() == agent::default_quote_pcrs().size());

  auto v = attest::verify_tpm_quote(q->attest, q->signature, ak.tpm2b_public, nonce, q->pcrs);
  REQUIRE_MESSAGE(v, v.error().to_string());
  CHECK(v->extra_data == nonce);
  REQUIRE(v->pcr_select.size() == 1);
  CHECK(v->pcr_select[0].pcrs == agent::default_quote_pcrs());
  auto v_spki = attest::verify_tpm_quote(q->attest, q->signature, ak.spki_der, nonce, q->pcrs);
  CHECK_MESSAGE(v_spki, v_spki.error().to_string());

  // The policy holds for the current values.
  attest::tpm_policy policy;
  policy.pcrs[7] = q->pcrs.at(7);
  policy.pcrs[9] = q->pcrs.at(9);
  CHECK(attest::check_tpm_policy(*v, q->pcrs, policy));

  SUBCASE("wrong nonce") {
    auto r = attest::verify_tpm_quote(q->attest, q->signature, ak.tpm2b_public, nonce_of(2), q->pcrs);
    REQUIRE_FALSE(r);
    CHECK(contains(r.error(), "nonce mismatch"));
  }
  SUBCASE("flipped signature byte") {
    auto sig = q->signature;
    sig[sig.size() - 5] ^= 0x01;
    auto r = attest::verify_tpm_quote(q->attest, sig, ak.tpm2b_public, nonce, q->pcrs);
    REQUIRE_FALSE(r);
    CHECK(contains(r.error(), "quote signature does not verify"));
  }
  SUBCASE("another AK") {
    auto other = agent::tpm_provider::open(tpm->tcti());
    REQUIRE_MESSAGE(other, other.error().to_string());
    CHECK(other->ak_public().tpm2b_public != ak.tpm2b_public);
    auto r =
        attest::verify_tpm_quote(q->attest, q->signature, other->ak_public().tpm2b_public, nonce, q->pcrs);
    REQUIRE_FALSE(r);
    CHECK(contains(r.error(), "quote signature does not verify"));
  }
  SUBCASE("extended PCR fails the policy, naming it") {
    auto d = p->extend(9, bytes{'e', 'v', 'i', 'l'});
    REQUIRE_MESSAGE(d, d.error().to_string());
    auto nonce3 = nonce_of(3);
    auto q2 = p->quote(nonce3);
    REQUIRE(q2);
    auto v2 = attest::verify_tpm_quote(q2->attest, q2->signature, ak.tpm2b_public, nonce3, q2->pcrs);
    REQUIRE_MESSAGE(v2, v2.error().to_string());  // the quote itself is genuine
    auto r = attest::check_tpm_policy(*v2, q2->pcrs, policy);
    REQUIRE_FALSE(r);
    CHECK(r.error().message ==
          "pcr[9]: got " + attest::to_hex(q2->pcrs.at(9)) + ", expected " + attest::to_hex(q->pcrs.at(9)));
    // The old PCR values no longer match the new quote's digest.
    auto stale = attest::verify_tpm_quote(q2->attest, q2->signature, ak.tpm2b_public, nonce3, q->pcrs);
    REQUIRE_FALSE(stale);
    CHECK(contains(stale.error(), "pcrDigest mismatch"));
  }
  SUBCASE("bad arguments") {
    CHECK_FALSE(p->quote(bytes(65, 0)));
    CHECK_FALSE(p->extend(24, bytes{1}));
    std::vector<uint32_t> bad{30};
    CHECK_FALSE(p->read_pcrs(bad));
  }
}

TEST_CASE("tpm_provider: an RSA-2048 AK quotes over all 24 PCRs") {
  auto tpm = test::swtpm::start();
  REQUIRE_MESSAGE(tpm, tpm.error().to_string());
  auto p = agent::tpm_provider::open(tpm->tcti(), agent::tpm_ak_type::rsa_2048);
  REQUIRE_MESSAGE(p, p.error().to_string());
  std::vector<uint32_t> all;
  for (uint32_t i = 0; i < 24; ++i) all.push_back(i);
  auto nonce = nonce_of(9);
  auto q = p->quote(nonce, all);
  REQUIRE_MESSAGE(q, q.error().to_string());
  CHECK(q->pcrs.size() == 24);
  auto sig = attest::parse_tpm_signature(q->signature);
  REQUIRE(sig);
  CHECK(sig->sig_alg == attest::tpm_alg_rsassa);
  auto v = attest::verify_tpm_quote(q->attest, q->signature, p->ak_public().tpm2b_public, nonce, q->pcrs);
  CHECK_MESSAGE(v, v.error().to_string());
}

TEST_CASE("tpm_provider: an unreachable TPM is an error, not a crash") {
  auto p = agent::tpm_provider::open("swtpm:host=127.0.0.1,port=1");
  CHECK_FALSE(p);
}
