// Fuzzes verify_vtpm_section: the vTPM part of an agent's evidence (AK TPM2B_PUBLIC, SPKI,
// TPM2B_ATTEST, TPMT_SIGNATURE, PCR values, event log) against a policy with every check on.
// Input: u16 BE length + AK public, u16 + quote, u16 + signature, u16 + ak_spki,
// u8 count + (u8 index, 32-byte value) per PCR, then the event log (the rest).
#include <cstddef>
#include <cstdint>
#include <span>

#include "cove/attest/evidence.hpp"

#include "fuzz_input.hpp"

using cove::fuzz::take_u16_prefixed;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  cove::attest::agent_vtpm_evidence ev;
  ev.ak_public = take_u16_prefixed(in);
  ev.quote = take_u16_prefixed(in);
  ev.signature = take_u16_prefixed(in);
  ev.ak_spki = take_u16_prefixed(in);
  if (!in.empty()) {
    std::size_t count = in[0];
    in = in.subspan(1);
    for (std::size_t i = 0; i < count && in.size() >= 33; ++i) {
      ev.pcrs[in[0] % 32] = std::vector<uint8_t>(in.begin() + 1, in.begin() + 33);
      in = in.subspan(33);
    }
  }
  ev.event_log = in;
  std::array<uint8_t, 64> report_data{};
  cove::attest::vtpm_policy policy;
  policy.pcrs[7] = std::vector<uint8_t>(32, 0);
  policy.ak_types = {"ecc-p256", "rsa-2048"};
  policy.event_log_pcrs = {0, 7};
  (void)cove::attest::verify_vtpm_section(ev, report_data, policy);
  policy = {};
  (void)cove::attest::verify_vtpm_section(ev, report_data, policy);
  return 0;
}
