// Fuzzes verify_dice_section (an agent evidence's DICE chain and the leaf key's signature
// over REPORT_DATA) on untrusted bytes: u16 big-endian length || binding signature || chain
// (PEM or DER). The policy trusts a fixed simulated device root, so chains built from it
// reach the layer, FWID and signature checks.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "cove/attest/evidence.hpp"

namespace {

const cove::attest::dice_evidence_policy& policy() {
  static const cove::attest::dice_evidence_policy p = [] {
    cove::attest::dice_evidence_policy out;
    out.required = true;
    const std::string_view seed = "cove fuzz dice seed";
    std::vector<uint8_t> measurement(48, 0x5a);
    auto chain = cove::attest::make_sim_agent_dice_chain(
        {reinterpret_cast<const uint8_t*>(seed.data()), seed.size()}, measurement);
    if (!chain) __builtin_trap();
    out.chain.trusted_roots_pem.push_back(chain->root_pem);
    cove::attest::dice_layer_policy agent;
    agent.name = "agent";
    agent.allowed_fwids.push_back(measurement);
    out.chain.layers.push_back(agent);
    return out;
  }();
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  size_t sig_len = (static_cast<size_t>(data[0]) << 8) | data[1];
  if (sig_len > size - 2) return 0;
  std::span<const uint8_t> sig(data + 2, sig_len);
  std::string_view chain(reinterpret_cast<const char*>(data + 2 + sig_len), size - 2 - sig_len);
  static const std::vector<uint8_t> report_data(64, 0x42);
  auto r = cove::attest::verify_dice_section({chain, sig}, report_data, policy());
  if (r && (r->empty() || r->back().name != "agent")) __builtin_trap();
  return 0;
}
