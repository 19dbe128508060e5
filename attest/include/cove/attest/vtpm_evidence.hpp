#pragma once
// vTPM evidence as a whole (quote + AK + PCR values and/or event log) and its binding to
// an SEV-SNP report (snp-vtpm): the report's REPORT_DATA vouches for the AK, the AK signs
// the quote. Used by `cove attestation validate --mode vtpm|snp-vtpm`.
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "cove/attest/snp_report.hpp"
#include "cove/attest/tpm_eventlog.hpp"
#include "cove/attest/tpm_quote.hpp"
#include "cove/expected.hpp"

namespace cove::attest {

/// The REPORT_DATA an SEV-SNP report carries to bind a vTPM attestation key:
///   SHA-512("cove-snp-vtpm-v1" || lp(ak_name) || lp(nonce)),  lp(x) = u32 big-endian len || x
/// `ak_name` is the TPM name of the AK (nameAlg sha256: 0x000B || SHA-256(TPMT_PUBLIC)),
/// so the binding covers the key and its attributes (restricted signing); `nonce` is the
/// verifier's nonce, the same one the quote's extraData carries.
std::array<uint8_t, 64> snp_vtpm_report_data(std::span<const uint8_t> ak_name,
                                             std::span<const uint8_t> nonce);

struct vtpm_evidence {
  std::span<const uint8_t> quote;      // TPM2B_ATTEST or TPMS_ATTEST
  std::span<const uint8_t> signature;  // TPMT_SIGNATURE
  std::span<const uint8_t> ak_public;  // TPM2B_PUBLIC (or DER SPKI: no restricted check, no binding)
  std::optional<tpm_pcr_values> pcrs;  // sha256-bank values of the quoted PCRs
  std::span<const uint8_t> event_log;  // TCG crypto-agile log; empty = none
};

struct vtpm_verified {
  tpm_attest quote;
  std::optional<tpm_public> ak;  // set when ak_public was a TPM2B_PUBLIC
  tpm_pcr_values pcrs;           // the quoted PCRs' values (checked against pcrDigest)
  std::optional<tcg_event_log> log;
};

/// 1. parses the event log (if any); the PCR values are `ev.pcrs`, else the log's replay;
///    neither is errc::invalid_request;
/// 2. verify_tpm_quote(quote, signature, ak_public, nonce, pcrs);
/// 3. with both a log and `ev.pcrs`: check_tcg_event_log(log, pcrs, log_pcrs)
///    (`log_pcrs` empty = every quoted PCR);
/// 4. check_tpm_policy(quote, pcrs, policy).
/// Errors are errc::attestation_failed (or invalid_request for malformed input) prefixed
/// with the step: "quote: ...", "event log: ...", "pcr policy: ...".
expected<vtpm_verified> verify_vtpm_evidence(const vtpm_evidence& ev, std::span<const uint8_t> nonce,
                                             const tpm_policy& policy,
                                             std::span<const uint32_t> log_pcrs = {});

/// The snp-vtpm binding: REPORT_DATA == snp_vtpm_report_data(ak.name, nonce). Fails with
/// "ak binding: ..." (errc::attestation_failed) when the AK has no sha256 name or the
/// report does not vouch for it.
expected<void> check_snp_vtpm_binding(const snp_report& report, const tpm_public& ak,
                                      std::span<const uint8_t> nonce);

}  // namespace cove::attest
