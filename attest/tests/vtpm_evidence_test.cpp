// vTPM evidence as a whole (quote + PCR values / event log + policy) and the snp-vtpm
// AK binding, on the quotes tpm2-tools made on swtpm (the fuzz seeds) and sim reports.
#include "cove/attest/vtpm_evidence.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <iterator>
#include <string>

#include "cove/attest/sim.hpp"
#include "cove/attest/snp_report.hpp"

using namespace cove::attest;
using bytes = std::vector<uint8_t>;

namespace {

struct seed_quote {
  bytes attest, signature, ak_public;
};

// Seed layout: u16 len, TPMS_ATTEST, u16 len, TPMT_SIGNATURE, TPM2B_PUBLIC.
seed_quote load_seed(const char* file) {
  std::ifstream in(std::string(COVE_SOURCE_DIR) + "/attest/fuzz/corpus/tpm_quote/" + file, std::ios::binary);
  bytes b{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  REQUIRE(b.size() > 4);
  std::size_t alen = (std::size_t{b[0]} << 8) | b[1];
  std::size_t slen = (std::size_t{b[2 + alen]} << 8) | b[3 + alen];
  auto at = [&](std::size_t i) { return b.begin() + static_cast<long>(i); };
  return {bytes(at(2), at(2 + alen)), bytes(at(4 + alen), at(4 + alen + slen)),
          bytes(at(4 + alen + slen), b.end())};
}

tpm_pcr_values zeros() {
  tpm_pcr_values v;
  for (uint32_t i = 0; i < tpm_pcr_count; ++i) v[i] = bytes(32, 0);
  return v;
}

// A header-only crypto-agile log (sha256 bank): its replay is a fresh TPM's PCRs.
bytes empty_log() {
  bytes spec = {'S', 'p', 'e', 'c', ' ', 'I', 'D', ' ', 'E', 'v', 'e', 'n', 't', '0', '3', 0};
  for (uint8_t v : {0, 0, 0, 0, 0, 2, 0, 2, 1, 0, 0, 0, 0x0b, 0, 32, 0, 0}) spec.push_back(v);
  bytes log(8 + 20, 0);  // PCR 0, EV_NO_ACTION (3), a zero SHA-1 digest
  log[4] = 3;
  auto n = static_cast<uint32_t>(spec.size());
  for (int i = 0; i < 4; ++i) log.push_back(static_cast<uint8_t>(n >> (8 * i)));
  log.insert(log.end(), spec.begin(), spec.end());
  return log;
}

}  // namespace

TEST_CASE("vtpm evidence: a swtpm quote with PCR values, with an event log, and with a policy") {
  auto q = load_seed("swtpm-ecdsa.bin");
  const bytes nonce{1, 2, 3, 4, 5, 6, 7, 8};
  auto values = zeros();
  vtpm_evidence ev{q.attest, q.signature, q.ak_public, values, {}};
  auto v = verify_vtpm_evidence(ev, nonce, {});
  REQUIRE_MESSAGE(v, v.error().to_string());
  REQUIRE(v->ak);
  CHECK(v->ak->restricted_signing());
  CHECK_FALSE(v->log);

  // The log alone gives the PCR values; with both, the log must replay the given values.
  auto log = empty_log();
  vtpm_evidence from_log{q.attest, q.signature, q.ak_public, std::nullopt, log};
  auto l = verify_vtpm_evidence(from_log, nonce, {});
  REQUIRE_MESSAGE(l, l.error().to_string());
  CHECK(l->log);
  ev.event_log = log;
  CHECK(verify_vtpm_evidence(ev, nonce, {}));

  tpm_policy policy;
  policy.pcrs[0] = bytes(32, 0);
  CHECK(verify_vtpm_evidence(ev, nonce, policy));
  policy.pcrs[0] = bytes(32, 0xaa);
  auto p = verify_vtpm_evidence(ev, nonce, policy);
  REQUIRE_FALSE(p);
  CHECK(p.error().message.starts_with("pcr policy: pcr[0]: got "));

  auto wrong = verify_vtpm_evidence(ev, bytes{9}, {});
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().message.starts_with("quote: "));
  CHECK(wrong.error().message.find("nonce mismatch") != std::string::npos);

  vtpm_evidence none{q.attest, q.signature, q.ak_public, std::nullopt, {}};
  auto n = verify_vtpm_evidence(none, nonce, {});
  REQUIRE_FALSE(n);
  CHECK(n.error().code == cove::errc::invalid_request);

  auto bad_log = log;
  bad_log[4] = 1;  // header event type is no longer EV_NO_ACTION
  vtpm_evidence broken{q.attest, q.signature, q.ak_public, values, bad_log};
  auto b = verify_vtpm_evidence(broken, nonce, {});
  REQUIRE_FALSE(b);
  CHECK(b.error().message.starts_with("event log: "));
}

TEST_CASE("snp-vtpm: the report's REPORT_DATA binds the AK name and the nonce") {
  auto q = load_seed("swtpm-rsassa.bin");
  auto ak = parse_tpm_public(q.ak_public);
  REQUIRE(ak);
  REQUIRE(ak->name.size() == 34);
  const bytes nonce(32, 0x5a);
  auto rd = snp_vtpm_report_data(ak->name, nonce);
  // Domain-separated and deterministic; any input change changes it.
  CHECK(rd == snp_vtpm_report_data(ak->name, nonce));
  CHECK(rd != snp_vtpm_report_data(ak->name, bytes(32, 0x5b)));
  auto other_name = ak->name;
  other_name.back() ^= 1;
  CHECK(rd != snp_vtpm_report_data(other_name, nonce));

  auto root = generate_sim_root();
  REQUIRE(root);
  auto chip = issue_sim_vcek(*root);
  REQUIRE(chip);
  auto raw = make_sim_report(*chip, rd, {});
  REQUIRE(raw);
  auto report = parse_snp_report(*raw);
  REQUIRE(report);
  CHECK(check_snp_vtpm_binding(*report, *ak, nonce));
  auto stale = check_snp_vtpm_binding(*report, *ak, bytes(32, 0));
  REQUIRE_FALSE(stale);
  CHECK(stale.error().code == cove::errc::attestation_failed);
  CHECK(stale.error().message.starts_with("ak binding: report_data "));
  auto other = parse_tpm_public(load_seed("swtpm-ecdsa.bin").ak_public);
  REQUIRE(other);
  CHECK_FALSE(check_snp_vtpm_binding(*report, *other, nonce));
  auto nameless = *ak;
  nameless.name.clear();
  CHECK(check_snp_vtpm_binding(*report, nameless, nonce).error().message.find("nameAlg") !=
        std::string::npos);
}
