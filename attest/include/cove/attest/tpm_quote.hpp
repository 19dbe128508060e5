#pragma once
// TPM 2.0 quote verification (verifier side, OpenSSL only): TPMS_ATTEST,
// TPMT_SIGNATURE and TPM2B_PUBLIC parsing, signature check with the AK, nonce
// and PCR-digest checks, and a PCR policy (sha256 bank).
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cove/expected.hpp"

namespace cove::attest {

// TPM constants used on the wire (TPM 2.0 Part 2).
inline constexpr uint32_t tpm_generated_value = 0xff544347;  // TPM_GENERATED_VALUE
inline constexpr uint16_t tpm_st_attest_quote = 0x8018;      // TPM_ST_ATTEST_QUOTE
inline constexpr uint16_t tpm_alg_rsa = 0x0001;
inline constexpr uint16_t tpm_alg_sha1 = 0x0004;
inline constexpr uint16_t tpm_alg_sha256 = 0x000B;
inline constexpr uint16_t tpm_alg_null = 0x0010;
inline constexpr uint16_t tpm_alg_rsassa = 0x0014;
inline constexpr uint16_t tpm_alg_rsapss = 0x0016;
inline constexpr uint16_t tpm_alg_ecdsa = 0x0018;
inline constexpr uint16_t tpm_alg_ecc = 0x0023;
inline constexpr uint16_t tpm_ecc_nist_p256 = 0x0003;
inline constexpr uint32_t tpm_pcr_count = 24;  // PC Client: PCRs 0..23

/// PCR index -> value of one bank (cove uses the sha256 bank).
using tpm_pcr_values = std::map<uint32_t, std::vector<uint8_t>>;

/// One TPMS_PCR_SELECTION: a bank and its selected PCRs in ascending order.
struct tpm_pcr_selection {
  uint16_t hash_alg = 0;
  std::vector<uint32_t> pcrs;
};

/// TPMS_ATTEST of a quote (TPM_ST_ATTEST_QUOTE), with TPMS_QUOTE_INFO.
struct tpm_attest {
  uint32_t magic = 0;
  uint16_t type = 0;
  std::vector<uint8_t> qualified_signer;  // TPM2B_NAME contents
  std::vector<uint8_t> extra_data;        // the caller's nonce
  uint64_t clock = 0;
  uint32_t reset_count = 0;
  uint32_t restart_count = 0;
  bool safe = false;
  uint64_t firmware_version = 0;
  std::vector<tpm_pcr_selection> pcr_select;
  std::vector<uint8_t> pcr_digest;
  std::vector<uint8_t> body;  // the TPMS_ATTEST bytes (what the AK signed)
};

/// TPMT_SIGNATURE: RSASSA/RSAPSS (sig) or ECDSA (r, s).
struct tpm_signature {
  uint16_t sig_alg = 0;
  uint16_t hash_alg = 0;
  std::vector<uint8_t> rsa_sig;
  std::vector<uint8_t> ecdsa_r;
  std::vector<uint8_t> ecdsa_s;
};

/// TPMT_PUBLIC of an RSA or ECC P-256 key, with its DER SubjectPublicKeyInfo.
struct tpm_public {
  uint16_t type = 0;  // tpm_alg_rsa or tpm_alg_ecc
  uint16_t name_alg = 0;
  uint32_t attributes = 0;        // TPMA_OBJECT
  uint16_t scheme = 0;            // signing scheme (tpm_alg_null if any)
  uint16_t scheme_hash = 0;       // its hash (0 if scheme is null)
  std::vector<uint8_t> spki_der;  // SubjectPublicKeyInfo
  std::vector<uint8_t> name;      // nameAlg || H_nameAlg(TPMT_PUBLIC) (sha256 nameAlg only)

  static constexpr uint32_t attr_fixed_tpm = 1u << 1;
  static constexpr uint32_t attr_restricted = 1u << 16;
  static constexpr uint32_t attr_decrypt = 1u << 17;
  static constexpr uint32_t attr_sign = 1u << 18;
  [[nodiscard]] bool restricted_signing() const noexcept {
    return (attributes & attr_restricted) != 0 && (attributes & attr_sign) != 0 &&
           (attributes & attr_decrypt) == 0;
  }
};

/// Parses TPM2B_ATTEST bytes (or bare TPMS_ATTEST, recognised by the leading magic).
/// Requires the magic, TPM_ST_ATTEST_QUOTE and no trailing bytes.
expected<tpm_attest> parse_tpm_attest(std::span<const uint8_t> bytes);

/// Parses TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA; any hash id is kept).
expected<tpm_signature> parse_tpm_signature(std::span<const uint8_t> bytes);

/// Parses TPM2B_PUBLIC (RSA or ECC NIST P-256) and builds its DER SPKI.
expected<tpm_public> parse_tpm_public(std::span<const uint8_t> bytes);

/// H(concatenation of `values` for the selected PCRs, in selection order), SHA-256.
/// Only sha256-bank selections are supported; a missing or wrong-sized value is an error.
expected<std::vector<uint8_t>> tpm_pcr_digest(std::span<const tpm_pcr_selection> selection,
                                              const tpm_pcr_values& values);

/// Verifies a quote:
/// 1. `ak_public` is a TPM2B_PUBLIC (must be a restricted signing key) or a DER SPKI;
/// 2. `signature` (TPMT_SIGNATURE, SHA-256 with RSASSA, RSAPSS or ECDSA P-256) verifies
///    over the TPMS_ATTEST bytes of `attest`;
/// 3. magic and type; extraData equals `nonce`;
/// 4. pcrDigest equals tpm_pcr_digest(selection, `pcrs`) (sha256 bank only).
/// Errors are errc::invalid_request (malformed input) or errc::attestation_failed.
expected<tpm_attest> verify_tpm_quote(std::span<const uint8_t> attest, std::span<const uint8_t> signature,
                                      std::span<const uint8_t> ak_public, std::span<const uint8_t> nonce,
                                      const tpm_pcr_values& pcrs);

/// Expected sha256-bank PCR values.
struct tpm_policy {
  tpm_pcr_values pcrs;
};

/// {"pcrs": {"7": "<64 hex>", ...}}; unknown keys, bad indexes and bad hex are errors.
expected<tpm_policy> load_tpm_policy_json(std::string_view json);

/// Every policy PCR must be in the quote's sha256 selection and equal its value in `pcrs`
/// (the values verify_tpm_quote checked). Fails with "pcr[7]: got ab12…, expected cd34…".
expected<void> check_tpm_policy(const tpm_attest& quote, const tpm_pcr_values& pcrs,
                                const tpm_policy& policy);

}  // namespace cove::attest
