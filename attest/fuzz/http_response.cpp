// Fuzzes the KDS client's HTTP response parser (parse_http_head / parse_http_response) on
// untrusted bytes from the network.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cove/attest/collateral.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view raw(reinterpret_cast<const char*>(data), size);
  auto h = cove::attest::parse_http_head(raw);
  auto r = cove::attest::parse_http_response(raw, 4096);
  if (r && (!h || h->status != r->status || r->body.size() > 4096)) __builtin_trap();
  return 0;
}
