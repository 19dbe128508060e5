#pragma once
// Verification of an agent's evidence: the SEV-SNP / simulated SEV-SNP report plus one PEM
// chain (VCEK first, then ASK and ARK), and optionally its vTPM section (AK, quote, PCR
// values, event log). Shared by the CLI (cove attest, attestation get/validate), the
// attestation service and therefore the bridge's admission, so all of them accept and reject
// exactly the same evidence with the same messages. Plain spans only: this library does not
// depend on the bus schemas.
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "cove/attest/dice.hpp"
#include "cove/attest/policy.hpp"
#include "cove/attest/snp_report.hpp"
#include "cove/attest/vtpm_evidence.hpp"
#include "cove/expected.hpp"

namespace cove::attest {

/// Splits `pem_chain` (VCEK, then the ASK/ARK bundle), runs verify_snp_evidence with
/// make_verify_options(policy), then check_policy(report, policy, expected_report_data).
/// An empty `expected_report_data` skips the REPORT_DATA comparison (the caller must then
/// check the binding itself). Every error is errc::attestation_failed; the message names
/// the failing step or field ("evidence: ...", "cert chain: ...", "signature: ...",
/// "measurement: ...", "report_data: ..."). Does not look at a vTPM section: agents'
/// evidence goes through verify_agent_evidence.
expected<snp_report> verify_sim_or_snp_evidence(std::span<const uint8_t> report, std::string_view pem_chain,
                                                const snp_policy& policy,
                                                std::span<const uint8_t> expected_report_data);

/// The vTPM section of an agent's evidence (schemas/attestation.fbs VtpmEvidence).
struct agent_vtpm_evidence {
  std::span<const uint8_t> ak_public;  // TPM2B_PUBLIC (restricted signing key, sha256 nameAlg)
  std::span<const uint8_t> ak_spki;    // the same key as DER SPKI; empty = not given
  std::span<const uint8_t> quote;      // TPM2B_ATTEST
  std::span<const uint8_t> signature;  // TPMT_SIGNATURE
  tpm_pcr_values pcrs;                 // sha256 values of the quoted PCRs
  std::span<const uint8_t> event_log;  // TCG crypto-agile log; empty = none
  std::span<const uint8_t> ima_list;   // IMA binary measurement list; empty = none (not on the
                                       // wire yet: `cove attestation validate --ima-log` sets it)
};

/// The DICE part of an agent's evidence (schemas/attestation.fbs DiceEvidence).
struct agent_dice_evidence {
  std::string_view chain;                      // PEM (or DER) certificates, any order
  std::span<const uint8_t> binding_signature;  // leaf key over dice_binding_message(REPORT_DATA)
};

/// An agent's evidence as received (Evidence in schemas/attestation.fbs).
struct agent_evidence {
  std::span<const uint8_t> report;
  std::string_view cert_chain;  // PEM: VCEK, ASK, ARK
  std::span<const uint8_t> kx_public_key;
  std::span<const uint8_t> sign_public_key;
  std::optional<agent_vtpm_evidence> vtpm;
  std::optional<agent_dice_evidence> dice;
};

/// What REPORT_DATA must bind (common/include/cove/crypto/statements.hpp), beside the
/// agent's keys and, when the evidence has a vTPM section, the AK's TPM name.
struct evidence_binding {
  enum class mode : uint8_t {
    unchecked,      // REPORT_DATA is not compared (the AK binding is then not checked either)
    nonce,          // evidence_report_data(kx, sign, nonce[, ak_name])
    bridge_session  // bridge_report_data(kx, sign, cvm_id, nonce = TLS exporter[, ak_name])
  };
  mode kind = mode::unchecked;
  std::span<const uint8_t> nonce;
  std::string_view cvm_id;
};

struct verified_evidence {
  snp_report report;
  std::optional<vtpm_verified> vtpm;            // set when the evidence carried a vTPM section
  std::string ak_type;                          // "ecc-p256", "rsa-2048", ... when vtpm is set
  std::optional<std::vector<dice_layer>> dice;  // set when a DICE chain was verified (policy.dice)
};

/// "ecc-p256", "rsa-2048", "rsa-3072", "rsa-4096" (or "rsa-<bits>" / "ecc-unknown").
std::string ak_type_name(const tpm_public& ak);

/// Verifies an agent's evidence against `policy`:
/// 1. policy.vtpm.required and no vTPM section: "vtpm: ..." names vtpm.required;
/// 2. with a vTPM section, its AK (TPM2B_PUBLIC) is parsed for its name ("vtpm.ak_public: ...");
/// 3. the report: verify_sim_or_snp_evidence with REPORT_DATA = the binding's construction
///    (v2, with the AK name, when there is a vTPM section) — a report that does not vouch
///    for this AK fails on "report_data: ..." saying so;
/// 4. the vTPM section: verify_vtpm_section against the report's REPORT_DATA;
/// 5. with a policy `dice` section: verify_dice_section (a missing chain fails only when
///    dice.required). Without one, a DICE chain in the evidence is not looked at.
/// Errors are errc::attestation_failed naming the field, with got/expected values.
expected<verified_evidence> verify_agent_evidence(const agent_evidence& ev, const snp_policy& policy,
                                                  const evidence_binding& binding);

/// The vTPM section against the REPORT_DATA of a verified report and the policy's vtpm part:
/// ak_spki equals ak_public's key; the AK type is allowed (vtpm.ak_types); the event log
/// parses (and is present if vtpm.require_event_log); the quote is signed by the AK, its
/// extraData is crypto::vtpm_quote_nonce(report_data) and its pcrDigest matches `pcrs`;
/// the log replays vtpm.event_log_pcrs; vtpm.pcrs match. Fields in errors: "vtpm.ak_spki",
/// "vtpm.ak_types", "vtpm.event_log", "vtpm.quote", "vtpm.pcrs".
expected<vtpm_verified> verify_vtpm_section(const agent_vtpm_evidence& v,
                                            std::span<const uint8_t> report_data, const vtpm_policy& policy);

/// The DICE section against the REPORT_DATA of a verified report: parse_dice_chain
/// ("dice.chain: ..."), verify_dice_chain with policy.chain at `now` ("dice: layer 3 (agent)
/// fwid: ..."), then verify_dice_binding with the leaf ("dice.binding: ..."). Returns the
/// layers, root first.
expected<std::vector<dice_layer>> verify_dice_section(
    const agent_dice_evidence& d, std::span<const uint8_t> report_data, const dice_evidence_policy& policy,
    std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

}  // namespace cove::attest
