#include "cove/attest/evidence.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "cove/attest/verify.hpp"
#include "cove/crypto/statements.hpp"
#include "ossl.hpp"

namespace cove::attest {

namespace {

error fail(std::string why) {
  return make_error(errc::attestation_failed, std::move(why));
}

error in(std::string_view field, const error& e) {
  return make_error(errc::attestation_failed, std::string(field) + ": " + e.message);
}

std::string pcr_list(const tpm_attest& q) {
  std::string s;
  for (const auto& sel : q.pcr_select)
    for (auto i : sel.pcrs) {
      // Appended piecewise: `"," + std::to_string(i)` trips g++ 12's false -Wrestrict at -O3.
      if (!s.empty()) s += ',';
      s += std::to_string(i);
    }
  return s;
}

}  // namespace

expected<snp_report> verify_sim_or_snp_evidence(std::span<const uint8_t> report, std::string_view pem_chain,
                                                const snp_policy& policy,
                                                std::span<const uint8_t> expected_report_data) {
  if (pem_chain.empty())
    return fail(
        "evidence: no certificate chain (the verifier does not fetch collateral: the agent sends it)");
  auto certs = split_pem_bundle(pem_chain);
  if (!certs) return fail("evidence: " + certs.error().message);
  if (certs->size() < 3) return fail("evidence: certificate chain must hold VCEK, ASK and ARK");
  // The first certificate is the VCEK; the rest is the ASK/ARK bundle.
  constexpr std::string_view end_marker = "-----END CERTIFICATE-----";
  auto first_end = pem_chain.find(end_marker);
  if (first_end == std::string_view::npos) return fail("evidence: malformed certificate chain");
  first_end += end_marker.size();
  auto verified =
      verify_snp_evidence(report, (*certs)[0], pem_chain.substr(first_end), make_verify_options(policy));
  if (!verified) return fail(verified.error().message);
  if (auto p = check_policy(*verified, policy, expected_report_data); !p) return fail(p.error().message);
  return verified;
}

std::string ak_type_name(const tpm_public& ak) {
  if (ak.type == tpm_alg_ecc) return "ecc-p256";  // parse_tpm_public accepts NIST P-256 only
  const unsigned char* p = ak.spki_der.data();
  ossl::evp_pkey key{d2i_PUBKEY(nullptr, &p, static_cast<long>(ak.spki_der.size()))};
  if (ak.type != tpm_alg_rsa || !key) return "unknown";
  return "rsa-" + std::to_string(EVP_PKEY_get_bits(key.get()));
}

expected<vtpm_verified> verify_vtpm_section(const agent_vtpm_evidence& v,
                                            std::span<const uint8_t> report_data, const vtpm_policy& policy) {
  auto ak = parse_tpm_public(v.ak_public);
  if (!ak) return in("vtpm.ak_public", ak.error());
  if (!v.ak_spki.empty() && !std::ranges::equal(v.ak_spki, ak->spki_der))
    return fail("vtpm.ak_spki: got " + to_hex(v.ak_spki) + ", expected the key of ak_public " +
                to_hex(ak->spki_der));
  auto type = ak_type_name(*ak);
  if (!policy.ak_types.empty() &&
      std::find(policy.ak_types.begin(), policy.ak_types.end(), type) == policy.ak_types.end())
    return fail(fmt::format("vtpm.ak_types: the AK is {}, expected one of [{}]", type,
                            fmt::join(policy.ak_types, ", ")));
  vtpm_verified out;
  if (!v.event_log.empty()) {
    auto log = parse_tcg_event_log(v.event_log);
    if (!log) return in("vtpm.event_log", log.error());
    out.log = std::move(*log);
  } else if (policy.require_event_log) {
    return fail("vtpm.event_log: absent, but the policy requires one (vtpm.require_event_log)");
  }
  if (v.pcrs.empty()) return fail("vtpm.pcrs: the evidence carries no PCR values");
  auto nonce = crypto::vtpm_quote_nonce(report_data);
  auto q = verify_tpm_quote(v.quote, v.signature, v.ak_public, nonce, v.pcrs);
  if (!q) return in("vtpm.quote", q.error());
  out.quote = std::move(*q);
  for (const auto& sel : out.quote.pcr_select)
    for (auto i : sel.pcrs)
      if (auto it = v.pcrs.find(i); it != v.pcrs.end()) out.pcrs[i] = it->second;
  out.ak = std::move(*ak);
  if (!policy.event_log_pcrs.empty()) {
    if (!out.log)
      return fail(
          fmt::format("vtpm.event_log: absent, but the policy replays PCRs [{}] (vtpm.event_log_pcrs)",
                      fmt::join(policy.event_log_pcrs, ",")));
    for (auto i : policy.event_log_pcrs)
      if (!out.pcrs.contains(i))
        return fail(
            fmt::format("vtpm.event_log_pcrs: pcr[{}] is not quoted (quoted: {})", i, pcr_list(out.quote)));
    if (auto c = check_tcg_event_log(*out.log, out.pcrs, policy.event_log_pcrs); !c)
      return in("vtpm.event_log", c.error());
  }
  if (auto p = check_tpm_policy(out.quote, out.pcrs, tpm_policy{policy.pcrs}); !p)
    return in("vtpm.pcrs", p.error());
  if (policy.ima) {
    // Fail closed: a policy that asks for IMA is never satisfied without a list.
    if (v.ima_list.empty())
      return fail("vtpm.ima: the evidence carries no IMA measurement list, but the policy checks one");
    if (!out.pcrs.contains(policy.ima->pcr))
      return fail(
          fmt::format("vtpm.ima: pcr[{}] is not quoted (quoted: {})", policy.ima->pcr, pcr_list(out.quote)));
    auto list = parse_ima_list(v.ima_list);
    if (!list) return in("vtpm.ima", list.error());
    if (auto c = check_ima_pcr(*list, out.pcrs, policy.ima->pcr); !c) return in("vtpm.ima", c.error());
    if (auto c = check_ima_allowlist(*list, policy.ima->allow); !c) return in("vtpm.ima", c.error());
  }
  return out;
}

expected<std::vector<dice_layer>> verify_dice_section(const agent_dice_evidence& d,
                                                      std::span<const uint8_t> report_data,
                                                      const dice_evidence_policy& policy,
                                                      std::chrono::system_clock::time_point now) {
  if (d.chain.empty()) return fail("dice.chain: empty");
  auto chain = parse_dice_chain(d.chain);
  if (!chain) return in("dice.chain", chain.error());
  if (auto v = verify_dice_chain(*chain, policy.chain, now); !v) return in("dice", v.error());
  if (auto b = verify_dice_binding(chain->back(), report_data, d.binding_signature); !b) return b.error();
  return chain;
}

expected<verified_evidence> verify_agent_evidence(const agent_evidence& ev, const snp_policy& policy,
                                                  const evidence_binding& binding) {
  if (policy.vtpm.required && !ev.vtpm)
    return fail(
        "vtpm: the evidence has no vTPM section, but the policy requires one (vtpm.required); "
        "is the agent running with --vtpm?");
  if (policy.dice && policy.dice->required && !ev.dice)
    return fail(
        "dice: the evidence has no DICE chain, but the policy requires one (dice.required); only "
        "simulated-TEE agents produce one");
  std::vector<uint8_t> ak_name;
  if (ev.vtpm) {
    auto ak = parse_tpm_public(ev.vtpm->ak_public);
    if (!ak) return in("vtpm.ak_public", ak.error());
    if (ak->name.empty())
      return fail("vtpm.ak_public: the AK's nameAlg is not sha256, so it has no name to bind");
    ak_name = std::move(ak->name);
  }
  std::array<uint8_t, 64> want{};
  std::array<uint8_t, 64> without_ak{};
  std::span<const uint8_t> rd;
  std::string construction;
  switch (binding.kind) {
    case evidence_binding::mode::unchecked:
      break;
    case evidence_binding::mode::nonce:
      want = crypto::evidence_report_data(ev.kx_public_key, ev.sign_public_key, binding.nonce, ak_name);
      without_ak = crypto::evidence_report_data(ev.kx_public_key, ev.sign_public_key, binding.nonce);
      rd = want;
      construction = ak_name.empty() ? "cove-evidence-v1 over kx, sign, nonce"
                                     : "cove-evidence-v2 over kx, sign, nonce and AK name " + to_hex(ak_name);
      break;
    case evidence_binding::mode::bridge_session:
      want = crypto::bridge_report_data(ev.kx_public_key, ev.sign_public_key, binding.cvm_id, binding.nonce,
                                        ak_name);
      without_ak =
          crypto::bridge_report_data(ev.kx_public_key, ev.sign_public_key, binding.cvm_id, binding.nonce);
      rd = want;
      construction = ak_name.empty() ? "cove-bridge-v1 over kx, sign, cvm id, TLS exporter"
                                     : "cove-bridge-v2 over kx, sign, cvm id, TLS exporter and AK name " +
                                           to_hex(ak_name);
      break;
  }
  auto report = verify_sim_or_snp_evidence(ev.report, ev.cert_chain, policy, rd);
  if (!report) {
    const auto& msg = report.error().message;
    if (!msg.starts_with("report_data:") || construction.empty()) return report.error();
    auto parsed = parse_snp_report(ev.report);
    if (ev.vtpm && parsed && parsed->report_data == without_ak)
      return fail(
          "report_data: the TEE report binds no vTPM AK (it is the construction without one), but the "
          "evidence carries a vtpm section with AK name " +
          to_hex(ak_name) + ": the AK is not the one the TEE vouches for");
    return fail(msg + " (" + construction + ")");
  }
  verified_evidence out{std::move(*report), std::nullopt, {}, std::nullopt};
  if (ev.vtpm) {
    auto v = verify_vtpm_section(*ev.vtpm, out.report.report_data, policy.vtpm);
    if (!v) return v.error();
    out.ak_type = ak_type_name(*v->ak);
    out.vtpm = std::move(*v);
  }
  if (policy.dice && ev.dice) {
    auto d = verify_dice_section(*ev.dice, out.report.report_data, *policy.dice);
    if (!d) return d.error();
    out.dice = std::move(*d);
  }
  return out;
}

}  // namespace cove::attest
