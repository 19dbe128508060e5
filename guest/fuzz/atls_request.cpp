// The aTLS authenticator request a client sends before HTTP/2 (untrusted, parsed by
// the agent's attested TLS listener): must never crash; what parses must re-encode.
#include <cstdint>
#include <span>

#include "cove/agent/atls.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto req = cove::agent::atls::parse_request(std::span<const uint8_t>(data, size));
  if (req && req->raw.size() != size) __builtin_trap();
  return 0;
}
