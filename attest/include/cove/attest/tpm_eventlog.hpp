#pragma once
// TCG PC Client crypto-agile event log: parse, replay into the sha256 bank,
// and compare with quoted PCR values.
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "cove/attest/tpm_quote.hpp"
#include "cove/expected.hpp"

namespace cove::attest {

inline constexpr uint32_t tcg_ev_no_action = 0x00000003;

/// One TCG_PCR_EVENT2 with its sha256 digest (other banks are skipped).
struct tcg_event {
  uint32_t pcr = 0;
  uint32_t type = 0;
  std::vector<uint8_t> sha256;  // empty if the event has no sha256 digest
  std::vector<uint8_t> data;
};

/// A parsed log: the Spec ID Event03 header's algorithms, then the events.
struct tcg_event_log {
  std::vector<std::pair<uint16_t, uint16_t>> algorithms;  // (algId, digestSize)
  uint8_t startup_locality = 0;                           // from a StartupLocality EV_NO_ACTION
  std::vector<tcg_event> events;
};

/// Parses a crypto-agile log: TCG_PCR_EVENT (SHA-1 format) holding "Spec ID Event03",
/// which must list sha256, then TCG_PCR_EVENT2 entries to the end of `bytes`.
/// All integers little-endian. Limits: 16 MiB log, 1 MiB per event, PCR index < 24.
expected<tcg_event_log> parse_tcg_event_log(std::span<const uint8_t> bytes);

/// Replays the sha256 bank: PCRs 0..16 and 23 start at zero (PCR 0's last byte = the
/// startup locality), 17..22 at 0xff..ff; every event except EV_NO_ACTION extends
/// PCR = SHA-256(PCR || digest).
std::array<std::vector<uint8_t>, tpm_pcr_count> replay_tcg_event_log(const tcg_event_log& log);

/// Replays `log` and compares with `quoted`: every PCR in `pcrs` (empty = every PCR in
/// `quoted`) must be quoted and equal its replayed value. The error names the first
/// (lowest) PCR that does not replay: "event log does not replay pcr[4]: log gives …, quote has …".
expected<void> check_tcg_event_log(const tcg_event_log& log, const tpm_pcr_values& quoted,
                                   std::span<const uint32_t> pcrs = {});

}  // namespace cove::attest
