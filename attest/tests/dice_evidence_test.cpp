// The DICE section of an agent's evidence: the simulated TEE's chain (device -> firmware ->
// kernel -> agent, agent FWID = the measurement) and the agent layer key's signature over
// the evidence's REPORT_DATA, checked by verify_agent_evidence when the policy has a `dice`
// section. Built exactly as cove-agent builds it (make_sim_agent_dice_chain, sign_dice_binding).
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "cove/attest/dice.hpp"
#include "cove/attest/evidence.hpp"
#include "cove/attest/sim.hpp"
#include "cove/attest/sim_store.hpp"
#include "cove/crypto/statements.hpp"
#include "sim_tee.hpp"

using namespace cove::attest;
namespace crypto = cove::crypto;
using bytes = std::vector<uint8_t>;

namespace {

const test::sim_tee& shared_tee() {
  return test::shared_sim_tee();
}

std::span<const uint8_t> seed_of(const sim_chip& c) {
  return {reinterpret_cast<const uint8_t*>(c.vcek_key_pem.data()), c.vcek_key_pem.size()};
}

sim_dice_chain dice_of(const sim_chip& c, std::span<const uint8_t> measurement) {
  auto d = make_sim_agent_dice_chain(seed_of(c), measurement);
  REQUIRE_MESSAGE(d, d.error().to_string());
  return *d;
}

/// One simulated agent's evidence, with its DICE section.
struct agent {
  bytes kx = bytes(32, 1), sign_pk = bytes(32, 2), nonce = bytes(32, 3);
  bytes report, dice_sig;
  std::string chain, dice_chain, leaf_key;
  std::array<uint8_t, 64> rd{};

  explicit agent(const sim_chip& chip = shared_tee().chip) {
    const auto& t = shared_tee();
    rd = crypto::evidence_report_data(kx, sign_pk, nonce);
    auto r = make_sim_report(chip, rd, t.measurement);
    REQUIRE(r);
    report = *r;
    chain = chip.vcek_pem + t.root.bundle_pem();
    auto d = dice_of(chip, t.measurement);
    dice_chain = d.chain_pem;
    leaf_key = d.leaf_key_pem;
    auto s = sign_dice_binding(d.leaf_key_pem, rd);
    REQUIRE_MESSAGE(s, s.error().to_string());
    dice_sig = *s;
  }
  [[nodiscard]] agent_evidence evidence() const {
    return {report, chain, kx, sign_pk, std::nullopt, agent_dice_evidence{dice_chain, dice_sig}};
  }
  [[nodiscard]] evidence_binding by_nonce() const { return {evidence_binding::mode::nonce, nonce, {}}; }
};

std::string hex(std::span<const uint8_t> b) {
  return to_hex(b);
}

/// The policy JSON `dice` section for the shared chip's chain.
nlohmann::json dice_section(const std::string& agent_fwid_hex, bool required = true) {
  const auto& t = shared_tee();
  auto d = dice_of(t.chip, t.measurement);
  return {{"required", required},
          {"trusted_roots", {d.root_pem}},
          {"layers",
           {{{"name", "firmware"}, {"fwids", {hex(sim_dice_firmware_fwid())}}},
            {{"name", "kernel"}, {"fwids", {hex(sim_dice_kernel_fwid())}}},
            {{"index", 3}, {"name", "agent"}, {"fwids", {agent_fwid_hex}}}}}};
}

snp_policy policy_with(const nlohmann::json& dice) {
  const auto& t = shared_tee();
  auto j = nlohmann::json::parse(sim_policy_json(t.root, t.measurement));
  if (!dice.is_null()) j["dice"] = dice;
  auto p = load_policy_json(j.dump());
  REQUIRE_MESSAGE(p, p.error().to_string());
  return *p;
}

snp_policy dice_policy_ok() {
  return policy_with(dice_section(hex(shared_tee().measurement)));
}

std::string verify_error(const agent_evidence& e, const snp_policy& p, const evidence_binding& b) {
  return test::attestation_error(verify_agent_evidence(e, p, b));
}

using test::contains;

std::vector<std::string> pem_certs(const std::string& pem) {
  std::vector<std::string> out;
  constexpr std::string_view end = "-----END CERTIFICATE-----\n";
  size_t pos = 0;
  while (true) {
    auto e = pem.find(end, pos);
    if (e == std::string::npos) break;
    out.push_back(pem.substr(pos, e + end.size() - pos));
    pos = e + end.size();
  }
  return out;
}

}  // namespace

TEST_CASE("dice evidence: the sim agent's chain verifies, bound to the report, agent FWID = measurement") {
  agent a;
  auto p = dice_policy_ok();
  auto r = verify_agent_evidence(a.evidence(), p, a.by_nonce());
  REQUIRE_MESSAGE(r, r.error().to_string());
  REQUIRE(r->dice);
  REQUIRE(r->dice->size() == 4);
  CHECK(r->dice->front().name == "device");
  CHECK(r->dice->back().name == "agent");
  REQUIRE(r->dice->back().fwids.size() == 1);
  CHECK(r->dice->back().fwids[0].digest ==
        bytes(shared_tee().measurement.begin(), shared_tee().measurement.end()));
  CHECK(r->dice->back().fwids[0].digest == bytes(r->report.measurement.begin(), r->report.measurement.end()));
  // Deterministic keys (the certificates' ECDSA signatures are randomised): the same chip and
  // measurement give the same agent layer key, another measurement another one.
  CHECK(dice_of(shared_tee().chip, shared_tee().measurement).leaf_key_pem == a.leaf_key);
  std::array<uint8_t, 48> other_m{};
  CHECK(dice_of(shared_tee().chip, other_m).leaf_key_pem != a.leaf_key);
  // The bridge binding works the same way (the signature is over whatever REPORT_DATA is).
  agent b;
  bytes exporter(32, 9);
  b.rd = crypto::bridge_report_data(b.kx, b.sign_pk, "cvm-1", exporter);
  b.report = *make_sim_report(shared_tee().chip, b.rd, shared_tee().measurement);
  b.dice_sig = *sign_dice_binding(dice_of(shared_tee().chip, shared_tee().measurement).leaf_key_pem, b.rd);
  CHECK(verify_agent_evidence(b.evidence(), p, {evidence_binding::mode::bridge_session, exporter, "cvm-1"}));
}

TEST_CASE("dice evidence: policy sections decide whether the chain is checked or required") {
  agent a;
  // No dice section: the chain is not looked at (even a garbage one).
  auto plain = policy_with(nullptr);
  auto e = a.evidence();
  e.dice->chain = "not a chain";
  auto r = verify_agent_evidence(e, plain, a.by_nonce());
  REQUIRE_MESSAGE(r, r.error().to_string());
  CHECK_FALSE(r->dice);
  // Required and absent.
  auto no_dice = a.evidence();
  no_dice.dice.reset();
  CHECK(contains(verify_error(no_dice, dice_policy_ok(), a.by_nonce()),
                 "dice: the evidence has no DICE chain, but the policy requires one (dice.required)"));
  // Not required and absent: accepted without DICE; present: still checked.
  auto optional = policy_with(dice_section(hex(shared_tee().measurement), false));
  auto r2 = verify_agent_evidence(no_dice, optional, a.by_nonce());
  REQUIRE(r2);
  CHECK_FALSE(r2->dice);
  CHECK(contains(verify_error(e, optional, a.by_nonce()), "dice.chain: "));
}

TEST_CASE("dice evidence: a chain swapped in from another session or another agent is refused") {
  agent a;
  auto p = dice_policy_ok();
  // Same agent, another session (nonce): its chain with its signature over the other REPORT_DATA.
  agent other_session;
  other_session.nonce = bytes(32, 4);
  other_session.rd =
      crypto::evidence_report_data(other_session.kx, other_session.sign_pk, other_session.nonce);
  other_session.dice_sig =
      *sign_dice_binding(dice_of(shared_tee().chip, shared_tee().measurement).leaf_key_pem, other_session.rd);
  auto e = a.evidence();
  e.dice->binding_signature = other_session.dice_sig;
  CHECK(contains(verify_error(e, p, a.by_nonce()),
                 "dice.binding: the agent layer's key ('CN=agent,O=cove simulated DICE') did not sign this "
                 "evidence's REPORT_DATA"));

  // Another agent (another chip = another DICE device, another session): its chain is not
  // rooted in the trusted device.
  agent b(shared_tee().other_chip);
  b.nonce = bytes(32, 5);
  b.rd = crypto::evidence_report_data(b.kx, b.sign_pk, b.nonce);
  b.report = *make_sim_report(shared_tee().other_chip, b.rd, shared_tee().measurement);
  b.dice_sig = *sign_dice_binding(b.leaf_key, b.rd);
  e = a.evidence();
  e.dice = agent_dice_evidence{b.dice_chain, b.dice_sig};
  CHECK(contains(verify_error(e, p, a.by_nonce()), "dice: layer 0 (device) root: not a trusted root"));
  // Even when both devices are trusted: b's leaf signed b's REPORT_DATA, not a's.
  auto both = dice_section(hex(shared_tee().measurement));
  both["trusted_roots"].push_back(dice_of(shared_tee().other_chip, shared_tee().measurement).root_pem);
  auto p2 = policy_with(both);
  CHECK(verify_agent_evidence(b.evidence(), p2, b.by_nonce()));
  CHECK(contains(verify_error(e, p2, a.by_nonce()), "dice.binding: "));
  // ... and a's signature does not verify with b's leaf.
  e.dice->binding_signature = a.dice_sig;
  CHECK(contains(verify_error(e, p2, a.by_nonce()), "dice.binding: "));
}

TEST_CASE("dice evidence: FWID mismatches name the layer") {
  agent a;
  auto wrong = bytes(48, 0x11);
  CHECK(contains(verify_error(a.evidence(), policy_with(dice_section(hex(wrong))), a.by_nonce()),
                 "dice: layer 3 (agent) fwid: got " + hex(shared_tee().measurement) + ", expected one of [" +
                     hex(wrong) + "]"));
  auto section = dice_section(hex(shared_tee().measurement));
  section["layers"][1]["fwids"] = {hex(wrong)};
  CHECK(contains(verify_error(a.evidence(), policy_with(section), a.by_nonce()),
                 "dice: layer 2 (kernel) fwid: "));
  // An agent built from other bytes (another measurement) has another agent FWID and key.
  std::array<uint8_t, 48> other_m{};
  other_m.fill(0x77);
  auto d = dice_of(shared_tee().chip, other_m);
  auto e = a.evidence();
  e.dice = agent_dice_evidence{d.chain_pem, *sign_dice_binding(d.leaf_key_pem, a.rd)};
  CHECK(contains(verify_error(e, dice_policy_ok(), a.by_nonce()), "dice: layer 3 (agent) fwid: got 7777"));
}

TEST_CASE("dice evidence: truncated chains and signatures are refused") {
  agent a;
  auto p = dice_policy_ok();
  auto certs = pem_certs(a.dice_chain);
  REQUIRE(certs.size() == 4);
  auto e = a.evidence();
  // Without the agent layer: the policy's agent entry matches nothing.
  std::string three = certs[0] + certs[1] + certs[2];
  e.dice->chain = three;
  CHECK(contains(verify_error(e, p, a.by_nonce()), "matches no layer of the chain"));
  // Without the device certificate: the firmware layer is then the root, signed by the trusted
  // device certificate, which is allowed (the verifier holds the anchor) — but the layers
  // shift, so the policy's agent entry (index 3) matches nothing.
  std::string rootless = certs[1] + certs[2] + certs[3];
  e.dice->chain = rootless;
  CHECK(contains(verify_error(e, p, a.by_nonce()), "matches no layer of the chain"));
  // Without the device and firmware certificates: the kernel is not signed by a trusted root.
  std::string headless = certs[2] + certs[3];
  e.dice->chain = headless;
  CHECK(contains(verify_error(e, p, a.by_nonce()), "dice: layer 0 (kernel) root: not a trusted root"));
  // A gap (kernel missing).
  std::string gap = certs[0] + certs[1] + certs[3];
  e.dice->chain = gap;
  CHECK(contains(verify_error(e, p, a.by_nonce()), "dice.chain: "));
  // Cut in the middle of a certificate, and every prefix of the signature.
  std::string cut = a.dice_chain.substr(0, a.dice_chain.size() - 100);
  e.dice->chain = cut;
  CHECK(contains(verify_error(e, p, a.by_nonce()), "dice.chain: "));
  e = a.evidence();
  for (size_t n = 0; n < a.dice_sig.size(); n += 7) {
    e.dice->binding_signature = std::span<const uint8_t>(a.dice_sig).first(n);
    CHECK(contains(verify_error(e, p, a.by_nonce()), "dice.binding: "));
  }
  bytes flipped = a.dice_sig;
  flipped[flipped.size() / 2] ^= 1;
  e.dice->binding_signature = flipped;
  CHECK(contains(verify_error(e, p, a.by_nonce()), "dice.binding: "));
}

TEST_CASE("dice evidence: a forged agent layer (signed by another kernel key) is refused") {
  agent a;
  auto p = dice_policy_ok();
  // A chain from the same device with another kernel: its agent certificate has the same
  // issuer name (CN=kernel) and the same FWID, but is signed by that other kernel's key.
  sim_dice_inputs in;
  in.firmware.assign(sim_dice_firmware_bytes.begin(), sim_dice_firmware_bytes.end());
  in.kernel = {'e', 'v', 'i', 'l'};
  in.agent_digest.assign(shared_tee().measurement.begin(), shared_tee().measurement.end());
  auto forged_chain = make_sim_dice_chain(in);
  REQUIRE(forged_chain);
  const auto& forged_src = *forged_chain;
  auto real = pem_certs(a.dice_chain);
  auto forged = pem_certs(forged_src.chain_pem);
  auto e = a.evidence();
  std::string spliced = real[0] + real[1] + real[2] + forged[3];
  e.dice->chain = spliced;
  auto sig = sign_dice_binding(forged_src.leaf_key_pem, a.rd);
  REQUIRE(sig);
  e.dice->binding_signature = *sig;
  CHECK(contains(verify_error(e, p, a.by_nonce()), "dice: layer 3 (agent) signature: "));
}

TEST_CASE("dice evidence: policy JSON") {
  auto p = dice_policy_ok();
  REQUIRE(p.dice);
  CHECK(p.dice->required);
  CHECK(p.dice->chain.layers.size() == 3);
  CHECK(p.dice->chain.trusted_roots_pem.size() == 1);
  // Round trip.
  auto again = load_policy_json(policy_to_json(p));
  REQUIRE_MESSAGE(again, again.error().to_string());
  REQUIRE(again->dice);
  CHECK(policy_to_json(*again) == policy_to_json(p));
  CHECK(again->dice->chain.layers[2].allowed_fwids == p.dice->chain.layers[2].allowed_fwids);
  // Errors.
  const auto& t = shared_tee();
  auto base = nlohmann::json::parse(sim_policy_json(t.root, t.measurement));
  auto with = [&](const nlohmann::json& d) {
    auto j = base;
    j["dice"] = d;
    auto r = load_policy_json(j.dump());
    REQUIRE_FALSE(r);
    CHECK(r.error().code == cove::errc::invalid_request);
    return r.error().message;
  };
  CHECK(contains(with(nlohmann::json::array()), "dice must be an object"));
  CHECK(contains(with({{"required", true}}), "dice.trusted_roots: at least one trusted DICE root"));
  CHECK(contains(with({{"required", "yes"}}), "dice.required"));
  auto unknown = dice_section("00");
  unknown["colour"] = "blue";
  CHECK(contains(with(unknown), "unknown key colour"));
  CHECK(contains(with(dice_section("abcd")), "fwids entries must be hex SHA-256 (32 B) or SHA-384 (48 B)"));
  // The service never reads files named by a request.
  auto j = base;
  j["dice"] = {{"trusted_roots", {"/etc/passwd"}}};
  auto inline_only = load_inline_policy_json(j.dump());
  REQUIRE_FALSE(inline_only);
  CHECK(contains(inline_only.error().message, "dice.trusted_roots must be inline PEM"));
}

TEST_CASE("dice evidence: binding helpers") {
  bytes rd(64, 0xab);
  auto m = dice_binding_message(rd);
  CHECK(m.size() == dice_binding_tag.size() + 4 + 64);
  CHECK(std::string(m.begin(), m.begin() + static_cast<long>(dice_binding_tag.size())) ==
        "cove-dice-binding-v1");
  CHECK(m[dice_binding_tag.size() + 3] == 64);
  CHECK_FALSE(sign_dice_binding("not a key", rd));
  CHECK_FALSE(make_sim_agent_dice_chain(seed_of(shared_tee().chip), bytes(47, 0)));
  CHECK_FALSE(make_sim_agent_dice_chain({}, bytes(48, 0)));
  sim_dice_inputs in;
  in.agent_digest = bytes(47, 1);
  CHECK_FALSE(make_sim_dice_chain(in));
}
