// Fuzzes parse_ovmf_layout: arbitrary bytes as the tail of an OVMF/SVSM image
// (GUIDed footer table, SEV metadata "ASEV" block and its section list).
#include <cstddef>
#include <cstdint>
#include <span>

#include "cove/attest/measure.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  auto r = cove::attest::parse_ovmf_layout(in);
  if (!r) return 0;
  // Every entry and section came from inside the image.
  size_t entry_bytes = 0;
  for (const auto& [guid, bytes] : r->table) entry_bytes += bytes.size() + 18;
  if (entry_bytes > size) __builtin_trap();
  if (r->sections.size() * 12 > size) __builtin_trap();
  for (const auto& [guid, bytes] : r->table) (void)r->entry_u32(guid);
  (void)r->has_section(cove::attest::ovmf_section_snp_kernel_hashes);
  return 0;
}
