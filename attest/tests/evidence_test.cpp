// verify_sim_or_snp_evidence: the one evidence check shared by the CLI and the
// attestation service, on simulated evidence.
#include "cove/attest/evidence.hpp"

#include <doctest/doctest.h>

#include "cove/attest/sim.hpp"
#include "cove/attest/sim_store.hpp"
#include "cove/crypto/statements.hpp"

using namespace cove::attest;

namespace {

struct sim_evidence {
  sim_root root;
  std::array<uint8_t, 48> measurement{};
  std::array<uint8_t, 32> kx{}, sign{}, nonce{};
  std::vector<uint8_t> report;
  std::string chain;  // VCEK, ASK, ARK
};

sim_evidence make_evidence() {
  sim_evidence e;
  auto root = generate_sim_root();
  REQUIRE(root);
  e.root = *root;
  auto chip = issue_sim_vcek(e.root);
  REQUIRE(chip);
  e.measurement.fill(0x5a);
  e.kx.fill(1);
  e.sign.fill(2);
  e.nonce.fill(3);
  auto rd = cove::crypto::evidence_report_data(e.kx, e.sign, e.nonce);
  auto report = make_sim_report(*chip, rd, e.measurement);
  REQUIRE(report);
  e.report = *report;
  e.chain = chip->vcek_pem + e.root.bundle_pem();
  return e;
}

const sim_evidence& shared() {
  static const sim_evidence e = make_evidence();
  return e;
}

snp_policy policy_for(const sim_root& root, const std::array<uint8_t, 48>& measurement) {
  auto p = load_policy_json(sim_policy_json(root, measurement));
  REQUIRE(p);
  return *p;
}

}  // namespace

TEST_CASE("verify_sim_or_snp_evidence: valid sim evidence bound to the nonce") {
  const auto& e = shared();
  auto rd = cove::crypto::evidence_report_data(e.kx, e.sign, e.nonce);
  auto r = verify_sim_or_snp_evidence(e.report, e.chain, policy_for(e.root, e.measurement), rd);
  REQUIRE_MESSAGE(r, r.error().to_string());
  CHECK(std::equal(r->measurement.begin(), r->measurement.end(), e.measurement.begin()));
  CHECK(r->version >= 2);
  // Without an expected report_data the binding is left to the caller.
  CHECK(verify_sim_or_snp_evidence(e.report, e.chain, policy_for(e.root, e.measurement), {}));
}

TEST_CASE("verify_sim_or_snp_evidence: another nonce fails on report_data") {
  const auto& e = shared();
  auto other = e.nonce;
  other[0] ^= 0xff;
  auto rd = cove::crypto::evidence_report_data(e.kx, e.sign, other);
  auto r = verify_sim_or_snp_evidence(e.report, e.chain, policy_for(e.root, e.measurement), rd);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cove::errc::attestation_failed);
  CHECK(r.error().message.find("report_data") != std::string::npos);
}

TEST_CASE("verify_sim_or_snp_evidence: another measurement fails on measurement") {
  const auto& e = shared();
  auto other = e.measurement;
  other[0] ^= 0xff;
  auto rd = cove::crypto::evidence_report_data(e.kx, e.sign, e.nonce);
  auto r = verify_sim_or_snp_evidence(e.report, e.chain, policy_for(e.root, other), rd);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("measurement") != std::string::npos);
}

TEST_CASE("verify_sim_or_snp_evidence: a root the policy does not trust is rejected") {
  const auto& e = shared();
  auto stranger = generate_sim_root();
  REQUIRE(stranger);
  auto rd = cove::crypto::evidence_report_data(e.kx, e.sign, e.nonce);
  auto r = verify_sim_or_snp_evidence(e.report, e.chain, policy_for(*stranger, e.measurement), rd);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cove::errc::attestation_failed);
  CHECK(r.error().message.find("not one of the trusted roots") != std::string::npos);
}

TEST_CASE("verify_sim_or_snp_evidence: malformed chains") {
  const auto& e = shared();
  auto p = policy_for(e.root, e.measurement);
  auto empty = verify_sim_or_snp_evidence(e.report, "", p, {});
  REQUIRE_FALSE(empty);
  CHECK(empty.error().message.find("no certificate chain") != std::string::npos);
  auto short_chain = verify_sim_or_snp_evidence(e.report, e.root.bundle_pem(), p, {});
  REQUIRE_FALSE(short_chain);
  CHECK(short_chain.error().message.find("must hold VCEK, ASK and ARK") != std::string::npos);
  auto garbage = verify_sim_or_snp_evidence(e.report, "not a pem", p, {});
  REQUIRE_FALSE(garbage);
  CHECK(garbage.error().code == cove::errc::attestation_failed);
  std::vector<uint8_t> cut(e.report.begin(), e.report.begin() + 100);
  auto truncated = verify_sim_or_snp_evidence(cut, e.chain, p, {});
  REQUIRE_FALSE(truncated);
  CHECK(truncated.error().message.find("report") != std::string::npos);
}
