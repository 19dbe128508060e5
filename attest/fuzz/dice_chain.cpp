// Fuzzes parse_dice_chain (PEM or concatenated DER, DiceTcbInfo extensions) and
// parse_dice_tcb_info on untrusted bytes.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "cove/attest/dice.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  auto chain = cove::attest::parse_dice_chain(std::string_view(reinterpret_cast<const char*>(data), size));
  if (chain) {
    // 1..16 certificates, each kept as DER. (Issuer/subject linkage uses X509_NAME_cmp,
    // which is case- and whitespace-insensitive, so the printed names may differ.)
    if (chain->empty() || chain->size() > 16) __builtin_trap();
    for (const auto& l : *chain)
      if (l.cert_der.empty()) __builtin_trap();
  }
  auto info = cove::attest::parse_dice_tcb_info(in);
  if (info) {
    // Whatever parses re-encodes to something that parses to the same fields.
    auto again = cove::attest::parse_dice_tcb_info(cove::attest::encode_dice_tcb_info(*info));
    if (!again || again->svn != info->svn || again->layer != info->layer ||
        again->flags.value_or(0) != info->flags.value_or(0) || again->fwids.size() != info->fwids.size() ||
        again->vendor != info->vendor)
      __builtin_trap();
  }
  return 0;
}
