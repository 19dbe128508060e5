// Fuzzes the bridge frame decoder (bytes an agent, or anyone reaching the bridge port
// after TLS, controls): whatever decodes must re-encode to the same bytes.
#include <cstddef>
#include <cstdint>
#include <span>

#include "cove/bridge/frame.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cove::bridge::decoder dec;
  // Feed in two pieces to exercise reassembly.
  dec.feed(std::span<const uint8_t>(data, size / 2));
  dec.feed(std::span<const uint8_t>(data + size / 2, size - size / 2));
  size_t consumed = 0;
  for (int i = 0; i < 64; ++i) {
    auto f = dec.next();
    if (!f || !*f) break;
    std::vector<uint8_t> again;
    if (!cove::bridge::encode(**f, again)) __builtin_trap();
    if (consumed + again.size() > size) __builtin_trap();
    for (size_t k = 0; k < again.size(); ++k)
      if (again[k] != data[consumed + k]) __builtin_trap();
    consumed += again.size();
  }
  return 0;
}
