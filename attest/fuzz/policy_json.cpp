// Fuzzes load_policy_json on untrusted JSON (no base directory: relative paths stay relative).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cove/attest/policy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto p = cove::attest::load_policy_json(text);
  (void)p;
  return 0;
}
