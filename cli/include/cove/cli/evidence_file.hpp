#pragma once
// Saved evidence: what `cove attestation get` writes and `cove attestation validate
// --evidence` reads back. JSON, one object:
//   {"format": "cove-evidence-v1", "kind": "sim_snp" | "sev_snp", "cvm": "<id>",
//    "nonce": "<hex>", "report": "<base64>", "cert_chain": "<PEM: VCEK, ASK, ARK>",
//    "kx_public_key": "<hex>", "sign_public_key": "<hex>",
//    "vtpm": {"ak_public": "<base64 TPM2B_PUBLIC>", "ak_spki": "<base64 DER>",
//             "quote": "<base64 TPM2B_ATTEST>", "signature": "<base64 TPMT_SIGNATURE>",
//             "pcrs": {"<index>": "<hex>", ...}, "event_log": "<base64>",
//             "ima_list": "<base64 IMA binary measurements>"},   (vtpm optional; ima_list optional)
//    "dice": {"chain": "<PEM, root first>", "binding_signature": "<base64>"}}   (dice optional)
// The report's REPORT_DATA must be crypto::evidence_report_data(kx, sign, nonce[, AK name]).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <optional>

#include "cove/attest/evidence.hpp"
#include "cove/expected.hpp"

namespace cove::cli {

inline constexpr std::string_view evidence_format = "cove-evidence-v1";

/// The vTPM section (cove-agent --vtpm).
struct saved_vtpm {
  std::vector<uint8_t> ak_public, ak_spki, quote, signature;
  attest::tpm_pcr_values pcrs;
  std::vector<uint8_t> event_log;
  std::vector<uint8_t> ima_list;  // empty: the agent sent none
};

/// The DICE section (simulated-TEE agents).
struct saved_dice {
  std::string chain;  // PEM
  std::vector<uint8_t> binding_signature;
};

struct saved_evidence {
  std::string kind;  // "sim_snp" or "sev_snp"
  std::string cvm_id;
  std::vector<uint8_t> nonce;
  std::vector<uint8_t> report;
  std::string cert_chain;  // PEM, VCEK first; may be empty (collateral fetched elsewhere)
  std::vector<uint8_t> kx_public_key, sign_public_key;
  std::optional<saved_vtpm> vtpm;
  std::optional<saved_dice> dice;
};

/// Views of `e` for attest::verify_agent_evidence (valid while `e` lives).
attest::agent_evidence agent_evidence_of(const saved_evidence& e);

std::string evidence_to_json(const saved_evidence& e);

/// Strict: the format tag, every key, known kinds, valid hex/base64, 32-byte agent keys,
/// a 1184-byte report, a 32..64-byte nonce; unknown keys are errors
/// (errc::invalid_request naming the key).
expected<saved_evidence> evidence_from_json(std::string_view text);

}  // namespace cove::cli
