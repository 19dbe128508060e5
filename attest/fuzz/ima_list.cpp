// Fuzzes the IMA binary measurement list parser, replay, replaying prefix and allowlist check
// on untrusted bytes.
#include <cstddef>
#include <cstdint>
#include <span>

#include "cove/attest/ima.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto list = cove::attest::parse_ima_list(std::span<const uint8_t>(data, size));
  if (!list) return 0;
  cove::attest::tpm_pcr_values quoted;
  quoted[cove::attest::ima_default_pcr] = cove::attest::replay_ima_pcr(*list);
  // A list always replays to its own value.
  if (!cove::attest::check_ima_pcr(*list, quoted)) __builtin_trap();
  // ... and so has a replaying prefix, within the list, that itself parses.
  std::span<const uint8_t> bytes(data, size);
  auto n = cove::attest::ima_replaying_prefix(bytes, *list, quoted[cove::attest::ima_default_pcr]);
  if (!n || *n > size || !cove::attest::parse_ima_list(bytes.first(*n))) __builtin_trap();
  cove::attest::ima_allowlist allow;
  for (const auto& e : list->entries) allow.digests.push_back(e.file_digest);
  allow.allow_violations = true;
  (void)cove::attest::check_ima_allowlist(*list, allow);
  return 0;
}
