#pragma once
// Agent-side vTPM evidence: an attestation key in the TPM (tpm2-tss ESAPI) and quotes
// over a PCR selection, in the wire formats cove::attest::verify_tpm_quote takes.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cove/attest/tpm_quote.hpp"
#include "cove/expected.hpp"

namespace cove::agent {

enum class tpm_ak_type { ecc_p256, rsa_2048 };

/// The default quoted PCRs (sha256 bank): firmware/boot 0-9 and debug 16.
inline const std::vector<uint32_t>& default_quote_pcrs() {
  static const std::vector<uint32_t> pcrs{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 16};
  return pcrs;
}

struct tpm_quote_result {
  std::vector<uint8_t> attest;     // TPM2B_ATTEST (marshalled)
  std::vector<uint8_t> signature;  // TPMT_SIGNATURE (marshalled)
  attest::tpm_pcr_values pcrs;     // sha256 values of the quoted PCRs
};

struct tpm_ak_public {
  std::vector<uint8_t> tpm2b_public;  // TPM2B_PUBLIC (marshalled)
  std::vector<uint8_t> spki_der;      // the same key as DER SubjectPublicKeyInfo
};

class tpm_provider {
 public:
  /// Connects through a TCTI configuration ("swtpm:host=127.0.0.1,port=2321", "device:/dev/tpmrm0";
  /// empty = the tpm2-tss default), runs TPM2_Startup(CLEAR) unless already started, creates an
  /// ECC P-256 storage primary in the endorsement hierarchy and under it a restricted signing AK
  /// (ECDSA P-256 or RSASSA-2048, SHA-256), loaded as a transient object.
  static expected<tpm_provider> open(const std::string& tcti_conf, tpm_ak_type ak = tpm_ak_type::ecc_p256);

  tpm_provider(tpm_provider&&) noexcept;
  tpm_provider& operator=(tpm_provider&&) noexcept;
  ~tpm_provider();  // flushes the AK, Esys_Finalize, Tss2_TctiLdr_Finalize

  [[nodiscard]] const tpm_ak_public& ak_public() const noexcept;
  /// How long open() took, by step, e.g. "tcti 3 ms, startup 12 ms, primary 410 ms, ..."
  /// (the launch profile in docs/performance.md).
  [[nodiscard]] const std::string& open_profile() const noexcept;

  /// TPM2_Quote with `nonce` (≤ 64 bytes) as qualifyingData over the sha256 bank `pcrs`
  /// (0..23), plus the PCR values (TPM2_PCR_Read). A PCR extended between the read and the
  /// quote makes the verifier's pcrDigest check fail; the caller may retry.
  expected<tpm_quote_result> quote(std::span<const uint8_t> nonce,
                                   std::span<const uint32_t> pcrs = default_quote_pcrs());

  /// Reads sha256-bank PCR values.
  expected<attest::tpm_pcr_values> read_pcrs(std::span<const uint32_t> pcrs);

  /// Extends SHA-256(data) into sha256-bank PCR `pcr` (0..23); returns that digest.
  expected<std::vector<uint8_t>> extend(uint32_t pcr, std::span<const uint8_t> data);

 private:
  struct impl;
  explicit tpm_provider(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace cove::agent
