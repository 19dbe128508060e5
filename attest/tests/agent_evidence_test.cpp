// verify_agent_evidence: a simulated SEV-SNP report whose REPORT_DATA binds the agent's keys,
// the verifier's nonce (or the bridge's TLS exporter) and the vTPM AK's name, plus a quote by
// that AK whose extraData derives from REPORT_DATA. Quotes are crafted and signed with
// OpenSSL keys here; guest/tests and tests/integration/vtpm_test.cpp use a real swtpm.
#include <doctest/doctest.h>
#include <openssl/sha.h>

#include <string>

#include "cove/attest/evidence.hpp"
#include "cove/attest/sim.hpp"
#include "cove/attest/sim_store.hpp"
#include "cove/crypto/statements.hpp"
#include "sim_tee.hpp"
#include "tpm_test_util.hpp"

using namespace cove::attest;
using namespace cove::attest::tpm_test;
namespace crypto = cove::crypto;

namespace {

const test::sim_tee& shared_tee() {
  return test::shared_sim_tee();
}

snp_policy base_policy() {
  const auto& t = shared_tee();
  auto p = load_policy_json(sim_policy_json(t.root, t.measurement));
  REQUIRE(p);
  return *p;
}

/// One agent's evidence, built exactly as cove-agent --vtpm builds it.
struct agent {
  bytes kx = bytes(32, 1), sign_pk = bytes(32, 2), nonce = bytes(32, 3);
  pkey ak{EVP_EC_gen("P-256"), EVP_PKEY_free};
  uint16_t scheme = tpm_alg_ecdsa;
  tpm_pcr_values pcrs = sample_pcrs();
  bytes ak_public, ak_spki, quote, signature, report;
  std::string chain;

  /// report_data: the v2 construction over `ak_name` (empty: v1, no AK bound).
  void build(const bytes& ak_name, const std::string& cvm_id = {}) {
    const auto& t = shared_tee();
    if (ak_public.empty()) ak_public = ecc_public(ak.get());
    if (ak_spki.empty()) ak_spki = spki(ak.get());
    auto rd = cvm_id.empty() ? crypto::evidence_report_data(kx, sign_pk, nonce, ak_name)
                             : crypto::bridge_report_data(kx, sign_pk, cvm_id, nonce, ak_name);
    auto r = make_sim_report(t.chip, rd, t.measurement);
    REQUIRE(r);
    report = *r;
    chain = t.chip.vcek_pem + t.root.bundle_pem();
    requote(rd);
  }
  void build(const std::string& cvm_id = {}) {
    build(name_of(ak_public.empty() ? ecc_public(ak.get()) : ak_public), cvm_id);
  }

  /// Another AK (key, TPM2B_PUBLIC, scheme), bound by a fresh report.
  void rebind(pkey key, bytes pub, uint16_t sig_scheme) {
    ak = std::move(key);
    ak_public = std::move(pub);
    ak_spki = spki(ak.get());
    scheme = sig_scheme;
    build();
  }

  /// A quote by the AK over `pcrs` with extraData = vtpm_quote_nonce(rd).
  void requote(std::span<const uint8_t> rd) {
    auto n = crypto::vtpm_quote_nonce(rd);
    bytes qn(n.begin(), n.end());
    auto body = make_attest(qn, pcrs);
    quote = tpm2b(body);
    signature = sign(ak.get(), body, scheme);
  }

  static bytes name_of(const bytes& pub) {
    auto p = parse_tpm_public(pub);
    REQUIRE(p);
    return p->name;
  }

  [[nodiscard]] agent_evidence evidence(bool with_vtpm = true) const {
    agent_evidence e{report, chain, kx, sign_pk, std::nullopt};
    if (with_vtpm) e.vtpm = agent_vtpm_evidence{ak_public, ak_spki, quote, signature, pcrs, {}};
    return e;
  }
  [[nodiscard]] evidence_binding by_nonce() const { return {evidence_binding::mode::nonce, nonce, {}}; }
};

std::string verify_error(const agent_evidence& e, const snp_policy& p, const evidence_binding& b) {
  return test::attestation_error(verify_agent_evidence(e, p, b));
}

using test::contains;

}  // namespace

TEST_CASE("agent evidence: a report binding the AK and a quote over its REPORT_DATA verify") {
  agent a;
  a.build();
  auto p = base_policy();
  p.vtpm.required = true;
  p.vtpm.pcrs[7] = a.pcrs[7];
  p.vtpm.ak_types = {"ecc-p256"};
  auto r = verify_agent_evidence(a.evidence(), p, a.by_nonce());
  REQUIRE_MESSAGE(r, r.error().to_string());
  REQUIRE(r->vtpm);
  CHECK(r->ak_type == "ecc-p256");
  CHECK(r->vtpm->pcrs == a.pcrs);
  REQUIRE(r->vtpm->ak);
  CHECK(r->vtpm->ak->name == agent::name_of(a.ak_public));
  CHECK(r->report.report_data == crypto::evidence_report_data(a.kx, a.sign_pk, a.nonce, r->vtpm->ak->name));
  // Unchecked binding: the quote is still tied to the report's own REPORT_DATA.
  CHECK(verify_agent_evidence(a.evidence(), p, {}));
}

TEST_CASE("agent evidence: the bridge binding (cvm id, TLS exporter) with a vTPM") {
  agent a;
  a.build("cvm-1");
  auto p = base_policy();
  p.vtpm.required = true;
  evidence_binding b{evidence_binding::mode::bridge_session, a.nonce, "cvm-1"};
  auto r = verify_agent_evidence(a.evidence(), p, b);
  REQUIRE_MESSAGE(r, r.error().to_string());
  CHECK(r->vtpm);
  // The same evidence on another TLS session or for another CVM.
  bytes other(32, 9);
  auto e1 = verify_error(a.evidence(), p, {evidence_binding::mode::bridge_session, other, "cvm-1"});
  CHECK(contains(e1, "report_data: got "));
  CHECK(contains(e1, "cove-bridge-v2"));
  auto e2 = verify_error(a.evidence(), p, {evidence_binding::mode::bridge_session, a.nonce, "cvm-2"});
  CHECK(contains(e2, "report_data: got "));
  // Never as nonce evidence.
  CHECK(contains(verify_error(a.evidence(), p, a.by_nonce()), "report_data: got "));
}

TEST_CASE("agent evidence: without a vTPM section, v1 evidence passes unless the policy requires one") {
  agent a;
  a.build(bytes{});
  auto p = base_policy();
  auto r = verify_agent_evidence(a.evidence(false), p, a.by_nonce());
  REQUIRE_MESSAGE(r, r.error().to_string());
  CHECK_FALSE(r->vtpm);
  p.vtpm.required = true;
  auto e = verify_error(a.evidence(false), p, a.by_nonce());
  CHECK(contains(e, "vtpm: the evidence has no vTPM section"));
  CHECK(contains(e, "vtpm.required"));
}

TEST_CASE("agent evidence: a forged quote fails on the AK signature") {
  agent a;
  a.build();
  auto p = base_policy();
  SUBCASE("signature bytes flipped") {
    a.signature[a.signature.size() - 3] ^= 1;
  }
  SUBCASE("quote body changed after signing (clock)") {
    a.quote[2 + 4 + 2 + 2 + 34 + 2 + 32 + 3] ^= 1;
  }
  SUBCASE("signed by another key") {
    pkey other{EVP_EC_gen("P-256"), EVP_PKEY_free};
    auto rd = crypto::evidence_report_data(a.kx, a.sign_pk, a.nonce, agent::name_of(a.ak_public));
    auto n = crypto::vtpm_quote_nonce(rd);
    a.signature = sign(other.get(), make_attest(bytes(n.begin(), n.end()), a.pcrs), tpm_alg_ecdsa);
  }
  auto e = verify_error(a.evidence(), p, a.by_nonce());
  CHECK(contains(e, "vtpm.quote: quote signature does not verify with the AK"));
}

TEST_CASE("agent evidence: a quote over another nonce (replayed, or not derived from REPORT_DATA) fails") {
  agent a;
  a.build();
  auto p = base_policy();
  SUBCASE("the quote of an earlier attestation") {
    auto old = crypto::evidence_report_data(a.kx, a.sign_pk, bytes(32, 7), agent::name_of(a.ak_public));
    a.requote(old);
  }
  SUBCASE("the verifier's raw nonce as extraData") {
    auto body = make_attest(a.nonce, a.pcrs);
    a.quote = tpm2b(body);
    a.signature = sign(a.ak.get(), body, tpm_alg_ecdsa);
  }
  auto e = verify_error(a.evidence(), p, a.by_nonce());
  CHECK(contains(e, "vtpm.quote: nonce mismatch: quote extraData "));
  CHECK(contains(e, ", expected "));
}

TEST_CASE("agent evidence: an AK the TEE report does not vouch for fails on report_data") {
  agent a;
  a.build();
  auto p = base_policy();
  SUBCASE("swapped AK, quote re-signed by it") {
    agent other;
    a.ak = std::move(other.ak);
    a.ak_public = ecc_public(a.ak.get());
    a.ak_spki = spki(a.ak.get());
    auto rd = crypto::evidence_report_data(a.kx, a.sign_pk, a.nonce, agent::name_of(a.ak_public));
    a.requote(rd);  // even with the "right" nonce for the swapped AK
    auto e = verify_error(a.evidence(), p, a.by_nonce());
    CHECK(contains(e, "report_data: got "));
    CHECK(contains(
        e, "cove-evidence-v2 over kx, sign, nonce and AK name " + to_hex(agent::name_of(a.ak_public))));
  }
  SUBCASE("a vTPM section added to evidence whose report binds no AK") {
    agent v1;
    v1.build(bytes{});
    auto ev = v1.evidence(false);
    ev.vtpm = agent_vtpm_evidence{a.ak_public, a.ak_spki, a.quote, a.signature, a.pcrs, {}};
    auto e = verify_error(ev, p, v1.by_nonce());
    CHECK(contains(e, "report_data: the TEE report binds no vTPM AK"));
  }
  SUBCASE("ak_spki of another key than ak_public") {
    pkey other{EVP_EC_gen("P-256"), EVP_PKEY_free};
    a.ak_spki = spki(other.get());
    CHECK(contains(verify_error(a.evidence(), p, a.by_nonce()), "vtpm.ak_spki: got "));
  }
}

TEST_CASE("agent evidence: PCR values that do not match the quote or the policy") {
  agent a;
  a.build();
  auto p = base_policy();
  SUBCASE("a value changed after the quote") {
    a.pcrs[7][0] ^= 1;
    auto e = verify_error(a.evidence(), p, a.by_nonce());
    CHECK(contains(e, "vtpm.quote: pcrDigest mismatch"));
  }
  SUBCASE("a value missing") {
    a.pcrs.erase(16);
    auto e = verify_error(a.evidence(), p, a.by_nonce());
    CHECK(contains(e, "vtpm.quote: pcr[16] is quoted but no value was supplied"));
  }
  SUBCASE("the policy expects another value") {
    p.vtpm.pcrs[7] = bytes(32, 0xEE);
    auto e = verify_error(a.evidence(), p, a.by_nonce());
    CHECK(
        contains(e, "vtpm.pcrs: pcr[7]: got " + to_hex(a.pcrs[7]) + ", expected " + to_hex(bytes(32, 0xEE))));
  }
  SUBCASE("the policy expects a PCR that is not quoted") {
    p.vtpm.pcrs[9] = bytes(32, 0);
    CHECK(contains(verify_error(a.evidence(), p, a.by_nonce()), "vtpm.pcrs: pcr[9]"));
  }
  SUBCASE("no values at all") {
    a.pcrs.clear();
    CHECK(contains(verify_error(a.evidence(), p, a.by_nonce()),
                   "vtpm.pcrs: the evidence carries no PCR values"));
  }
}

TEST_CASE("agent evidence: AK type allow-list and event log requirements") {
  agent a;
  a.build();
  auto p = base_policy();
  p.vtpm.ak_types = {"rsa-2048", "rsa-3072"};
  CHECK(contains(verify_error(a.evidence(), p, a.by_nonce()),
                 "vtpm.ak_types: the AK is ecc-p256, expected one of [rsa-2048, rsa-3072]"));
  p.vtpm.ak_types.clear();
  p.vtpm.require_event_log = true;
  CHECK(contains(verify_error(a.evidence(), p, a.by_nonce()), "vtpm.event_log: absent"));
  p.vtpm.require_event_log = false;
  p.vtpm.event_log_pcrs = {0};
  CHECK(contains(verify_error(a.evidence(), p, a.by_nonce()), "vtpm.event_log: absent"));
  p.vtpm.event_log_pcrs.clear();
  auto ev = a.evidence();
  bytes garbage(40, 0xAB);
  ev.vtpm->event_log = garbage;
  CHECK(contains(verify_error(ev, p, a.by_nonce()), "vtpm.event_log: "));
}

TEST_CASE("agent evidence: an RSA AK and its type name") {
  agent a;
  pkey rsa{EVP_RSA_gen(2048), EVP_PKEY_free};
  auto pub = rsa_public(rsa.get(), tpm_alg_rsassa);
  a.rebind(std::move(rsa), pub, tpm_alg_rsassa);
  auto p = base_policy();
  p.vtpm.ak_types = {"rsa-2048"};
  auto r = verify_agent_evidence(a.evidence(), p, a.by_nonce());
  REQUIRE_MESSAGE(r, r.error().to_string());
  CHECK(r->ak_type == "rsa-2048");
  p.vtpm.ak_types = {"ecc-p256"};
  CHECK(contains(verify_error(a.evidence(), p, a.by_nonce()), "the AK is rsa-2048"));
}

TEST_CASE("agent evidence: truncated or malformed vTPM structures name the field") {
  agent a;
  a.build();
  auto p = base_policy();
  for (std::size_t cut = 0; cut < a.ak_public.size(); cut += 7) {
    auto ev = a.evidence();
    ev.vtpm->ak_public = std::span<const uint8_t>(a.ak_public).first(cut);
    CHECK(contains(verify_error(ev, p, a.by_nonce()), "vtpm.ak_public: "));
  }
  for (std::size_t cut = 0; cut < a.quote.size(); cut += 5) {
    auto ev = a.evidence();
    ev.vtpm->quote = std::span<const uint8_t>(a.quote).first(cut);
    CHECK(contains(verify_error(ev, p, a.by_nonce()), "vtpm.quote: "));
  }
  for (std::size_t cut = 0; cut < a.signature.size(); cut += 5) {
    auto ev = a.evidence();
    ev.vtpm->signature = std::span<const uint8_t>(a.signature).first(cut);
    CHECK(contains(verify_error(ev, p, a.by_nonce()), "vtpm.quote: "));
  }
}

TEST_CASE("agent evidence: an unrestricted signing key is refused as AK, even when the report binds it") {
  // It could sign a forged TPMS_ATTEST.
  agent a;
  pkey key{EVP_EC_gen("P-256"), EVP_PKEY_free};
  auto pub = ecc_public(key.get(), ak_attrs & ~(1u << 16));
  a.rebind(std::move(key), pub, tpm_alg_ecdsa);
  CHECK(contains(verify_error(a.evidence(), base_policy(), a.by_nonce()),
                 "vtpm.quote: AK is not a restricted signing key"));
}

TEST_CASE("policy JSON: the vtpm section loads, round-trips and rejects bad values") {
  auto p = load_policy_json(R"({"vtpm": {"required": true, "pcrs": {"7": ")" + std::string(64, 'a') +
                            R"(", "0": ")" + std::string(64, 'b') +
                            R"("}, "ak_types": ["ecc-p256"], "event_log_pcrs": [4, 0, 4],
                              "require_event_log": true}})");
  REQUIRE_MESSAGE(p, p.error().to_string());
  CHECK(p->vtpm.required);
  CHECK(p->vtpm.require_event_log);
  CHECK(p->vtpm.pcrs.size() == 2);
  CHECK(p->vtpm.pcrs.at(7) == bytes(32, 0xaa));
  CHECK(p->vtpm.ak_types == std::vector<std::string>{"ecc-p256"});
  CHECK(p->vtpm.event_log_pcrs == std::vector<uint32_t>{0, 4});
  auto back = load_policy_json(policy_to_json(*p));
  REQUIRE(back);
  CHECK(back->vtpm.pcrs == p->vtpm.pcrs);
  CHECK(back->vtpm.required);
  CHECK(back->vtpm.event_log_pcrs == p->vtpm.event_log_pcrs);
  // A default section is not written at all.
  CHECK(policy_to_json(snp_policy{}).find("vtpm") == std::string::npos);
  for (auto [text, why] :
       {std::pair{R"({"vtpm": []})", "vtpm must be an object"},
        {R"({"vtpm": {"require": true}})", "unknown key vtpm.require"},
        {R"({"vtpm": {"required": 1}})", "vtpm.required must be true or false"},
        {R"({"vtpm": {"pcrs": {"24": "00"}}})", "'24' is not a PCR index"},
        {R"({"vtpm": {"pcrs": {"x": "00"}}})", "'x' is not a PCR index"},
        {R"({"vtpm": {"pcrs": {"7": "abcd"}}})", "vtpm.pcrs.7 must be 32 bytes"},
        {R"({"vtpm": {"ak_types": ["ecc-p384"]}})", "unknown AK type 'ecc-p384'"},
        {R"({"vtpm": {"event_log_pcrs": [24]}})", "vtpm.event_log_pcrs[] must be <= 23"}}) {
    auto r = load_policy_json(text);
    REQUIRE_FALSE(r);
    INFO(r.error().message);
    CHECK(r.error().code == cove::errc::invalid_request);
    CHECK(contains(r.error().message, why));
  }
}

namespace {

// A one-file ima-ng list for "/usr/bin/cove-agent".
bytes ima_ng_list(const bytes& file_digest) {
  return make_ima_ng_entry("/usr/bin/cove-agent", file_digest).entry;
}

}  // namespace

TEST_CASE("agent evidence: the policy's vtpm.ima section checks the IMA list against PCR 10") {
  bytes good(32, 0x42);
  auto list_bytes = ima_ng_list(good);
  auto list = parse_ima_list(list_bytes);
  REQUIRE(list);
  agent a;
  a.pcrs[10] = replay_ima_pcr(*list);
  a.build();
  auto p = base_policy();
  p.vtpm.ima = vtpm_policy::ima_section{};
  p.vtpm.ima->allow.paths["/usr/bin/cove-agent"] = {good};
  auto ev = a.evidence();
  // Fail closed: no list, no pass.
  CHECK(
      contains(verify_error(ev, p, a.by_nonce()), "vtpm.ima: the evidence carries no IMA measurement list"));
  ev.vtpm->ima_list = list_bytes;
  auto r = verify_agent_evidence(ev, p, a.by_nonce());
  REQUIRE_MESSAGE(r, r.error().to_string());
  // A file the allowlist does not admit.
  p.vtpm.ima->allow.paths["/usr/bin/cove-agent"] = {bytes(32, 0x43)};
  CHECK(contains(verify_error(ev, p, a.by_nonce()), "vtpm.ima: ima entry 0 (offset 0): /usr/bin/cove-agent"));
  p.vtpm.ima->allow.paths["/usr/bin/cove-agent"] = {good};
  // A list that does not replay the quoted PCR 10 (another, self-consistent list).
  auto other = ima_ng_list(bytes(32, 0x43));
  ev.vtpm->ima_list = other;
  CHECK(contains(verify_error(ev, p, a.by_nonce()), "vtpm.ima: ima list does not replay pcr[10]"));
  // The IMA PCR must be quoted.
  ev.vtpm->ima_list = list_bytes;
  p.vtpm.ima->pcr = 11;
  CHECK(contains(verify_error(ev, p, a.by_nonce()), "vtpm.ima: pcr[11] is not quoted"));
}

TEST_CASE("policy JSON: vtpm.ima loads, round-trips and rejects bad values") {
  const std::string h = std::string(64, 'a');
  auto p =
      load_policy_json(R"({"vtpm": {"ima": {"pcr": 10, "allow": {"/usr/bin/x": [")" + h +
                       R"("]}, "digests": [")" + std::string(64, 'b') + R"("], "allow_violations": true}}})");
  REQUIRE_MESSAGE(p, p.error().to_string());
  REQUIRE(p->vtpm.ima);
  CHECK(p->vtpm.ima->pcr == 10);
  CHECK(p->vtpm.ima->allow.paths.at("/usr/bin/x") == std::vector<bytes>{bytes(32, 0xaa)});
  CHECK(p->vtpm.ima->allow.digests == std::vector<bytes>{bytes(32, 0xbb)});
  CHECK(p->vtpm.ima->allow.allow_violations);
  auto back = load_policy_json(policy_to_json(*p));
  REQUIRE(back);
  CHECK(back->vtpm.ima == p->vtpm.ima);
  for (auto [text, why] :
       {std::pair{R"({"vtpm": {"ima": []}})", "vtpm.ima must be an object"},
        {R"({"vtpm": {"ima": {"pcrs": 10}}})", "unknown key vtpm.ima.pcrs"},
        {R"({"vtpm": {"ima": {"pcr": 24}}})", "vtpm.ima.pcr must be <= 23"},
        {R"({"vtpm": {"ima": {"allow": {"/x": ["abcd"]}}}})", "vtpm.ima.allow./x[] must be 32"},
        {R"({"vtpm": {"ima": {"digests": "ab"}}})", "vtpm.ima.digests must be an array"}}) {
    auto r = load_policy_json(text);
    REQUIRE_FALSE(r);
    INFO(r.error().message);
    CHECK(contains(r.error().message, why));
  }
}
