// Fuzzes the TCG crypto-agile event log parser and replay on untrusted bytes.
#include <cstddef>
#include <cstdint>
#include <span>

#include "cove/attest/tpm_eventlog.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto log = cove::attest::parse_tcg_event_log(std::span<const uint8_t>(data, size));
  if (!log) return 0;
  auto replay = cove::attest::replay_tcg_event_log(*log);
  cove::attest::tpm_pcr_values quoted;
  for (uint32_t i = 0; i < cove::attest::tpm_pcr_count; ++i) quoted[i] = replay[i];
  // A log always replays to its own values.
  if (!cove::attest::check_tcg_event_log(*log, quoted)) __builtin_trap();
  return 0;
}
