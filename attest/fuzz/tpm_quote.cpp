// Fuzzes the TPM quote parsers and verify_tpm_quote on untrusted bytes.
// Input: u16 BE attest length, attest (TPM2B_ATTEST), u16 BE signature length,
// signature (TPMT_SIGNATURE), then the AK public (TPM2B_PUBLIC or DER SPKI).
#include <cstddef>
#include <cstdint>
#include <span>

#include "cove/attest/tpm_quote.hpp"

#include "fuzz_input.hpp"

using cove::fuzz::take_u16_prefixed;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  (void)cove::attest::parse_tpm_attest(in);
  (void)cove::attest::parse_tpm_signature(in);
  (void)cove::attest::parse_tpm_public(in);
  auto attest = take_u16_prefixed(in);
  auto sig = take_u16_prefixed(in);
  auto pub = in;
  cove::attest::tpm_pcr_values pcrs;
  for (uint32_t i = 0; i < 24; ++i) pcrs[i] = std::vector<uint8_t>(32, 0);
  std::vector<uint8_t> nonce;
  if (auto parsed = cove::attest::parse_tpm_attest(attest)) {
    nonce = parsed->extra_data;  // reach the checks after the nonce
    cove::attest::tpm_policy p;
    p.pcrs[7] = pcrs[7];
    (void)cove::attest::check_tpm_policy(*parsed, pcrs, p);
    (void)cove::attest::tpm_pcr_digest(parsed->pcr_select, pcrs);
  }
  (void)cove::attest::verify_tpm_quote(attest, sig, pub, nonce, pcrs);
  return 0;
}
