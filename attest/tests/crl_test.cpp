// Revocation of the AMD chain: CRLs issued by the ARK (revoking ASKs) and the ASK (revoking
// VCEKs), as AMD KDS serves them, checked by verify_cert_chain / verify_snp_evidence when
// verify_options::crls (policy key `crls`) is set. The CRLs are generated here for a
// simulated chain: the real fixtures in shared/fixtures/snp carry none.
#include <doctest/doctest.h>

#include <array>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cove/attest/chain_cache.hpp"
#include "cove/attest/policy.hpp"
#include "cove/attest/sim.hpp"
#include "cove/attest/sim_store.hpp"
#include "cove/attest/verify.hpp"
#include "sim_tee.hpp"

using namespace cove::attest;
using namespace std::chrono_literals;
using clock_type = std::chrono::system_clock;

namespace {

// The shared simulated TEE (root and chips), plus a second root with the same names and another
// key, and a report by the TEE's chip.
struct setup {
  const sim_root& root = test::shared_sim_tee().root;
  const sim_chip& chip = test::shared_sim_tee().chip;
  const sim_chip& other_chip = test::shared_sim_tee().other_chip;
  sim_root other_root;
  std::vector<uint8_t> report;
};

const setup& shared() {
  static const setup s = [] {
    setup out;
    auto o = generate_sim_root();
    REQUIRE(o);
    out.other_root = *o;
    auto rep = make_sim_report(out.chip, std::array<uint8_t, 64>{}, test::shared_sim_tee().measurement);
    REQUIRE(rep);
    out.report = *rep;
    return out;
  }();
  return s;
}

std::string crl(const sim_root& root, bool by_ask, const std::vector<std::string>& revoked,
                clock_type::time_point this_update = clock_type::now() - 1h,
                clock_type::time_point next_update = clock_type::now() + 24h) {
  auto c = make_sim_crl(root, by_ask, revoked, this_update, next_update);
  REQUIRE_MESSAGE(c, c.error().to_string());
  return *c;
}

cove::expected<snp_report> verify_with(std::vector<std::string> crls) {
  const auto& s = shared();
  verify_options o;
  o.trusted_ark_pems = {s.root.ark_pem};
  o.crls = std::move(crls);
  return verify_snp_evidence(s.report, s.chip.vcek_der, s.root.bundle_pem(), o);
}

std::string error_of(std::vector<std::string> crls) {
  return test::attestation_error(verify_with(std::move(crls)));
}

using test::contains;

}  // namespace

TEST_CASE("crl: current CRLs of the ARK and the ASK that do not list the chain pass") {
  const auto& s = shared();
  auto r = verify_with({crl(s.root, false, {}), crl(s.root, true, {s.other_chip.vcek_pem})});
  REQUIRE_MESSAGE(r, r.error().to_string());
  // Both CRLs in one PEM string work too.
  CHECK(verify_with({crl(s.root, false, {}) + crl(s.root, true, {})}));
}

TEST_CASE("crl: a revoked ASK or VCEK fails naming it") {
  const auto& s = shared();
  CHECK(contains(error_of({crl(s.root, false, {s.root.ask_pem})}), "cert chain: ASK '"));
  CHECK(contains(error_of({crl(s.root, false, {s.root.ask_pem})}), "' is revoked (serial 0x"));
  auto vcek = error_of({crl(s.root, false, {}), crl(s.root, true, {s.other_chip.vcek_pem, s.chip.vcek_pem})});
  CHECK(contains(vcek, "cert chain: VCEK '"));
  CHECK(contains(vcek, "is revoked"));
  CHECK(contains(vcek, "SEV-Sim"));
}

TEST_CASE("crl: forged, stale, not-yet-valid, foreign and malformed CRLs fail") {
  const auto& s = shared();
  // Same issuer name (every sim ARK is CN=ARK-Sim), other key: the signature fails.
  CHECK(contains(error_of({crl(s.other_root, false, {})}), "crl: CRL of '"));
  CHECK(contains(error_of({crl(s.other_root, false, {})}), "does not verify with the ARK key"));
  CHECK(contains(error_of({crl(s.other_root, true, {})}), "does not verify with the ASK key"));
  CHECK(contains(error_of({crl(s.root, true, {}, clock_type::now() - 48h, clock_type::now() - 24h)}),
                 "is stale (nextUpdate"));
  CHECK(contains(error_of({crl(s.root, true, {}, clock_type::now() + 24h, clock_type::now() + 48h)}),
                 "is not yet valid (thisUpdate"));
  CHECK(contains(error_of({"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"}),
                 "crl: malformed PEM CRL"));
  CHECK(contains(error_of({"garbage"}), "crl: neither a PEM nor a DER CRL"));
}

TEST_CASE("crl: DER CRLs, crls_to_pem and the policy key") {
  const auto& s = shared();
  auto pem = crl(s.root, true, {s.chip.vcek_pem});
  auto back = crls_to_pem(pem);
  REQUIRE(back);
  CHECK(*back == pem);
  CHECK_FALSE(crls_to_pem(""));
  auto p = load_policy_json(sim_policy_json(s.root, {}));
  REQUIRE(p);
  auto j = nlohmann::json::parse(sim_policy_json(s.root, {}));
  j["crls"] = {pem};
  auto with = load_policy_json(j.dump());
  REQUIRE_MESSAGE(with, with.error().to_string());
  REQUIRE(with->crls.size() == 1);
  CHECK(make_verify_options(*with).crls == with->crls);
  auto again = load_policy_json(policy_to_json(*with));
  REQUIRE(again);
  CHECK(again->crls == with->crls);
  auto r = verify_snp_evidence(s.report, s.chip.vcek_der, s.root.bundle_pem(), make_verify_options(*with));
  REQUIRE_FALSE(r);
  CHECK(contains(r.error().message, "is revoked"));
  // Bad entries; files are not read from a policy received over the bus.
  j["crls"] = {"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"};
  auto bad = load_policy_json(j.dump());
  REQUIRE_FALSE(bad);
  CHECK(contains(bad.error().message, "crls: "));
  j["crls"] = {"/nonexistent/crl.pem"};
  CHECK_FALSE(load_policy_json(j.dump()));
  auto inline_only = load_inline_policy_json(j.dump());
  REQUIRE_FALSE(inline_only);
  CHECK(contains(inline_only.error().message, "crls must be inline PEM"));
}

TEST_CASE("crl: the chain cache keys on the CRLs and does not cache CRL-checked chains") {
  const auto& s = shared();
  snp_chain_cache cache;
  verify_options o;
  o.trusted_ark_pems = {s.root.ark_pem};
  REQUIRE(cache.verify(s.report, s.chip.vcek_der, s.root.bundle_pem(), o));
  // The same chain with a CRL revoking its VCEK: not a cache hit.
  o.crls = {crl(s.root, true, {s.chip.vcek_pem})};
  for (int i = 0; i < 2; ++i) {
    auto r = cache.verify(s.report, s.chip.vcek_der, s.root.bundle_pem(), o);
    REQUIRE_FALSE(r);
    CHECK(contains(r.error().message, "is revoked"));
  }
}
